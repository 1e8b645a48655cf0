package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

func TestWorkerEnvironmentAndRoutes(t *testing.T) {
	root := newRoot(t, fastConfig+`    env:
      GREETING: "hello ${WORKER_NAME}"
      BASE_COPY: "${WORKER_BASE}"
  paths:
    "/api":
      go_max_procs: 2
      go_mem_limit: 64MiB
`)
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	check := func(path string, want map[string]string) {
		t.Helper()
		code, body := get(t, s.URL(path))
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		var env map[string]string
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatalf("%s: %v %q", path, err, body)
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s: %s = %q, want %q (all: %v)", path, k, env[k], v, env)
			}
		}
		if env["PORT"] == "" || env["PORT"] != env["TQ_WORKER_PORT"] {
			t.Errorf("%s: PORT %q TQ_WORKER_PORT %q", path, env["PORT"], env["TQ_WORKER_PORT"])
		}
	}
	idxBase := filepath.Join(root, "workers", "index")
	check("/env", map[string]string{"TQ_WORKER_NAME": "index", "TQ_WORKER_ROUTE": "/", "TQ_WORKER_BASE": idxBase,
		"TQ_MODE": "prod", "GOMAXPROCS": "1", "GREETING": "hello index", "BASE_COPY": idxBase, "cwd": idxBase})
	// Route boundaries: /api/usersx is not api_users.
	if _, b := get(t, s.URL("/api/usersx")); !strings.Contains(b, "v1 index") {
		t.Fatalf("/api/usersx should go to index: %q", b)
	}
	_, b := get(t, s.URL("/api/users/7?q=1"))
	if !strings.Contains(b, "v1 api_users") || !strings.Contains(b, "path=/api/users/7?q=1") || !strings.Contains(b, "xff=127.0.0.1") {
		t.Fatalf("forwarding: %q", b)
	}
}

func TestConfigReload(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)
	pidOf := func(worker string) int {
		for _, w := range s.status().Workers {
			if w.Name == worker {
				for _, in := range w.Instances {
					if in.State == "healthy" {
						return in.PID
					}
				}
			}
		}
		return 0
	}
	idx, api := pidOf("index"), pidOf("api_users")

	// An invalid config is rejected with file:line and changes nothing.
	writeFile(t, filepath.Join(root, "config", "server.yaml"), fastConfig+"  paths:\n    \"/api\":\n      go_max_procs: lots\n")
	out, errs, err := runCLI(t, "reload", "--root", root)
	if err == nil || !strings.Contains(errs, "config/server.yaml:14") {
		t.Fatalf("invalid config: err=%v out=%q stderr=%q", err, out, errs)
	}
	if pidOf("index") != idx || pidOf("api_users") != api {
		t.Fatal("a rejected config restarted a worker")
	}
	// A valid change to /api restarts only api_users.
	writeFile(t, filepath.Join(root, "config", "server.yaml"), fastConfig+"  paths:\n    \"/api\":\n      go_max_procs: 2\n")
	if out, errs, err := runCLI(t, "reload", "--root", root); err != nil {
		t.Fatalf("valid config: %v %s %s", err, out, errs)
	}
	if pidOf("index") != idx {
		t.Fatal("index restarted for a change that does not concern it")
	}
	if p := pidOf("api_users"); p == api || p == 0 {
		t.Fatal("api_users not restarted")
	}
	_, body := get(t, s.URL("/env"))
	if !strings.Contains(body, `"GOMAXPROCS":"1"`) {
		t.Fatalf("index env changed: %s", body)
	}
	recs := history(t, root)
	if n := count(recs, func(r store.Record) bool {
		return r.Reason == "config_changed" && r.To == "healthy" && r.Worker == "api_users"
	}); n != 1 {
		t.Fatalf("want one config_changed start of api_users, got %d", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.Event == "config_rejected" }); n != 1 {
		t.Fatalf("want one config_rejected record, got %d", n)
	}
}

