package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Rollback keeps the previous good binary of each worker: when a reload
// accepts a new binary, the program its serving instances run (read through
// /proc/PID/exe, so it is there even after bin/NAME was replaced) is copied
// to var/releases/NAME/SHA12 before the roll starts. At most keepReleases
// files stay per worker; `tqserver rollback NAME` and the automatic rollback
// (rollback_window_ms) run from there.

// keepReleases bounds var/releases/NAME: the previous binary, the one a
// rollback runs, and one more.
const keepReleases = 3

// releasesDir is var/releases/NAME.
func releasesDir(varDir, name string) string { return filepath.Join(varDir, "releases", name) }

// saveRunning copies the program of the first of pids that can be read to
// var/releases/NAME/SHA12 and returns its path. It runs beside the loop.
func saveRunning(varDir, name string, pids []int) (string, error) {
	dir := releasesDir(varDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var last error = errors.New("no serving process to copy the running binary from")
	for _, pid := range pids {
		path, err := copyRelease(dir, fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil {
			pruneReleases(dir, path)
			return path, nil
		}
		last = err
	}
	return "", fmt.Errorf("save the running binary of %s for rollback: %w", name, last)
}

func copyRelease(dir, src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".copy-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), in); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, hex.EncodeToString(h.Sum(nil))[:12])
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	now := time.Now()
	os.Chtimes(dst, now, now) // the newest, for pruning
	return dst, nil
}

// pruneReleases keeps the keepReleases newest files of dir (keep among them).
func pruneReleases(dir, keep string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type rel struct {
		path string
		mod  int64
	}
	var rs []rel
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			rs = append(rs, rel{filepath.Join(dir, e.Name()), fi.ModTime().UnixNano()})
		}
	}
	slices.SortFunc(rs, func(a, b rel) int { return int(b.mod - a.mod) })
	for i, r := range rs {
		if i >= keepReleases && r.path != keep {
			os.Remove(r.path)
		}
	}
}
