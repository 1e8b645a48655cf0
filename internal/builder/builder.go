package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
)

// Options tune a build.
type Options struct {
	LDFlags string // e.g. "-s -w" for prod
	Prod    bool   // also write bin/{name}.sha256
	Go      string // go command; default "go"
	// Stage leaves a successful build in Result.Staged instead of renaming
	// it over the binary; Install (or Discard) finishes it. Dev mode stages
	// the builds it starts before a change has settled.
	Stage bool
	// Layout, when set, says where the binary goes (binaries.path);
	// nil means workers/{name}/bin/{name}.
	Layout *layout.Root
}

// Result of one build.
type Result struct {
	Worker   string
	Binary   string
	Staged   string // with Options.Stage: the built file, not yet installed
	Duration time.Duration
	Output   string // compiler output (on failure: the errors)
	Err      error
	Canceled bool // the context ended the build (a newer change superseded it)
	// Unchanged: the new build is byte for byte the installed binary, which
	// was left alone (its mtime stays, so a deploy copies nothing new).
	Unchanged bool
	prod      bool // the build wrote bin/{name}.sha256
}

// Build compiles workerDir/src to workerDir/bin/{name}.
func Build(ctx context.Context, workerDir string, o Options) (res Result) {
	lw := layout.WorkerOf(workerDir)
	name := lw.Name
	bin := lw.Binary()
	if o.Layout != nil {
		bin = o.Layout.Worker(name).Binary()
	}
	res = Result{Worker: name, Binary: bin}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	if !lw.HasSource() {
		res.Err = fmt.Errorf("build %s: no src/main.go in %s", name, workerDir)
		return res
	}
	compile(ctx, &res, lw.Src(), ".", o)
	return res
}

// compile runs go build of pkg in dir to a temporary file next to
// res.Binary and, unless o.Stage, installs it there when its bytes differ.
func compile(ctx context.Context, res *Result, dir, pkg string, o Options) {
	name := res.Worker
	if err := os.MkdirAll(filepath.Dir(res.Binary), 0o755); err != nil {
		res.Err = fmt.Errorf("build %s: %w", name, err)
		return
	}
	// A unique temp name: a cancelled build may still be exiting while its
	// successor starts.
	f, err := os.CreateTemp(filepath.Dir(res.Binary), "."+name+".build-*")
	if err != nil {
		res.Err = fmt.Errorf("build %s: %w", name, err)
		return
	}
	tmp := f.Name()
	f.Close()
	args := []string{"build", "-o", tmp}
	if o.LDFlags != "" {
		args = append(args, "-ldflags="+o.LDFlags)
	}
	args = append(args, pkg)
	gocmd := o.Go
	if gocmd == "" {
		gocmd = "go"
	}
	cmd := exec.CommandContext(ctx, gocmd, args...)
	cmd.Dir = dir
	// Cancelling kills the whole build (go and its compile/link children).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err = cmd.Run()
	res.Output = strings.TrimSpace(out.String())
	if ctx.Err() != nil {
		os.Remove(tmp)
		res.Err = fmt.Errorf("build %s: %w", name, ctx.Err())
		res.Canceled = true
		return
	}
	if err != nil {
		os.Remove(tmp)
		res.Err = fmt.Errorf("build %s: %w", name, err)
		if line := firstLine(res.Output); line != "" {
			res.Err = fmt.Errorf("build %s: %s", name, line)
		}
		return
	}
	if o.Prod {
		sum, err := fileSHA256(tmp)
		if err != nil {
			os.Remove(tmp)
			res.Err = fmt.Errorf("build %s: %w", name, err)
			return
		}
		if err := writeIfChanged(layout.ChecksumOf(res.Binary), []byte(sum+"  "+filepath.Base(res.Binary)+"\n")); err != nil {
			os.Remove(tmp)
			res.Err = fmt.Errorf("build %s: %w", name, err)
			return
		}
	}
	res.Staged, res.prod = tmp, o.Prod
	if !o.Stage {
		same, err := sameFile(tmp, res.Binary)
		if err != nil {
			os.Remove(tmp)
			res.Err = fmt.Errorf("build %s: compare with the installed binary: %w", name, err)
			return
		}
		if same {
			// Rewriting identical bytes would give every unchanged worker
			// a new mtime, and rsync a file to copy.
			Discard(res)
			if !o.Prod {
				os.Remove(layout.ChecksumOf(res.Binary))
			}
			res.Unchanged = true
			return
		}
		res.Err = Install(res)
	}
}

// sameFile reports whether the files at a and b hold the same bytes; a
// missing b is not the same.
func sameFile(a, b string) (bool, error) {
	fb, err := os.Open(b)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fb.Close()
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	sa, err := fa.Stat()
	if err != nil {
		return false, err
	}
	sb, err := fb.Stat()
	if err != nil {
		return false, err
	}
	if !sb.Mode().IsRegular() || sa.Size() != sb.Size() {
		return false, nil
	}
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra == io.EOF || erra == io.ErrUnexpectedEOF {
			return errb == io.EOF || errb == io.ErrUnexpectedEOF, nil
		}
		if erra != nil {
			return false, erra
		}
		if errb != nil {
			return false, errb
		}
	}
}

// writeIfChanged writes data to path (atomically) unless path already holds it.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return writeAtomic(path, data)
}

// Install renames a staged build over the worker's binary. A dev binary
// must not keep a prod checksum that no longer matches, so a .sha256 next to
// it goes unless the build wrote one.
func Install(res *Result) error {
	if res.Staged == "" {
		return fmt.Errorf("build %s: nothing staged to install", res.Worker)
	}
	if !res.prod {
		os.Remove(layout.ChecksumOf(res.Binary))
	}
	tmp := res.Staged
	res.Staged = ""
	if err := os.Rename(tmp, res.Binary); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("build %s: %w", res.Worker, err)
	}
	return nil
}

// Discard removes a staged build that will not be installed.
func Discard(res *Result) {
	if res.Staged != "" {
		os.Remove(res.Staged)
		res.Staged = ""
	}
}

// BuildAll builds the given worker directories, at most parallel at once,
// and returns the results in the order given.
func BuildAll(ctx context.Context, dirs []string, parallel int, o Options) []Result {
	if parallel < 1 {
		parallel = 1
	}
	out := make([]Result, len(dirs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, d := range dirs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = Build(ctx, d, o)
		}()
	}
	wg.Wait()
	return out
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return ""
}
