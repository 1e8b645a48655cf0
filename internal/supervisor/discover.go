package supervisor

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

var workerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// ValidWorkerName reports whether name may be a worker (CONTRACT.md §1).
func ValidWorkerName(name string) bool { return workerName.MatchString(name) }

// found is a worker directory that has a binary to run.
type found struct {
	name  string
	dir   string      // absolute workers/{name}
	bin   string      // absolute workers/{name}/bin/{name}
	stamp workerStamp // taken by discover
}

// discover lists the runnable workers under workersDir, with the stamps a
// reload compares. Directories with an invalid name, or without a binary,
// are returned as warnings. The per-worker stat calls run in parallel: with
// a thousand workers they are most of a reload's cost.
func discover(workersDir string) (map[string]found, []string, error) {
	entries, err := os.ReadDir(workersDir)
	if err != nil {
		if os.IsNotExist(err) {
			return map[string]found{}, []string{fmt.Sprintf("%s: no workers directory", workersDir)}, nil
		}
		return nil, nil, fmt.Errorf("discover workers: %w", err)
	}
	var warnings []string
	cands := make([]found, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		dir := filepath.Join(workersDir, name)
		if !ValidWorkerName(name) {
			warnings = append(warnings, fmt.Sprintf("%s: skipped: worker names must match %s", dir, workerName))
			continue
		}
		cands = append(cands, found{name: name, dir: dir, bin: filepath.Join(dir, "bin", name)})
	}
	parallel(len(cands), func(i int) { cands[i].stamp = statWorker(cands[i]) })
	out := make(map[string]found, len(cands))
	for _, f := range cands {
		if !f.stamp.bin.exists {
			if _, serr := os.Stat(filepath.Join(f.dir, "src", "main.go")); serr == nil {
				warnings = append(warnings, fmt.Sprintf("%s: skipped: no binary bin/%s (build it with `tqserver build %s`)", f.dir, f.name, f.name))
			} else if fi, serr := os.Stat(f.dir); serr == nil && fi.IsDir() {
				warnings = append(warnings, fmt.Sprintf("%s: skipped: neither bin/%s nor src/main.go", f.dir, f.name))
			}
			continue
		}
		out[f.name] = f
	}
	return out, warnings, nil
}

// parallel runs fn(0..n-1) on a few goroutines; stat calls block in the
// kernel, so this helps even on few cores.
func parallel(n int, fn func(i int)) {
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

// fileStamp identifies one version of a file by what SIGHUP compares.
type fileStamp struct {
	exists bool
	mtime  int64
	size   int64
}

func statFile(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return fileStamp{}
	}
	return fileStamp{exists: true, mtime: fi.ModTime().UnixNano(), size: fi.Size()}
}

// treeStamp summarises a directory tree: the newest mtime of any entry
// (including directories, so deletions show), the entry count and total size.
type treeStamp struct {
	newest int64
	count  int
	size   int64
}

func statTree(dir string) treeStamp {
	var ts treeStamp
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable parts count as absent
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		ts.count++
		if m := fi.ModTime().UnixNano(); m > ts.newest {
			ts.newest = m
		}
		if fi.Mode().IsRegular() {
			ts.size += fi.Size()
		}
		return nil
	})
	return ts
}

// workerStamp is everything of one worker that a reload compares.
type workerStamp struct {
	bin     binStamp
	public  treeStamp
	private treeStamp
}

// statWorker stamps f without reading its binary (binStamp.hashed false).
func statWorker(f found) workerStamp {
	return workerStamp{
		bin:     statBin(f.bin),
		public:  statTree(filepath.Join(f.dir, "public")),
		private: statTree(filepath.Join(f.dir, "private")),
	}
}

// stampWorker stamps f with its binary's content hash: for a binary that is
// about to run (a dev build just installed it).
func stampWorker(f found) workerStamp {
	ws := statWorker(f)
	if b, err := hashBin(f.bin); err == nil {
		ws.bin = b
	}
	return ws
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
