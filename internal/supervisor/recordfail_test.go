package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// appendFaults makes the appends that match its predicate fail, as a full
// or read-only var/ would; the rest reach the real log.
type appendFaults struct {
	mu     sync.Mutex
	pred   func(*store.Record) bool
	failed []store.Record
}

func injectAppendFaults(s *Supervisor) *appendFaults {
	f := &appendFaults{}
	real := s.appendRecords
	// A step's records go in one transaction: one matching record fails
	// them all, as a full disk would.
	s.appendRecords = func(rs []*store.Record) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range rs {
			if f.pred != nil && f.pred(r) {
				for _, r := range rs {
					f.failed = append(f.failed, *r)
				}
				return fmt.Errorf("%s record (injected): %w", r.Event, syscall.EIO)
			}
		}
		return real(rs)
	}
	return f
}

func (f *appendFaults) set(pred func(*store.Record) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pred = pred
}

func (f *appendFaults) failures() []store.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Record(nil), f.failed...)
}

// faultRig starts a prod rig of one test worker "index" (ports 24000-24999)
// on px (nil: a new proxy) with an append fault injector whose predicate is
// pred (nil: none yet); adjust, when not nil, changes the config first.
func faultRig(t *testing.T, px *proxy.Proxy, adjust func(*config.Config), pred func(*store.Record) bool) (*rig, *appendFaults) {
	t.Helper()
	root := t.TempDir()
	buildTestWorker(t, root, "index")
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 24000, 24999
	if adjust != nil {
		adjust(cfg)
	}
	if px == nil {
		px = proxy.New(proxy.Options{})
	}
	var faults *appendFaults
	r := startRig(t, root, "prod", cfg, px, func(s *Supervisor) {
		faults = injectAppendFaults(s)
		faults.set(pred)
	})
	return r, faults
}

// servingPID asks the proxy (over loopback) which process answers /.
func servingPID(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_, after, ok := strings.Cut(string(b), "pid=")
	if resp.StatusCode != 200 || !ok {
		return 0
	}
	pid, _ := strconv.Atoi(strings.Fields(after)[0])
	return pid
}

func instancesIn(sup *Supervisor, state string) []InstanceStatus {
	var out []InstanceStatus
	for _, w := range sup.Status().Workers {
		for _, in := range w.Instances {
			if in.State == state {
				out = append(out, in)
			}
		}
	}
	return out
}

// A successor is healthy, but the drain of its predecessor cannot be
// recorded: the predecessor keeps the traffic (the log says it serves) and
// the successor waits, healthy; once the log is writable the swap happens
// by itself. Before, traffic moved at once and the predecessor was left
// running, out of the route table, for ever.
func TestSwapWaitsForPredecessorDrainRecord(t *testing.T) {
	px := proxy.New(proxy.Options{})
	r, faults := faultRig(t, px, func(c *config.Config) {
		c.Workers.RestartDelayMs = 20
		c.Workers.RestartBackoffMaxMs = 100
	}, nil)
	srv := newFront(t, px)
	defer srv.Close()
	r.waitFor("first instance healthy", func() bool { return len(instancesIn(r.sup, "healthy")) == 1 })
	old := instancesIn(r.sup, "healthy")[0]
	faults.set(func(rec *store.Record) bool { return rec.Event == "drain" && rec.Instance == old.Instance })

	r.sup.Send(events.MaxRequests{Instance: old.Instance}) // starts a successor
	r.waitFor("the successor healthy and the drain refused", func() bool {
		return len(instancesIn(r.sup, "healthy")) == 2 && len(faults.failures()) > 0
	})
	for i := range 20 {
		if pid := servingPID(t, srv.URL+"/"); pid != old.PID {
			t.Fatalf("request %d served by pid %d; want the predecessor %d, whose drain is not recorded", i, pid, old.PID)
		}
	}
	r.waitFor("the swap retried", func() bool { return len(faults.failures()) >= 2 })

	faults.set(nil)
	r.waitFor("the successor serving and the predecessor gone", func() bool {
		h := instancesIn(r.sup, "healthy")
		return len(h) == 1 && h[0].Instance != old.Instance && len(instancesIn(r.sup, "draining")) == 0 &&
			servingPID(t, srv.URL+"/") == h[0].PID
	})
	recs, err := r.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(recs, func(rec store.Record) bool { return rec.Instance == old.Instance && rec.Event == "drain" }); n != 1 {
		t.Fatalf("want 1 drain record of %s, got %d", old.Instance, n)
	}
}

