package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/events"
)

// The tests below drive real inotify on real directories. Time is a fakeClock
// that only moves when the test says so, so nothing is emitted while the test
// makes its changes, and "exactly one event" is exact: settle pushes a
// sentinel change through the same inotify queue, waits for the watcher to
// have taken it, and only then lets the debounce time pass.

const testDebounce = 100 * time.Millisecond

// waitLimit bounds every wait for the watcher; reaching it fails the test.
const waitLimit = 10 * time.Second

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After's channel is unbuffered: Advance returns only once the watcher has
// received the tick.
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time)
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(t *testing.T, d time.Duration) {
	t.Helper()
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(ft fakeTimer) bool {
		if !ft.at.After(now) {
			due = append(due, ft)
			return true
		}
		return false
	})
	c.mu.Unlock()
	for _, ft := range due {
		select {
		case ft.ch <- now:
		case <-time.After(waitLimit):
			t.Fatal("the watcher did not take its timer")
		}
	}
}

type harness struct {
	t       *testing.T
	root    string
	workers string
	server  string
	clock   *fakeClock
	w       *Watcher
	got     chan events.FilesChanged
	seq     int
}

// start lays out an app root with workers a (src, public, private, bin) and b
// (src), config/ and a server source directory, and runs a watcher on it.
func start(t *testing.T) *harness {
	t.Helper()
	return startWith(t, "workers/a/src/main.go", "workers/a/src/go.mod", "workers/a/public/style.css",
		"workers/a/private/key.txt", "workers/a/bin/a", "workers/b/src/main.go",
		"config/server.yaml")
}

// startWith runs a watcher on an app root holding files (and server/src,
// where settle writes its sentinels).
func startWith(t *testing.T, files ...string) *harness {
	t.Helper()
	return startOpts(t, nil, files...)
}

