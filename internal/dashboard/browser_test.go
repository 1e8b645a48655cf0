package dashboard_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/mevdschee/tqserver/internal/chromiumtest"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// The browser tests run the real tqserver binary on an app root in
// t.TempDir() with test workers, its admin listener on a free loopback
// port, and drive the dashboard there in headless Chromium: what the page
// shows is checked against what the server says over its socket.

// wait bounds each wait on the page or the server.
const wait = 30 * time.Second

var (
	buildOnce sync.Once
	buildDir  string
	tqBin     string
	buildErr  error
	builds    *testrig.Builds
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// serverBin builds tqserver once per test binary (with -race when the
// tests run with it).
func serverBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "tqserver-dashboard-")
		if buildErr != nil {
			return
		}
		src, err := testrig.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		tqBin = filepath.Join(buildDir, "tqserver")
		buildErr = testrig.BuildServer(src, tqBin, testrig.Race)
		builds = testrig.NewBuilds(buildDir)
	})
	if buildErr != nil {
		t.Fatalf("build tqserver: %v", buildErr)
	}
	return tqBin
}

// dashServer is a running tqserver and the URL of its admin listener.
type dashServer struct {
	*testrig.Server
	admin string // http://127.0.0.1:PORT
}

// startDashServer runs tqserver in prod mode on a new app root with the
// test worker installed under each name in workers (name → behaviour) and
// extraYAML appended under server:.
func startDashServer(t *testing.T, workers map[string]string, serverYAML string) *dashServer {
	t.Helper()
	root := t.TempDir()
	return startDashServerOn(t, root, "prod", workers, serverYAML)
}

