package supervisor

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
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
func TestNoEffectWithoutRecord(t *testing.T) {
	root := t.TempDir()
	_, here, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(here), "..", "..", "cmd", "tqserver", "testdata", "testworker")
	bin := filepath.Join(root, "workers", "index", "bin", "index")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("go", "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build test worker: %v\n%s", err, out)
	}
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
