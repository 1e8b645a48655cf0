//go:build linux

package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
	"golang.org/x/sys/unix"
)

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (chattr +i).
const fsImmutableFL = 0x10

// setImmutable sets or clears the immutable attribute of path. Writes
// through descriptors that are already open then fail with EPERM, even for
// root — which is how these tests make a running server's log unwritable.
func setImmutable(path string, on bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags))
}

// requireImmutable skips the test unless dir's filesystem lets this process
// set the immutable attribute and enforces it on an open descriptor.
func requireImmutable(t *testing.T, dir string) {
	t.Helper()
	probe := filepath.Join(dir, "immutable-probe")
	f, err := os.OpenFile(probe, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	defer f.Close()
	if err := setImmutable(probe, true); err != nil {
		t.Skipf("cannot set the immutable attribute in %s (needs CAP_LINUX_IMMUTABLE and ext4/xfs/btrfs): %v", dir, err)
	}
	defer setImmutable(probe, false)
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EPERM) {
		t.Skipf("the filesystem of %s does not refuse writes to an immutable file (write: %v)", dir, err)
	}
}

// freezeLog makes the server's log unwritable until the test ends.
func freezeLog(t *testing.T, root string) {
	t.Helper()
	db := filepath.Join(root, "var", "tqserver.db")
	if err := setImmutable(db, true); err != nil {
		t.Fatalf("chattr +i %s: %v", db, err)
	}
	t.Cleanup(func() {
		if err := setImmutable(db, false); err != nil {
			t.Errorf("chattr -i %s: %v", db, err)
		}
	})
}

// TestShutdownWithUnwritableLog (fault 9): SIGTERM while var/tqserver.db
// cannot be written. The drains and stops cannot be recorded; the server
// says so once per record and stops every worker anyway — healthy ones and
// one still starting — within drain + grace, not at the hard deadline.
func TestShutdownWithUnwritableLog(t *testing.T) {
	const drainMs, graceMs = 1500, 500
	root := newRoot(t, `
workers:
  port_range_start: 21000
  port_range_end: 21999
  shutdown_grace_period_ms: 500
  drain_timeout_ms: 1500
  restart_delay_ms: 100
  default:
    health_timeout_ms: 30000
    health_interval_ms: 200
`)
	requireImmutable(t, filepath.Join(root, "var"))
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	install(t, root, "slow", "v1", "normal")
	writeFile(t, filepath.Join(root, "workers", "slow", "unhealthy"), "never healthy in this test\n")
	s := startServer(t, root)
	kids := watchChildren(t, s.PID())
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)
	testrig.WaitFor(t, 10*time.Second, "slow spawned (starting, with a pid)", func() bool {
		for _, w := range s.status().Workers {
			for _, in := range w.Instances {
				if w.Name == "slow" && in.State == "starting" && in.PID != 0 {
					return true
				}
			}
		}
		return false
	})
	kids.scan()
	if n := len(kids.all()); n != 3 {
		t.Fatalf("want 3 worker processes, saw %d: %+v", n, kids.all())
	}

	freezeLog(t, root)
	start := time.Now()
	s.signal(syscall.SIGTERM)
	_ = s.wait(30 * time.Second)
	took := time.Since(start)
	budget := time.Duration(drainMs+graceMs)*time.Millisecond + 2*time.Second
	t.Logf("stopped %s after SIGTERM with an unwritable log (budget %s)", took.Round(time.Millisecond), budget)
	if took > budget {
		t.Errorf("shutdown took %s with an unwritable log; want at most drain + grace + 2s = %s", took.Round(time.Millisecond), budget)
	}
	for _, k := range kids.all() {
		testrig.WaitFor(t, 2*time.Second, "worker "+k.worker+" gone with the server", func() bool { return !testrig.PIDAlive(k.pid) })
	}
	logs := s.Logs()
	if !strings.Contains(logs, "could not record during shutdown; stopping anyway") {
		t.Errorf("the lost shutdown records were not logged:\n%s", logs)
	}
	if strings.Contains(logs, "shutdown deadline passed; killing") {
		t.Errorf("workers were only stopped by the hard deadline:\n%s", logs)
	}
}
