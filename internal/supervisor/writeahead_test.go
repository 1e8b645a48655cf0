package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// With a log that cannot be written (a read-only var/, a full disk), the
// supervisor starts nothing it could not record — write-ahead means no
// effect without its record — says so loudly, keeps retrying with backoff,
// and still shuts down cleanly.
// buildTestWorker builds cmd/tqserver/testdata/testworker as worker name.
func buildTestWorker(t *testing.T, root, name string) {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(here), "..", "..", "cmd", "tqserver", "testdata", "testworker")
	bin := filepath.Join(root, "workers", name, "bin", name)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("go", "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build test worker: %v\n%s", err, out)
	}
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
	logs := &lockedBuffer{}
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
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
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
	logs := &lockedBuffer{}
	sup := New(Options{Root: root, Mode: "prod", Config: cfg, Store: st, Proxy: proxy.New(proxy.Options{}),
		Logger: zerolog.New(logs)})
	done := make(chan error, 1)
	go func() { done <- sup.Run() }()

	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), "could not record; effect skipped") < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("no repeated loud errors:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
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
