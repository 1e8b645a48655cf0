package supervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// deployFixture runs a prod supervisor in-process with one worker, index,
// whose versions are the same test worker binary with its version string
// patched (ver-1111, ver-2222, …): equal sizes, different bytes.
type deployFixture struct {
	*rig
	srv  *testFront
	base []byte // the ver-1111 binary
	root string
	bin  string // workers/index/bin/index
}

const baseVersion = "ver-1111"

func newDeployFixture(t *testing.T, adjust func(*config.Config)) *deployFixture {
	t.Helper()
	root := t.TempDir()
	built := filepath.Join(t.TempDir(), "testworker")
	testrig.BuildTestWorker(t, built, baseVersion, "")
	base, err := os.ReadFile(built)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 26000, 26999
	cfg.Workers.RestartDelayMs = 10
	if adjust != nil {
		adjust(cfg)
	}
	f := &deployFixture{base: base, root: root, bin: testrig.WorkerBinPath(root, "index")}
	f.deployBytes(t, base)
	px := proxy.New(proxy.Options{})
	f.rig = startRig(t, root, "prod", cfg, px, nil)
	f.srv = newFront(t, px)
	t.Cleanup(f.srv.Close)
	f.waitServing(baseVersion)
	return f
}

// version returns the base binary with its version string replaced.
func (f *deployFixture) version(t *testing.T, v string) []byte {
	t.Helper()
	if len(v) != len(baseVersion) {
		t.Fatalf("version %q must be as long as %q", v, baseVersion)
	}
	if !bytes.Contains(f.base, []byte(baseVersion)) {
		t.Fatalf("test worker binary does not hold %q", baseVersion)
	}
	return bytes.ReplaceAll(f.base, []byte(baseVersion), []byte(v))
}

// deployBytes installs data the way rsync does: temp file, then rename.
func (f *deployFixture) deployBytes(t *testing.T, data []byte) {
	t.Helper()
	if err := testrig.InstallBytes(f.root, "index", data); err != nil {
		t.Fatal(err)
	}
}

