package watcher

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/events"
)

func TestDebouncerGathersAndDeduplicates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newDebouncer(100 * time.Millisecond)
	k := key{events.SourceChanged, "api"}
	d.add(t0, k, "/a/x.go")
	d.add(t0.Add(60*time.Millisecond), k, "/a/y.go", "/a/x.go")
	if evs, _ := d.due(t0.Add(159 * time.Millisecond)); len(evs) != 0 {
		t.Fatalf("emitted before the quiet time after the last change: %+v", evs)
	}
	evs, _ := d.due(t0.Add(160 * time.Millisecond))
	want := []events.FilesChanged{{Kind: events.SourceChanged, Worker: "api", Paths: []string{"/a/x.go", "/a/y.go"}}}
	if !equalEvents(evs, want) {
		t.Fatalf("got %+v, want %+v", evs, want)
	}
	if _, ok := d.next(); ok {
		t.Fatal("still pending after emitting")
	}
}

func TestDebouncerCapsPaths(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newDebouncer(time.Millisecond)
	k := key{events.PublicChanged, "web"}
	for i := range 250 {
		d.add(t0, k, fmt.Sprintf("/p/%03d", i))
	}
	evs, dropped := d.due(t0.Add(time.Second))
	if len(evs) != 1 || len(evs[0].Paths) != maxPaths || dropped[0] != 50 {
		t.Fatalf("got %d events, %d paths, %v dropped; want 1, %d, 50", len(evs), len(evs[0].Paths), dropped, maxPaths)
	}
}

func TestDebouncerOrdersByDeadlineThenFirstSeen(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newDebouncer(time.Millisecond)
	d.add(t0, key{events.WorkerRemoved, "b"})
	d.add(t0, key{events.WorkerAdded, "b"})
	d.add(t0.Add(-time.Second), key{events.ConfigChanged, ""})
	evs, _ := d.due(t0.Add(time.Second))
	var got []string
	for _, e := range evs {
		got = append(got, e.Kind.String())
	}
	if want := []string{"config", "worker_removed", "worker_added"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

// fakeFS stands in for inotify inside a synctest bubble, where a goroutine
// blocked reading the real inotify descriptor would keep time from moving.
type fakeFS struct {
	mu      sync.Mutex
	watched map[string]bool
	fail    func(path string) error
}

func (f *fakeFS) Add(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(p); err != nil {
			return err
		}
	}
	f.watched[p] = true
	return nil
}

func (f *fakeFS) Remove(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.watched, p)
	return nil
}

func (f *fakeFS) Close() error { return nil }

// syncWriter lets the test read what the watcher logged.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// bubble is a watcher running on real time inside a synctest bubble, fed
// fsnotify events by the test.
type bubble struct {
	t    *testing.T
	root string
	fs   *fakeFS
	evs  chan fsnotify.Event
	w    *Watcher
	log  *syncWriter

	mu  sync.Mutex
	got []events.FilesChanged
}

