package tqworker

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/pkg/tqworker/tqworkertest"
)

const testWorkerPkg = "./pkg/tqworker/testdata/testworker"

func get(t *testing.T, w *tqworkertest.Worker, path string) (int, string) {
	t.Helper()
	return do(t, w, http.MethodGet, path)
}

func do(t *testing.T, w *tqworkertest.Worker, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, w.URL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, string(body)
}

func exitCode(t *testing.T, w *tqworkertest.Worker, timeout time.Duration) int {
	t.Helper()
	st, err := w.Wait(timeout)
	if err != nil {
		t.Fatal(err)
	}
	return st.ExitCode()
}

// TestRunProcess drives a real worker binary built from testdata: the
// environment, /health with a readiness check, SIGUSR1 reload hooks, and a
// graceful SIGTERM with a request in flight.
func TestRunProcess(t *testing.T) {
	bin := tqworkertest.Build(t, testWorkerPkg)
	t.Run("lifecycle", func(t *testing.T) { testLifecycle(t, bin) })
	t.Run("shutdown timeout", func(t *testing.T) { testShutdownTimeout(t, bin) })
}

func testLifecycle(t *testing.T, bin string) {
	dir := t.TempDir()
	base := filepath.Join(t.TempDir(), "demo")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	w := tqworkertest.Start(t, bin, tqworkertest.Config{
		Base: base, Name: "demo", Route: "/demo", Mode: "prod",
		Env: []string{"TQTEST_DIR=" + dir},
	})

	t.Run("env", func(t *testing.T) {
		code, body := get(t, w, "/env")
		if code != http.StatusOK {
			t.Fatalf("GET /env = %d %s", code, body)
		}
		var env map[string]string
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"name": "demo", "route": "/demo", "mode": "prod", "base": base,
			"addr": w.Addr(), "path": filepath.Join(base, "private", "x.txt"),
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s = %q, want %q", k, env[k], v)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		if code, body := get(t, w, "/health"); code != http.StatusOK || body != "ok" {
			t.Fatalf("GET /health = %d %q", code, body)
		}
		if code, _ := do(t, w, http.MethodHead, "/health"); code != http.StatusOK {
			t.Fatalf("HEAD /health = %d", code)
		}
		if code, _ := do(t, w, http.MethodPost, "/health"); code != http.StatusMethodNotAllowed {
			t.Fatalf("POST /health = %d, want 405", code)
		}
		marker := filepath.Join(dir, "unhealthy")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if code, body := get(t, w, "/health"); code != http.StatusServiceUnavailable || strings.Contains(body, "marker") {
			t.Fatalf("GET /health while unhealthy = %d %q, want 503 without the reason", code, body)
		}
		// Output arrives through a pipe, after the response.
		tqworkertest.Eventually(t, 10*time.Second, "the health failure reason in the log", func() bool {
			return strings.Contains(w.Output(), "unhealthy marker present")
		})
		if err := os.Remove(marker); err != nil {
			t.Fatal(err)
		}
		if code, _ := get(t, w, "/health"); code != http.StatusOK {
			t.Fatalf("GET /health after recovery = %d", code)
		}
		if code, _ := get(t, w, "/nothing"); code != http.StatusNotFound {
			t.Fatalf("GET /nothing = %d, want the handler's 404", code)
		}
	})

	t.Run("sigusr1 runs reload hooks in order", func(t *testing.T) {
		if _, body := get(t, w, "/reloads"); body != "" {
			t.Fatalf("reloads before any signal = %q", body)
		}
		for _, want := range []string{"ab", "abab"} {
			if err := w.Signal(syscall.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			tqworkertest.Eventually(t, 10*time.Second, "reload hooks to run ("+want+")", func() bool {
				_, body := get(t, w, "/reloads")
				return body == want
			})
		}
		select {
		case <-w.Done():
			t.Fatal("SIGUSR1 stopped the worker")
		default:
		}
	})

	t.Run("sigterm finishes in-flight request", func(t *testing.T) {
		resp, err := http.Get(w.URL("/hold"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		if line, err := rd.ReadString('\n'); err != nil || line != "started\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		// The request is now in flight.
		if err := w.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		tqworkertest.Eventually(t, 10*time.Second, "the listener to close", func() bool {
			c, err := net.DialTimeout("tcp", w.Addr(), time.Second)
			if err != nil {
				return true
			}
			c.Close()
			return false
		})
		select {
		case <-w.Done():
			t.Fatal("worker exited with a request in flight")
		default:
		}
		if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(rd)
		if err != nil || string(rest) != "done\n" {
			t.Fatalf("rest of in-flight response %q, %v", rest, err)
		}
		if code := exitCode(t, w, 10*time.Second); code != 0 {
			t.Fatalf("exit code %d, want 0\n%s", code, w.Output())
		}
		if !strings.Contains(w.Output(), "run returned nil") {
			t.Errorf("Run did not return nil:\n%s", w.Output())
		}
	})
}

// When in-flight requests outlast ShutdownTimeout, Run gives up on them and
// returns an error (the test worker then exits 3).
func testShutdownTimeout(t *testing.T, bin string) {
	dir := t.TempDir()
	w := tqworkertest.Start(t, bin, tqworkertest.Config{
		Env: []string{"TQTEST_DIR=" + dir, "TQTEST_SHUTDOWN_TIMEOUT=300ms"},
	})
	resp, err := http.Get(w.URL("/hold"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	start := time.Now()
	if err := w.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, w, 10*time.Second); code != 3 {
		t.Fatalf("exit code %d, want 3 (Run returned an error)\n%s", code, w.Output())
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("exited after %s, before the 300ms shutdown timeout", el)
	}
	if !strings.Contains(w.Output(), "graceful shutdown") || !strings.Contains(w.Output(), "deadline exceeded") {
		t.Errorf("missing shutdown error in output:\n%s", w.Output())
	}
}

// In-process: a port in use is a returned error, and a second Run while one
// is running is refused. SIGTERM to our own process is safe while Run has
// the signal subscribed.
func TestRunInProcess(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv(EnvPort, portOf(busy))
	if err := Run(http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run on a busy port = %v, want a listen error", err)
	}
	busy.Close()

	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(free)
	free.Close()
	t.Setenv(EnvPort, port)
	done := make(chan error, 1)
	go func() {
		done <- Run(http.NotFoundHandler(), Options{ShutdownTimeout: 5 * time.Second, Logger: log.New(io.Discard, "", 0)})
	}()
	tqworkertest.Eventually(t, 10*time.Second, "in-process Run to be healthy", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err := Run(http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run = %v, want already running", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after SIGTERM = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if !errors.Is(func() error { _, err := net.Dial("tcp", "127.0.0.1:"+port); return err }(), syscall.ECONNREFUSED) {
		t.Error("port still accepting after Run returned")
	}
}

func portOf(ln net.Listener) string {
	return strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
}