func (f *deployFixture) writeSum(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(f.bin+".sha256", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *deployFixture) body() string {
	resp, err := http.Get(f.srv.URL + "/")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (f *deployFixture) waitServing(v string) {
	f.t.Helper()
	f.waitFor("GET / answers "+v, func() bool { return strings.HasPrefix(f.body(), v+" ") })
}

func (f *deployFixture) reload() events.ReloadResult {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.sup.Reload(ctx, "test")
}

// starts counts the instances ever started.
func (f *deployFixture) starts() int {
	f.t.Helper()
	recs, err := f.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Event == "start" {
			n++
		}
	}
	return n
}

func (f *deployFixture) mtime(t *testing.T) time.Time {
	t.Helper()
	fi, err := os.Stat(f.bin)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

func nothingChanged(r events.ReloadResult) bool {
	return len(r.Changes) == 0 && len(r.Failures) == 0 && r.Error == ""
}

// Fault 4: a binary counts as changed by its content, not its stat.
func TestReloadComparesContent(t *testing.T) {
	f := newDeployFixture(t, nil)

	// Touched only: a new mtime, the same bytes.
	later := f.mtime(t).Add(time.Hour)
	if err := os.Chtimes(f.bin, later, later); err != nil {
		t.Fatal(err)
	}
	if r := f.reload(); !nothingChanged(r) || f.starts() != 1 {
		t.Fatalf("touch: reload %+v, %d starts (want nothing changed, 1)", r, f.starts())
	}

	// Copied again (new inode, new mtime, same bytes), as a full rsync does.
	f.deployBytes(t, f.base)
	if r := f.reload(); !nothingChanged(r) || f.starts() != 1 {
		t.Fatalf("same bytes again: reload %+v, %d starts (want nothing changed, 1)", r, f.starts())
	}

	// New content with the same size and the same mtime (a reproducible
	// build, rsync -a).
	mt := f.mtime(t)
	f.deployBytes(t, f.version(t, "ver-2222"))
	if err := os.Chtimes(f.bin, mt, mt); err != nil {
		t.Fatal(err)
	}
	r := f.reload()
	if !slices.Contains(r.Changes, "index: "+sm.ReasonBinaryChanged) || len(r.Failures) != 0 {
		t.Fatalf("same size and mtime, new bytes: reload %+v", r)
	}
	f.waitServing("ver-2222")

	// New content with an older mtime (a rollback deployed with rsync -a).
	f.deployBytes(t, f.version(t, "ver-3333"))
	older := mt.Add(-24 * time.Hour)
	if err := os.Chtimes(f.bin, older, older); err != nil {
		t.Fatal(err)
	}
	r = f.reload()
	if !slices.Contains(r.Changes, "index: "+sm.ReasonBinaryChanged) || len(r.Failures) != 0 {
		t.Fatalf("older mtime, new bytes: reload %+v", r)
	}
	f.waitServing("ver-3333")
	if n := f.starts(); n != 3 {
		t.Fatalf("%d instances started, want 3 (start, ver-2222, ver-3333)", n)
	}
}

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Fault 5: a rejected binary is not recorded as running, so deploying the
// matching .sha256 afterwards starts it; incomplete binaries are rejected.
func TestReloadChecksumThenMatchingPair(t *testing.T) {
	f := newDeployFixture(t, nil)
	v2 := f.version(t, "ver-2222")

	// A stale .sha256 (of the running binary, as sha256sum prints it).
	f.deployBytes(t, v2)
	f.writeSum(t, sumHex(f.base)+"  index\n")
	r := f.reload()
	if len(r.Failures) != 1 || !strings.Contains(r.Failures[0], "does not match") {
		t.Fatalf("stale .sha256: reload %+v", r)
	}
	if f.starts() != 1 || !strings.HasPrefix(f.body(), baseVersion+" ") {
		t.Fatalf("stale .sha256: %d starts, serving %q", f.starts(), f.body())
	}
	// Rejected again on the next reload: the deploy is still broken.
	if r := f.reload(); len(r.Failures) != 1 {
		t.Fatalf("second reload of the rejected pair: %+v", r)
	}

	// The matching .sha256 arrives (the digest alone, upper case).
	f.writeSum(t, strings.ToUpper(sumHex(v2))+"\n")
	r = f.reload()
	if !slices.Contains(r.Changes, "index: "+sm.ReasonBinaryChanged) || len(r.Failures) != 0 {
		t.Fatalf("matching pair: reload %+v", r)
	}
	f.waitServing("ver-2222")
	if err := os.Remove(f.bin + ".sha256"); err != nil {
		t.Fatal(err)
	}

	// Incomplete binaries: cut short, and empty. Never started.
	v3 := f.version(t, "ver-3333")
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", v3[:len(v3)*2/3], "complete"},
		{"empty", nil, "empty"},
		{"header only", v3[:64], "complete"},
	} {
		f.deployBytes(t, c.data)
		r := f.reload()
		if len(r.Failures) != 1 || !strings.Contains(r.Failures[0], c.want) {
			t.Fatalf("%s binary: reload %+v", c.name, r)
		}
		if f.starts() != 2 || !strings.HasPrefix(f.body(), "ver-2222 ") {
			t.Fatalf("%s binary: %d starts, serving %q", c.name, f.starts(), f.body())
		}
	}
	recs, err := f.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	for _, rec := range recs {
		if rec.Event == sm.EventBinaryRejected && rec.Reason == sm.ReasonChecksumMismatch {
			rejected++
		}
	}
	if rejected != 5 {
		t.Fatalf("%d checksum_mismatch records, want 5 (stale .sha256 twice, three incomplete)", rejected)
	}

	// A complete binary afterwards deploys.
	f.deployBytes(t, v3)
	if r := f.reload(); !slices.Contains(r.Changes, "index: "+sm.ReasonBinaryChanged) {
		t.Fatalf("complete binary after rejections: reload %+v", r)
	}
	f.waitServing("ver-3333")
}

func TestParseSHA256File(t *testing.T) {
	d := strings.Repeat("ab", 32)
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{d, d, true},
		{d + "\n", d, true},
		{strings.ToUpper(d) + "\r\n", d, true},
		{d + "  index\n", d, true},
		{d + " *index\n", d, true},
		{"\n" + d + "  bin/index\n\n", d, true},
		{"", "", false},
		{"  \n", "", false},
		{d[:63], "", false},
		{d + "a", "", false},
		{strings.Repeat("zz", 32), "", false},
		{d + "  index\n" + d + "  other\n", "", false},
	} {
		got, err := parseSHA256File([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parse %q: %q, %v (want %q ok=%v)", c.in, got, err, c.want, c.ok)
		}
	}
}

// Fault 6: reloads that arrive while one is in progress report its outcome.
func TestConcurrentReloadsShareOutcome(t *testing.T) {
	const n = 10
	for _, healthy := range []bool{false, true} {
		name := "never-healthy"
		if healthy {
			name = "healthy"
		}
		t.Run(name, func(t *testing.T) {
			f := newDeployFixture(t, func(c *config.Config) {
				d := c.Workers.Default
				d.HealthTimeoutMs = 3000
				c.Workers.Default = d
			})
			// The new instance answers /health with 503 while this file is
			// there (the running one is not probed within the test).
			unhealthy := filepath.Join(f.root, "workers", "index", "unhealthy")
			if err := os.WriteFile(unhealthy, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			checks := func() int { return strings.Count(f.logs.String(), `"message":"change check done"`) }
			before := checks()
			f.deployBytes(t, f.version(t, "ver-2222"))
			type answer struct {
				res  events.ReloadResult
				body string // GET / right after the answer
			}
			answers := make(chan answer, n)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					r := f.reload()
					answers <- answer{r, f.body()}
				})
			}
			f.waitFor("all reloads checked", func() bool { return checks() == before+n })
			if healthy {
				if err := os.Remove(unhealthy); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			close(answers)
			got := 0
			for a := range answers {
				got++
				r := a.res
				if !slices.Contains(r.Changes, "index: "+sm.ReasonBinaryChanged) {
					t.Errorf("reload does not report the change: %+v", r)
				}
				if healthy {
					if len(r.Failures) != 0 || r.Error != "" || !strings.HasPrefix(a.body, "ver-2222 ") {
						t.Errorf("reload %+v answered, then GET / gave %q", r, a.body)
					}
				} else if len(r.Failures) != 1 || !strings.Contains(r.Failures[0], "index-2") {
					t.Errorf("reload does not report the failed start: %+v", r)
				}
			}
			if got != n {
				t.Fatalf("%d answers, want %d", got, n)
			}
			if f.starts() != 2 {
				t.Fatalf("%d starts, want 2 (one deploy)", f.starts())
			}
			if !healthy && !strings.HasPrefix(f.body(), baseVersion+" ") {
				t.Fatalf("old instance not serving after the failed deploy: %q", f.body())
			}
		})
	}
}