// newBubble must be called inside synctest.Test. It lays out workers a and b
// with a src/main.go each.
func newBubble(t *testing.T, fail func(string) error) *bubble {
	b := &bubble{t: t, root: t.TempDir(), fs: &fakeFS{watched: map[string]bool{}, fail: fail},
		evs: make(chan fsnotify.Event), log: &syncWriter{}}
	for _, name := range []string{"a", "b"} {
		writeFile(t, filepath.Join(b.root, "workers", name, "src", "main.go"), "package main\n")
	}
	w, err := newWatcher(Options{
		Root:   b.root,
		Send:   func(ev events.FilesChanged) { b.mu.Lock(); b.got = append(b.got, ev); b.mu.Unlock() },
		Logger: zerolog.New(b.log),
	}, b.fs, b.evs, make(chan error))
	if err != nil {
		t.Fatal(err)
	}
	b.w = w
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

func (b *bubble) path(rel string) string { return filepath.Join(b.root, filepath.FromSlash(rel)) }

func (b *bubble) event(op fsnotify.Op, rel string) {
	b.evs <- fsnotify.Event{Name: b.path(rel), Op: op}
}

// emitted waits until every goroutine of the bubble is idle and returns the
// final (debounced) events sent so far.
func (b *bubble) emitted() []events.FilesChanged {
	return b.sent(false)
}

// notices is like emitted for the tentative notices.
func (b *bubble) notices() []events.FilesChanged {
	return b.sent(true)
}

func (b *bubble) sent(tentative bool) []events.FilesChanged {
	synctest.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []events.FilesChanged
	for _, ev := range b.got {
		if ev.Tentative == tentative {
			out = append(out, ev)
		}
	}
	return out
}

func TestLoopBurstEmitsOnceAfterQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		start := time.Now()
		for i := range 50 {
			b.event(fsnotify.Write, "workers/a/src/main.go")
			if got := b.emitted(); len(got) != 0 {
				t.Fatalf("emitted during the burst (write %d): %+v", i, got)
			}
			time.Sleep(50 * time.Millisecond) // virtual time: each write within the debounce of the last
		}
		time.Sleep(49 * time.Millisecond) // 99ms after the last write
		if got := b.emitted(); len(got) != 0 {
			t.Fatalf("emitted before 100ms of quiet: %+v", got)
		}
		time.Sleep(time.Millisecond)
		want := []events.FilesChanged{{Kind: events.SourceChanged, Worker: "a", Paths: []string{b.path("workers/a/src/main.go")}}}
		if got := b.emitted(); !equalEvents(got, want) {
			t.Fatalf("after the quiet time: got %+v, want %+v", got, want)
		}
		if elapsed := time.Since(start); elapsed != 49*50*time.Millisecond+100*time.Millisecond {
			t.Fatalf("emitted after %v", elapsed)
		}
		time.Sleep(time.Hour)
		if got := b.emitted(); len(got) != 1 {
			t.Fatalf("a second event arrived: %+v", got)
		}
		// One early notice, 10ms after the first write; the busy area got
		// no more, and the final event's Last is after the notice's.
		n := b.notices()
		if len(n) != 1 || n[0].Worker != "a" || !n[0].Last.Equal(start) {
			t.Fatalf("tentative notices: %+v, want one for the first write", n)
		}
		if fin := b.emitted()[0]; !fin.Last.After(n[0].Last) || !fin.First.Equal(start) {
			t.Fatalf("final event First/Last %v/%v, notice Last %v", fin.First, fin.Last, n[0].Last)
		}
	})
}

// An editor's save (temp file written, renamed over the file) settles in
// microseconds: a tentative notice 10ms later, then the final event at the
// debounce, both naming the same last change, so a build started on the
// notice is current.
func TestLoopSaveGetsEarlyNotice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		start := time.Now()
		b.event(fsnotify.Create, "workers/a/src/.main.go.tmp")
		b.event(fsnotify.Write, "workers/a/src/.main.go.tmp")
		b.event(fsnotify.Rename, "workers/a/src/.main.go.tmp")
		b.event(fsnotify.Create, "workers/a/src/main.go")
		time.Sleep(9 * time.Millisecond)
		if n := b.notices(); len(n) != 0 {
			t.Fatalf("notice before the settle time: %+v", n)
		}
		time.Sleep(time.Millisecond)
		n := b.notices()
		if len(n) != 1 || n[0].Kind != events.SourceChanged || n[0].Worker != "a" || len(n[0].Paths) != 0 {
			t.Fatalf("at 10ms: notices %+v, want one for worker a", n)
		}
		if got := b.emitted(); len(got) != 0 {
			t.Fatalf("final event at 10ms: %+v", got)
		}
		time.Sleep(90 * time.Millisecond)
		got := b.emitted()
		if len(got) != 1 || !got[0].Last.Equal(n[0].Last) || !got[0].First.Equal(start) {
			t.Fatalf("at 100ms: %+v, want the final event with the notice's Last %v", got, n[0].Last)
		}
		if !slices.Equal(got[0].Paths, []string{b.path("workers/a/src/main.go")}) {
			t.Fatalf("paths %v", got[0].Paths)
		}
	})
}

// Only worker sources get notices: public/, private/ and config changes have
// nothing to build.
func TestLoopNoNoticeForAssets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		writeFile(t, b.path("workers/a/public/x.css"), "a{}")
		writeFile(t, b.path("config/server.yaml"), "")
		b.event(fsnotify.Write, "workers/a/public/x.css")
		b.event(fsnotify.Write, "config/server.yaml")
		time.Sleep(time.Second)
		if n := b.notices(); len(n) != 0 {
			t.Fatalf("notices for assets/config: %+v", n)
		}
		if got := b.emitted(); len(got) != 2 {
			t.Fatalf("final events: %+v, want 2", got)
		}
	})
}

