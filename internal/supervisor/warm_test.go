package supervisor

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// warmFixture runs a prod supervisor in-process with one worker that has
// served a request (so its successor is warmed) and whose warm-up requests
// hang while workers/index/hangwarm exists: a successor stays "warming"
// (healthy, not yet serving) for as long as a test needs.
type warmFixture struct {
	*rig
	srv *testFront
}

func newWarmFixture(t *testing.T) *warmFixture {
	t.Helper()
	root := t.TempDir()
	buildTestWorker(t, root, "index")
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 24000, 24999
	cfg.Workers.RestartDelayMs = 10
	px := proxy.New(proxy.Options{})
	r := startRig(t, root, "prod", cfg, px, func(s *Supervisor) { s.warmTimeout = time.Minute })
	f := &warmFixture{rig: r, srv: newFront(t, px)}
	t.Cleanup(f.srv.Close)
	f.waitFor("first instance healthy", func() bool { return len(f.pids("healthy")) == 1 })
	f.get() // leaves a keep-alive connection: the successor gets warmed
	return f
}

// pids lists the PIDs of the instances in state, in start order.
func (f *warmFixture) pids(state string) []int {
	var out []int
	for _, w := range f.sup.Status().Workers {
		for _, in := range w.Instances {
			if in.State == state {
				out = append(out, in.PID)
			}
		}
	}
	return out
}

// get fetches / through the proxy and returns the answer's pid= field.
func (f *warmFixture) get() string {
	f.t.Helper()
	resp, err := http.Get(f.srv.URL + "/")
	if err != nil {
		f.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		f.t.Fatalf("GET /: %d %s", resp.StatusCode, b)
	}
	for _, field := range strings.Fields(string(b)) {
		if strings.HasPrefix(field, "pid=") {
			return strings.TrimPrefix(field, "pid=")
		}
	}
	f.t.Fatalf("no pid in %q", b)
	return ""
}

func (f *warmFixture) setHangWarm(on bool) {
	p := filepath.Join(f.root, "workers", "index", "hangwarm")
	if on {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			f.t.Fatal(err)
		}
	} else {
		os.Remove(p)
	}
}

// deploy installs a new binary (the same program with one more byte at its
// end: new content, as a reload requires) and reloads in the background.
func (f *warmFixture) deploy() <-chan events.ReloadResult { return f.stage()() }

// stage writes the next binary beside the current one; the function it
// returns installs it (a rename: as quick as the reload that follows) and
// reloads in the background.
func (f *warmFixture) stage() func() <-chan events.ReloadResult {
	bin := filepath.Join(f.root, "workers", "index", "bin", "index")
	data, err := os.ReadFile(bin)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(bin+".deploy", append(data, 0), 0o755); err != nil {
		f.t.Fatal(err)
	}
	return func() <-chan events.ReloadResult {
		if err := os.Rename(bin+".deploy", bin); err != nil {
			f.t.Fatal(err)
		}
		res := make(chan events.ReloadResult, 1)
		go func() { res <- f.sup.Reload(context.Background(), "test") }()
		return res
	}
}