// Fault 7: once the server is stopping, a reload starts nothing.
func TestReloadWhileShuttingDownStartsNothing(t *testing.T) {
	f := newDeployFixture(t, nil)
	f.sup.BeginShutdown()
	f.deployBytes(t, f.version(t, "ver-2222"))
	r := f.reload()
	if r.Error != "server is shutting down" || len(r.Changes) != 0 {
		t.Fatalf("reload while stopping: %+v", r)
	}
	if f.starts() != 1 || !strings.HasPrefix(f.body(), baseVersion+" ") {
		t.Fatalf("reload while stopping started something: %d starts, serving %q", f.starts(), f.body())
	}
}

// A newer deploy while a reload waits: the earlier reload fails (its
// version never served), the newer one reports its own success without
// the superseded start's failure.
func TestNewerDeployDuringReload(t *testing.T) {
	f := newDeployFixture(t, nil)
	unhealthy := filepath.Join(f.root, "workers", "index", "unhealthy")
	if err := os.WriteFile(unhealthy, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	checks := func() int { return strings.Count(f.logs.String(), `"message":"change check done"`) }
	before := checks()
	f.deployBytes(t, f.version(t, "ver-2222"))
	first := make(chan events.ReloadResult, 1)
	go func() { first <- f.reload() }()
	f.waitFor("the first reload checked", func() bool { return checks() == before+1 })
	f.deployBytes(t, f.version(t, "ver-3333"))
	second := make(chan events.ReloadResult, 1)
	go func() { second <- f.reload() }()
	f.waitFor("the second reload checked", func() bool { return checks() == before+2 })
	if err := os.Remove(unhealthy); err != nil {
		t.Fatal(err)
	}
	r1, r2 := <-first, <-second
	if len(r1.Failures) != 1 || !strings.Contains(r1.Failures[0], "index-2: superseded") {
		t.Errorf("first reload: %+v, want index-2 superseded", r1)
	}
	if len(r2.Failures) != 0 || r2.Error != "" || !slices.Contains(r2.Changes, "index-3: serving") {
		t.Errorf("second reload: %+v, want index-3 serving and no failure", r2)
	}
	f.waitServing("ver-3333")
}

// Why did it restart, in one record: a binary_changed start says what
// changed (size, mtime, sha256 prefix, old → new) and what asked; a
// config_changed start names the keys.
func TestRestartRecordsSayWhy(t *testing.T) {
	f := newDeployFixture(t, nil)
	v2 := f.version(t, "ver-2222")
	f.deployBytes(t, v2)
	if res := f.reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload: %+v", res)
	}
	f.waitServing("ver-2222")
	last := func(reason string) store.Record {
		recs, err := f.st.Records(store.Filter{Worker: "index"})
		if err != nil {
			t.Fatal(err)
		}
		var out store.Record
		for _, r := range recs {
			if r.Event == sm.Start && r.Reason == reason {
				out = r
			}
		}
		return out
	}
	old, cur := sumHex(f.base)[:12], sumHex(v2)[:12]
	d := last(sm.ReasonBinaryChanged).Detail
	for _, want := range []string{fmt.Sprintf("size %d → %d bytes", len(f.base), len(v2)), "mtime ", "sha256 " + old + " → " + cur, "asked by test"} {
		if !strings.Contains(d, want) {
			t.Errorf("binary_changed detail %q lacks %q", d, want)
		}
	}

	yaml := "workers:\n  port_range_start: 26000\n  port_range_end: 26999\n  restart_delay_ms: 10\n  default:\n    max_requests: 100000\n    env:\n      GREETING: hi\n"
	writeServerYAML(t, f.root, yaml)
	if res := f.reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload: %+v", res)
	}
	d = last(sm.ReasonConfigChanged).Detail
	if !strings.Contains(d, "config: max_requests, env.GREETING changed") || !strings.Contains(d, "asked by test") {
		t.Errorf("config_changed detail %q does not name the keys and the asker", d)
	}
}

