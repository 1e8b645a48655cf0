package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// killWait bounds how long Reap waits for a process to vanish after SIGKILL.
const killWait = 5 * time.Second

type procStat struct {
	state byte   // field 3: R, S, D, Z, X, ...
	ppid  int    // field 4
	pgrp  int    // field 5
	start uint64 // field 22: start time in clock ticks after boot
}

func readStat(pid int) (procStat, error) {
	if pid <= 0 {
		return procStat{}, fmt.Errorf("invalid pid %d", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat reads /proc/PID/stat. Field 2 (comm) is in parentheses and may
// itself contain spaces and ')', so fields are counted after the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat: no ')'")
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("malformed /proc stat: %d fields after comm", len(f))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat: ppid: %w", err)
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat: pgrp: %w", err)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat: starttime: %w", err)
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, start: start}, nil
}

// StartTicks returns when pid started, in clock ticks after boot (field 22
// of /proc/PID/stat). PID and start ticks together name one process: a
// reused PID has a later start.
func StartTicks(pid int) (uint64, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return st.start, nil
}

// Alive reports whether pid exists, is not a zombie, and started at ticks.
func Alive(pid int, ticks uint64) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X' && st.state != 'x' && st.start == ticks
}

// Reap stops an orphan of a crashed server: a process that is not our child,
// was the leader of its own group, and is identified by pid and start ticks.
// If it is alive it gets SIGTERM (its group and itself), up to grace to go,
// then SIGKILL; once it is gone, members left in its group are SIGKILLed.
// It reports whether the process was alive. A process with other start
// ticks (a reused PID) is never signalled.
func Reap(pid int, ticks uint64, grace time.Duration) (bool, error) {
	if pid <= 1 || pid == os.Getpid() {
		return false, fmt.Errorf("reap pid %d: not a worker process", pid)
	}
	// A pidfd pins the identity: once it is open and the start ticks still
	// match, signals through it can only reach this process.
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == unix.ESRCH:
		return false, nil
	case err != nil:
		fd = -1 // no pidfd support: fall back to kill(2) right after the check
	default:
		defer unix.Close(fd)
	}
	if !Alive(pid, ticks) {
		return false, nil
	}
	signal := func(sig syscall.Signal) error {
		if !Alive(pid, ticks) {
			return nil // gone, and the PID is no longer proof of identity
		}
		err := signalGroup(pid, sig, func() error {
			if fd >= 0 {
				return unix.PidfdSendSignal(fd, sig, nil, 0)
			}
			return unix.Kill(pid, sig)
		})
		if err != nil {
			return fmt.Errorf("reap pid %d: %s: %w", pid, signalName(sig), err)
		}
		return nil
	}
	if err := signal(unix.SIGTERM); err != nil {
		return true, err
	}
	if !waitGone(pid, ticks, fd, grace) {
		if err := signal(unix.SIGKILL); err != nil {
			return true, err
		}
		if !waitGone(pid, ticks, fd, killWait) {
			return true, fmt.Errorf("reap pid %d: still running %s after SIGKILL", pid, killWait)
		}
	}
	// The leader has just gone; group members that ignored SIGTERM would be
	// orphans for good. The group id stays allocated while any member exists,
	// so it can only have been reused after a full PID wrap-around in between.
	if err := unix.Kill(-pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
		return true, fmt.Errorf("reap pid %d: SIGKILL group: %w", pid, err)
	}
	return true, nil
}

// waitGone waits up to d for the process to exit (zombies count as gone:
// an orphan's zombie is init's to reap). With a pidfd it sleeps in poll(2)
// until the exit; without, it polls /proc.
func waitGone(pid int, ticks uint64, fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !Alive(pid, ticks) {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		if fd < 0 {
			time.Sleep(min(left, 5*time.Millisecond))
			continue
		}
		ms := int(min(left, time.Second)/time.Millisecond) + 1
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
	}
}
