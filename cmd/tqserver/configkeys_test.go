package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// copyExec puts the executable src at dst the way a deploy does (temp file,
// rename).
func copyExec(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Dir(dst), 0o755))
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".deploy-")
	must(err)
	_, err = io.Copy(tmp, in)
	must(err)
	must(tmp.Chmod(0o755))
	must(tmp.Close())
	must(os.Rename(tmp.Name(), dst))
}

// binaries.path moves worker binaries out of workers/{name}/bin (issue 13:
// it was accepted and ignored, and a worker with build/{name} was "neither
// bin/index nor src/main.go"): the server runs them from there, a reload
// sees a new one there, and one left at the default place does not run.
func TestBinariesPathEndToEnd(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "config", "deployment.yaml"), "binaries:\n  path: build/{worker_name}\n")
	writeFile(t, filepath.Join(root, "workers", "api", "public", "a.txt"), "asset")
	copyExec(t, builds.TestWorker(t, "b1", ""), filepath.Join(root, "build", "api"))
	install(t, root, "old", "b1", "") // workers/old/bin/old: not where binaries are
	s := startServer(t, root)
	waitBody(t, s.URL("/api"), "b1 api", 30*time.Second)
	if code, _ := get(t, s.URL("/old")); code != 404 {
		t.Errorf("GET /old = %d, want 404: a binary at the default place must not run", code)
	}
	if !strings.Contains(s.Logs(), "no binary build/old") && !strings.Contains(s.Logs(), "neither build/old") {
		t.Errorf("no warning naming build/old for the worker without its binary:\n%s", s.Logs())
	}
	copyExec(t, builds.TestWorker(t, "b2", ""), filepath.Join(root, "build", "api"))
	if out, errOut, err := runCLI(t, "reload", "--root", root); err != nil {
		t.Fatalf("reload: %v\n%s%s", err, out, errOut)
	}
	waitBody(t, s.URL("/api"), "b2 api", 30*time.Second)
	recs := history(t, root, "--worker", "api")
	if count(recs, func(r store.Record) bool { return r.Reason == "binary_changed" && r.Event == "start" }) == 0 {
		t.Errorf("no binary_changed start for api in history")
	}
}

// deployment.check_on_sighup: false (deployment specification): a reload
// re-reads the config but restarts no worker for a new binary.
func TestCheckOnSighupFalse(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "config", "deployment.yaml"), "deployment:\n  check_on_sighup: false\n")
	install(t, root, "index", "c1", "")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "c1 index", 30*time.Second)
	install(t, root, "index", "c2", "")
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err != nil {
		t.Fatalf("reload: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "disabled") {
		t.Errorf("reload output %q does not say the checks are off", out)
	}
	if c, b := get(t, s.URL("/")); c != 200 || !strings.Contains(b, "c1 index") {
		t.Errorf("GET / = %d %q, want c1 still serving", c, b)
	}
	if n := count(history(t, root), func(r store.Record) bool { return r.Reason == "binary_changed" }); n != 0 {
		t.Errorf("%d binary_changed records with check_on_sighup: false", n)
	}
}

// Dev mode with binaries.path: the start build and a rebuild after an edit
// both go to build/{name}, and nothing to workers/{name}/bin/{name}.
func TestBinariesPathDevBuilds(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "config", "deployment.yaml"), "binaries:\n  path: build/{worker_name}\n")
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	writeFile(t, src, devSource(t, "p1"))
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/"), "p1 index", 60*time.Second)
	writeFile(t, src, devSource(t, "p2"))
	waitBody(t, s.URL("/"), "p2 index", 60*time.Second)
	if _, err := os.Stat(filepath.Join(root, "build", "index")); err != nil {
		t.Errorf("build/index: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "workers", "index", "bin", "index")); !os.IsNotExist(err) {
		t.Errorf("workers/index/bin/index exists (%v): the build went to the default place too", err)
	}
}

// watch_patterns decides what triggers (issue 13: with only config/*.yaml
// listed, source edits still rebuilt): a source edit outside the patterns
// builds nothing, a config edit inside them is reloaded.
func TestWatchPatternsOnlyListedTrigger(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "config", "deployment.yaml"),
		"deployment:\n  dev:\n    file_watcher:\n      debounce_ms: 20\n      watch_patterns: [\"config/*.yaml\"]")
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	writeFile(t, src, devSource(t, "w1"))
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/"), "w1 index", 60*time.Second)
	builds := func() int {
		return count(history(t, root), func(r store.Record) bool { return strings.HasPrefix(r.Event, "build_") })
	}
	before := builds()

	writeFile(t, src, devSource(t, "w2"))                                             // not selected by the patterns
	writeFile(t, filepath.Join(root, "workers", "index", "private", "t.html"), "<p>") // resources not watched
	// Written after the source edit, through the same inotify queue: once
	// its reload is in the log, the edit has been seen (and dropped).
	writeFile(t, filepath.Join(root, "config", "server.yaml"), fastConfig+"  drain_timeout_ms: 1234\n")
	testrig.WaitFor(t, 30*time.Second, "config_reloaded after the config edit", func() bool {
		return count(history(t, root), func(r store.Record) bool { return r.Event == "config_reloaded" }) > 0
	})
	if n := builds(); n != before {
		t.Errorf("%d build records after a source edit outside watch_patterns, want none", n-before)
	}

	if c, b := get(t, s.URL("/")); c != 200 || !strings.Contains(b, "w1 index") {
		t.Errorf("GET / = %d %q, want the unrebuilt w1", c, b)
	}
}

// watch_resource_changes: false: an edit in private/ signals nothing (it
// waits for the next reload); a source edit after it still rebuilds.
func TestWatchResourceChangesFalse(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "config", "deployment.yaml"),
		"deployment:\n  dev:\n    file_watcher:\n      debounce_ms: 20\n    resources:\n      watch_resource_changes: false\n")
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	writeFile(t, src, devSource(t, "r1"))
	writeFile(t, filepath.Join(root, "workers", "index", "private", "t.html"), "<p>1")
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/"), "r1 index", 60*time.Second)
	writeFile(t, filepath.Join(root, "workers", "index", "private", "t.html"), "<p>2")
	// After the private/ edit in the same inotify queue: once its swap is
	// served, the edit before it has been seen (and dropped).
	writeFile(t, src, devSource(t, "r2"))
	waitBody(t, s.URL("/"), "r2 index", 60*time.Second)
	if n := count(history(t, root), func(r store.Record) bool { return r.Event == "assets_changed" }); n != 0 {
		t.Errorf("%d assets_changed records with watch_resource_changes: false, want none", n)
	}
}