func TestLoopWorkersDebounceIndependently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		b.event(fsnotify.Write, "workers/a/src/main.go")
		time.Sleep(60 * time.Millisecond)
		b.event(fsnotify.Write, "workers/b/src/main.go")
		time.Sleep(40 * time.Millisecond)
		got := b.emitted()
		if len(got) != 1 || got[0].Worker != "a" {
			t.Fatalf("at 100ms: got %+v, want only worker a", got)
		}
		time.Sleep(60 * time.Millisecond)
		got = b.emitted()
		if len(got) != 2 || got[1].Worker != "b" || got[1].Kind != events.SourceChanged {
			t.Fatalf("at 160ms: got %+v, want a then b", got)
		}
	})
}

func TestLoopNewWorkerIsOneEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		writeFile(t, b.path("workers/c/src/main.go"), "package main\n")
		b.event(fsnotify.Create, "workers/c")
		time.Sleep(80 * time.Millisecond)
		writeFile(t, b.path("workers/c/src/page.html"), "<p>")
		b.event(fsnotify.Create, "workers/c/src/page.html")
		b.event(fsnotify.Write, "workers/c/src/main.go")
		time.Sleep(99 * time.Millisecond)
		if got := b.emitted(); len(got) != 0 {
			t.Fatalf("emitted before the worker's changes were quiet: %+v", got)
		}
		time.Sleep(time.Millisecond)
		want := []events.FilesChanged{{Kind: events.WorkerAdded, Worker: "c",
			Paths: []string{b.path("workers/c"), b.path("workers/c/src/main.go"), b.path("workers/c/src/page.html")}}}
		if got := b.emitted(); !equalEvents(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		if !b.fs.watched[b.path("workers/c/src")] {
			t.Fatal("the new worker's src/ is not watched")
		}
	})
}

func TestLoopRemovedWorkerDropsItsPendingChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		b.event(fsnotify.Write, "workers/b/src/main.go")
		if err := os.RemoveAll(b.path("workers/b")); err != nil {
			t.Fatal(err)
		}
		b.event(fsnotify.Remove, "workers/b/src/main.go")
		b.event(fsnotify.Remove, "workers/b")
		time.Sleep(time.Second)
		want := []events.FilesChanged{{Kind: events.WorkerRemoved, Worker: "b", Paths: []string{b.path("workers/b")}}}
		if got := b.emitted(); !equalEvents(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		for p := range b.fs.watched {
			if strings.HasPrefix(p, b.path("workers/b")) {
				t.Errorf("still watching %s", p)
			}
		}
	})
}

func TestLoopWatchLimitIsLoggedWithAdvice(t *testing.T) {
	setLimitFiles(t, "8192\n")
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(p string) error {
			if strings.HasSuffix(p, "deep") {
				return syscall.ENOSPC
			}
			return nil
		})
		if err := os.MkdirAll(b.path("workers/a/src/deep"), 0o755); err != nil {
			t.Fatal(err)
		}
		b.event(fsnotify.Create, "workers/a/src/deep")
		b.emitted()
		want := "inotify watch limit reached (fs.inotify.max_user_watches = 8192): raise it with: sudo sysctl fs.inotify.max_user_watches=524288"
		if log := b.log.String(); !strings.Contains(log, want) || strings.Count(log, "\n") != 1 {
			t.Fatalf("log %q, want one line containing %q", log, want)
		}
	})
}

func TestNewReportsWatchLimit(t *testing.T) {
	setLimitFiles(t, "8192\n")
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "workers", "a", "src", "main.go"), "package main\n")
	fs := &fakeFS{watched: map[string]bool{}, fail: func(p string) error {
		if strings.HasSuffix(p, "src") {
			return fmt.Errorf("inotify_add_watch: %w", syscall.ENOSPC)
		}
		return nil
	}}
	_, err := newWatcher(Options{Root: root, Send: func(events.FilesChanged) {}}, fs, nil, nil)
	want := "watcher: watch " + filepath.Join(root, "workers", "a", "src") +
		": inotify watch limit reached (fs.inotify.max_user_watches = 8192): raise it with: sudo sysctl fs.inotify.max_user_watches=524288"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func equalEvents(a, b []events.FilesChanged) bool {
	return slices.EqualFunc(a, b, func(x, y events.FilesChanged) bool {
		return x.Kind == y.Kind && x.Worker == y.Worker && slices.Equal(x.Paths, y.Paths)
	})
}
