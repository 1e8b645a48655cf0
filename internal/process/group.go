package process

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// GroupMembers lists live processes in process group pgid that started at
// or after notBefore (clock ticks after boot).
func GroupMembers(pgid int, notBefore uint64) []int { return groupMembers(pgid, notBefore) }

// groupMembers lists live processes in process group pgid that started at
// or after notBefore (clock ticks after boot).
func groupMembers(pgid int, notBefore uint64) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid || st.state == 'Z' || st.state == 'X' || st.start < notBefore {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// ReapGroup stops what is left of a crashed server's worker whose leader
// (pid pgid, started at ticks) is already gone: the members of its process
// group that started no earlier than the leader. Such members can only be
// the worker's descendants: a group id stays allocated while any member
// lives, so no unrelated process can have created a group with that id in
// the meantime, and a member older than the leader cannot be its child.
// They get SIGTERM, then SIGKILL after grace. It returns how many there were.
func ReapGroup(pgid int, ticks uint64, grace time.Duration) (int, error) {
	if pgid <= 1 || pgid == os.Getpid() {
		return 0, fmt.Errorf("reap group %d: not a worker group", pgid)
	}
	if Alive(pgid, ticks) {
		return 0, fmt.Errorf("reap group %d: its leader is alive; use Reap", pgid)
	}
	members := groupMembers(pgid, ticks)
	if len(members) == 0 {
		return 0, nil
	}
	for _, pid := range members {
		_ = unix.Kill(pid, unix.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for len(groupMembers(pgid, ticks)) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling /proc: orphans are not our children, nothing to wait on
	}
	for _, pid := range groupMembers(pgid, ticks) {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			return len(members), fmt.Errorf("reap group %d: SIGKILL %d: %w", pgid, pid, err)
		}
	}
	deadline = time.Now().Add(killWait)
	for len(groupMembers(pgid, ticks)) > 0 {
		if time.Now().After(deadline) {
			return len(members), fmt.Errorf("reap group %d: members still running after SIGKILL", pgid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return len(members), nil
}
