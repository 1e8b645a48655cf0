package process

import (
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// An adopted process (the grandchild "middle" started: not our child) is
// stopped through its group and seen to exit through its pidfd; a pid with
// another start time is refused.
func TestAdoptStopAndRefuseReusedPID(t *testing.T) {
	middle := start(t, helperSpec(t, "middle"))
	gpid, gticks := childOf(t, waitLine(t, middle, "grandchild "))
	if _, err := Adopt(gpid, gticks+1, "", zerolog.Nop()); err == nil {
		t.Fatal("Adopt with the wrong start time succeeded")
	}
	p, err := Adopt(gpid, gticks, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		t.Fatal("adopted process reported done while running")
	default:
	}
	p.Stop(5 * time.Second)
	waitDone(t, p)
	if Alive(gpid, gticks) {
		t.Fatal("adopted process still alive after Stop")
	}
	if st := p.Exit(); st.Code != -1 || st.Signal != "" {
		t.Fatalf("exit of an adopted process = %+v, want code -1 (unknown)", st)
	}
}

// The previous server (here: middle) dying kills the instances it started
// (parent-death signal); the adopting side sees the exit.
func TestAdoptedDiesWithItsParent(t *testing.T) {
	middle := start(t, helperSpec(t, "middle"))
	gpid, gticks := childOf(t, waitLine(t, middle, "grandchild "))
	p, err := Adopt(gpid, gticks, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := middle.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
}
