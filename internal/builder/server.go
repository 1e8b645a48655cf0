package builder

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
)

// ServerName is the Result.Worker of a server build.
const ServerName = "server"

// BuildServer compiles the server of an app root that is the tqserver
// repository (./cmd/tqserver) to server/bin/tqserver, the way Build
// compiles a worker: through a temporary file, left alone when the bytes
// are the same, with server/bin/tqserver.sha256 when o.Prod.
func BuildServer(ctx context.Context, lay layout.Root, o Options) (res Result) {
	res = Result{Worker: ServerName, Binary: lay.ServerBinary()}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	if !lay.IsServerRepo() {
		res.Err = fmt.Errorf("build %s: %s has no %s: only the tqserver repository builds the server (elsewhere install the tqserver binary as %s)",
			ServerName, lay.Dir(), layout.ServerMainFile, layout.ServerBinaryFile)
		return res
	}
	compile(ctx, &res, lay.Dir(), "./"+filepath.ToSlash(filepath.Dir(layout.ServerMainFile)), o)
	return res
}

// Outdated reports whether the worker in workerDir needs a build: binary
// (where its build goes: Root.Worker(name).Binary()) is missing, or older
// than a file under its src/ or than go.mod or go.sum in src/ or in
// moduleRoot (the app root). Packages the worker imports from elsewhere in
// the module are not looked at: build without this check after changing
// them (go's build cache keeps that fast).
func Outdated(workerDir, binary, moduleRoot string) (bool, error) {
	lw := layout.WorkerOf(workerDir)
	bin, err := os.Stat(binary)
	if os.IsNotExist(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("check %s: %w", binary, err)
	}
	built := bin.ModTime()
	newer := false
	err = filepath.WalkDir(lw.Src(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.ModTime().After(built) {
			newer = true
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("check %s: %w", lw.Src(), err)
	}
	if newer {
		return true, nil
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		fi, err := os.Stat(filepath.Join(moduleRoot, f))
		if err == nil && fi.ModTime().After(built) {
			return true, nil
		}
	}
	return false, nil
}
