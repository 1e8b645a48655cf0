package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// A worker's child that calls setsid() leaves its process group and session:
// group signals and the parent-death signal miss it. CONTRACT §3/§4: it must
// still not outlive its instance, the server, or a kill -9 of the server.

// bothContainments runs f with cgroups (where the machine allows them) and
// with the marker alone (TQ_CGROUPS=0).
func bothContainments(t *testing.T, f func(t *testing.T)) {
	for _, mode := range []string{"cgroups", "marker"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "marker" {
				t.Setenv("TQ_CGROUPS", "0")
			}
			f(t)
		})
	}
}

// setsidKid is one setsid child of a "setsidchild" worker instance.
type setsidKid struct {
	pid   int
	ticks uint64
}

func (k setsidKid) alive() bool { return process.Alive(k.pid, k.ticks) }

// setsidKids waits until the worker has written n pids to setsid.pids and
// returns them, in start order; the test kills any still alive at its end.
func setsidKids(t *testing.T, root, worker string, n int) []setsidKid {
	t.Helper()
	var kids []setsidKid
	testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("%d setsid child pid(s)", n), func() bool {
		b, err := os.ReadFile(filepath.Join(root, "workers", worker, "setsid.pids"))
		if err != nil {
			return false
		}
		kids = kids[:0]
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return false
			}
			ticks, _ := process.StartTicks(pid) // 0 when already gone: alive() is false
			kids = append(kids, setsidKid{pid, ticks})
		}
		return len(kids) >= n
	})
	for _, k := range kids {
		t.Cleanup(func() { // never leave the test's orphans behind
			if k.alive() {
				syscall.Kill(k.pid, syscall.SIGKILL)
			}
		})
	}
	return kids
}

// killKidsAtEnd kills, once the test and its server are done, every setsid
// child of root's index worker still running (whatever failed before).
func killKidsAtEnd(t *testing.T, root string) {
	t.Cleanup(func() { // registered before startServer: runs after its cleanup
		b, _ := os.ReadFile(filepath.Join(root, "workers", "index", "setsid.pids"))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if pid > 0 && testrig.PIDAlive(pid) && strings.HasPrefix(string(cmd), root+"/") {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// setsidServer starts a server whose only worker, index, has a setsid child.
func setsidServer(t *testing.T) (*server, string, setsidKid) {
	t.Helper()
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "setsidchild")
	killKidsAtEnd(t, root)
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	kid := setsidKids(t, root, "index", 1)[0]
	if !kid.alive() {
		t.Fatal("test setup: the setsid child is not running")
	}
	return s, root, kid
}

func TestSetsidChildDiesWithReplacedInstance(t *testing.T) {
	bothContainments(t, func(t *testing.T) {
		// (a) Replacing the instance stops the old one's setsid child.
		s, root, first := setsidServer(t)
		install(t, root, "index", "v2", "setsidchild")
		s.signal(syscall.SIGHUP)
		waitBody(t, s.URL("/"), "v2 index", 10*time.Second)
		second := setsidKids(t, root, "index", 2)[1]
		testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("setsid child %d of the replaced index-1 to die", first.pid), func() bool { return !first.alive() })
		if !second.alive() {
			t.Fatalf("setsid child %d of the serving instance died", second.pid)
		}
	})
}

func TestSetsidChildDiesWithServer(t *testing.T) {
	bothContainments(t, func(t *testing.T) {
		// (b) SIGTERM of the server stops the serving instance's setsid child
		// before the server exits.
		s, _, kid := setsidServer(t)
		s.signal(syscall.SIGTERM)
		if err := s.wait(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if kid.alive() {
			t.Fatalf("setsid child %d outlived the server", kid.pid)
		}
		line := s.Logs()
		if i := strings.Index(line, "process containment: "); i < 0 {
			t.Errorf("no containment line in the server log")
		} else if line, _, _ = strings.Cut(line[i:], "\n"); os.Getenv("TQ_CGROUPS") == "0" && strings.Contains(line, "cgroup v2") {
			t.Errorf("containment line %q with TQ_CGROUPS=0", line)
		} else {
			t.Logf("%s", line)
		}
	})
}

func TestSetsidChildDiesWithInterruptedShutdown(t *testing.T) {
	// A second signal during shutdown makes the server exit at once, while
	// its worker (which ignores SIGTERM) still runs: the leader dies of its
	// parent-death signal, its setsid child must die too.
	bothContainments(t, func(t *testing.T) {
		root := newRoot(t, fastConfig)
		install(t, root, "index", "v1", "setsidstubborn")
		killKidsAtEnd(t, root)
		s := startServer(t, root)
		waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
		kid := setsidKids(t, root, "index", 1)[0]
		s.signal(syscall.SIGTERM)
		s.signal(syscall.SIGINT) // another signal than the first, so the two are not merged
		if err := s.wait(30 * time.Second); err == nil {
			t.Fatalf("server exited cleanly; the test needs the interrupted shutdown\n%s", s.Logs())
		}
		if !strings.Contains(s.Logs(), "second signal: exiting now") {
			t.Fatalf("no interrupted shutdown in the log\n%s", s.Logs())
		}
		if kid.alive() {
			t.Fatalf("setsid child %d outlived an interrupted shutdown", kid.pid)
		}
	})
}

func TestKill9ThenRestartReapsSetsidChild(t *testing.T) {
	bothContainments(t, func(t *testing.T) {
		s, root, kid := setsidServer(t)
		leader := s.status().Workers[0].Instances[0].PID

		// (c) kill -9: the leader dies through its parent-death signal, the
		// setsid child does not; the next start must find and stop it.
		s.signal(syscall.SIGKILL)
		s.wait(10 * time.Second)
		testrig.WaitFor(t, 10*time.Second, "the leader to die with the server", func() bool { return !testrig.PIDAlive(leader) })
		if !kid.alive() {
			t.Fatal("test setup: the setsid child died with the server")
		}
		s2 := startServer(t, root)
		testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("setsid child %d reaped", kid.pid), func() bool { return !kid.alive() })
		waitBody(t, s2.URL("/"), "v1 index", 10*time.Second)
		var rec *store.Record
		for _, r := range history(t, root) {
			if r.Instance == "index-1" && r.Reason == "orphan_reaped" {
				rec = &r
			}
		}
		if rec == nil {
			t.Fatal("no orphan_reaped record for index-1")
		}
		if want := "1 process(es) it started still running"; !strings.Contains(rec.Detail, want) {
			t.Errorf("orphan_reaped detail = %q, want it to contain %q", rec.Detail, want)
		}
		s2.signal(syscall.SIGTERM)
		if err := s2.wait(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		for _, k := range setsidKids(t, root, "index", 2) {
			if k.alive() {
				t.Errorf("setsid child %d still running after a clean stop", k.pid)
			}
		}
	})
}
