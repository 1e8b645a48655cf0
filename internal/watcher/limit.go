package watcher

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Kernel tunables behind the two inotify limits, read for the error message.
var (
	maxUserWatchesFile   = "/proc/sys/fs/inotify/max_user_watches"
	maxUserInstancesFile = "/proc/sys/fs/inotify/max_user_instances"
)

// limitError is an inotify limit reached, with the advice to raise it. It
// unwraps to the syscall error (ENOSPC or EMFILE).
type limitError struct {
	setting string // fs.inotify.max_user_watches
	current string // what the kernel reports now, "unknown" if unreadable
	raiseTo int
	what    string // "watch limit"
	err     error
}

func (e *limitError) Error() string {
	return fmt.Sprintf("inotify %s reached (%s = %s): raise it with: sudo sysctl %s=%d",
		e.what, e.setting, e.current, e.setting, e.raiseTo)
}

func (e *limitError) Unwrap() error { return e.err }

// readLimit returns the trimmed content of a /proc tunable, or "unknown".
func readLimit(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "unknown"
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "unknown"
}

// explainLimit turns the errors inotify gives when a per-user limit is hit
// into one actionable line; any other error is returned unchanged.
func explainLimit(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return &limitError{what: "watch limit", setting: "fs.inotify.max_user_watches",
			current: readLimit(maxUserWatchesFile), raiseTo: 524288, err: err}
	case errors.Is(err, syscall.EMFILE):
		return &limitError{what: "instance limit", setting: "fs.inotify.max_user_instances",
			current: readLimit(maxUserInstancesFile), raiseTo: 1024, err: err}
	}
	return err
}
