package process

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EnableSubreaper makes the calling process a child subreaper
// (PR_SET_CHILD_SUBREAPER): a worker's descendant whose parent dies is
// reparented to it instead of to init. Those zombies are reaped: the
// instance's when it stops (see Process.Stop), and, on every SIGCHLD, any
// zombie child that cannot be one os/exec waits for (reapOrphans). Call it
// once, at start; stop ends the SIGCHLD watcher.
func EnableSubreaper() (stop func(), err error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return func() {}, fmt.Errorf("become child subreaper (prctl PR_SET_CHILD_SUBREAPER): %w", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-sigs:
				reapOrphans()
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			<-exited
		})
	}, nil
}

// leaders holds the PIDs of the processes Start started that os/exec has
// not reaped yet.
var leaders sync.Map // int -> struct{}

// reapOrphans reaps zombie children that were reparented to this process.
// os/exec's children (whose status it must collect itself) are never taken:
// Start's leaders lead their own group (pid = pgid) and are listed in
// leaders; other packages' children are either group leaders too or in this
// process's group. A reparented orphan of a worker is in the worker's
// group: neither.
func reapOrphans() {
	own := unix.Getpgrp()
	for _, pid := range children() {
		if _, ok := leaders.Load(pid); ok {
			continue
		}
		reapChild(pid, func(pid int, st procStat) bool { return st.pgrp != pid && st.pgrp != own })
	}
}

func isSubreaper() bool {
	var on int32
	err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&on)), 0, 0, 0)
	return err == nil && on != 0
}

// reapZombies reaps the zombie children of this process that belonged to
// the instance whose leader is pgid: members of its process group or of its
// cgroup rel. Only the leader's descendants can be in either, and the
// leader itself (the one os/exec waits for) is left alone, so no other
// child's status is taken. A zombie's PID stays ours until it is reaped.
func reapZombies(pgid int, rel string) {
	for _, pid := range children() {
		if pid != pgid {
			reapChild(pid, func(pid int, st procStat) bool {
				return st.pgrp == pgid || (rel != "" && cgroupOf(pid) == rel)
			})
		}
	}
}

// reapChild reaps pid if it is a zombie child of this process and ours
// says so. The pidfd pins the process: should it be reaped elsewhere and
// its PID reused meanwhile, the wait on the pidfd fails (ECHILD) instead of
// taking another child's status.
func reapChild(pid int, ours func(pid int, st procStat) bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	st, err := readStat(pid)
	if err != nil || st.state != 'Z' || st.ppid != os.Getpid() || !ours(pid, st) {
		return
	}
	var info unix.Siginfo
	_ = ignoringEINTR(func() error {
		return unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
	})
}

// children lists this process's children, from the children file of each
// of its threads (a reparented orphan may be the child of any of them), or,
// without CONFIG_PROC_CHILDREN, from a scan of /proc.
func children() []int {
	tasks, err := os.ReadDir("/proc/self/task")
	ok := err == nil
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if errors.Is(err, fs.ErrNotExist) && t.Name() == strconv.Itoa(os.Getpid()) {
			ok = false // no CONFIG_PROC_CHILDREN (a thread that just ended only lacks its own)
			break
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	if ok {
		return out
	}
	out = nil
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && st.ppid == self {
			out = append(out, pid)
		}
	}
	return out
}