// Rollback by hand: the previous good binary was kept when v2 was
// deployed; `rollback` swaps back to it with reason rollback, and then
// there is no previous one left.
func TestRollbackCommand(t *testing.T) {
	f := newDeployFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if res := f.sup.Rollback(ctx, "index"); res.Error == "" || !strings.Contains(res.Error, "no previous binary") {
		t.Fatalf("rollback with nothing deployed: %+v", res)
	}
	f.deployBytes(t, f.version(t, "ver-2222"))
	if res := f.reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload: %+v", res)
	}
	f.waitServing("ver-2222")
	prev := f.sup.Status().Workers[0].Previous
	if !strings.HasPrefix(prev, filepath.Join(f.root, "var", "releases", "index")+"/") || !strings.HasSuffix(prev, sumHex(f.base)[:12]) {
		t.Fatalf("previous binary %q: want var/releases/index/%s", prev, sumHex(f.base)[:12])
	}
	// Zero downtime: load through the proxy across the rollback.
	load := testrig.StartLoad(f.srv.URL+"/", 4, 200000, time.Minute)
	res := f.sup.Rollback(ctx, "index")
	if res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("rollback: %+v", res)
	}
	f.waitServing(baseVersion)
	if ok, failed, errs := load.Finish(); failed > 0 || ok == 0 {
		t.Fatalf("rollback under load: %d ok, %d failed: %v", ok, failed, errs)
	}
	st := f.sup.Status().Workers[0]
	if st.Binary != prev || st.Previous != "" {
		t.Fatalf("after rollback: binary %q previous %q, want %q and none", st.Binary, st.Previous, prev)
	}
	recs, err := f.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(recs, func(r store.Record) bool { return r.Event == sm.Start && r.Reason == sm.ReasonRollback }); n != 1 {
		t.Fatalf("want 1 rollback start, got %d", n)
	}
	// The deploy on disk was considered: a reload changes nothing.
	if res := f.reload(); !nothingChanged(res) {
		t.Fatalf("reload after rollback: %+v", res)
	}
	if res := f.sup.Rollback(ctx, "index"); !strings.Contains(res.Error, "no previous binary") {
		t.Fatalf("second rollback: %+v", res)
	}
}

