package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
)

// DefaultDebounce is the quiet time per (kind, worker) when Options.Debounce
// is zero: long enough to cover an editor's save sequence or a `go fmt` of a
// package, short enough not to be noticed.
const DefaultDebounce = 100 * time.Millisecond

// Options configure a Watcher.
type Options struct {
	Root       string        // app root; must exist
	WorkersDir string        // default: layout's workers directory of Root; may not exist yet
	ServerSrc  []string      // the server's own source directories (may be empty)
	Debounce   time.Duration // quiet time per (kind, worker) before emitting; default DefaultDebounce
	// Send receives every event, on the Run goroutine; it must not block long.
	Send   func(events.FilesChanged)
	Logger zerolog.Logger
	Clock  Clock // nil: real time
	// Patterns (deployment.dev.file_watcher.watch_patterns), when not nil,
	// limit source, config and server changes to the files matching one of
	// them: glob patterns relative to Root (path.Match per segment, "**"
	// for any number of directories). Nil: every such change counts.
	Patterns []string
	// IgnoreResources drops changes in public/ and private/
	// (deployment.dev.resources.watch_resource_changes: false).
	IgnoreResources bool
}

// fsWatcher is the part of *fsnotify.Watcher the watcher drives.
type fsWatcher interface {
	Add(path string) error
	Remove(path string) error
	Close() error
}

// Watcher reports changed files under an app root. See the package doc.
type Watcher struct {
	lay   paths
	vars  string // Root/var: state files, never sources
	send  func(events.FilesChanged)
	log   zerolog.Logger
	clock Clock

	patterns        []string // nil: everything counts
	ignoreResources bool

	fs     fsWatcher
	events <-chan fsnotify.Event
	errors <-chan error

	// Owned by the Run goroutine (and by New before Run starts).
	deb     *debouncer
	dirs    map[string]bool // directories we hold a watch on
	workers map[string]bool // worker directories we know of

	calls     chan func() // runs a function on the Run goroutine (tests)
	running   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New checks the options, starts inotify and watches the existing tree. It
// fails when the root is missing or inotify cannot be initialised, and when
// the inotify watch limit is too low for the tree (with what to do about it).
func New(o Options) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watcher: start inotify: %w", explainLimit(err))
	}
	w, err := newWatcher(o, fw, fw.Events, fw.Errors)
	if err != nil {
		fw.Close()
		return nil, err
	}
	return w, nil
}

func newWatcher(o Options, fw fsWatcher, evs <-chan fsnotify.Event, errs <-chan error) (*Watcher, error) {
	if o.Send == nil {
		return nil, errors.New("watcher: Options.Send is nil")
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, fmt.Errorf("watcher: app root %q: %w", o.Root, err)
	}
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("watcher: app root: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("watcher: app root %s is not a directory", root)
	}
	lay := layout.New(root, layout.Options{WorkersDir: o.WorkersDir})
	workers := lay.WorkersDir()
	var server []string
	for _, s := range o.ServerSrc {
		a, err := filepath.Abs(s)
		if err != nil {
			return nil, fmt.Errorf("watcher: server source %q: %w", s, err)
		}
		server = append(server, a)
	}
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	w := &Watcher{
		lay:   paths{root: root, workers: workers, config: lay.ConfigDir(), server: server},
		vars:  lay.VarDir(),
		send:  o.Send,
		log:   o.Logger,
		clock: o.Clock,

		patterns:        o.Patterns,
		ignoreResources: o.IgnoreResources,
		fs:              fw,
		events:          evs,
		errors:          errs,
		deb:             newDebouncer(o.Debounce),
		dirs:            map[string]bool{},
		workers:         map[string]bool{},
		calls:           make(chan func()),
	}
	if err := w.watchAll(false); err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	return w, nil
}

// Run handles file system events until ctx is done (then it returns nil) or
// the watcher is closed, and closes the watcher. Pending, not yet debounced
// changes are dropped. Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("watcher: Run called twice")
	}
	defer w.Close()
	var tick <-chan time.Time // at most one timer; it may fire early, never late
	for {
		if tick == nil {
			if at, ok := w.deb.next(); ok {
				tick = w.clock.After(at.Sub(w.clock.Now()))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.events:
			if !ok {
				return nil
			}
			w.handleEvent(ev)
		case err, ok := <-w.errors:
			if !ok {
				return nil
			}
			w.handleError(err)
		case <-tick:
			tick = nil
			w.flush()
		case f := <-w.calls:
			f()
		}
	}
}

// Close stops inotify; Run returns soon after. Safe to call more than once.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		if err := w.fs.Close(); err != nil {
			w.closeErr = fmt.Errorf("watcher: close inotify: %w", err)
		}
	})
	return w.closeErr
}

// flush sends what has been quiet for the debounce time, after the
// tentative notices of what has been quiet for the settle time.
func (w *Watcher) flush() {
	now := w.clock.Now()
	for _, ev := range w.deb.early(now) {
		w.send(ev)
	}
	evs, dropped := w.deb.due(now)
	for i, ev := range evs {
		e := w.log.Debug().Str("kind", ev.Kind.String()).Str("worker", ev.Worker).Int("paths", len(ev.Paths))
		if dropped[i] > 0 {
			e = e.Int("paths_left_off", dropped[i])
		}
		e.Msg("files changed")
		w.send(ev)
	}
}

// queue records a change. Changes inside a worker whose WorkerAdded is still
// pending belong to that event: the new worker is built once.
func (w *Watcher) queue(kind events.ChangeKind, worker string, paths ...string) {
	paths = slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return !w.wanted(kind, p) })
	if len(paths) == 0 {
		return // nothing a pattern selects (or resources not watched)
	}
	k := key{kind, worker}
	switch kind {
	case events.SourceChanged, events.PublicChanged, events.PrivateChanged:
		if added := (key{events.WorkerAdded, worker}); w.deb.has(added) {
			k = added
		}
	}
	w.deb.add(w.clock.Now(), k, paths...)
}
