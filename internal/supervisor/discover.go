package supervisor

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/mevdschee/tqserver/internal/layout"
)

// found is a worker directory that has a binary to run.
type found struct {
	name  string
	dir   string      // absolute workers/{name}
	bin   string      // absolute workers/{name}/bin/{name}
	stamp workerStamp // taken by discover
}

// discover lists the runnable workers of lay (layout.Binaries), with the
// stamps a reload compares; the directories it skipped come back as
// warnings. The per-worker stat calls run in parallel: with a thousand
// workers they are most of a reload's cost.
func discover(lay layout.Root) (map[string]found, []string, error) {
	fs, warnings, err := lay.Discover(layout.Binaries)
	if err != nil {
		return nil, nil, err
	}
	cands := make([]found, len(fs))
	layout.Parallel(len(fs), func(i int) {
		f := foundOf(fs[i].Worker)
		f.stamp = workerStamp{
			bin:     binStampOf(fs[i].Bin),
			public:  statTree(fs[i].Public()),
			private: statTree(fs[i].Private()),
		}
		cands[i] = f
	})
	out := make(map[string]found, len(cands))
	for _, f := range cands {
		out[f.name] = f
	}
	return out, warnings, nil
}

func foundOf(w layout.Worker) found {
	return found{name: w.Name, dir: w.Dir, bin: w.Binary()}
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
	w := layout.Worker{Name: f.name, Dir: f.dir}
	return workerStamp{
		bin:     statBin(f.bin),
		public:  statTree(w.Public()),
		private: statTree(w.Private()),
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
