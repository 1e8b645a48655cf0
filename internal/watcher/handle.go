package watcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"

	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
)

// areaOrder makes walks and rescans deterministic.
var areaOrder = []string{layout.SrcDir, layout.PublicDir, layout.PrivateDir}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// handleEvent turns one fsnotify event into queued changes, adding and
// dropping watches as directories come and go.
func (w *Watcher) handleEvent(ev fsnotify.Event) {
	if ev.Op&^fsnotify.Chmod == 0 {
		return // permissions, timestamps, and the link count change before a delete
	}
	p := filepath.Clean(ev.Name)
	created := ev.Has(fsnotify.Create)
	gone := ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	switch pl := w.lay.locate(p); pl.area {
	case areaTop:
		switch {
		case created && isDir(p) && p == w.lay.workers:
			w.watchWorkersDir()
		case created && isDir(p):
			w.watchConfig(p)
		case gone && p == w.lay.workers:
			w.unwatch(p)
			for name := range w.workers {
				w.removeWorker(name)
			}
		case gone && w.unwatch(p):
			w.queue(events.ConfigChanged, "", p)
		}

	case areaWorkers:
		switch {
		case created && isDir(p) && !strings.HasPrefix(pl.worker, "."):
			w.addWorker(pl.worker)
		case gone && w.workers[pl.worker]:
			w.removeWorker(pl.worker)
		}

	case areaWorker:
		if pl.kind == 0 || !w.workers[pl.worker] {
			return // bin/ and anything else beside the watched areas
		}
		switch {
		case created && isDir(p):
			files, err := w.watchTree(p, pl.kind)
			w.report(err)
			if len(files) > 0 {
				w.queue(pl.kind, pl.worker, files...)
			}
		case gone && w.unwatch(p):
			w.queue(pl.kind, pl.worker, p)
		}

	case areaTree, areaServer:
		base := filepath.Base(p)
		if ignoredName(base) || pl.area == areaTree && !w.workers[pl.worker] {
			return // late events of a worker already removed
		}
		if created && isDir(p) {
			if skipDirName(pl.kind, base) || w.skipServerDir(pl.kind, p) {
				return
			}
			// A directory can arrive with content (mkdir -p, cp -r, mv, git
			// checkout) before its watch exists: report what the walk finds.
			files, err := w.watchTree(p, pl.kind)
			w.report(err)
			if len(files) > 0 {
				w.queue(pl.kind, pl.worker, files...)
			}
			return
		}
		wasDir := gone && w.unwatch(p)
		if wasDir || counts(pl.kind, base) {
			w.queue(pl.kind, pl.worker, p)
		}

	case areaConfig:
		if base := filepath.Base(p); !ignoredName(base) && counts(events.ConfigChanged, base) {
			w.queue(events.ConfigChanged, "", p)
		}
	}
}

// handleError reacts to an error from fsnotify. A queue overflow means events
// were lost: rescan and report everything, since something may have changed.
func (w *Watcher) handleError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.log.Warn().Msg("inotify event queue overflowed; rescanning and reporting every worker as changed")
		w.report(w.watchAll(true))
		return
	}
	w.log.Error().Err(err).Msg("file watcher error")
}

// report logs an error from adding watches while running: the watcher keeps
// going, but changes below the directory will be missed.
func (w *Watcher) report(err error) {
	if err != nil {
		w.log.Error().Err(err).Msg("watcher: changes in new directories will be missed")
	}
}

// watchAll (re)adds the watches of the whole tree. With report set (a rescan)
// it also queues a change for every area that exists, WorkerAdded for workers
// it did not know and WorkerRemoved for known workers that are gone. Only an
// inotify limit error stops it.
func (w *Watcher) watchAll(report bool) error {
	if report {
		for d := range w.dirs {
			if !isDir(d) {
				w.fs.Remove(d) // usually gone already; inotify drops watches of deleted directories
				delete(w.dirs, d)
			}
		}
	}
	if _, err := w.addWatch(w.lay.root); err != nil {
		return err
	}
	if parent := filepath.Dir(w.lay.workers); parent != w.lay.root && isDir(parent) {
		if _, err := w.addWatch(parent); err != nil {
			return err
		}
	}
	if isDir(w.lay.config) {
		if _, err := w.addWatch(w.lay.config); err != nil {
			return err
		}
		if report {
			w.queue(events.ConfigChanged, "", w.lay.config)
		}
	}

	seen := map[string]bool{}
	if isDir(w.lay.workers) {
		if _, err := w.addWatch(w.lay.workers); err != nil {
			return err
		}
		entries, err := os.ReadDir(w.lay.workers)
		if err != nil {
			w.log.Warn().Err(err).Msg("watcher: list workers")
		}
		for _, e := range entries {
			name := e.Name()
			if !e.IsDir() || strings.HasPrefix(name, ".") {
				continue
			}
			seen[name] = true
			switch {
			case !w.workers[name] && report:
				if err := w.addWorker(name); err != nil {
					return err
				}
			default:
				w.workers[name] = true
				if _, err := w.watchWorker(name); err != nil {
					return err
				}
				if !report {
					continue
				}
				for _, a := range areaOrder {
					if dir := filepath.Join(w.lay.workers, name, a); isDir(dir) {
						w.queue(workerAreas[a], name, dir)
					}
				}
			}
		}
	}
	if report {
		for name := range w.workers {
			if !seen[name] {
				w.removeWorker(name)
			}
		}
	}

	for _, dir := range w.lay.server {
		if !isDir(dir) {
			w.log.Warn().Str("dir", dir).Msg("watcher: server source directory missing")
			continue
		}
		if _, err := w.watchTree(dir, events.ServerChanged); err != nil {
			return err
		}
		if report {
			w.queue(events.ServerChanged, "", dir)
		}
	}
	return nil
}

