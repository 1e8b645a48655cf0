package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// The admin TCP listener (CONTRACT.md §9): every test puts it on a free
// loopback port or turns it off, except the one about the default address.

func freePort(t testing.TB) int {
	t.Helper()
	p, err := testrig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// adminConfig is fastConfig with the admin listener at addr (quoted as
// given) and the extra server keys (each "  key: value\n").
func adminConfig(addr, extraServer string) string {
	return fastConfig + "server:\n  admin_listen: \"" + addr + "\"\n" + extraServer
}

// adminDo sends one request to the admin listener; bearer "" sends none.
func adminDo(t testing.TB, method, url, bearer string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 60 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// sseEvent is one server-sent event of /v1/events.
type sseEvent struct {
	id   uint64
	data string
	rec  store.Record
}

// sseStream reads /v1/events in a goroutine until the test ends.
type sseStream struct {
	events <-chan sseEvent
	cancel func()
}

func openEvents(t testing.TB, url string, hdr map[string]string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s, Content-Type %q", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.ParseUint(strings.TrimPrefix(line, "id: "), 10, 64)
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
				_ = json.Unmarshal([]byte(ev.data), &ev.rec)
			case line == "" && ev.data != "":
				select {
				case ch <- ev:
				default: // the test stopped reading; never block
				}
				ev = sseEvent{}
			}
		}
	}()
	s := &sseStream{events: ch, cancel: func() { cancel(); <-done }}
	t.Cleanup(s.cancel)
	return s
}

// next returns the first event that pred accepts, failing after timeout.
func (s *sseStream) next(t testing.TB, timeout time.Duration, what string, pred func(sseEvent) bool) sseEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("event stream ended while waiting for %s", what)
			}
			if pred(ev) {
				return ev
			}
		case <-deadline.C:
			t.Fatalf("no event %s within %s", what, timeout)
		}
	}
}

