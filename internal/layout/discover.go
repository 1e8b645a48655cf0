package layout

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Want says what makes a directory under the workers directory a worker.
type Want int

const (
	// Sources: a directory that an include pattern selects and that has
	// src/main.go. This is what dev mode builds at start and what
	// `tqserver build` builds.
	Sources Want = iota + 1
	// Binaries: a directory with bin/{name}, a regular file. This is what
	// runs, in dev (after its build) and in prod.
	Binaries
)

// Found is one worker Discover found.
type Found struct {
	Worker
	// Bin is the stat of Binary() that Discover(Binaries) took; nil for
	// Sources.
	Bin fs.FileInfo
}

// Discover lists the workers of the root, sorted by name, and warnings for
// the directories it skipped. Entries whose name starts with "." and plain
// files are ignored; a directory (or symlink) with a name that breaks
// NamePattern is skipped with a warning. With Binaries, a directory without
// bin/{name} is skipped with a warning that says what it lacks; with
// Sources, directories no include pattern selects, or without src/main.go,
// are left out silently (they may be prod deploys or assets). A missing
// workers directory is no error: Binaries warns about it, Sources finds
// nothing (in dev mode both run at start; one warning is enough).
func (r Root) Discover(want Want) ([]Found, []string, error) {
	if want != Sources && want != Binaries {
		return nil, nil, fmt.Errorf("discover workers: unknown want %d", want)
	}
	entries, err := os.ReadDir(r.workers)
	if err != nil {
		if os.IsNotExist(err) {
			if want == Sources {
				return nil, nil, nil
			}
			return nil, []string{fmt.Sprintf("%s: no workers directory", r.workers)}, nil
		}
		return nil, nil, fmt.Errorf("discover workers in %s: %w", r.workers, err)
	}
	var selected map[string]bool
	if want == Sources {
		selected = r.selected()
	}
	var warnings []string
	cands := make([]Found, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if (!e.IsDir() && e.Type()&fs.ModeSymlink == 0) || strings.HasPrefix(name, ".") {
			continue
		}
		if want == Sources && !selected[name] {
			continue
		}
		w := r.Worker(name)
		if !ValidName(name) {
			warnings = append(warnings, fmt.Sprintf("%s: skipped: worker names must match %s", w.Dir, NamePattern))
			continue
		}
		cands = append(cands, Found{Worker: w})
	}
	var out []Found
	switch want {
	case Sources:
		for _, f := range cands {
			if f.HasSource() {
				out = append(out, f)
			}
		}
	case Binaries:
		Parallel(len(cands), func(i int) {
			if fi, err := os.Stat(cands[i].Binary()); err == nil && fi.Mode().IsRegular() {
				cands[i].Bin = fi
			}
		})
		for _, f := range cands {
			if f.Bin != nil {
				out = append(out, f)
				continue
			}
			bin := r.rel(f.Dir, f.Binary())
			if _, err := os.Stat(f.Main()); err == nil {
				warnings = append(warnings, fmt.Sprintf("%s: skipped: no binary %s (build it with `tqserver build %s`)", f.Dir, bin, f.Name))
			} else if isDir(f.Dir) {
				warnings = append(warnings, fmt.Sprintf("%s: skipped: neither %s nor %s/%s", f.Dir, bin, SrcDir, MainFile))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, warnings, nil
}

// rel is p relative to the worker directory dir, else to the root, when it
// is under it (for messages: "bin/index", "build/index").
func (r Root) rel(dir, p string) string {
	for _, base := range []string{dir, r.dir} {
		if rel, err := filepath.Rel(base, p); err == nil && !strings.HasPrefix(rel, "..") {
			return filepath.ToSlash(rel)
		}
	}
	return p
}

// selected is the set of top directory names that an include pattern
// matches something under. Patterns were checked by config; one that does
// not parse selects nothing.
func (r Root) selected() map[string]bool {
	sel := map[string]bool{}
	for _, pat := range r.include {
		matches, _ := filepath.Glob(filepath.Join(r.workers, pat))
		for _, m := range matches {
			rel, err := filepath.Rel(r.workers, m)
			if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
				continue
			}
			name, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
			sel[name] = true
		}
	}
	return sel
}

// Parallel runs fn(0..n-1) on a few goroutines: for stat calls per worker,
// which block in the kernel, so this helps even on few cores (with a
// thousand workers they are most of a reload's cost).
func Parallel(n int, fn func(i int)) {
	const workers = 8
	if n < 64 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
