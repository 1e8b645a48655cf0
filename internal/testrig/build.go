package testrig

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// TestWorkerPkg is the worker the end-to-end and supervisor tests run,
// relative to the repository root. Its answers are fixed at build time by
// main.version and main.behaviour (see its source).
const TestWorkerPkg = "./cmd/tqserver/testdata/testworker"

// ModuleRoot is the directory of the go.mod that governs the working
// directory (go test runs in the package directory).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the module, or name its root")
	}
	return filepath.Dir(mod), nil
}

// RepoRoot is the root of the tqserver source tree this package was
// compiled from: where TestWorkerPkg and ./cmd/tqserver are.
func RepoRoot() (string, error) {
	_, here, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("testrig: no source location for the tqserver repository")
	}
	root := filepath.Join(filepath.Dir(here), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("testrig: tqserver source tree not found at %s: %w", root, err)
	}
	return filepath.Clean(root), nil
}

// Build says what GoBuild compiles.
type Build struct {
	Dir  string            // where go build runs (a module root)
	Pkg  string            // the main package, relative to Dir ("./cmd/tqserver")
	Out  string            // the binary to write
	Race bool              // build with -race
	Vars map[string]string // -X main.key=value link flags
}

// GoBuild runs go build as b says; the error carries the compiler's output.
func GoBuild(b Build) error {
	args := []string{"build", "-o", b.Out}
	if b.Race {
		args = append(args, "-race")
	}
	if len(b.Vars) > 0 {
		keys := make([]string, 0, len(b.Vars))
		for k := range b.Vars {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var ld []string
		for _, k := range keys {
			ld = append(ld, "-X main."+k+"="+b.Vars[k])
		}
		args = append(args, "-ldflags", strings.Join(ld, " "))
	}
	cmd := exec.Command("go", append(args, b.Pkg)...)
	cmd.Dir = b.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(cmd.Args[1:], " "), b.Dir, err, out)
	}
	return nil
}

// BuildTestWorker builds TestWorkerPkg into out with main.version and
// main.behaviour set (an empty one keeps the worker's default), failing the
// test when it does not compile.
func BuildTestWorker(t testing.TB, out, version, behaviour string) {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	if version != "" {
		vars["version"] = version
	}
	if behaviour != "" {
		vars["behaviour"] = behaviour
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := GoBuild(Build{Dir: root, Pkg: TestWorkerPkg, Out: out, Vars: vars}); err != nil {
		t.Fatalf("build test worker: %v", err)
	}
}

// Builds builds each variant of the test worker once per test binary, into
// one directory, for tests that install the same variant many times.
type Builds struct {
	dir  string
	mu   sync.Mutex
	bins map[string]string
}

// NewBuilds keeps its binaries in dir (which the caller removes).
func NewBuilds(dir string) *Builds { return &Builds{dir: dir, bins: map[string]string{}} }

// TestWorker returns the test worker built with version and behaviour,
// building it on first use.
func (b *Builds) TestWorker(t testing.TB, version, behaviour string) string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	key := version + "-" + behaviour
	if p, ok := b.bins[key]; ok {
		return p
	}
	p := filepath.Join(b.dir, "testworker-"+key)
	BuildTestWorker(t, p, version, behaviour)
	b.bins[key] = p
	return p
}

// WorkerBinPath is where an app root keeps worker name's binary.
func WorkerBinPath(root, name string) string {
	return filepath.Join(root, "workers", name, "bin", name)
}

// InstallBytes makes data worker name's binary the way rsync deploys: a
// temporary file in the same directory, then a rename, so a running
// instance keeps its file and a watcher never sees half a binary.
func InstallBytes(root, name string, data []byte) error {
	return install(root, name, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Install is InstallBytes with the bytes of the file bin.
func Install(root, name, bin string) error {
	in, err := os.Open(bin)
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	defer in.Close()
	return install(root, name, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func install(root, name string, write func(io.Writer) error) error {
	dst := WorkerBinPath(root, name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+name+".deploy-")
	if err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("install %s at %s: %w", name, dst, err)
	}
	return nil
}

// FreePort is a loopback TCP port nobody listened on a moment ago. Someone
// else can take it before the caller binds it; callers that can, listen on
// port 0 instead.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// PIDAlive reports whether pid exists and is not a zombie.
func PIDAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