// startDashServerOn is startDashServer on root, in mode (prod or dev).
func startDashServerOn(t *testing.T, root, mode string, workers map[string]string, serverYAML string) *dashServer {
	t.Helper()
	bin := serverBin(t)
	for _, d := range []string{"config", "workers", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port, err := testrig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`server:
  admin_listen: "127.0.0.1:%d"
%sworkers:
  port_range_start: 23400
  port_range_end: 23699
  shutdown_grace_period_ms: 2000
  restart_delay_ms: 100
  restart_backoff_max_ms: 2000
  default:
    health_timeout_ms: 5000
    health_interval_ms: 500
`, port, serverYAML)
	if err := os.WriteFile(filepath.Join(root, "config", "server.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, behaviour := range workers {
		// A hard link: two hundred workers share one binary's disk space.
		bin, dst := builds.TestWorker(t, "v1", behaviour), testrig.WorkerBinPath(root, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(bin, dst); err != nil {
			if err := testrig.Install(root, name, bin); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := testrig.StartServerT(t, testrig.ServerOptions{Bin: bin, Root: root, Mode: mode}, 2*wait) // dev mode builds first
	d := &dashServer{Server: s, admin: fmt.Sprintf("http://127.0.0.1:%d", port)}
	client := &http.Client{Timeout: 5 * time.Second}
	if err := s.PollAlive(wait, 20*time.Millisecond, "the admin listener's /healthz", func() (bool, string) {
		resp, err := client.Get(d.admin + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

// status is the server's status over its unix socket.
type status struct {
	Workers []struct {
		Name      string `json:"name"`
		Instances []struct {
			Instance string `json:"instance"`
			State    string `json:"state"`
			PID      int    `json:"pid"`
		} `json:"instances"`
	} `json:"workers"`
}

func (d *dashServer) healthyPID(t *testing.T, worker string) int {
	t.Helper()
	var st status
	if err := testrig.SocketStatus(d.Root(), &st); err != nil {
		t.Fatal(err)
	}
	for _, w := range st.Workers {
		if w.Name != worker {
			continue
		}
		for _, in := range w.Instances {
			if in.State == "healthy" {
				return in.PID
			}
		}
	}
	return 0
}

// history is the server's history of worker over its unix socket.
func (d *dashServer) history(t *testing.T, worker string) []store.Record {
	t.Helper()
	resp, err := testrig.AdminClient(d.Root(), 10*time.Second).Get("http://tqserver/v1/history?worker=" + worker)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var recs []store.Record
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r store.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("history line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// browser is a headless Chromium for one test; a JavaScript exception in
// the page fails the test.
type browser struct {
	t    *testing.T
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

func openBrowser(t *testing.T) *browser {
	t.Helper()
	ctx := chromiumtest.New(t)
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			b.mu.Lock()
			b.errs = append(b.errs, (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errs {
			t.Errorf("JavaScript exception in the dashboard: %s", e)
		}
	})
	return b
}

func (b *browser) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", step, err)
	}
}

func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	chromiumtest.WaitJS(b.t, b.ctx, wait, what, expr)
}

func (b *browser) text(expr string) string {
	b.t.Helper()
	return chromiumtest.Eval[string](b.t, b.ctx, expr)
}

// shot saves a screenshot as name in $TQ_ARTIFACTS (for CI) or the test's
// temporary directory, and checks that it is a real image.
func (b *browser) shot(name string) {
	b.t.Helper()
	png1, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("TQ_ARTIFACTS")
	if dir == "" {
		dir = b.t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png1, 0o644); err != nil {
		b.t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(png1))
	if err != nil {
		b.t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	if r := img.Bounds(); r.Dx() < 500 || r.Dy() < 400 {
		b.t.Errorf("screenshot %s is only %v", name, r)
	}
	b.t.Logf("screenshot: %s", path)
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// cell is the JavaScript for the text of column col in worker's row ("" when
// the row is missing).
func cell(worker, col string) string {
	return `(document.querySelector(` + js(`#workers-body .row[data-worker="`+worker+`"] [data-col="`+col+`"]`) + `)?.textContent ?? "")`
}

func TestDashboardWorkersRestartAndCrashDetail(t *testing.T) {
	b := openBrowser(t) // first: skips before any build when there is no browser
	d := startDashServer(t, map[string]string{"index": "normal", "api_users": "normal", "api_crash": "crash", "api_sick": "nohealth"}, "")
	pids := map[string]int{}
	for _, name := range []string{"index", "api_users"} {
		testrig.WaitFor(t, wait, name+" healthy", func() bool {
			pids[name] = d.healthyPID(t, name)
			return pids[name] != 0
		})
	}
	b.do("load the dashboard", chromedp.Navigate(d.admin+"/"), chromedp.WaitVisible(chromedp.ID("workers")))

	// (1) Both example workers, healthy, with the PIDs and routes the server reports.
	for _, c := range []struct{ name, route string }{{"index", "/"}, {"api_users", "/api/users"}} {
		b.waitJS(c.name+" healthy with its pid and route", cell(c.name, "state")+` === "healthy" && `+
			cell(c.name, "pids")+` === "`+fmt.Sprint(pids[c.name])+`" && `+cell(c.name, "route")+` === `+js(c.route))
	}
	b.waitJS("the live stream connected", `document.getElementById("live").textContent === "live"`)
	chromiumtest.Eval[bool](b.t, b.ctx, `window.tqNoReload = true`)
	b.shot("dashboard-workers.png")

	// (2) Restart pressed in the page: a record with reason operator
	// appears in the timeline, with no page reload, and the row follows.
	b.do("press Restart on api_users", chromedp.Click(chromedp.CSS(`#workers-body .row[data-worker="api_users"] button.restart`)))
	b.waitJS("an operator record of api_users in the timeline",
		`document.querySelector('#timeline-body .row[data-worker="api_users"][data-reason="operator"]') !== null`)
	var newPID int
	testrig.WaitFor(t, wait, "a new healthy api_users instance", func() bool {
		newPID = d.healthyPID(t, "api_users")
		return newPID != 0 && newPID != pids["api_users"]
	})
	b.waitJS("the new pid of api_users in its row", cell("api_users", "pids")+` === "`+fmt.Sprint(newPID)+`"`)
	// One restart: one new instance (its start and spawned records count once).
	if got := b.text(cell("api_users", "restarts")); got != "1" {
		t.Errorf("api_users shows %s restarts after one, want 1", got)
	}
	if !chromiumtest.Eval[bool](b.t, b.ctx, `window.tqNoReload === true`) {
		t.Fatal("the page reloaded itself; the restart must show up live")
	}
	operator := 0
	for _, r := range d.history(t, "api_users") {
		if r.Reason == "operator" {
			operator++
		}
	}
	if operator == 0 {
		t.Fatal("the server's history has no operator record for api_users")
	}
	b.waitJS("as many operator rows as the server has operator records",
		`document.querySelectorAll('#timeline-body .row[data-worker="api_users"][data-reason="operator"]').length >= `+fmt.Sprint(operator))
	// The POST answers once the new instance serves, maybe after its
	// records arrived.
	b.waitJS("the restart's answer", `(document.querySelector("#notices .notice")?.textContent ?? "").startsWith("restart api_users")`)
	if got := b.text(`document.querySelector("#notices .notice").className`); got != "notice" {
		t.Errorf("the restart's notice is %q, want a plain (not failed) notice: %s", got,
			b.text(`document.querySelector("#notices .notice")?.textContent ?? ""`))
	}
	b.shot("dashboard-restart.png")

	// (3) The crashing worker: its last reason opens the record with the
	// stderr tail and the exit code, one click away.
	b.waitJS("api_crash shows a crash", cell("api_crash", "reason")+`.startsWith("crashed")`)
	b.do("open the crash", chromedp.Click(chromedp.CSS(`#workers-body .row[data-worker="api_crash"] [data-col="reason"]`)))
	b.waitJS("the detail with the stderr tail", `document.getElementById("detail").open && `+
		`document.getElementById("detail-output").textContent.includes("testworker: boom (crashing on purpose)")`)
	if got := b.text(`document.querySelector('#detail-fields dd[data-field="exit code"]')?.textContent ?? ""`); got != "3" {
		t.Errorf("detail shows exit code %q, want 3", got)
	}
	b.shot("dashboard-crash-detail.png")
	b.do("close the detail", chromedp.Click(chromedp.ID("detail-close")))
	b.waitJS("the detail closed", `!document.getElementById("detail").open`)

	// (3b) A worker that never becomes healthy, while its next attempt is
	// starting: the last reason still opens the failure that caused the
	// attempt (with its detail), not the start record.
	sickStart := `(() => { const r = document.querySelector('#timeline-body .row[data-worker="api_sick"]'); ` +
		`return r !== null && (r.dataset.event === "start" || r.dataset.event === "spawned") && r.dataset.reason === "health_failed" })()`
	b.waitJS("api_sick starting again after a failed health check", sickStart+` && `+cell("api_sick", "reason")+`.startsWith("health_failed")`)
	shown := b.text(`document.querySelector('#workers-body .row[data-worker="api_sick"] [data-col="reason"]').dataset.seq ?? ""`)
	if ev := b.text(`document.querySelector('#timeline-body .row[data-seq="` + shown + `"]')?.dataset.event ?? "missing"`); ev == "start" || ev == "spawned" || ev == "missing" {
		t.Errorf("api_sick's last reason points at record %s (%s), want the failed health check", shown, ev)
	}
	b.do("open api_sick's failure", chromedp.Click(chromedp.CSS(`#workers-body .row[data-worker="api_sick"] [data-col="reason"]`)))
	b.waitJS("the failure's detail", `document.getElementById("detail").open && `+
		`document.querySelector('#detail-fields dd[data-field="reason"]')?.textContent === "health_failed" && `+
		`document.querySelector('#detail-fields dd[data-field="transition"]')?.textContent.endsWith("stopped")`)
	b.do("close the detail", chromedp.Click(chromedp.ID("detail-close")))
	b.waitJS("the detail closed", `!document.getElementById("detail").open`)

	// (3c) A deploy watched in the page: a new index binary, Reload
	// pressed in the page; the replacement shows up live with its reason.
	if err := testrig.Install(d.Root(), "index", builds.TestWorker(t, "v2", "normal")); err != nil {
		t.Fatal(err)
	}
	b.do("press Reload", chromedp.Click(chromedp.ID("reload")))
	b.waitJS("the reload's answer", `(document.querySelector("#notices .notice")?.textContent ?? "").startsWith("reload")`)
	if got := b.text(`document.querySelector("#notices .notice").className`); got != "notice" {
		t.Fatalf("reload in the page: %s", b.text(`document.querySelector("#notices .notice").textContent`))
	}
	b.waitJS("index replaced for binary_changed, live", `document.querySelector('#timeline-body .row[data-worker="index"][data-reason="binary_changed"]') !== null && `+
		`document.querySelector('#timeline-body .row[data-worker="index"][data-reason="replaced"][data-event="exited"]') !== null && `+
		cell("index", "reason")+` === "binary_changed"`)
	testrig.WaitFor(t, wait, "index serving v2", func() bool {
		resp, err := http.Get(d.URL("/"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return bytes.HasPrefix(buf.Bytes(), []byte("v2 index"))
	})
	b.shot("dashboard-deploy.png")

	// (3d) Traffic: requests per second from the proxy's counters, and
	// p99 exactly when the status has it.
	client := &http.Client{Timeout: 5 * time.Second}
	hit := func() {
		for i := 0; i < 40; i++ {
			if resp, err := client.Get(d.URL("/")); err == nil {
				resp.Body.Close()
			}
		}
	}
	hit()
	testrig.WaitFor(t, wait, "index's req/s above zero", func() bool {
		v := b.text(cell("index", "rps"))
		if v != "0.0" && v != "–" && v != "" {
			return true
		}
		hit() // the rate is of the last poll interval: keep it busy
		return false
	})
	var st struct {
		Workers []struct {
			Name      string `json:"name"`
			Instances []struct {
				P99 *float64 `json:"p99_ms"`
			} `json:"instances"`
		} `json:"workers"`
	}
	if err := testrig.SocketStatus(d.Root(), &st); err != nil {
		t.Fatal(err)
	}
	hasP99 := false
	for _, w := range st.Workers {
		for _, in := range w.Instances {
			hasP99 = hasP99 || (w.Name == "index" && in.P99 != nil)
		}
	}
	if hasP99 {
		b.waitJS("index's p99 in ms", cell("index", "p99")+`.endsWith(" ms")`)
	} else if got := b.text(cell("index", "p99")); got != "–" {
		t.Errorf("index's p99 shows %q with no p99_ms in the status, want –", got)
	}

	// (4) Filters: by worker, then by reason.
	chromiumtest.Eval[bool](b.t, b.ctx, `(() => { const s = document.getElementById("f-worker"); s.value = "api_crash"; s.dispatchEvent(new Event("change")); return true })()`)
	b.waitJS("only api_crash rows", `(() => { const rows = [...document.querySelectorAll("#timeline-body .row")]; `+
		`return rows.length > 0 && rows.every(r => r.dataset.worker === "api_crash") })()`)
	chromiumtest.Eval[bool](b.t, b.ctx, `(() => { const w = document.getElementById("f-worker"); w.value = ""; const s = document.getElementById("f-reason"); s.value = "operator"; s.dispatchEvent(new Event("change")); return true })()`)
	b.waitJS("only operator rows, of api_users", `(() => { const rows = [...document.querySelectorAll("#timeline-body .row")]; `+
		`return rows.length > 0 && rows.every(r => r.dataset.reason === "operator" && r.dataset.worker === "api_users") })()`)
	b.do("open an operator record from the timeline", chromedp.Click(chromedp.CSS(`#timeline-body .row[data-reason="operator"]`)))
	b.waitJS("its detail", `document.getElementById("detail").open && document.getElementById("detail-title").textContent.includes("api_users")`)
	b.shot("dashboard-timeline-filter.png")

	// (5) No polling storm.
	checkRequests(t, b, "/v1/workers/api_users/restart")
}

// clearCookies drops the browser's cookies: the admin token cookie that
// GET /?token= set.
func clearCookies(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
	_, err := cdp.Call(ctx, t, network.ClearBrowserCookies, cdp.Empty{})
	return chromedp.Void{}, err
}

// With a token, the page opened through /?token= works on the cookie; when
// its requests are refused later (the cookie is gone), it asks for the
// token in the page, says so when the token is wrong, and then sends it as
// Authorization: Bearer — for the status, and for a restart.
func TestDashboardAsksForTheAdminToken(t *testing.T) {
	const token = "s3cret-dash-token"
	b := openBrowser(t)
	d := startDashServer(t, map[string]string{"index": "normal", "api_users": "normal"}, "  admin_token: \""+token+"\"\n")
	resp, err := http.Get(d.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET / without the token: %s, want 401", resp.Status)
	}
	b.do("load the dashboard with the token", chromedp.Navigate(d.admin+"/?token="+token), chromedp.WaitVisible(chromedp.ID("workers")))
	b.waitJS("both workers", cell("index", "state")+` === "healthy" && `+cell("api_users", "state")+` === "healthy"`)
	if got := b.text(`location.search`); got != "" {
		t.Errorf("the token stays in the address bar: %q", got)
	}

	b.do("drop the token cookie", clearCookies)
	b.waitJS("the token form", `!document.getElementById("auth").hidden`)
	b.do("enter a wrong token", chromedp.SendKeys(chromedp.ID("auth-token"), "wrong"), chromedp.Click(chromedp.CSS(`#auth button[type="submit"]`)))
	b.waitJS("the wrong token refused", `!document.getElementById("auth").hidden && document.getElementById("auth-msg").textContent.includes("refused")`)
	b.shot("dashboard-token.png")
	b.do("enter the token", chromedp.SendKeys(chromedp.ID("auth-token"), token), chromedp.Click(chromedp.CSS(`#auth button[type="submit"]`)))
	b.waitJS("the form gone and the token kept for this tab", `document.getElementById("auth").hidden && sessionStorage.getItem("tqserver.admin_token") === `+js(token))
	b.waitJS("the server shown as running again", `document.getElementById("srv-running").textContent === "running"`)

	b.do("press Restart on index", chromedp.Click(chromedp.CSS(`#workers-body .row[data-worker="index"] button.restart`)))
	b.waitJS("the restart done", `(document.querySelector("#notices .notice")?.textContent ?? "").startsWith("restart index")`)
	if got := b.text(`document.querySelector("#notices .notice").className`); got != "notice" {
		t.Fatalf("restart with the bearer token: %s", b.text(`document.querySelector("#notices .notice").textContent`))
	}
	operator := false
	for _, r := range d.history(t, "index") {
		operator = operator || r.Reason == "operator"
	}
	if !operator {
		t.Fatal("no operator record for index after the restart")
	}
}

// checkRequests fails t unless the page asked only the API, at most one
// status request per 2 s for all workers, never one per worker; restarts
// are the restart paths the test pressed.
func checkRequests(t *testing.T, b *browser, restarts ...string) {
	t.Helper()
	var got struct {
		Elapsed float64  `json:"elapsed"`
		URLs    []string `json:"urls"`
	}
	raw := b.text(`JSON.stringify({elapsed: performance.now(), urls: performance.getEntriesByType("resource").map(e => new URL(e.name).pathname)})`)
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"/v1/history": true, "/v1/events": true, "/v1/reload": true}
	for _, r := range restarts {
		allowed[r] = true
	}
	statuses := 0
	for _, u := range got.URLs {
		switch {
		case u == "/v1/status":
			statuses++
		case !allowed[u]:
			t.Errorf("the page requested %s", u)
		}
	}
	if max := int(got.Elapsed/2000) + 1; statuses > max {
		t.Errorf("%d status requests in %.1fs: more than one per 2 s", statuses, got.Elapsed/1000)
	}
	if statuses == 0 {
		t.Error("the page never polled /v1/status")
	}
}

// The page at two hundred workers: every row shown, one status request per
// poll for all of them, a restart in the middle shown live, and rows
// updated in place rather than rebuilt on each update.
func TestDashboardAt200Workers(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping 200 worker processes in -short mode")
	}
	const n = 200
	b := openBrowser(t)
	workers := map[string]string{}
	for i := 1; i <= n; i++ {
		workers[fmt.Sprintf("w%03d", i)] = "normal"
	}
	d := startDashServer(t, workers, "")
	b.do("load the dashboard", chromedp.Navigate(d.admin+"/"), chromedp.WaitVisible(chromedp.ID("workers")))
	chromiumtest.WaitJS(t, b.ctx, 2*wait, "200 healthy rows", `(() => { const s = [...document.querySelectorAll('#workers-body [data-col="state"]')]; `+
		`return s.length === `+fmt.Sprint(n)+` && s.every(c => c.textContent === "healthy") })()`)
	b.waitJS("the live stream connected", `document.getElementById("live").textContent === "live"`)
	// Long tasks (over 50 ms) from here on, for the log: on a shared
	// machine their length says more about the machine than the page.
	chromiumtest.Eval[bool](t, b.ctx, `window.tqLong = []; new PerformanceObserver(l => { for (const e of l.getEntries()) window.tqLong.push(Math.round(e.duration)) }).observe({type: "longtask"}); true`)
	// What the page must not do at any load: rebuild the rows it has. The
	// same row elements must still be there after the restart and polls.
	chromiumtest.Eval[bool](t, b.ctx, `window.tqRows = [document.querySelector('#workers-body .row[data-worker="w001"]'), `+
		`document.querySelector('#workers-body .row[data-worker="w100"]'), document.querySelector('#timeline-body .row')]; true`)
	old := d.healthyPID(t, "w100")
	b.do("press Restart on w100", chromedp.Click(chromedp.CSS(`#workers-body .row[data-worker="w100"] button.restart`)))
	var newPID int
	testrig.WaitFor(t, wait, "a new healthy w100", func() bool {
		newPID = d.healthyPID(t, "w100")
		return newPID != 0 && newPID != old
	})
	b.waitJS("the operator record and the new pid", `document.querySelector('#timeline-body .row[data-worker="w100"][data-reason="operator"]') !== null && `+
		cell("w100", "pids")+` === "`+fmt.Sprint(newPID)+`"`)
	// Two more polls of the status of all 200 workers.
	polls := `performance.getEntriesByType("resource").filter(e => e.name.endsWith("/v1/status")).length`
	before := chromiumtest.Eval[int](t, b.ctx, polls)
	b.waitJS("two more status polls", polls+` >= `+fmt.Sprint(before+2))
	b.shot("dashboard-200-workers.png")
	t.Logf("long tasks since the page loaded (ms): %s", b.text(`JSON.stringify(window.tqLong)`))
	if !chromiumtest.Eval[bool](t, b.ctx, `window.tqRows.every(r => r !== null && r.isConnected)`) {
		t.Error("rows were rebuilt by the updates; they must be updated in place (one new row per record)")
	}
	if got := chromiumtest.Eval[int](t, b.ctx, `document.querySelectorAll("#workers-body .row").length`); got != n {
		t.Errorf("%d worker rows, want %d", got, n)
	}
	checkRequests(t, b, "/v1/workers/w100/restart")
}

// The server stops and starts again under an open page: the page says it
// is reconnecting, follows the new server without a reload, and then holds
// every record of the log, also those appended while it was disconnected
// (Last-Event-ID replay), each once.
func TestDashboardReconnectsWithoutLosingRecords(t *testing.T) {
	b := openBrowser(t)
	d := startDashServer(t, map[string]string{"index": "normal"}, "")
	b.do("load the dashboard", chromedp.Navigate(d.admin+"/"), chromedp.WaitVisible(chromedp.ID("workers")))
	b.waitJS("index healthy and the stream live", cell("index", "state")+` === "healthy" && document.getElementById("live").textContent === "live"`)
	chromiumtest.Eval[bool](t, b.ctx, `window.tqNoReload = true`)

	d.Stop(15 * time.Second)
	b.waitJS("the page reconnecting", `document.getElementById("live").textContent !== "live"`)
	s2 := testrig.StartServerT(t, testrig.ServerOptions{Bin: serverBin(t), Root: d.Root()}, wait)
	var pid int
	testrig.WaitFor(t, wait, "index healthy under the new server", func() bool {
		pid = (&dashServer{Server: s2}).healthyPID(t, "index")
		return pid != 0
	})
	b.waitJS("the page live again with the new index", `document.getElementById("live").textContent === "live" && `+
		cell("index", "pids")+` === "`+fmt.Sprint(pid)+`" && `+cell("index", "state")+` === "healthy"`)
	if !chromiumtest.Eval[bool](t, b.ctx, `window.tqNoReload === true`) {
		t.Fatal("the page reloaded itself")
	}
	var want []string
	for _, r := range (&dashServer{Server: s2}).history(t, "") {
		want = append(want, fmt.Sprint(r.Seq))
	}
	wantJSON, _ := json.Marshal(want)
	b.waitJS("every record of the log in the timeline, once", `(() => { const seqs = [...document.querySelectorAll("#timeline-body .row")].map(r => r.dataset.seq); `+
		`const want = `+string(wantJSON)+`; return new Set(seqs).size === seqs.length && want.every(s => seqs.includes(s)) })()`)
	got := b.text(`JSON.stringify([...document.querySelectorAll("#timeline-body .row")].map(r => r.dataset.event))`)
	for _, ev := range []string{"server_stop", "server_start"} {
		if !bytes.Contains([]byte(got), []byte(`"`+ev+`"`)) {
			t.Errorf("no %s row in the timeline: %s", ev, got)
		}
	}
	b.shot("dashboard-reconnected.png")
}

// Dev mode: an edit that does not compile shows as the worker's last
// reason, build_failed in red, and one click shows the compiler's output
// with file:line; the instance keeps serving meanwhile.
func TestDashboardShowsAFailedBuild(t *testing.T) {
	b := openBrowser(t)
	repo, err := testrig.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	source, err := os.ReadFile(filepath.Join(repo, testrig.TestWorkerPkg, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		path := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		// Write then rename, so the watcher never builds half a file.
		if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/dashapp\n\ngo 1.22\n")
	write("workers/index/src/main.go", string(source))
	d := startDashServerOn(t, root, "dev", nil, "")
	b.do("load the dashboard", chromedp.Navigate(d.admin+"/"), chromedp.WaitVisible(chromedp.ID("workers")))
	b.waitJS("index healthy and the stream live", cell("index", "state")+` === "healthy" && document.getElementById("live").textContent === "live"`)

	write("workers/index/src/main.go", string(source)+"\nfunc broken( {\n")
	chromiumtest.WaitJS(t, b.ctx, 2*wait, "index's last reason build_failed", cell("index", "reason")+` === "build_failed"`)
	if got := b.text(cell("index", "state")); got != "healthy" {
		t.Errorf("index shows %q after a failed build; the running instance keeps serving", got)
	}
	b.do("open the failed build", chromedp.Click(chromedp.CSS(`#workers-body .row[data-worker="index"] [data-col="reason"]`)))
	b.waitJS("the compiler's output", `document.getElementById("detail").open && /main\.go:\d+/.test(document.getElementById("detail-output").textContent)`)
	b.shot("dashboard-build-failed.png")
}