func TestAssetChangeSignalsWithoutRestart(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	writeFile(t, filepath.Join(root, "workers", "index", "private", "views", "page.html"), "one")
	writeFile(t, filepath.Join(root, "workers", "index", "public", "app.css"), "body{color:red}")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	before := s.status().Workers[0].Instances[0].Instance

	writeFile(t, filepath.Join(root, "workers", "index", "private", "views", "page.html"), "two")
	writeFile(t, filepath.Join(root, "workers", "index", "public", "app.css"), "body{color:blue}")
	out, errs, err := runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out, "SIGUSR1") {
		t.Fatalf("reload: %v %q %q", err, out, errs)
	}
	waitBody(t, s.URL("/reloads"), "1", 5*time.Second)
	if after := s.status().Workers[0].Instances[0].Instance; after != before {
		t.Fatalf("asset change restarted the worker: %s → %s", before, after)
	}
	if _, b := get(t, s.URL("/static/index/app.css")); b != "body{color:blue}" {
		t.Fatalf("public file not fresh: %q", b)
	}
	// A server binary that is no executable is not started: the upgrade
	// rolls back (the reload fails saying so) and nothing restarts.
	writeFile(t, filepath.Join(root, "server", "bin", "tqserver"), "new server")
	out, _, err = runCLI(t, "reload", "--root", root)
	if err == nil || !strings.Contains(out, "server upgrade failed: not started") || !strings.Contains(out, "rolled back") {
		t.Fatalf("server binary change: %v %q", err, out)
	}
	if after := s.status().Workers[0].Instances[0].Instance; after != before {
		t.Fatalf("server binary change restarted the worker")
	}
	// Nothing changed → nothing happens.
	out, _, err = runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Fatalf("idle reload: %v %q", err, out)
	}
}

func TestMaxRequestsReplacesWithoutFailures(t *testing.T) {
	root := newRoot(t, fastConfig+"    max_requests: 200\n")
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	// Load until two instances have been replaced (however fast the
	// proxy gets through 200 requests), bounded in count and time.
	l := testrig.StartLoad(s.URL("/"), 8, 50_000, 60*time.Second)
	testrig.WaitFor(t, 30*time.Second, "max_requests replacements", func() bool {
		recs := history(t, root)
		return count(recs, func(r store.Record) bool { return r.Reason == "max_requests" && r.To == "draining" }) >= 2
	})
	ok, failed, errs := l.Finish()
	if failed != 0 {
		t.Fatalf("%d of %d failed: %v", failed, ok+failed, errs)
	}
}

func TestNewAndRemovedWorkers(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	install(t, root, "blog", "v1", "normal")
	s.signal(syscall.SIGHUP)
	waitBody(t, s.URL("/blog/post"), "v1 blog", 10*time.Second)
	pid := 0
	for _, w := range s.status().Workers {
		if w.Name == "blog" {
			pid = w.Instances[0].PID
		}
	}
	if err := os.RemoveAll(filepath.Join(root, "workers", "blog")); err != nil {
		t.Fatal(err)
	}
	s.signal(syscall.SIGHUP)
	waitBody(t, s.URL("/blog/post"), "v1 index", 10*time.Second)
	testrig.WaitFor(t, 10*time.Second, "removed worker stopped", func() bool { return !testrig.PIDAlive(pid) })
}

func TestProbeFailureReplaces(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	writeFile(t, filepath.Join(root, "workers", "index", "unhealthy"), "x")
	// The replacement sees the same file and cannot become healthy: the old
	// instance keeps serving (rollback). Remove the file once the failure is
	// recorded, and the next probe round replaces it.
	testrig.WaitFor(t, 15*time.Second, "health_failed start", func() bool {
		return count(history(t, root), func(r store.Record) bool { return r.Reason == "health_failed" && r.To == "starting" }) >= 1
	})
	os.Remove(filepath.Join(root, "workers", "index", "unhealthy"))
	testrig.WaitFor(t, 20*time.Second, "health_failed drain", func() bool {
		return count(history(t, root), func(r store.Record) bool { return r.Reason == "health_failed" && r.To == "draining" }) >= 1
	})
	if c, _ := get(t, s.URL("/")); c != 200 {
		t.Fatalf("not serving after probe replacement: %d", c)
	}
}