// A process whose pid cannot be recorded never serves: it is stopped (a
// crash of the server could not reap it) and the start is retried with
// backoff; once the log is writable the worker serves.
func TestUnrecordedPIDNeverServes(t *testing.T) {
	r, faults := faultRig(t, nil, func(c *config.Config) {
		c.Workers.RestartDelayMs = 20
		c.Workers.RestartBackoffMaxMs = 100
		c.Workers.StartupDelayMs = 0
	}, func(rec *store.Record) bool { return rec.Event == "spawned" })
	r.waitFor("three starts whose pid could not be recorded", func() bool {
		if len(instancesIn(r.sup, "healthy")) > 0 {
			r.t.Fatalf("an instance serves whose pid is not in the log: %+v\n%s", r.sup.Status(), r.logs.String())
		}
		return len(faults.failures()) >= 3
	})
	for _, rec := range faults.failures() {
		if rec.PID == 0 {
			t.Fatalf("spawned record without pid: %+v", rec)
		}
		pid := rec.PID
		r.waitFor(fmt.Sprintf("pid %d (%s) stopped", pid, rec.Instance), func() bool {
			return syscall.Kill(pid, 0) != nil || isZombie(pid)
		})
	}
	faults.set(nil)
	r.waitFor("index healthy once its pid can be recorded", func() bool { return len(instancesIn(r.sup, "healthy")) == 1 })
	h := instancesIn(r.sup, "healthy")[0]
	recs, err := r.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(recs, func(rec store.Record) bool {
		return rec.Instance == h.Instance && rec.Event == "spawned" && rec.PID == h.PID
	}); n != 1 {
		t.Fatalf("the serving instance %s has no spawned record with its pid %d", h.Instance, h.PID)
	}
}

// A dev build whose build_ok cannot be recorded is not installed: bin/
// keeps the binary that runs, nothing restarts, the staged file goes. The
// next save, with the log writable again, builds and swaps as usual.
func TestDevBuildNotInstalledWithoutRecord(t *testing.T) {
	var faults *appendFaults
	r := newDevRigWith(t, func(s *Supervisor) { faults = injectAppendFaults(s) })
	bin := filepath.Join(r.root, "workers", "app", "bin", "app")
	before, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	faults.set(func(rec *store.Record) bool { return rec.Event == sm.EventBuildOK })
	r.write("v2", false)
	now := time.Now()
	r.send(events.FilesChanged{First: now, Last: now})
	r.waitFor("the build_ok record refused", func() bool { return len(faults.failures()) == 1 })
	r.waitFor("no staged file left", func() bool { return len(r.staged()) == 0 })
	after, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("bin/app was replaced by a build whose build_ok is not in the log")
	}
	if got := r.body(); got != "v1" {
		t.Fatalf("the worker answers %q after an unrecorded build, want v1", got)
	}
	if n := len(instancesIn(r.sup, "starting")); n != 0 {
		t.Fatalf("%d instance(s) started for an unrecorded build", n)
	}

	faults.set(nil)
	now = time.Now()
	r.send(events.FilesChanged{First: now, Last: now})
	r.waitBody("v2")
}

