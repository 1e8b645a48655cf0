package watcher

import (
	"path"
	"path/filepath"
	"strings"

	"github.com/mevdschee/tqserver/internal/events"
)

// wanted reports whether a change to p (a file, or a directory reported as
// a whole) of kind counts under Options.Patterns and Options.IgnoreResources.
// A directory, or a path that no longer exists, counts when something under
// it could match a pattern.
func (w *Watcher) wanted(kind events.ChangeKind, p string) bool {
	switch kind {
	case events.PublicChanged, events.PrivateChanged:
		return !w.ignoreResources
	case events.SourceChanged, events.ConfigChanged, events.ServerChanged:
	default:
		return true // workers added and removed are not file changes
	}
	if w.patterns == nil {
		return true
	}
	rel := p
	if r, err := filepath.Rel(w.lay.root, p); err == nil && !strings.HasPrefix(r, "..") {
		rel = filepath.ToSlash(r)
	}
	dirLike := isDir(p) || !exists(p)
	for _, pat := range w.patterns {
		name := rel
		if path.IsAbs(pat) {
			name = filepath.ToSlash(p)
		}
		if matchSegs(strings.Split(pat, "/"), strings.Split(name, "/"), dirLike) {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := filepath.EvalSymlinks(p)
	return err == nil
}

// matchSegs matches path segments against pattern segments: each segment
// as path.Match, "**" as any number of segments (none included). With
// prefix, a name that ends while the pattern goes on matches too: a
// directory that may hold matching files.
func matchSegs(pat, name []string, prefix bool) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if matchSegs(pat[1:], name[i:], prefix) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return prefix
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
