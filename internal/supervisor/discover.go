package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

var workerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// ValidWorkerName reports whether name may be a worker (CONTRACT.md §1).
func ValidWorkerName(name string) bool { return workerName.MatchString(name) }

// found is a worker directory that has a binary to run.
type found struct {
	name string
	dir  string // absolute workers/{name}
	bin  string // absolute workers/{name}/bin/{name}
}

// discover lists the runnable workers under workersDir. Directories with an
// invalid name, or without a binary, are returned as warnings.
func discover(workersDir string) (map[string]found, []string, error) {
	entries, err := os.ReadDir(workersDir)
	if err != nil {
		if os.IsNotExist(err) {
			return map[string]found{}, []string{fmt.Sprintf("%s: no workers directory", workersDir)}, nil
		}
		return nil, nil, fmt.Errorf("discover workers: %w", err)
	}
	out := map[string]found{}
	var warnings []string
	for _, e := range entries {
		if !e.IsDir() {
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
		bin := filepath.Join(dir, "bin", name)
		fi, err := os.Stat(bin)
		if err != nil || !fi.Mode().IsRegular() {
			if _, serr := os.Stat(filepath.Join(dir, "src", "main.go")); serr == nil {
				warnings = append(warnings, fmt.Sprintf("%s: skipped: no binary bin/%s (build it with `tqserver build %s`)", dir, name, name))
			} else {
				warnings = append(warnings, fmt.Sprintf("%s: skipped: neither bin/%s nor src/main.go", dir, name))
			}
			continue
		}
		out[name] = found{name: name, dir: dir, bin: bin}
	}
	return out, warnings, nil
}

// fileStamp identifies one version of a file by what SIGHUP compares.
type fileStamp struct {
	exists bool
	mtime  int64
	size   int64
}

func statFile(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
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
	bin     fileStamp
	public  treeStamp
	private treeStamp
}

func stampWorker(f found) workerStamp {
	return workerStamp{
		bin:     statFile(f.bin),
		public:  statTree(filepath.Join(f.dir, "public")),
		private: statTree(filepath.Join(f.dir, "private")),
	}
}

// verifyChecksum checks bin against bin.sha256 when that file exists
// (`sha256sum` format: hex digest, optionally followed by a file name).
func verifyChecksum(bin string) error {
	want, err := os.ReadFile(bin + ".sha256")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s.sha256: %w", bin, err)
	}
	fields := strings.Fields(string(want))
	if len(fields) == 0 {
		return fmt.Errorf("%s.sha256 is empty", bin)
	}
	f, err := os.Open(bin)
	if err != nil {
		return fmt.Errorf("checksum: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("checksum %s: %w", bin, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if !strings.EqualFold(got, fields[0]) {
		return fmt.Errorf("%s: sha256 %s does not match %s.sha256 (%s)", bin, got[:12], filepath.Base(bin), fields[0])
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
