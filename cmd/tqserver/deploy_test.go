package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// A reload that arrives while the server drains for shutdown starts
// nothing and says why (CONTRACT.md §4).
func TestReloadDuringShutdownStartsNothing(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)

	// A long request keeps the server in its drain after SIGTERM.
	slow := make(chan string, 1)
	go func() {
		code, body := get(t, s.URL("/slow?ms=4000"))
		slow <- fmt.Sprint(code, " ", body)
	}()
	testrig.WaitFor(t, 10*time.Second, "the slow request in flight", func() bool {
		for _, w := range s.status().Workers {
			for _, in := range w.Instances {
				if in.Inflight != nil && *in.Inflight > 0 {
					return true
				}
			}
		}
		return false
	})
	s.signal(syscall.SIGTERM)
	testrig.WaitFor(t, 10*time.Second, "the server to begin stopping", func() bool {
		return strings.Contains(s.Logs(), "stopping: finishing in-flight requests")
	})
	install(t, root, "index", "v2", "normal")
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err == nil || !strings.Contains(errOut, "server is shutting down") {
		t.Fatalf("reload while stopping: err=%v stdout=%q stderr=%q, want a failure saying the server is shutting down", err, out, errOut)
	}
	if r := <-slow; !strings.HasPrefix(r, "200 slow done v1") {
		t.Fatalf("in-flight request during shutdown: %q", r)
	}
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatalf("server exit: %v", err)
	}
	recs := history(t, root, "--worker", "index")
	if n := count(recs, func(r store.Record) bool { return r.Event == "start" }); n != 1 {
		t.Fatalf("%d instances started, want 1 (nothing after the shutdown began)", n)
	}
}

// `tqserver build --prod` run again leaves byte-identical binaries (and
// their .sha256) untouched, so the reload after it restarts only what
// really changed.
func TestBuildProdTwiceRestartsOnlyChanged(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/prodapp\n\ngo 1.22\n")
	writeFile(t, filepath.Join(root, "workers", "index", "src", "main.go"), devSource(t, "p1"))
	writeFile(t, filepath.Join(root, "workers", "other", "src", "main.go"), devSource(t, "o1"))
	if out, errs, err := runCLI(t, "build", "--prod", "--root", root); err != nil {
		t.Fatalf("first build: %v\n%s%s", err, out, errs)
	}
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "p1 index", 10*time.Second)
	waitBody(t, s.URL("/other"), "o1 other", 10*time.Second)

	bin := filepath.Join(root, "workers", "index", "bin", "index")
	mtimes := func() [2]time.Time {
		var out [2]time.Time
		for i, p := range []string{bin, bin + ".sha256"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = fi.ModTime()
		}
		return out
	}
	before := mtimes()
	writeFile(t, filepath.Join(root, "workers", "other", "src", "main.go"), devSource(t, "o2"))
	out, errs, err := runCLI(t, "build", "--prod", "--root", root)
	if err != nil {
		t.Fatalf("second build: %v\n%s%s", err, out, errs)
	}
	if !strings.Contains(out, "index") || !strings.Contains(out, "unchanged") {
		t.Errorf("second build does not say index was unchanged:\n%s", out)
	}
	if after := mtimes(); after != before {
		t.Fatalf("second build touched the unchanged index: mtimes %v → %v", before, after)
	}
	out, errs, err = runCLI(t, "reload", "--root", root)
	if err != nil {
		t.Fatalf("reload: %v\n%s%s", err, out, errs)
	}
	if !strings.Contains(out, "other: binary_changed") || strings.Contains(out, "index") {
		t.Fatalf("reload after the second build: want only other restarted, got:\n%s", out)
	}
	waitBody(t, s.URL("/other"), "o2 other", 10*time.Second)
	recs := history(t, root, "--worker", "index")
	if n := count(recs, func(r store.Record) bool { return r.Event == "start" }); n != 1 {
		b, _ := json.Marshal(recs)
		t.Fatalf("index started %d times, want 1: %s", n, b)
	}
}

// Ten `tqserver reload` at once after a deploy all report its outcome:
// the failure when the new version never becomes healthy, the change once
// it serves when it does (docs/deploying.md, concurrent reloads).
func TestTenConcurrentReloadCommands(t *testing.T) {
	const n = 10
	// A long probe interval: the running instance is not probed while the
	// test makes new instances unhealthy with the unhealthy file.
	cfg := strings.Replace(fastConfig, "health_interval_ms: 200", "health_interval_ms: 60000", 1)
	cfg = strings.Replace(cfg, "health_timeout_ms: 3000", "health_timeout_ms: 8000", 1)
	root := newRoot(t, cfg)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	checks := func() int { return strings.Count(s.Logs(), `"message":"change check done"`) }

	type answer struct {
		out  string
		err  error
		body string // GET / right after the command returned
	}
	reloadAll := func(afterChecks func()) []answer {
		before := checks()
		answers := make(chan answer, n)
		for range n {
			go func() {
				out, errOut, err := runCLI(t, "reload", "--root", root)
				_, body := get(t, s.URL("/"))
				answers <- answer{out + errOut, err, body}
			}()
		}
		testrig.WaitFor(t, 30*time.Second, "all reloads checked", func() bool { return checks() >= before+n })
		afterChecks()
		var out []answer
		for range n {
			out = append(out, <-answers)
		}
		return out
	}

	// Never healthy: all ten fail.
	install(t, root, "index", "v2", "nohealth")
	for _, a := range reloadAll(func() {}) {
		if a.err == nil || !strings.Contains(a.out, "index: binary_changed") || !strings.Contains(a.out, "FAILED: index-2") {
			t.Errorf("reload of a never-healthy binary: err=%v output:\n%s", a.err, a.out)
		}
	}
	if c, b := get(t, s.URL("/")); c != 200 || !strings.HasPrefix(b, "v1 ") {
		t.Fatalf("after the failed deploy: %d %q", c, b)
	}

	// Healthy, but only once all ten wait: all ten report the change, after
	// the new version serves.
	unhealthy := filepath.Join(root, "workers", "index", "unhealthy")
	writeFile(t, unhealthy, "")
	install(t, root, "index", "v3", "normal")
	for _, a := range reloadAll(func() {
		if err := os.Remove(unhealthy); err != nil {
			t.Error(err)
		}
	}) {
		if a.err != nil || !strings.Contains(a.out, "index: binary_changed") || !strings.Contains(a.out, "index-3: serving") || !strings.HasPrefix(a.body, "v3 ") {
			t.Errorf("reload of a good binary: err=%v output:\n%s\nthen GET / = %q", a.err, a.out, a.body)
		}
	}
}
