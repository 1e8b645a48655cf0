package testrig

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(10*time.Second, time.Millisecond, "three calls", func() (bool, string) {
		n++
		return n == 3, fmt.Sprint(n)
	}); err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, n)
	}
	t0 := time.Now()
	err := Poll(50*time.Millisecond, 5*time.Millisecond, "never", func() (bool, string) { return false, "still no" })
	if err == nil || !strings.Contains(err.Error(), "never") || !strings.Contains(err.Error(), "still no") {
		t.Fatalf("Poll on a false condition = %v, want a timeout naming what and the last seen", err)
	}
	if d := time.Since(t0); d < 50*time.Millisecond || d > 10*time.Second {
		t.Fatalf("Poll gave up after %s, want about 50ms", d)
	}
}

func TestInstallBytes(t *testing.T) {
	root := t.TempDir()
	for _, data := range []string{"first", "second, longer"} {
		if err := InstallBytes(root, "index", []byte(data)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(WorkerBinPath(root, "index"))
		if err != nil || string(b) != data {
			t.Fatalf("installed %q, read %q (%v)", data, b, err)
		}
	}
	fi, err := os.Stat(WorkerBinPath(root, "index"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v (%v), want 0755", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(filepath.Dir(WorkerBinPath(root, "index")))
	if len(ents) != 1 {
		t.Fatalf("bin/ holds %d files, want only the binary: %v", len(ents), ents)
	}
	if err := Install(root, "api", filepath.Join(root, "missing")); err == nil || !strings.Contains(err.Error(), "api") {
		t.Fatalf("Install of a missing file = %v, want an error naming the worker", err)
	}
}

// The load stops at its request bound: every attempt is counted once, as a
// success or a failure, and the watch fires on the body it waits for.
func TestLoadCountBound(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := n.Add(1); i%10 == 0 {
			http.Error(w, "tenth", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "v1 hello")
	}))
	defer srv.Close()
	l := StartLoad(srv.URL, 4, 200, time.Minute)
	select {
	case <-l.Await("v1 "):
	case <-time.After(30 * time.Second):
		t.Fatal("the watch for \"v1 \" did not fire")
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the load did not stop at 200 requests")
	}
	ok, failed, errs := l.Finish()
	if ok+failed != 200 || failed != 20 || n.Load() != 200 {
		t.Fatalf("ok %d + failed %d, server saw %d; want 180 + 20 = 200", ok, failed, n.Load())
	}
	if len(errs) != 10 || !strings.HasPrefix(errs[0], "500 ") {
		t.Fatalf("kept %d errors (%q), want the first 10", len(errs), errs)
	}
	if s := l.Samples(); len(s) != 200 {
		t.Fatalf("%d samples, want 200", len(s))
	}
	if l.Last() != "v1 hello" {
		t.Fatalf("last body %q", l.Last())
	}
	if d, k := P99(l.Samples(), func(time.Time) bool { return true }); k != 200 || d <= 0 {
		t.Fatalf("P99 = %s over %d samples", d, k)
	}
}

// The load also stops at its duration bound, on its own; a refused
// connection is a failure.
func TestLoadDurationBound(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens: every request fails fast
	l := StartLoad(url, 2, 1<<62, 200*time.Millisecond)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the load outlived its 200ms bound")
	}
	ok, failed, errs := l.Finish()
	if ok != 0 || failed == 0 || len(errs) == 0 || l.Failed() != failed {
		t.Fatalf("ok %d failed %d errs %q; want only failures", ok, failed, errs)
	}
	// A second Finish (a test's cleanup after its body finished) is harmless.
	if ok2, failed2, _ := l.Finish(); ok2 != ok || failed2 != failed {
		t.Fatalf("second Finish = %d, %d; want %d, %d", ok2, failed2, ok, failed)
	}
}

// The whole server side of the rig on a real tqserver: start on a free
// port, status over the socket and over the CLI, history, stop.
func TestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tqserver")
	}
	src, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tqserver")
	if err := BuildServer(src, bin, Race); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "app")
	builds := NewBuilds(dir)
	if err := Install(root, "index", builds.TestWorker(t, "v7", "normal")); err != nil {
		t.Fatal(err)
	}
	if builds.TestWorker(t, "v7", "normal") != builds.TestWorker(t, "v7", "normal") {
		t.Fatal("a second TestWorker built again")
	}
	s := StartServerT(t, ServerOptions{Bin: bin, Root: root}, 60*time.Second)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || strings.HasSuffix(s.Addr(), ":0") {
		t.Fatalf("Addr = %q, want the port the server took", s.Addr())
	}
	var body string
	WaitFor(t, 30*time.Second, "the worker to answer", func() bool {
		resp, err := http.Get(s.URL("/"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err == nil && resp.StatusCode == 200
	})
	if !strings.HasPrefix(body, "v7 ") {
		t.Fatalf("body %q, want the v7 build", body)
	}
	var sock, cli supervisor.Status
	if err := SocketStatus(root, &sock); err != nil {
		t.Fatal(err)
	}
	if err := CLIStatus(bin, root, &cli); err != nil {
		t.Fatal(err)
	}
	if sock.PID != s.PID() || cli.PID != s.PID() || !sock.Running || !cli.Running || len(cli.Workers) != 1 {
		t.Fatalf("status over the socket %+v, over the CLI %+v; want pid %d running with one worker", sock, cli, s.PID())
	}
	lines, err := HistoryLines(bin, root, "--worker", "index")
	if err != nil || len(lines) == 0 {
		t.Fatalf("history: %d lines, %v", len(lines), err)
	}
	var rec store.Record
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Worker != "index" {
		t.Fatalf("first history line %q: %v", lines[0], err)
	}
	s.Stop(30 * time.Second)
	if err, ok := s.Wait(time.Second); !ok || err != nil {
		t.Fatalf("after Stop: exited %v, err %v; want a clean exit", ok, err)
	}
	if _, _, err := RunCLI(bin, "reload", "--root", root); err == nil {
		t.Fatal("reload of a stopped server succeeded")
	}
}
