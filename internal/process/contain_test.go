package process

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// markedSpec is a helper spec carrying a mark unique to the test.
func markedSpec(t *testing.T, args ...string) Spec {
	t.Helper()
	spec := helperSpec(t, args...)
	spec.Mark = Mark(t.TempDir(), "w-1")
	return spec
}

// subreaper makes the test process a child subreaper for one test.
func subreaper(t *testing.T) {
	t.Helper()
	stop, err := EnableSubreaper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	})
}

// procGone reports whether /proc has no entry for pid: not even a zombie.
func procGone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(err, fs.ErrNotExist)
}

func TestStopKillsSetsidDescendant(t *testing.T) {
	for _, then := range []string{"sleep", "ignoreterm", "exit"} {
		t.Run("leader "+then, func(t *testing.T) {
			// The child leaves the group and the session: group signals miss it.
			p := start(t, markedSpec(t, "spawn", "ignoreterm", "setsid", then))
			cpid, cticks := childOf(t, waitLine(t, p, "child "))
			if then == "exit" {
				waitDone(t, p) // the leader ended on its own: a crash
			} else {
				waitLine(t, p, "ready")
				stop(t, p, 100*time.Millisecond)
			}
			if Alive(cpid, cticks) {
				t.Fatalf("setsid child %d outlived its instance", cpid)
			}
		})
	}
}

func TestUnmarkedSetsidDescendantIsOutOfReach(t *testing.T) {
	// Without a mark nothing names the child: it survives (the reason for Mark).
	p := start(t, helperSpec(t, "spawn", "sleep", "setsid", "sleep"))
	cpid, cticks := childOf(t, waitLine(t, p, "child "))
	waitLine(t, p, "ready")
	stop(t, p, time.Second)
	if !Alive(cpid, cticks) {
		t.Fatal("unmarked setsid child died; the marked tests prove nothing")
	}
}

func TestSubreaperReapsKilledDescendants(t *testing.T) {
	subreaper(t)
	for _, group := range []string{"same", "setsid"} {
		t.Run(group, func(t *testing.T) {
			stopReapsChild(t, markedSpec(t, "spawn", "ignoreterm", group, "sleep"))
		})
	}
}

