package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// With a log that cannot be written (a read-only var/, a full disk), the
// supervisor starts nothing it could not record — write-ahead means no
// effect without its record — says so loudly, keeps retrying with backoff,
// and still shuts down cleanly.
// buildTestWorker builds cmd/tqserver/testdata/testworker as worker name.
func buildTestWorker(t *testing.T, root, name string) {
	t.Helper()
	testrig.BuildTestWorker(t, testrig.WorkerBinPath(root, name), "", "")
}

// A full life in-process — start, serve, crash, restart, shut down — leaves
// no goroutine behind (TestMain checks with goleak) and no process.
func TestLifecycleInProcess(t *testing.T) {
	root := t.TempDir()
	buildTestWorker(t, root, "index")
	st, err := store.Open(filepath.Join(root, "var", "tqserver.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 23000, 23999
	cfg.Workers.RestartDelayMs = 10
	dw := cfg.Workers.Default
	dw.HealthIntervalMs = 50
	cfg.Workers.Default = dw
	logs := &testrig.Buffer{}
	sup := New(Options{Root: root, Mode: "prod", Config: cfg, Store: st, Proxy: proxy.New(proxy.Options{}),
		Logger: zerolog.New(logs)})
	done := make(chan error, 1)
	go func() { done <- sup.Run() }()
	healthyPID := func() int {
		for _, w := range sup.Status().Workers {
			for _, in := range w.Instances {
				if in.State == "healthy" {
					return in.PID
				}
			}
		}
		return 0
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		waitLogged(t, 20*time.Second, what, logs, cond)
	}
	waitUntil("healthy", func() bool { return healthyPID() != 0 })
	first := healthyPID()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil("restarted after the crash", func() bool { p := healthyPID(); return p != 0 && p != first })
	last := healthyPID()
	sup.Send(events.Shutdown{})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("supervisor did not stop")
	}
	for _, pid := range []int{first, last} {
		if syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z") {
				t.Errorf("pid %d still running after shutdown", pid)
			}
		}
	}
	recs, err := st.Records(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var crashed, shutdown bool
	for _, r := range recs {
		crashed = crashed || (r.Reason == sm.ReasonCrashed && r.Signal == "SIGKILL")
		shutdown = shutdown || (r.Reason == sm.ReasonShutdown && r.To == "stopped")
	}
	if !crashed || !shutdown {
		t.Fatalf("log lacks the crash or the shutdown: %+v", recs)
	}
}

func TestNoEffectWithoutRecord(t *testing.T) {
	root := t.TempDir()
	buildTestWorker(t, root, "index")
	dbPath := filepath.Join(root, "var", "tqserver.db")
	w, err := store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	st, err := store.Open(dbPath, store.Options{ReadOnly: true}) // every Append fails
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	cfg := config.Default()
	cfg.Workers.RestartDelayMs = 20
	cfg.Workers.RestartBackoffMaxMs = 100
	logs := &testrig.Buffer{}
	sup := New(Options{Root: root, Mode: "prod", Config: cfg, Store: st, Proxy: proxy.New(proxy.Options{}),
		Logger: zerolog.New(logs)})
	done := make(chan error, 1)
	go func() { done <- sup.Run() }()

	waitLogged(t, 10*time.Second, "repeated loud errors", logs, func() bool {
		return strings.Count(logs.String(), "could not record; effect skipped") >= 4
	})
	st0 := sup.Status()
	if len(st0.Workers) != 1 || len(st0.Workers[0].Instances) != 0 {
		t.Fatalf("an instance exists without its record: %+v", st0)
	}
	if strings.Contains(logs.String(), `"stream":"stdout"`) {
		t.Fatal("the worker process ran without its record")
	}
	sup.Send(events.Shutdown{})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("supervisor did not stop")
	}
}