func (f *warmFixture) records(instance string) []store.Record {
	recs, err := f.st.Records(store.Filter{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []store.Record
	for _, r := range recs {
		if r.Instance == instance {
			out = append(out, r)
		}
	}
	return out
}

// A successor that dies while it is being warmed never served: its
// predecessor keeps serving, the exit is recorded as a rollback, and the
// reload that started it reports the failure.
func TestExitWhileWarming(t *testing.T) {
	f := newWarmFixture(t)
	old := f.pids("healthy")[0]
	f.setHangWarm(true)
	res := f.deploy()
	f.waitFor("the successor healthy and warming", func() bool { return len(f.pids("healthy")) == 2 })
	if got := f.get(); got != itoa(old) {
		t.Fatalf("while the successor warms, pid %s answered, want the predecessor %d", got, old)
	}
	succ := f.pids("healthy")[1]
	if err := syscall.Kill(succ, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var r events.ReloadResult
	select {
	case r = <-res:
	case <-time.After(20 * time.Second):
		t.Fatalf("the reload did not reply after its instance died while warming\n%s", f.logs.String())
	}
	// Whichever the supervisor learns first: the exit, or the warm-up
	// connection dropped by the dying process.
	if msg := strings.Join(r.Failures, "\n"); !strings.Contains(msg, "index-2: rollback") ||
		!(strings.Contains(msg, "exited before serving") || strings.Contains(msg, "warm-up failed")) {
		t.Errorf("reload result %+v: want a rollback failure of index-2", r)
	}
	if got := f.get(); got != itoa(old) {
		t.Errorf("after the successor died, pid %s answered, want the predecessor %d", got, old)
	}
	var last store.Record
	f.waitFor("the successor's exit recorded", func() bool {
		recs := f.records("index-2")
		last = recs[len(recs)-1]
		return last.Event == "exited"
	})
	if last.Reason != sm.ReasonRollback || last.Signal != "SIGKILL" {
		t.Errorf("last record of the successor: %+v, want exited/rollback/SIGKILL", last)
	}
}

// A newer deploy while a successor is warming drains that successor (it
// never served) and replaces the predecessor with the newest binary; no
// request fails meanwhile.
func TestNewerDeployWhileWarming(t *testing.T) {
	f := newWarmFixture(t)
	old := f.pids("healthy")[0]
	f.setHangWarm(true)
	first := f.deploy()
	f.waitFor("the successor healthy and warming", func() bool { return len(f.pids("healthy")) == 2 })
	warming := f.pids("healthy")[1]
	next := f.stage()
	f.setHangWarm(false)
	second := next()
	for _, res := range []<-chan events.ReloadResult{first, second} {
		select {
		case <-res:
		case <-time.After(20 * time.Second):
			t.Fatalf("a reload did not reply\n%s", f.logs.String())
		}
	}
	f.waitFor("one healthy instance, the newest", func() bool {
		p := f.pids("healthy")
		return len(p) == 1 && p[0] != old && p[0] != warming
	})
	newest := f.pids("healthy")[0]
	if got := f.get(); got != itoa(newest) {
		t.Errorf("pid %s answered, want the newest instance %d", got, newest)
	}
	var drained bool
	for _, r := range f.records("index-2") {
		drained = drained || (r.Event == "drain" && strings.Contains(r.Detail, "superseded"))
	}
	if !drained {
		t.Errorf("the warming instance was not drained as superseded: %+v", f.records("index-2"))
	}
	f.waitFor("the warming instance's process gone", func() bool { return syscall.Kill(warming, 0) != nil || isZombie(warming) })
}

func itoa(n int) string { return strconv.Itoa(n) }

// isZombie: the process exited and waits to be reaped.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err != nil || strings.Contains(string(b), ") Z")
}

// When the predecessor crashes while its successor is being warmed, the
// successor takes over at once instead of leaving the route empty until its
// warm-up ends (here it would last a minute).
func TestPredecessorCrashWhileWarming(t *testing.T) {
	f := newWarmFixture(t)
	old := f.pids("healthy")[0]
	f.setHangWarm(true)
	res := f.deploy()
	f.waitFor("the successor healthy and warming", func() bool { return len(f.pids("healthy")) == 2 })
	succ := f.pids("healthy")[1]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the successor alone", func() bool {
		p := f.pids("healthy")
		return len(p) == 1 && p[0] == succ
	})
	if got := f.get(); got != itoa(succ) {
		t.Errorf("pid %s answered, want the successor %d", got, succ)
	}
	select {
	case r := <-res:
		if len(r.Failures) != 0 {
			t.Errorf("reload failures %v: the successor serves", r.Failures)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the reload did not reply\n%s", f.logs.String())
	}
}