// startOpts is startWith with Options changed by opts.
func startOpts(t *testing.T, opts func(*Options), files ...string) *harness {
	t.Helper()
	root := t.TempDir()
	h := &harness{t: t, root: root, workers: filepath.Join(root, "workers"),
		server: filepath.Join(root, "server", "src"),
		clock:  &fakeClock{now: time.Unix(1_000_000, 0)},
		got:    make(chan events.FilesChanged, 1000)}
	for _, f := range append(files, "server/src/main.go") {
		writeFile(t, h.path(f), "x\n")
	}
	o := Options{
		Root:      root,
		ServerSrc: []string{h.server},
		Debounce:  testDebounce,
		Send:      func(ev events.FilesChanged) { h.got <- ev },
		Logger:    zerolog.New(zerolog.NewTestWriter(t)),
		Clock:     h.clock,
	}
	if opts != nil {
		opts(&o)
	}
	w, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

func (h *harness) path(rel string) string { return filepath.Join(h.root, filepath.FromSlash(rel)) }

// call runs f on the watcher's goroutine, after everything it took before.
func (h *harness) call(f func()) {
	h.t.Helper()
	done := make(chan struct{})
	select {
	case h.w.calls <- func() { f(); close(done) }:
	case <-time.After(waitLimit):
		h.t.Fatal("the watcher loop is not running")
	}
	<-done
}

// settle returns every event the changes made so far produce, debounced.
func (h *harness) settle() []events.FilesChanged {
	h.t.Helper()
	h.seq++
	sentinel := filepath.Join(h.server, fmt.Sprintf("sentinel%d.go", h.seq))
	// Renamed in, it is one inotify event: a later Write of it could otherwise
	// restart the debounce while the test moves the clock.
	staged := filepath.Join(h.root, "sentinels", filepath.Base(sentinel))
	writeFile(h.t, staged, "package main\n")
	must(h.t, os.Rename(staged, sentinel))
	deadline := time.Now().Add(waitLimit)
	for taken := false; !taken; {
		if time.Now().After(deadline) {
			h.t.Fatal("the watcher never saw the sentinel change")
		}
		h.call(func() {
			b := h.w.deb.pending[key{events.ServerChanged, ""}]
			taken = b != nil && hasPath(b, sentinel)
		})
	}
	h.call(func() {}) // the loop has come round and armed its timer
	h.clock.Advance(h.t, testDebounce)
	h.call(func() {}) // the flush that tick started is complete
	var out []events.FilesChanged
	for {
		select {
		case ev := <-h.got:
			if ev.Kind == events.ServerChanged {
				ev.Paths = slices.DeleteFunc(ev.Paths, func(p string) bool {
					return strings.HasPrefix(filepath.Base(p), "sentinel")
				})
				if len(ev.Paths) == 0 {
					continue
				}
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

func hasPath(b *batch, p string) bool { _, ok := b.paths[p]; return ok }

// expect checks the events of the changes so far, in any order: the order
// between keys depends on when the watcher took each change (the sentinel's
// own key included), and only the set is specified.
func (h *harness) expect(want ...events.FilesChanged) {
	h.t.Helper()
	got := h.settle()
	byKey := func(a, b events.FilesChanged) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		return strings.Compare(a.Worker, b.Worker)
	}
	slices.SortFunc(got, byKey)
	slices.SortFunc(want, byKey)
	if !equalEvents(got, want) {
		h.t.Fatalf("events:\n got  %s\n want %s", show(got), show(want))
	}
}

func show(evs []events.FilesChanged) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "{%s %q %q} ", e.Kind, e.Worker, e.Paths)
	}
	if b.Len() == 0 {
		return "(none)"
	}
	return b.String()
}

func (h *harness) ev(kind events.ChangeKind, worker string, rel ...string) events.FilesChanged {
	paths := make([]string, len(rel))
	for i, r := range rel {
		paths[i] = h.path(r)
	}
	slices.Sort(paths)
	return events.FilesChanged{Kind: kind, Worker: worker, Paths: paths}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestNothingWithoutChanges(t *testing.T) {
	h := start(t)
	h.expect()
}

func TestNestedDirectoryCreatedAfterStart(t *testing.T) {
	h := start(t)
	must(t, os.MkdirAll(h.path("workers/a/src/x/y"), 0o755))
	writeFile(t, h.path("workers/a/src/x/y/deep.go"), "package y\n")
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/x/y/deep.go"))
	// The new directories are watched now, not just scanned once.
	writeFile(t, h.path("workers/a/src/x/y/more.go"), "package y\n")
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/x/y/more.go"))
}

func TestTreeRenamedIntoSource(t *testing.T) {
	h := start(t)
	staging := h.path("staging/lib")
	writeFile(t, filepath.Join(staging, "lib.go"), "package lib\n")
	writeFile(t, filepath.Join(staging, "inner", "deeper", "tpl.html"), "<p>\n")
	writeFile(t, filepath.Join(staging, ".git", "HEAD"), "ref\n")
	writeFile(t, filepath.Join(staging, "lib.go~"), "old\n")
	must(t, os.Rename(staging, h.path("workers/a/src/lib")))
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/lib/inner/deeper/tpl.html", "workers/a/src/lib/lib.go"))
	writeFile(t, h.path("workers/a/src/lib/inner/deeper/new.go"), "package deeper\n")
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/lib/inner/deeper/new.go"))
	// Moved away: its watches go, and nothing it does later is reported.
	must(t, os.Rename(h.path("workers/a/src/lib"), h.path("staging/lib")))
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/lib"))
	writeFile(t, h.path("staging/lib/inner/deeper/new.go"), "package changed\n")
	h.expect()
}

func TestEditorSavesAreOneChangeOfTheRealFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		save func(t *testing.T, dir string)
	}{
		{"vim backupcopy=no", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "4913"), "")
			must(t, os.Remove(filepath.Join(dir, "4913")))
			writeFile(t, filepath.Join(dir, ".main.go.swp"), "swap")
			must(t, os.Rename(filepath.Join(dir, "main.go"), filepath.Join(dir, "main.go~")))
			writeFile(t, filepath.Join(dir, "main.go"), "package main // new\n")
			must(t, os.Remove(filepath.Join(dir, "main.go~")))
			must(t, os.Remove(filepath.Join(dir, ".main.go.swp")))
		}},
		{"temp file renamed over", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "main.go.tmp"), "package main // new\n")
			must(t, os.Rename(filepath.Join(dir, "main.go.tmp"), filepath.Join(dir, "main.go")))
		}},
		{"hidden swap renamed over", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, ".main.go.swp"), "package main // new\n")
			must(t, os.Rename(filepath.Join(dir, ".main.go.swp"), filepath.Join(dir, "main.go")))
		}},
		{"jetbrains safe write", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "main.go___jb_tmp___"), "package main // new\n")
			must(t, os.Rename(filepath.Join(dir, "main.go"), filepath.Join(dir, "main.go___jb_old___")))
			must(t, os.Rename(filepath.Join(dir, "main.go___jb_tmp___"), filepath.Join(dir, "main.go")))
			must(t, os.Remove(filepath.Join(dir, "main.go___jb_old___")))
		}},
		{"emacs", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "#main.go#"), "autosave")
			must(t, os.Symlink("user@host.1234", filepath.Join(dir, ".#main.go")))
			writeFile(t, filepath.Join(dir, "main.go"), "package main // new\n")
			must(t, os.Remove(filepath.Join(dir, ".#main.go")))
			must(t, os.Remove(filepath.Join(dir, "#main.go#")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t)
			tc.save(t, h.path("workers/a/src"))
			h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/main.go"))
		})
	}
}

