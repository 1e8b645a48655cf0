package tqworkertest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

// ModuleRoot returns the directory of the go.mod that governs the test's
// working directory (go test runs in the package directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := testrig.ModuleRoot()
	if err != nil {
		t.Fatalf("tqworkertest: %v", err)
	}
	return root
}

// Build compiles the main package pkg, a path relative to the module root
// such as "./workers/index/src", into t.TempDir() and returns the binary's
// path. The build runs from the module root and uses -race when the test
// binary does.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	root := ModuleRoot(t)
	bin := filepath.Join(t.TempDir(), filepath.Base(filepath.Clean(pkg)))
	if err := testrig.GoBuild(testrig.Build{Dir: root, Pkg: pkg, Out: bin, Race: testrig.Race}); err != nil {
		t.Fatalf("tqworkertest: %v", err)
	}
	return bin
}

// CopyDir copies the directory tree src into a fresh directory under
// t.TempDir() that keeps src's base name (so a worker's Name() fallback
// still works), and returns the copy's path. Tests edit the copy, never the
// repository's files.
func CopyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("tqworkertest: copy %s to %s: %v", src, dst, err)
	}
	return dst
}

// Config describes how to start a worker.
type Config struct {
	// Base is the working directory and TQ_WORKER_BASE (workers/{name}).
	// Empty means a fresh empty directory.
	Base string
	// Name, Route and Mode set TQ_WORKER_NAME, TQ_WORKER_ROUTE and TQ_MODE
	// when not empty.
	Name, Route, Mode string
	// Env holds extra KEY=value entries; they override everything else.
	Env []string
	// StartTimeout bounds the wait for /health (default 20s).
	StartTimeout time.Duration
}

// Worker is a running worker process.
type Worker struct {
	cmd    *exec.Cmd
	addr   string
	out    *testrig.Buffer
	done   chan struct{}
	state  *os.ProcessState
	err    error
	client *http.Client
}

// Start launches bin as tqserver would and returns once GET /health answers
// 200. It fails the test if the process exits or stays unhealthy.
func Start(t testing.TB, bin string, cfg Config) *Worker {
	t.Helper()
	if cfg.Base == "" {
		cfg.Base = t.TempDir()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 20 * time.Second
	}
	// A port picked by listening on :0 can be taken by someone else before
	// the worker binds it; retry with a new port in that case only.
	for attempt := 1; ; attempt++ {
		w, err := start(t, bin, cfg)
		if err == nil {
			return w
		}
		if attempt < 3 && strings.Contains(w.Output(), "address already in use") {
			continue
		}
		t.Fatalf("tqworkertest: %v\n--- worker output ---\n%s", err, w.Output())
	}
}

func start(t testing.TB, bin string, cfg Config) (*Worker, error) {
	port, err := testrig.FreePort()
	if err != nil {
		return &Worker{out: &testrig.Buffer{}}, err
	}
	w := &Worker{
		addr:   "127.0.0.1:" + strconv.Itoa(port),
		out:    &testrig.Buffer{},
		done:   make(chan struct{}),
		client: &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
	}
	// Only what Config says: a TQ_* variable inherited from the test's own
	// environment must not leak into the worker.
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "PORT" && k != "TQ_MODE" && !strings.HasPrefix(k, "TQ_WORKER_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PORT="+strconv.Itoa(port),
		"TQ_WORKER_PORT="+strconv.Itoa(port),
		"TQ_WORKER_BASE="+cfg.Base,
	)
	for k, v := range map[string]string{"TQ_WORKER_NAME": cfg.Name, "TQ_WORKER_ROUTE": cfg.Route, "TQ_MODE": cfg.Mode} {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	w.cmd = exec.Command(bin)
	w.cmd.Dir = cfg.Base
	w.cmd.Env = append(env, cfg.Env...)
	w.cmd.Stdout = w.out
	w.cmd.Stderr = w.out
	if err := w.cmd.Start(); err != nil {
		return w, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		err := w.cmd.Wait()
		w.state, w.err = w.cmd.ProcessState, err
		close(w.done)
	}()
	t.Cleanup(func() {
		w.client.CloseIdleConnections()
		select {
		case <-w.done:
		default:
			_ = w.cmd.Process.Kill() // by PID
			<-w.done
		}
		if t.Failed() {
			t.Logf("worker %s (pid %d) output:\n%s", filepath.Base(bin), w.cmd.Process.Pid, w.Output())
		}
	})

	probe := &http.Client{Timeout: time.Second}
	exited := false
	err = testrig.Poll(cfg.StartTimeout, testrig.PollInterval, "GET /health to answer 200", func() (bool, string) {
		resp, err := probe.Get(w.URL("/health"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, ""
			}
		}
		select {
		case <-w.done:
			exited = true
			return true, ""
		default:
		}
		if err != nil {
			return false, err.Error()
		}
		return false, resp.Status
	})
	if exited {
		return w, fmt.Errorf("worker %s exited before it was healthy: %v", bin, w.err)
	}
	if err != nil {
		return w, fmt.Errorf("worker %s not healthy on %s: %w", bin, w.addr, err)
	}
	return w, nil
}

// Addr returns the worker's 127.0.0.1:port.
func (w *Worker) Addr() string { return w.addr }

// URL returns http://addr followed by path.
func (w *Worker) URL(path string) string { return "http://" + w.addr + path }

// PID returns the worker's process id.
func (w *Worker) PID() int { return w.cmd.Process.Pid }

// Client returns an HTTP client for this worker; its idle connections are
// closed when the test ends.
func (w *Worker) Client() *http.Client { return w.client }

// Signal sends sig to the worker process.
func (w *Worker) Signal(sig os.Signal) error {
	if err := w.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, w.PID(), err)
	}
	return nil
}

// Done is closed once the process has exited and been reaped.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Wait waits up to timeout for the process to exit and returns its state.
func (w *Worker) Wait(timeout time.Duration) (*os.ProcessState, error) {
	select {
	case <-w.done:
		return w.state, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("worker pid %d still running after %s", w.PID(), timeout)
	}
}

// Output returns everything the worker wrote to stdout and stderr so far.
func (w *Worker) Output() string { return w.out.String() }

// Eventually polls cond every 10ms until it returns true, failing the test
// with what if that does not happen within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := testrig.Poll(timeout, testrig.PollInterval, what, func() (bool, string) { return cond(), "" }); err != nil {
		t.Fatalf("tqworkertest: %v", err)
	}
}
