package watcher

import (
	"path/filepath"
	"strings"

	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
)

// area says which part of the app root a path belongs to.
type area int

const (
	areaNone    area = iota
	areaTop          // workers/ or config/ itself (watched through its parent)
	areaWorkers      // workers/{name}: a worker directory
	areaWorker       // workers/{name}/{entry}: src, public, private (or something ignored)
	areaTree         // below workers/{name}/{src,public,private}/
	areaConfig       // config/{file}
	areaServer       // below one of Options.ServerSrc
)

// place is where a path sits; kind and worker are set for areaTree (and
// areaWorker when the entry is an area directory).
type place struct {
	area   area
	kind   events.ChangeKind
	worker string
	entry  string // areaWorker: the name under workers/{name}/
}

// workerAreas are the directories of a worker that are watched; bin/ is build
// output and must never trigger anything, or builds would loop.
var workerAreas = map[string]events.ChangeKind{
	layout.SrcDir:     events.SourceChanged,
	layout.PublicDir:  events.PublicChanged,
	layout.PrivateDir: events.PrivateChanged,
}

// paths are the absolute directories the watcher classifies by.
type paths struct {
	root, workers, config string
	server                []string
}

// under returns the components of p below dir, or nil when p is not strictly
// below dir.
func under(dir, p string) []string {
	if len(p) <= len(dir)+1 || !strings.HasPrefix(p, dir) || p[len(dir)] != filepath.Separator {
		return nil
	}
	return strings.Split(p[len(dir)+1:], string(filepath.Separator))
}

// locate classifies a clean absolute path. It rejects paths below an
// ignored directory but does not judge the final component; see ignoredName.
func (l *paths) locate(p string) place {
	if parts := under(l.workers, p); parts != nil {
		if strings.HasPrefix(parts[0], ".") {
			return place{}
		}
		switch len(parts) {
		case 1:
			return place{area: areaWorkers, worker: parts[0]}
		case 2:
			return place{area: areaWorker, worker: parts[0], entry: parts[1], kind: workerAreas[parts[1]]}
		}
		kind, ok := workerAreas[parts[1]]
		if !ok || hiddenDirIn(kind, parts[2:len(parts)-1]) {
			return place{}
		}
		return place{area: areaTree, kind: kind, worker: parts[0]}
	}
	if parts := under(l.config, p); parts != nil {
		if len(parts) != 1 {
			return place{}
		}
		return place{area: areaConfig, kind: events.ConfigChanged}
	}
	if p == l.workers || p == l.config {
		return place{area: areaTop}
	}
	for _, dir := range l.server {
		if parts := under(dir, p); parts != nil {
			if hiddenDirIn(events.ServerChanged, parts[:len(parts)-1]) {
				return place{}
			}
			return place{area: areaServer, kind: events.ServerChanged}
		}
	}
	return place{}
}

// hiddenDirIn reports whether any of the directory names is one the watcher
// skips in trees of this kind.
func hiddenDirIn(kind events.ChangeKind, dirs []string) bool {
	for _, d := range dirs {
		if skipDirName(kind, d) {
			return true
		}
	}
	return false
}

// skipDirName is true for directories never watched: dot directories (.git,
// .idea; public/.well-known excepted, it is served), and in the server's own
// sources also build output and test fixtures.
func skipDirName(kind events.ChangeKind, name string) bool {
	if strings.HasPrefix(name, ".") {
		return !(kind == events.PublicChanged && name == ".well-known")
	}
	if kind == events.ServerChanged {
		return name == layout.BinDir || name == "testdata" || name == "node_modules"
	}
	return false
}

// ignoredName is true for editor temp, swap, lock and backup files. Editors
// that save by writing a temp file and renaming it over the original then
// show up only as a change of the original.
func ignoredName(base string) bool {
	switch {
	case base == "4913", // vim's probe whether it may create files in the directory
		strings.HasSuffix(base, "~"),
		strings.HasSuffix(base, ".tmp"),
		strings.HasPrefix(base, ".#"), // emacs lock
		len(base) > 1 && strings.HasPrefix(base, "#") && strings.HasSuffix(base, "#"), // emacs autosave
		strings.HasSuffix(base, "___jb_tmp___"), strings.HasSuffix(base, "___jb_old___"):
		return true
	}
	if strings.HasPrefix(base, ".") { // vim swap: .name.swp, .swo, ... .swx
		ext := filepath.Ext(base)
		return len(ext) == 4 && ext[:3] == ".sw" && ext[3] >= 'a' && ext[3] <= 'z'
	}
	return false
}

// counts reports whether a (non-ignored) file of this kind is a change.
func counts(kind events.ChangeKind, base string) bool {
	switch kind {
	case events.ConfigChanged:
		return filepath.Ext(base) == ".yaml"
	case events.ServerChanged:
		return strings.HasSuffix(base, ".go") || base == "go.mod" || base == "go.sum"
	}
	return true
}