// POST /v1/workers/{name}/restart on the admin listener replaces every
// instance under load without a failed request, with reason operator; the
// records reach an open /v1/events stream; Last-Event-ID replays from the
// log; an unknown worker is 404 (API) and an error (CLI).
func TestAdminRestartZeroDowntimeAndEvents(t *testing.T) {
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	root := newRoot(t, strings.Replace(adminConfig(fmt.Sprintf("127.0.0.1:%d", port), ""),
		"  default:\n", "  default:\n    instances: 2\n", 1))
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	testrig.WaitFor(t, 10*time.Second, "two healthy instances", func() bool {
		st := s.status()
		return len(st.Workers) == 1 && len(st.Workers[0].Instances) == 2 &&
			st.Workers[0].Instances[0].State == "healthy" && st.Workers[0].Instances[1].State == "healthy"
	})
	oldPIDs := map[int]bool{}
	for _, in := range s.status().Workers[0].Instances {
		oldPIDs[in.PID] = true
	}

	live := openEvents(t, base+"/v1/events", nil)
	l := testrig.StartLoad(s.URL("/"), 8, 1_000_000, 90*time.Second)
	select {
	case <-l.Await("v1 "):
	case <-time.After(10 * time.Second):
		l.Finish()
		t.Fatal("load got no answer within 10s")
	}
	code, _, body := adminDo(t, "POST", base+"/v1/workers/index/restart", "", nil)
	var res events.ReloadResult
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil {
		l.Finish()
		t.Fatalf("restart: %d %q (%v)", code, body, err)
	}
	ok, failed, errs := l.Finish()
	t.Logf("restart of 2 instances under 8 keep-alive clients: %d ok, %d failed; result %+v", ok, failed, res)
	if failed != 0 {
		t.Fatalf("%d failed requests during the restart: %v", failed, errs)
	}
	if ok < 100 {
		t.Fatalf("load too small to mean anything: %d", ok)
	}
	serving := 0
	for _, c := range res.Changes {
		if strings.HasSuffix(c, ": serving") {
			serving++
		}
	}
	if len(res.Failures) != 0 || res.Error != "" || len(res.Changes) == 0 || res.Changes[0] != "index: operator" || serving != 2 {
		t.Fatalf("restart result: %+v", res)
	}

	// The stream saw both new instances become healthy, reason operator.
	var first uint64
	for i := range 2 {
		ev := live.next(t, 10*time.Second, "health_ok with reason operator", func(ev sseEvent) bool {
			return ev.rec.Worker == "index" && ev.rec.To == "healthy" && ev.rec.Reason == "operator"
		})
		if ev.id != ev.rec.Seq || ev.id == 0 {
			t.Fatalf("event id %d for record seq %d", ev.id, ev.rec.Seq)
		}
		if i == 0 {
			first = ev.id
		}
	}
	recs := history(t, root, "--worker", "index")
	if n := count(recs, func(r store.Record) bool { return r.Event == "start" && r.Reason == "operator" }); n != 2 {
		t.Fatalf("want 2 starts with reason operator, got %d", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.To == "draining" && r.Reason == "replaced" }); n != 2 {
		t.Fatalf("want 2 replaced drains, got %d", n)
	}
	for _, in := range s.status().Workers[0].Instances {
		if oldPIDs[in.PID] {
			t.Fatalf("instance %s still runs the old pid %d", in.Instance, in.PID)
		}
	}

	// A reconnect with Last-Event-ID gets the records after it from the
	// log, as stored, before any new one.
	all := map[uint64]string{}
	lines, err := testrig.HistoryLines(tqBin, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range lines {
		var r store.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		all[r.Seq] = line
	}
	again := openEvents(t, base+"/v1/events", map[string]string{"Last-Event-ID": strconv.FormatUint(first-1, 10)})
	for want := first; want < first+3; want++ {
		ev := again.next(t, 10*time.Second, "a replayed record", func(sseEvent) bool { return true })
		if ev.id != want || ev.data != all[want] {
			t.Fatalf("replayed event %d: %q, want seq %d: %q", ev.id, ev.data, want, all[want])
		}
	}

	// Unknown workers: 404 with a JSON error; the CLI fails with it.
	code, _, body = adminDo(t, "POST", base+"/v1/workers/nosuch/restart", "", nil)
	if code != 404 || !strings.Contains(body, `"error":"unknown worker nosuch"`) {
		t.Fatalf("unknown worker: %d %q", code, body)
	}
	if _, stderr, err := runCLI(t, "restart", "--root", root, "nosuch"); err == nil || !strings.Contains(stderr, "unknown worker nosuch") {
		t.Fatalf("tqserver restart nosuch: %v, stderr %q", err, stderr)
	}
	// The CLI goes through the socket and reports what the API does.
	out, stderr, err := runCLI(t, "restart", "--root", root, "index")
	if err != nil || !strings.Contains(out, "index: operator\n") || strings.Count(out, ": serving") != 2 {
		t.Fatalf("tqserver restart index: %v, stdout %q, stderr %q", err, out, stderr)
	}

	// An open stream neither delays the shutdown nor misses server_stop.
	s.signal(syscall.SIGTERM)
	live.next(t, 20*time.Second, "server_stop", func(ev sseEvent) bool { return ev.rec.Event == "server_stop" })
	if err := s.wait(20 * time.Second); err != nil {
		t.Fatalf("server exit: %v", err)
	}
}

// With a token every path but /healthz answers 401 without it; the
// environment's token wins over the file's; the browser's cookie works; a
// cross-site POST is refused. Bound to 0.0.0.0, which the token allows.
func TestAdminTokenRules(t *testing.T) {
	t.Setenv("TQ_ADMIN_TOKEN", "env-token")
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	root := newRoot(t, adminConfig(fmt.Sprintf("0.0.0.0:%d", port), "  admin_token: file-token\n"))
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)

	if code, _, body := adminDo(t, "GET", base+"/healthz", "", nil); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz without a token: %d %q", code, body)
	}
	for _, p := range []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/v1/status"}, {"GET", "/v1/history"}, {"GET", "/v1/events"},
		{"GET", "/metrics"}, {"POST", "/v1/reload"}, {"POST", "/v1/workers/index/restart"}, {"GET", "/nosuch"},
	} {
		for _, bearer := range []string{"", "file-token", "env-tokenX", "env-toke"} {
			code, h, body := adminDo(t, p.method, base+p.path, bearer, nil)
			if code != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%s %s with token %q: %d %q, want 401", p.method, p.path, bearer, code, body)
			}
		}
	}
	code, _, body := adminDo(t, "GET", base+"/v1/status", "env-token", nil)
	if code != 200 || !strings.Contains(body, `"running":true`) {
		t.Fatalf("/v1/status with the token: %d %q", code, body)
	}
	if code, _, body := adminDo(t, "POST", base+"/v1/reload", "env-token", nil); code != 200 || !strings.Contains(body, `"changes"`) {
		t.Fatalf("POST /v1/reload with the token: %d %q", code, body)
	}
	// A page of another site cannot make the browser POST, token or not.
	if code, _, body := adminDo(t, "POST", base+"/v1/reload", "env-token", map[string]string{"Sec-Fetch-Site": "cross-site"}); code != 403 {
		t.Fatalf("cross-site POST: %d %q, want 403", code, body)
	}
	// The dashboard in a browser: ?token= sets a cookie and redirects.
	code, h, _ := adminDo(t, "GET", base+"/?token=env-token", "", nil)
	cookie := h.Get("Set-Cookie")
	if code != 303 || h.Get("Location") != "/" || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Fatalf("GET /?token=: %d, Location %q, Set-Cookie %q", code, h.Get("Location"), cookie)
	}
	nameValue, _, _ := strings.Cut(cookie, ";")
	if code, h, body := adminDo(t, "GET", base+"/", "", map[string]string{"Cookie": nameValue}); code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "/v1/events") {
		t.Fatalf("dashboard with the cookie: %d %q", code, body)
	}
	if code, _, _ := adminDo(t, "GET", base+"/?token=file-token", "", nil); code != 401 {
		t.Fatalf("GET /?token= with the wrong token: %d, want 401", code)
	}
	ev := openEvents(t, base+"/v1/events?last_event_id=0", map[string]string{"Authorization": "Bearer env-token"})
	if e := ev.next(t, 10*time.Second, "the first record", func(sseEvent) bool { return true }); e.id != 1 || e.rec.Event != "server_start" {
		t.Fatalf("first replayed event: %d %q", e.id, e.data)
	}
	// The socket needs no token: `status` reads through it.
	if st := s.status(); !st.Running {
		t.Fatalf("status over the socket: %+v", st)
	}
}

