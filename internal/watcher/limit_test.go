package watcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// setLimitFiles points the /proc tunables at files under the test's control.
func setLimitFiles(t *testing.T, watches string) {
	t.Helper()
	dir := t.TempDir()
	old1, old2 := maxUserWatchesFile, maxUserInstancesFile
	maxUserWatchesFile = filepath.Join(dir, "max_user_watches")
	maxUserInstancesFile = filepath.Join(dir, "max_user_instances")
	t.Cleanup(func() { maxUserWatchesFile, maxUserInstancesFile = old1, old2 })
	if watches != "" {
		if err := os.WriteFile(maxUserWatchesFile, []byte(watches), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExplainLimitWatches(t *testing.T) {
	setLimitFiles(t, "8192\n")
	err := explainLimit(fmt.Errorf("add: %w", syscall.ENOSPC))
	want := "inotify watch limit reached (fs.inotify.max_user_watches = 8192): raise it with: sudo sysctl fs.inotify.max_user_watches=524288"
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err, want)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatal("the explained error no longer matches ENOSPC")
	}
}

func TestExplainLimitUnreadable(t *testing.T) {
	setLimitFiles(t, "")
	err := explainLimit(syscall.ENOSPC)
	want := "inotify watch limit reached (fs.inotify.max_user_watches = unknown): raise it with: sudo sysctl fs.inotify.max_user_watches=524288"
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err, want)
	}
}

func TestExplainLimitInstances(t *testing.T) {
	setLimitFiles(t, "")
	if err := os.WriteFile(maxUserInstancesFile, []byte("128\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := explainLimit(syscall.EMFILE)
	want := "inotify instance limit reached (fs.inotify.max_user_instances = 128): raise it with: sudo sysctl fs.inotify.max_user_instances=1024"
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err, want)
	}
}

func TestExplainLimitOtherErrors(t *testing.T) {
	for _, err := range []error{syscall.EACCES, os.ErrNotExist, errors.New("boom")} {
		if got := explainLimit(err); got != err {
			t.Errorf("explainLimit(%v) = %v, want it unchanged", err, got)
		}
	}
}

// The real kernel value reads as a number (the test cannot lower the limit,
// but it can check the message would carry the real one).
func TestReadLimitFromProc(t *testing.T) {
	if _, err := os.Stat(maxUserWatchesFile); err != nil {
		t.Skip("no /proc inotify tunables here")
	}
	n := readLimit(maxUserWatchesFile)
	var v int
	if _, err := fmt.Sscan(n, &v); err != nil || v <= 0 {
		t.Fatalf("readLimit(%s) = %q, want a positive number", maxUserWatchesFile, n)
	}
}