// Automatic rollback: a new binary that becomes healthy and then crashes
// within rollback_window_ms is replaced by the previous good one.
func TestAutomaticRollback(t *testing.T) {
	f := newDeployFixture(t, nil)
	bad := filepath.Join(t.TempDir(), "bad")
	testrig.BuildTestWorker(t, bad, "ver-bad1", "crashlater")
	if err := testrig.Install(f.root, "index", bad); err != nil {
		t.Fatal(err)
	}
	f.reload() // its instance is healthy at first: the reload reports it serving
	f.waitFor("a rollback start after the crash", func() bool {
		recs, _ := f.st.Records(store.Filter{Worker: "index"})
		return count(recs, func(r store.Record) bool { return r.Event == sm.Start && r.Reason == sm.ReasonRollback }) == 1
	})
	f.waitServing(baseVersion)
	recs, err := f.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Event == sm.Start && r.Reason == sm.ReasonRollback && !strings.Contains(r.Detail, "within rollback_window_ms 30000: back to the previous binary") {
			t.Fatalf("rollback record detail: %q", r.Detail)
		}
	}
	if st := f.sup.Status().Workers[0]; st.Previous != "" || !strings.Contains(st.Binary, "releases") {
		t.Fatalf("after the automatic rollback: %+v", st)
	}
}

