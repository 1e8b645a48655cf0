package process

import (
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestReapGroupAfterLeaderDied(t *testing.T) {
	// The leader died with the server (parent-death signal); its helper in
	// the same group ignores SIGTERM and is left behind.
	o := startOrphan(t, "spawn", "ignoreterm", "same", "sleep")
	gpid, gticks := childOf(t, o.expect(t, "child "))
	o.expect(t, "ready")

	if n, err := ReapGroup(o.pid, o.ticks, 0); n != 0 || err == nil {
		t.Errorf("ReapGroup with the leader alive = %d, %v; want a refusal", n, err)
	}
	if err := syscall.Kill(o.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	o.wait(t)
	if got := GroupMembers(o.pid, o.ticks); !slices.Equal(got, []int{gpid}) {
		t.Fatalf("GroupMembers = %v, want [%d]", got, gpid)
	}
	if got := GroupMembers(o.pid, gticks+1); len(got) != 0 {
		t.Errorf("GroupMembers started after %d = %v, want none", gticks+1, got)
	}

	const grace = 300 * time.Millisecond
	t0 := time.Now()
	n, err := ReapGroup(o.pid, o.ticks, grace)
	if n != 1 || err != nil {
		t.Fatalf("ReapGroup = %d, %v; want 1, nil", n, err)
	}
	if d := time.Since(t0); d < grace {
		t.Errorf("ReapGroup took %s; the member ignores SIGTERM, so it should wait the grace %s", d, grace)
	}
	if Alive(gpid, gticks) {
		t.Error("group member still alive after ReapGroup")
	}
	if n, err := ReapGroup(o.pid, o.ticks, 0); n != 0 || err != nil {
		t.Errorf("second ReapGroup = %d, %v; want 0, nil", n, err)
	}
}

func TestReapGroupRefuses(t *testing.T) {
	for _, pgid := range []int{-1, 0, 1, os.Getpid()} {
		ticks, _ := StartTicks(pgid)
		if n, err := ReapGroup(pgid, ticks, 0); n != 0 || err == nil {
			t.Errorf("ReapGroup(%d) = %d, %v; want a refusal", pgid, n, err)
		}
	}
}