func TestReapMarkedAfterCrash(t *testing.T) {
	// A leader started by a server that crashed: it died through its
	// parent-death signal; its setsid child ignores SIGTERM and lives on.
	mark := Mark(t.TempDir(), "api-7")
	o := startOrphanEnv(t, append(helperEnviron(), MarkEnv+"="+mark), "spawn", "ignoreterm", "setsid", "sleep")
	cpid, cticks := childOf(t, o.expect(t, "child "))
	o.expect(t, "ready")
	if err := unix.Kill(o.pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	o.wait(t)
	if !Alive(cpid, cticks) {
		t.Fatal("test setup: the setsid child died with its leader")
	}
	if n := Marked(mark, o.ticks); n != 1 {
		t.Fatalf("Marked = %d, want 1", n)
	}
	for _, tc := range []struct {
		name      string
		mark      string
		notBefore uint64
	}{
		{"other instance", Mark(t.TempDir(), "api-7"), o.ticks},
		{"prefix of the mark", mark[:len(mark)-1], o.ticks},
		{"started before the leader", mark, cticks + 1},
	} {
		if n := Marked(tc.mark, tc.notBefore); n != 0 {
			t.Errorf("%s: Marked = %d, want 0", tc.name, n)
		}
		if n, err := ReapMarked(tc.mark, tc.notBefore, 0); n != 0 || err != nil {
			t.Errorf("%s: ReapMarked = %d, %v; want 0, nil", tc.name, n, err)
		}
	}
	if !Alive(cpid, cticks) {
		t.Fatal("a non-matching ReapMarked killed the child")
	}

	const grace = 200 * time.Millisecond
	t0 := time.Now()
	n, err := ReapMarked(mark, o.ticks, grace)
	if n != 1 || err != nil {
		t.Fatalf("ReapMarked = %d, %v; want 1, nil", n, err)
	}
	if d := time.Since(t0); d < grace {
		t.Errorf("ReapMarked took %s; the child ignores SIGTERM, so it should wait the grace %s", d, grace)
	}
	if Alive(cpid, cticks) {
		t.Error("setsid child alive after ReapMarked")
	}
	if _, err := ReapMarked("", 0, 0); err == nil {
		t.Error("ReapMarked with an empty mark: no error")
	}
}

func TestHasVar(t *testing.T) {
	env := []byte("A=1\x00TQ_INSTANCE_MARK=ab/w-10\x00B=2\x00")
	for want, ok := range map[string]bool{
		"TQ_INSTANCE_MARK=ab/w-10\x00": true,
		"TQ_INSTANCE_MARK=ab/w-1\x00":  false,
		"B=2\x00":                      true,
		"A=1\x00":                      true,
		"=1\x00":                       false,
	} {
		if got := hasVar(env, []byte(want)); got != ok {
			t.Errorf("hasVar(%q) = %v, want %v", want, got, ok)
		}
	}
}

func TestWithMark(t *testing.T) {
	got := withMark([]string{"A=1", MarkEnv + "=outer/x-1", "B=2"}, "inner/y-2")
	want := []string{"A=1", "B=2", MarkEnv + "=inner/y-2"}
	if len(got) != len(want) {
		t.Fatalf("withMark = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("withMark = %q, want %q", got, want)
		}
	}
}

func TestSubreaperReapsOrphanZombies(t *testing.T) {
	// The worker's child exits; its own child (the worker's grandchild, in
	// the worker's group) is reparented to this process and then exits on
	// its own, while the worker still runs: nobody kills it, and its zombie
	// must still not linger.
	subreaper(t)
	p := start(t, markedSpec(t, "spawn", "orphanmaker", "same", "sleep"))
	gpid, _ := childOf(t, waitLine(t, p, "grandchild "))
	eventually(t, fmt.Sprintf("orphaned grandchild %d reaped", gpid), func() bool { return procGone(gpid) })
	select {
	case <-p.Done():
		t.Fatal("the worker exited; the test proves nothing")
	default:
	}
}

func TestStopAll(t *testing.T) {
	// What an interrupted shutdown leaves: a crashed leader's setsid child.
	root := t.TempDir()
	mine := startOrphanEnv(t, append(helperEnviron(), MarkEnv+"="+Mark(root, "a-1")), "spawn", "ignoreterm", "setsid", "sleep")
	other := startOrphanEnv(t, append(helperEnviron(), MarkEnv+"="+Mark(t.TempDir(), "a-1")), "spawn", "ignoreterm", "setsid", "sleep")
	mpid, mticks := childOf(t, mine.expect(t, "child "))
	opid, oticks := childOf(t, other.expect(t, "child "))
	StopAll(root)
	if Alive(mpid, mticks) {
		t.Errorf("child %d of the app's instance alive after StopAll", mpid)
	}
	if st := mine.wait(t); signalOf(t, st) != "SIGKILL" {
		t.Errorf("the app's leader ended with %s, want SIGKILL", signalOf(t, st))
	}
	if !Alive(opid, oticks) {
		t.Errorf("child %d of another app root's instance killed by StopAll", opid)
	}
}

func TestStopAllCgroup(t *testing.T) {
	root := withCgroups(t)
	spec := helperSpec(t, "spawn", "ignoreterm", "bare", "sleep")
	spec.Mark = Mark(root, "b-1")
	p := start(t, spec)
	cpid, cticks := childOf(t, waitLine(t, p, "child "))
	StopAll(root)
	waitDone(t, p)
	if Alive(cpid, cticks) {
		t.Errorf("child %d (no mark, in the cgroup) alive after StopAll", cpid)
	}
}

// stopReapsChild starts spec (a helper that spawns a child), stops it and
// checks that the child was reparented to this process when the leader
// died, killed, and its zombie reaped by the time Stop returned.
func stopReapsChild(t *testing.T, spec Spec) {
	t.Helper()
	p := start(t, spec)
	cpid, _ := childOf(t, waitLine(t, p, "child "))
	waitLine(t, p, "ready")
	stop(t, p, time.Second)
	if !procGone(cpid) {
		st, _ := readStat(cpid)
		t.Fatalf("child %d still in /proc after Stop (state %c, ppid %d, we are %d)", cpid, st.state, st.ppid, os.Getpid())
	}
}