func TestStaticFilesAndTraversal(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	writeFile(t, filepath.Join(root, "workers", "index", "public", "css", "style.css"), "body{}")
	writeFile(t, filepath.Join(root, "workers", "index", "private", "secret.txt"), "SECRET")
	if err := os.Symlink(filepath.Join(root, "workers", "index", "private", "secret.txt"), filepath.Join(root, "workers", "index", "public", "link.txt")); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	resp, err := plainClient.Get(s.URL("/static/index/css/style.css"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=3600" {
		t.Fatalf("static: %d %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	noRedirect := *plainClient
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, p := range []string{
		"/static/index/../private/secret.txt",
		"/static/index/%2e%2e/private/secret.txt",
		"/static/index/%2E%2E%2Fprivate%2Fsecret.txt",
		"/static/index/..%2fprivate/secret.txt",
		"/static/index/link.txt",
		"/static/index/private/secret.txt",
		"/static/../workers/index/private/secret.txt",
		"/static/index/css/",
	} {
		req, _ := http.NewRequest("GET", s.URL("/"), nil)
		req.URL.Opaque = p // send the path exactly as written
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || strings.Contains(string(b), "SECRET") {
			t.Errorf("%s: %d %q", p, resp.StatusCode, b)
		}
	}
}

func TestHistoryFiltersAndStatusAt(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/api/users"), "v1", 10*time.Second)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	mid := time.Now()
	time.Sleep(5 * time.Millisecond) // distinct timestamps around mid, not synchronization
	install(t, root, "index", "v2", "normal")
	if _, errs, err := runCLI(t, "reload", "--root", root); err != nil {
		t.Fatal(errs)
	}
	// reload returns once v2 serves; the replaced instance's last records
	// follow. Compare the filters on a log that has stopped growing.
	testrig.WaitFor(t, 10*time.Second, "the replaced instance stopped", func() bool {
		return count(history(t, root), func(r store.Record) bool { return r.Worker == "index" && r.To == "stopped" }) >= 1
	})
	all := history(t, root)
	last := history(t, root, "--worker", "index", "--limit", "1")
	if len(last) != 1 || last[0].Worker != "index" {
		t.Fatalf("--worker index --limit 1: %+v", last)
	}
	var newestIndex store.Record
	for _, r := range all {
		if r.Worker == "index" {
			newestIndex = r
		}
	}
	if last[0].Seq != newestIndex.Seq {
		t.Fatalf("--limit keeps the newest: got %d want %d", last[0].Seq, newestIndex.Seq)
	}
	three := history(t, root, "--limit", "3")
	if len(three) != 3 || three[0].Seq >= three[2].Seq || three[2].Seq != all[len(all)-1].Seq {
		t.Fatalf("--limit 3 not newest-three-oldest-first: %+v", three)
	}
	since := history(t, root, "--since", mid.UTC().Format(time.RFC3339Nano))
	for _, r := range since {
		if r.Time.Before(mid) {
			t.Fatalf("--since returned an older record: %+v", r)
		}
	}
	if len(since) == 0 || len(since) >= len(all) {
		t.Fatalf("--since: %d of %d", len(since), len(all))
	}
	// The table form prints the same records.
	out, _, err := runCLI(t, "history", "--root", root)
	if err != nil || strings.Count(out, "\n") != len(all)+1 || !strings.Contains(out, "starting→healthy") {
		t.Fatalf("table: %v\n%s", err, out)
	}
	// status --at mid: the v1 instance of index was the live one.
	out, _, err = runCLI(t, "status", "--json", "--root", root, "--at", mid.UTC().Format(time.RFC3339Nano))
	if err != nil {
		t.Fatal(err)
	}
	var at struct {
		Workers []struct {
			Name      string
			Instances []struct{ Instance, State string }
		}
	}
	json.Unmarshal([]byte(out), &at)
	now := s.status()
	for _, w := range at.Workers {
		if w.Name == "index" {
			for _, nw := range now.Workers {
				if nw.Name == "index" && nw.Instances[0].Instance == w.Instances[0].Instance {
					t.Fatalf("status --at shows the current instance, not the one live at %s: %s", mid, out)
				}
			}
		}
	}
	if len(at.Workers) != 2 {
		t.Fatalf("status --at: %s", out)
	}
}

func TestBadConfigRefusesToStart(t *testing.T) {
	root := newRoot(t, "server:\n  port: 8080\n  prot: 9\n")
	_, errs, err := runCLI(t, "serve", "--root", root, "--mode", "prod")
	if err == nil || !strings.Contains(errs, "config/server.yaml:3") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("bad config: %v %q", err, errs)
	}
}

func TestHostileClients(t *testing.T) {
	root := newRoot(t, fastConfig+"server:\n  header_timeout_seconds: 2\n")
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	// Huge headers are refused, not buffered.
	req, _ := http.NewRequest("GET", s.URL("/"), nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2<<20))
	resp, err := plainClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("2 MiB header: %d", resp.StatusCode)
		}
	}
	// A slowloris client that never finishes its headers is cut off.
	conns := make([]net.Conn, 0, 20)
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	}
	start := time.Now()
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadAll(c) // returns when the server closes the connection
		if err != nil {
			t.Fatalf("slow client not cut off: %v", err)
		}
		c.Close()
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("slow clients held for %v", d)
	}
	// Meanwhile and afterwards, normal requests are served.
	if c, _ := get(t, s.URL("/")); c != 200 {
		t.Fatalf("after hostile clients: %d", c)
	}
}
