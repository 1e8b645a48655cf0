package process

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Adopt takes over a running instance a previous server started (a server
// self-upgrade): pid, started at ticks, marked with mark. It is not this
// process's child: its parent, the previous server, stays alive as long as
// any of its instances does (it reaps them and keeps logging their output),
// so the returned Process watches it through a pidfd, signals its group like
// any other, and cannot tell how it ended (Exit says exit code -1). When it
// exits, what is left of it (cgroup, marked descendants) is killed as for
// an instance started here. A pid that no longer names that process is an
// error.
func Adopt(pid int, ticks uint64, mark string, log zerolog.Logger) (*Process, error) {
	if pid <= 1 || pid == os.Getpid() {
		return nil, fmt.Errorf("adopt pid %d: not a worker process", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	// With the pidfd open, a matching start time means the pidfd is that
	// process: it cannot be reused while we hold it.
	if !Alive(pid, ticks) || exited(fd) {
		unix.Close(fd)
		return nil, fmt.Errorf("adopt pid %d: not running any more (or the pid was reused)", pid)
	}
	cgDir, cgRel := instanceCgroup(mark)
	if cgDir != "" && cgroupOf(pid) != cgRel {
		cgDir, cgRel = "", "" // started before cgroups were on: the marker finds its descendants
	}
	p := &Process{PID: pid, StartTicks: ticks, out: newOutput(log, defaultTailLines, Output{}), log: log, mark: mark,
		cgDir: cgDir, cgRel: cgRel, done: make(chan struct{})}
	go p.waitAdopted(fd)
	return p, nil
}

// waitAdopted is wait for an adopted process: its parent reaps it, so this
// only learns that it exited.
func (p *Process) waitAdopted(fd int) {
	defer unix.Close(fd)
	_ = ignoringEINTR(func() error {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		return err
	})
	p.mu.Lock()
	// Its parent may reap it any moment now; from then on its pid and
	// group id may be someone else's, so no more group signals from here.
	p.reaped = true
	p.exit = ExitStatus{Code: -1}
	p.mu.Unlock()
	p.killDescendants()
	close(p.done)
}

// Adopted reports whether p was taken over with Adopt (not started here).
func (p *Process) Adopted() bool { return p.cmd == nil }

// ReapServerZombies reaps zombie children in this process's own process
// group other than except: servers of a hand-off chain that exited after
// being reparented to this one (a child subreaper that stays the parent of
// its instances). os/exec's children in the group are the caller's to
// exclude.
func ReapServerZombies(except int) {
	own := unix.Getpgrp()
	for _, pid := range children() {
		if pid != except {
			reapChild(pid, func(pid int, st procStat) bool { return st.pgrp == own })
		}
	}
}