// startFailing runs `tqserver serve` on root expecting it to refuse to
// start; it returns the server's output.
func startFailing(t *testing.T, root string) string {
	t.Helper()
	srv, err := testrig.StartServer(testrig.ServerOptions{Bin: tqBin, Root: root, Mode: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	exit, ok := srv.Wait(30 * time.Second)
	if !ok {
		srv.Stop(5 * time.Second)
		t.Fatalf("server did not refuse to start:\n%s", srv.Logs())
	}
	var ee interface{ ExitCode() int }
	if !errors.As(exit, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit %v, want a non-zero status:\n%s", exit, srv.Logs())
	}
	if n := len(history(t, root)); n != 0 {
		t.Fatalf("the server recorded %d records before refusing to start:\n%s", n, srv.Logs())
	}
	return srv.Logs()
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// A non-loopback address without a token: the server refuses to start,
// with one line, before it records or starts anything.
func TestAdminRefusesNonLoopbackWithoutToken(t *testing.T) {
	t.Setenv("TQ_ADMIN_TOKEN", "") // empty is unset
	for _, host := range []string{"0.0.0.0", "", "[::]"} {
		port := freePort(t)
		addr := fmt.Sprintf("%s:%d", host, port)
		root := newRoot(t, adminConfig(addr, ""))
		install(t, root, "index", "v1", "normal")
		out := startFailing(t, root)
		want := "tqserver: server.admin_listen " + addr + " is not a loopback address and no token is set: set server.admin_token or TQ_ADMIN_TOKEN, or listen on 127.0.0.1"
		if got := lastLine(out); got != want {
			t.Fatalf("%s: last line\n%q\nwant\n%q\nall output:\n%s", addr, got, want, out)
		}
	}
}

// An address set explicitly that cannot be bound is an error at start.
func TestAdminExplicitAddressTakenFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	root := newRoot(t, adminConfig(addr, ""))
	install(t, root, "index", "v1", "normal")
	out := startFailing(t, root)
	want := "tqserver: server.admin_listen " + addr + `: address already in use (set another address, or "" for no admin listener)`
	if got := lastLine(out); got != want {
		t.Fatalf("last line\n%q\nwant\n%q\nall output:\n%s", got, want, out)
	}
}

// holdDefaultAdmin binds 127.0.0.1:8081 for the test, waiting (bounded) for
// another test's server to let it go.
func holdDefaultAdmin(t *testing.T) {
	t.Helper()
	var ln net.Listener
	testrig.WaitFor(t, 60*time.Second, "127.0.0.1:8081 to be free", func() bool {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:8081")
		return err == nil || !errors.Is(err, syscall.EADDRINUSE)
	})
	if ln == nil {
		t.Fatal("cannot bind 127.0.0.1:8081")
	}
	t.Cleanup(func() { ln.Close() })
}

// Left unset, a taken default address is one warning and the server runs
// without the listener; "" turns it off without a word.
func TestAdminDefaultAddressTakenWarns(t *testing.T) {
	holdDefaultAdmin(t)
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	warn := `admin listener off: the default address 127.0.0.1:8081 is taken (another app root on this host?); set server.admin_listen to a free address, or \"\" to silence this`
	if n := strings.Count(s.Logs(), warn); n != 1 {
		t.Fatalf("warning seen %d times, want once:\n%s", n, s.Logs())
	}
	if !strings.Contains(s.Logs(), `"level":"warn"`) {
		t.Fatalf("not logged as a warning:\n%s", s.Logs())
	}

	off := newRoot(t, adminConfig("", ""))
	install(t, off, "index", "v1", "normal")
	s2 := startServer(t, off)
	waitBody(t, s2.URL("/"), "v1 index", 10*time.Second)
	if strings.Contains(s2.Logs(), "admin listener") {
		t.Fatalf("admin_listen \"\" still mentions the listener:\n%s", s2.Logs())
	}
}

// A restart starts what is on disk, so it refuses a binary that no reload
// has checked (that is a deploy: verified, reason binary_changed); the same
// bytes copied again are no obstacle.
func TestRestartRefusesUnloadedBinary(t *testing.T) {
	root := newRoot(t, adminConfig("", ""))
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)

	install(t, root, "index", "v1", "normal") // new inode and mtime, same bytes
	out, stderr, err := runCLI(t, "restart", "--root", root, "index")
	if err != nil || !strings.Contains(out, "index: operator\n") {
		t.Fatalf("restart with the same bytes reinstalled: %v, stdout %q, stderr %q", err, out, stderr)
	}

	install(t, root, "index", "v2", "normal")
	out, stderr, err = runCLI(t, "restart", "--root", root, "index")
	want := "tqserver: index: nothing restarted: its binary on disk is not the one running (a deploy not yet loaded); run `tqserver reload` to deploy it"
	if err == nil || strings.TrimSpace(stderr) != want {
		t.Fatalf("restart with an unloaded binary: %v, stdout %q, stderr\n%q\nwant\n%q", err, out, stderr, want)
	}
	if _, body := get(t, s.URL("/")); !strings.HasPrefix(body, "v1 ") {
		t.Fatalf("after the refused restart: %q", body)
	}
	if n := count(history(t, root, "--worker", "index"), func(r store.Record) bool { return r.Event == "start" && r.Reason == "operator" }); n != 1 {
		t.Fatalf("%d operator starts, want 1 (the refused restart started nothing)", n)
	}
	if out, _, err := runCLI(t, "reload", "--root", root); err != nil || !strings.Contains(out, "index: binary_changed") {
		t.Fatalf("reload: %v %q", err, out)
	}
	waitBody(t, s.URL("/"), "v2 index", 10*time.Second)
	if out, stderr, err := runCLI(t, "restart", "--root", root, "index"); err != nil || !strings.Contains(out, "index: operator\n") {
		t.Fatalf("restart after the reload: %v, stdout %q, stderr %q", err, out, stderr)
	}
}