// min_healthy_ms: a new binary that answers /health and then dies within
// the span never takes traffic; the old instance keeps serving.
func TestMinHealthyKeepsTheOldInstance(t *testing.T) {
	f := newDeployFixture(t, func(c *config.Config) { c.Workers.Default.MinHealthyMs = 3000 })
	bad := filepath.Join(t.TempDir(), "bad")
	testrig.BuildTestWorker(t, bad, "ver-bad1", "crashlater")
	if err := testrig.Install(f.root, "index", bad); err != nil {
		t.Fatal(err)
	}
	res := f.reload()
	if !strings.Contains(strings.Join(res.Failures, "\n"), "keeps serving") {
		t.Fatalf("reload of a binary that dies within min_healthy_ms: %+v", res)
	}
	if got := f.body(); !strings.HasPrefix(got, baseVersion+" ") {
		t.Fatalf("serving %q, want the old %s", got, baseVersion)
	}
	recs, err := f.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(recs, func(r store.Record) bool { return r.To == sm.Healthy && r.Reason == sm.ReasonBinaryChanged }); n != 0 {
		t.Fatalf("%d binary_changed instances became healthy; want none", n)
	}
	// Which comes first is a race: the failed probe during min_healthy_ms
	// (health_failed) or the process's exit (exited before serving). Either
	// way it is one rollback of an instance that never took traffic.
	if n := count(recs, func(r store.Record) bool {
		return r.Reason == sm.ReasonRollback && (strings.Contains(r.Detail, "within min_healthy_ms 3000") ||
			strings.Contains(r.Detail, "exited before serving"))
	}); n != 1 {
		t.Fatalf("want one rollback record (min_healthy_ms or exited before serving), got %d", n)
	}
}

// warmup_urls: each is requested before a new instance takes traffic; one
// that fails keeps the old instance serving, and all passing lets it swap.
func TestWarmupURLs(t *testing.T) {
	f := newDeployFixture(t, func(c *config.Config) { c.Workers.Default.WarmupURLs = []string{"/slow?ms=5", "/code?c=503"} })
	f.deployBytes(t, f.version(t, "ver-2222"))
	res := f.reload()
	if !strings.Contains(strings.Join(res.Failures, "\n"), "warm-up GET /code?c=503: 503") {
		t.Fatalf("reload with a failing warm-up URL: %+v", res)
	}
	if got := f.body(); !strings.HasPrefix(got, baseVersion+" ") {
		t.Fatalf("serving %q, want the old %s", got, baseVersion)
	}
	yaml := "workers:\n  port_range_start: 26000\n  port_range_end: 26999\n  restart_delay_ms: 10\n  default:\n    warmup_urls: [\"/slow?ms=5\", \"/health\"]\n"
	writeServerYAML(t, f.root, yaml)
	f.deployBytes(t, f.version(t, "ver-3333"))
	if res := f.reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload with passing warm-up URLs: %+v", res)
	}
	f.waitServing("ver-3333")
}

// deployment.switch: together. A release of two workers where one new
// binary never becomes healthy switches neither; a good release moves both
// routes in one step (their predecessors' drain records are consecutive).
func TestAtomicRelease(t *testing.T) {
	f := newDeployFixture(t, func(c *config.Config) { c.Deployment.Switch = config.SwitchTogether })
	get := func(path string) string {
		resp, err := http.Get(f.srv.URL + path)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if err := testrig.InstallBytes(f.root, "api", f.base); err != nil {
		t.Fatal(err)
	}
	if res := f.reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload adding api: %+v", res)
	}
	f.waitFor("api serving", func() bool { return strings.HasPrefix(get("/api/"), baseVersion+" ") })

	// index gets a good binary, api one that is never healthy: neither switches.
	bad := filepath.Join(t.TempDir(), "bad")
	testrig.BuildTestWorker(t, bad, "ver-bad1", "nohealth")
	f.deployBytes(t, f.version(t, "ver-2222"))
	if err := testrig.Install(f.root, "api", bad); err != nil {
		t.Fatal(err)
	}
	res := f.reload()
	if !strings.Contains(strings.Join(res.Failures, "\n"), "release of api, index aborted") {
		t.Fatalf("reload of a release with a never-healthy member: %+v", res)
	}
	if a, i := get("/api/"), get("/"); !strings.HasPrefix(a, baseVersion+" ") || !strings.HasPrefix(i, baseVersion+" ") {
		t.Fatalf("after a failed release: api %q, index %q; want both still %s", a, i, baseVersion)
	}

	// Both good: both switch, in one step, and no request fails meanwhile.
	loadIndex := testrig.StartLoad(f.srv.URL+"/", 2, 200000, time.Minute)
	loadAPI := testrig.StartLoad(f.srv.URL+"/api/", 2, 200000, time.Minute)
	if err := testrig.InstallBytes(f.root, "api", f.version(t, "ver-3333")); err != nil {
		t.Fatal(err)
	}
	f.deployBytes(t, f.version(t, "ver-3333"))
	if res := f.reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload of a good release: %+v", res)
	}
	if a, i := get("/api/"), get("/"); !strings.HasPrefix(a, "ver-3333 ") || !strings.HasPrefix(i, "ver-3333 ") {
		t.Fatalf("after the release: api %q, index %q; want both ver-3333", a, i)
	}
	for _, l := range []*testrig.Load{loadIndex, loadAPI} {
		if ok, failed, errs := l.Finish(); failed > 0 || ok == 0 {
			t.Fatalf("release under load: %d ok, %d failed: %v", ok, failed, errs)
		}
	}
	recs, err := f.st.Records(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var drains []store.Record
	for _, r := range recs {
		if r.Event == sm.Drain && r.Reason == sm.ReasonReplaced {
			drains = append(drains, r)
		}
	}
	if len(drains) != 2 || drains[1].Seq != drains[0].Seq+1 || drains[0].Worker == drains[1].Worker {
		t.Fatalf("want the two predecessors' drains in one step (consecutive seqs, both workers): %+v", drains)
	}
}