func TestBurstOfWritesIsOneEvent(t *testing.T) {
	h := start(t)
	f, err := os.OpenFile(h.path("workers/a/src/main.go"), os.O_WRONLY|os.O_TRUNC, 0)
	must(t, err)
	for i := range 50 {
		if _, err := fmt.Fprintf(f, "// %d\n", i); err != nil {
			t.Fatal(err)
		}
		must(t, f.Sync())
	}
	must(t, f.Close())
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/main.go"))
	h.expect() // and nothing after it
}

func TestTwoWorkersChangedTogetherAreTwoEvents(t *testing.T) {
	h := start(t)
	writeFile(t, h.path("workers/a/src/main.go"), "package main // a\n")
	writeFile(t, h.path("workers/b/src/main.go"), "package main // b\n")
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/main.go"),
		h.ev(events.SourceChanged, "b", "workers/b/src/main.go"))
}

func TestIgnoredChanges(t *testing.T) {
	h := start(t)
	writeFile(t, h.path("workers/a/bin/a"), "new binary")
	writeFile(t, h.path("workers/a/bin/a.tmp-123"), "half a binary")
	must(t, os.Rename(h.path("workers/a/bin/a.tmp-123"), h.path("workers/a/bin/a")))
	must(t, os.MkdirAll(h.path("workers/a/bin/sub"), 0o755))
	writeFile(t, h.path("workers/b/bin/b"), "first build of b") // bin/ created while running
	writeFile(t, h.path("workers/a/bin/sub/x.go"), "package x\n")
	must(t, os.Chmod(h.path("workers/a/src/main.go"), 0o600))
	must(t, os.Chtimes(h.path("workers/b/src/main.go"), time.Now(), time.Now()))
	writeFile(t, h.path("config/notes.txt"), "notes")
	writeFile(t, h.path("config/sub/x.yaml"), "a: 1")
	writeFile(t, h.path("workers/a/src/.git/HEAD"), "ref")
	writeFile(t, h.path("workers/a/src/.git/refs/heads/main"), "abc")
	writeFile(t, h.path("workers/a/README.md"), "docs")
	writeFile(t, h.path("workers/notes.txt"), "not a worker")
	writeFile(t, h.path("server/src/README.md"), "docs")
	writeFile(t, h.path("server/src/bin/tqserver"), "binary")
	writeFile(t, h.path("var/tqserver.db"), "state")
	writeFile(t, h.path("workers/b/src/.main.go.swx"), "swap")
	writeFile(t, h.path("workers/b/src/main.go~"), "backup")
	h.expect()
}

func TestAreasConfigAndServer(t *testing.T) {
	h := start(t)
	writeFile(t, h.path("workers/a/public/css/site.css"), "body{}")
	writeFile(t, h.path("workers/a/private/key.txt"), "secret")
	writeFile(t, h.path("config/server.yaml"), "port: 9000\n")
	writeFile(t, h.path("server/src/internal/x.go"), "package internal\n")
	writeFile(t, h.path("server/src/go.mod"), "module x\n")
	h.expect(h.ev(events.PublicChanged, "a", "workers/a/public/css/site.css"),
		h.ev(events.PrivateChanged, "a", "workers/a/private/key.txt"),
		h.ev(events.ConfigChanged, "", "config/server.yaml"),
		h.ev(events.ServerChanged, "", "server/src/go.mod", "server/src/internal/x.go"))
	must(t, os.Remove(h.path("config/server.yaml")))
	h.expect(h.ev(events.ConfigChanged, "", "config/server.yaml"))
}