// A reloaded config whose config_reloaded record cannot be written is not
// applied: the reload says so and the running config stays; the next
// reload, with the log writable, applies it.
func TestConfigNotAppliedWithoutRecord(t *testing.T) {
	r, faults := faultRig(t, nil, nil, nil)
	r.waitFor("index healthy", func() bool { return len(instancesIn(r.sup, "healthy")) == 1 })
	root := r.root

	yaml := "workers:\n  port_range_start: 24000\n  port_range_end: 24999\n  default:\n    instances: 2\n"
	writeServerYAML(t, root, yaml)
	reload := func() events.ReloadResult {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return r.sup.Reload(ctx, "test")
	}
	faults.set(func(rec *store.Record) bool { return rec.Event == sm.EventConfigReloaded })
	res := reload()
	if !strings.Contains(res.Error, "config not applied") || len(faults.failures()) != 1 {
		t.Fatalf("reload with an unwritable config_reloaded: %+v (failed appends %d)", res, len(faults.failures()))
	}
	if n := len(r.sup.Status().Workers[0].Instances); n != 1 {
		t.Fatalf("the unrecorded config was applied: %d instances", n)
	}

	faults.set(nil)
	if res := reload(); res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload with the log writable again: %+v", res)
	}
	r.waitFor("two healthy instances", func() bool { return len(instancesIn(r.sup, "healthy")) == 2 })
}

// An instance whose slot goes away (fewer instances) is out of the route
// table at once; when its drain cannot be recorded it is still stopped,
// not left running unreached until the server stops.
func TestRemovedSlotStopsWithoutDrainRecord(t *testing.T) {
	r, faults := faultRig(t, nil, func(c *config.Config) { c.Workers.Default.Instances = 2 }, nil)
	r.waitFor("two healthy instances", func() bool { return len(instancesIn(r.sup, "healthy")) == 2 })
	pids := map[int]bool{}
	for _, in := range instancesIn(r.sup, "healthy") {
		pids[in.PID] = true
	}

	faults.set(func(rec *store.Record) bool { return rec.Event == "drain" || rec.Event == "exited" })
	yaml := "workers:\n  port_range_start: 24000\n  port_range_end: 24999\n  default:\n    instances: 1\n"
	writeServerYAML(t, r.root, yaml)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res := r.sup.Reload(ctx, "test"); res.Error != "" {
		t.Fatalf("reload: %+v", res)
	}
	r.waitFor("one instance left, the other's process gone", func() bool {
		h := instancesIn(r.sup, "healthy")
		if len(h) != 1 || len(r.sup.Status().Workers[0].Instances) != 1 {
			return false
		}
		for pid := range pids {
			if pid != h[0].PID && syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				return false
			}
		}
		return true
	})
	if len(faults.failures()) == 0 {
		t.Fatal("no drain record was refused")
	}
}

// A reload whose successor is healthy but cannot take the traffic (the
// predecessor's drain cannot be recorded) answers at once with the reason,
// instead of waiting for the log to become writable; the swap follows by
// itself later.
func TestReloadAnswersWhileSwapWaitsForRecord(t *testing.T) {
	r, faults := faultRig(t, nil, func(c *config.Config) {
		c.Workers.RestartDelayMs = 20
		c.Workers.RestartBackoffMaxMs = 100
	}, nil)
	r.waitFor("index healthy", func() bool { return len(instancesIn(r.sup, "healthy")) == 1 })
	old := instancesIn(r.sup, "healthy")[0]
	faults.set(func(rec *store.Record) bool { return rec.Event == "drain" })

	// A deploy, the way rsync makes one: new bytes (a trailing byte leaves
	// the executable intact) in a temp file renamed over the binary.
	bin := filepath.Join(r.root, "workers", "index", "bin", "index")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin+".deploy", append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".deploy", bin); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := r.sup.Reload(ctx, "test")
	if res.Error == context.DeadlineExceeded.Error() || !strings.Contains(strings.Join(res.Failures, "\n"), old.Instance+" keeps serving") {
		t.Fatalf("reload while the drain cannot be recorded: %+v", res)
	}
	faults.set(nil)
	r.waitFor("the successor serving", func() bool {
		h := instancesIn(r.sup, "healthy")
		return len(h) == 1 && h[0].Instance != old.Instance
	})
}