// watchWorkersDir starts watching a workers/ that just appeared; every
// directory in it is a new worker.
func (w *Watcher) watchWorkersDir() {
	if ok, err := w.addWatch(w.lay.workers); !ok {
		w.report(err)
		return
	}
	entries, _ := os.ReadDir(w.lay.workers)
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			if err := w.addWorker(e.Name()); err != nil {
				return
			}
		}
	}
}

// watchConfig starts watching a config/ that just appeared.
func (w *Watcher) watchConfig(dir string) {
	if _, err := w.addWatch(dir); err != nil {
		w.report(err)
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() && !ignoredName(e.Name()) && counts(events.ConfigChanged, e.Name()) {
			w.queue(events.ConfigChanged, "", filepath.Join(dir, e.Name()))
		}
	}
}

// addWorker watches a new worker directory and queues WorkerAdded with the
// directory and its files; changes inside it during the debounce join that
// event.
func (w *Watcher) addWorker(name string) error {
	w.workers[name] = true
	dir := filepath.Join(w.lay.workers, name)
	for _, kind := range workerAreas {
		w.deb.drop(key{kind, name})
	}
	files, err := w.watchWorker(name)
	w.deb.add(w.clock.Now(), key{events.WorkerAdded, name}, append(files, dir)...)
	w.report(err)
	return err
}

// removeWorker forgets a worker whose directory is gone; what was pending
// for it no longer matters.
func (w *Watcher) removeWorker(name string) {
	delete(w.workers, name)
	dir := filepath.Join(w.lay.workers, name)
	w.unwatch(dir)
	for _, k := range []events.ChangeKind{events.WorkerAdded, events.SourceChanged, events.PublicChanged, events.PrivateChanged} {
		w.deb.drop(key{k, name})
	}
	w.queue(events.WorkerRemoved, name, dir)
}

// watchWorker watches workers/{name} (to see src/, public/, private/ appear)
// and its areas, and returns the files in them.
func (w *Watcher) watchWorker(name string) ([]string, error) {
	dir := filepath.Join(w.lay.workers, name)
	if ok, err := w.addWatch(dir); !ok {
		return nil, err
	}
	var files []string
	for _, a := range areaOrder {
		if p := filepath.Join(dir, a); isDir(p) {
			f, err := w.watchTree(p, workerAreas[a])
			files = append(files, f...)
			if err != nil {
				return files, err
			}
		}
	}
	return files, nil
}

// watchTree watches dir and every directory below it that is not skipped,
// and returns the files that count for kind. Each directory is watched before
// it is listed, so a file created meanwhile is either listed or reported.
func (w *Watcher) watchTree(dir string, kind events.ChangeKind) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished or unreadable while walking: nothing to watch there
		}
		if d.IsDir() {
			if p != dir && (skipDirName(kind, d.Name()) || w.skipServerDir(kind, p)) {
				return filepath.SkipDir
			}
			ok, err := w.addWatch(p)
			if err != nil {
				return err
			}
			if !ok {
				return filepath.SkipDir
			}
			return nil
		}
		if !ignoredName(d.Name()) && counts(kind, d.Name()) {
			files = append(files, p)
		}
		return nil
	})
	return files, err
}

// skipServerDir keeps a server source tree that contains the app root from
// watching what has its own rules (workers/, config/) or is state (var/).
func (w *Watcher) skipServerDir(kind events.ChangeKind, p string) bool {
	return kind == events.ServerChanged && (p == w.lay.workers || p == w.lay.config || p == w.vars)
}

// addWatch watches one directory. ok is false when it could not be watched;
// err is set only when the inotify watch limit is reached, which the user
// must fix. Other failures (the directory vanished, no permission) are logged.
func (w *Watcher) addWatch(dir string) (ok bool, err error) {
	if err := w.fs.Add(dir); err != nil {
		var le *limitError
		if errors.As(explainLimit(err), &le) {
			return false, fmt.Errorf("watch %s: %w", dir, le)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			w.log.Warn().Err(err).Str("dir", dir).Msg("watcher: cannot watch directory")
		}
		return false, nil
	}
	w.dirs[dir] = true
	return true, nil
}

// unwatch drops the watches on dir and below it, and reports whether dir was
// watched. inotify already dropped them if the directory was deleted; they
// must go when it was moved away, or its events would carry stale paths.
func (w *Watcher) unwatch(dir string) bool {
	if !w.dirs[dir] {
		return false
	}
	for d := range w.dirs {
		if d == dir || under(dir, d) != nil {
			w.fs.Remove(d) // an error means the watch is already gone
			delete(w.dirs, d)
		}
	}
	return true
}