func TestWorkerAddedAndRemoved(t *testing.T) {
	h := start(t)
	// Built in place, in several steps: one WorkerAdded carries it all.
	must(t, os.MkdirAll(h.path("workers/c/src/handlers"), 0o755))
	writeFile(t, h.path("workers/c/src/main.go"), "package main\n")
	writeFile(t, h.path("workers/c/src/handlers/h.go"), "package handlers\n")
	writeFile(t, h.path("workers/c/public/app.js"), "1")
	writeFile(t, h.path("workers/c/bin/c"), "binary")
	h.expect(h.ev(events.WorkerAdded, "c", "workers/c", "workers/c/public/app.js", "workers/c/src/handlers/h.go", "workers/c/src/main.go"))
	writeFile(t, h.path("workers/c/src/main.go"), "package main // edited\n")
	h.expect(h.ev(events.SourceChanged, "c", "workers/c/src/main.go"))

	// Copied in whole (cp -r to a temp name, then mv).
	writeFile(t, h.path("staging/d/src/main.go"), "package main\n")
	must(t, os.Rename(h.path("staging/d"), h.path("workers/d")))
	h.expect(h.ev(events.WorkerAdded, "d", "workers/d", "workers/d/src/main.go"))

	must(t, os.RemoveAll(h.path("workers/c")))
	h.expect(h.ev(events.WorkerRemoved, "c", "workers/c"))
	must(t, os.Rename(h.path("workers/d"), h.path("staging/d")))
	h.expect(h.ev(events.WorkerRemoved, "d", "workers/d"))
	writeFile(t, h.path("staging/d/src/main.go"), "package main // moved away\n")
	h.expect()
}

func TestOverflowRescansEverything(t *testing.T) {
	h := start(t)
	must(t, os.MkdirAll(h.path("workers/b/src/sub"), 0o755))
	h.expect()
	// Lose a watch and a worker, as an overflow would, without their events.
	h.call(func() {
		must(t, h.w.fs.Remove(h.path("workers/b/src/sub")))
		delete(h.w.dirs, h.path("workers/b/src/sub"))
	})
	h.call(func() { h.w.handleError(fsnotify.ErrEventOverflow) })
	h.expect(
		h.ev(events.ConfigChanged, "", "config"),
		h.ev(events.SourceChanged, "a", "workers/a/src"),
		h.ev(events.PublicChanged, "a", "workers/a/public"),
		h.ev(events.PrivateChanged, "a", "workers/a/private"),
		h.ev(events.SourceChanged, "b", "workers/b/src"),
		h.ev(events.ServerChanged, "", "server/src"),
	)
	writeFile(t, h.path("workers/b/src/sub/x.go"), "package sub\n")
	h.expect(h.ev(events.SourceChanged, "b", "workers/b/src/sub/x.go"))
}

func TestOverflowFindsAddedAndRemovedWorkers(t *testing.T) {
	h := start(t)
	h.call(func() {
		// As if the events of both changes had been lost.
		must(t, os.RemoveAll(h.path("workers/b")))
		writeFile(t, h.path("workers/e/src/main.go"), "package main\n")
		h.w.handleError(fsnotify.ErrEventOverflow)
	})
	got := h.settle()
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Kind.String()+":"+e.Worker)
	}
	for _, want := range []string{"worker_added:e", "worker_removed:b"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("rescan events %v lack %s", kinds, want)
		}
	}
	for _, k := range kinds {
		if strings.HasSuffix(k, ":b") && k != "worker_removed:b" || strings.HasSuffix(k, ":e") && k != "worker_added:e" {
			t.Errorf("unexpected %s among %v", k, kinds)
		}
	}
}

func TestWorkersAndConfigCreatedLater(t *testing.T) {
	h := startWith(t)
	writeFile(t, h.path("config/server.yaml"), "port: 1\n")
	writeFile(t, h.path("workers/z/src/main.go"), "package main\n")
	h.expect(h.ev(events.ConfigChanged, "", "config/server.yaml"),
		h.ev(events.WorkerAdded, "z", "workers/z", "workers/z/src/main.go"))
	writeFile(t, h.path("workers/z/src/main.go"), "package main // edited\n")
	h.expect(h.ev(events.SourceChanged, "z", "workers/z/src/main.go"))
	must(t, os.RemoveAll(h.path("workers")))
	h.expect(h.ev(events.WorkerRemoved, "z", "workers/z"))
}

func TestNewErrors(t *testing.T) {
	send := func(events.FilesChanged) {}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := New(Options{Root: missing, Send: send}); !errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing root: %v", err)
	}
	if _, err := New(Options{Root: t.TempDir()}); err == nil {
		t.Error("nil Send accepted")
	}
}

func TestCloseEndsRun(t *testing.T) {
	w, err := New(Options{Root: t.TempDir(), Send: func(events.FilesChanged) {}})
	must(t, err)
	done := make(chan error)
	go func() { done <- w.Run(context.Background()) }()
	must(t, w.Close())
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after Close")
	}
	must(t, w.Close())
	if err := w.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}