// canaryFixture runs a worker with canary deploys and keeps GET / traffic
// going through the proxy while the test runs.
func canaryRun(t *testing.T, behaviour string) (*deployFixture, events.ReloadResult) {
	t.Helper()
	f := newDeployFixture(t, func(c *config.Config) {
		c.Workers.Default.Canary = config.Canary{WeightPercent: 30, DurationMs: 1500, MaxErrorRate: 0.05, MaxP99Ratio: 3}
	})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := &http.Client{Timeout: 5 * time.Second}
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if resp, err := c.Get(f.srv.URL + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	next := filepath.Join(t.TempDir(), "next")
	testrig.BuildTestWorker(t, next, "ver-next", behaviour)
	if err := testrig.Install(f.root, "index", next); err != nil {
		t.Fatal(err)
	}
	return f, f.reload()
}

func canaryRecord(t *testing.T, f *deployFixture, event string) store.Record {
	t.Helper()
	recs, err := f.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Event == event {
			return r
		}
	}
	t.Fatalf("no %s record in %+v", event, recs)
	return store.Record{}
}

func TestCanaryPromoted(t *testing.T) {
	f, res := canaryRun(t, "")
	if res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload: %+v", res)
	}
	f.waitServing("ver-next")
	canaryRecord(t, f, "canary_started")
	if d := canaryRecord(t, f, "canary_promoted").Detail; !strings.Contains(d, " requests, 0 5xx") {
		t.Fatalf("promoted canary's figures: %q", d)
	}
}

func TestCanaryRolledBackByErrorRate(t *testing.T) {
	f, res := canaryRun(t, "errors")
	if !strings.Contains(strings.Join(res.Failures, "\n"), "canary failed: error rate") {
		t.Fatalf("reload of a failing canary: %+v", res)
	}
	if d := canaryRecord(t, f, "canary_failed").Detail; !strings.Contains(d, "above max_error_rate 0.05") {
		t.Fatalf("failed canary's figures: %q", d)
	}
	f.waitServing(baseVersion)
}

func TestCanaryRolledBackByP99(t *testing.T) {
	f, res := canaryRun(t, "slowroot")
	if !strings.Contains(strings.Join(res.Failures, "\n"), "canary failed: p99") {
		t.Fatalf("reload of a slow canary: %+v", res)
	}
	if d := canaryRecord(t, f, "canary_failed").Detail; !strings.Contains(d, "above max_p99_ratio 3") {
		t.Fatalf("failed canary's figures: %q", d)
	}
	f.waitServing(baseVersion)
}
