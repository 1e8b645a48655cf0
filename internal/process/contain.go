package process

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MarkEnv is the environment variable that names the instance a process
// belongs to. Start sets it from Spec.Mark; every process the worker starts
// inherits it, also one that leaves the process group or session, so the
// worker's descendants can be found in /proc even after the server crashed.
const MarkEnv = "TQ_INSTANCE_MARK"

// Mark is the marker value for instance of the app at root: a hash of the
// root's path (two app roots never share markers) and the instance name
// (never reused within a root).
func Mark(root, instance string) string { return rootHash(root) + "/" + instance }

func rootHash(root string) string {
	sum := sha256.Sum256([]byte(root))
	return hex.EncodeToString(sum[:8])
}

// marked is one live process that carries a marker, pinned by a pidfd.
type marked struct {
	pid int
	fd  int
}

// markedProcs opens every live process, other than this one and except,
// that started at or after notBefore and whose environment carries mark.
// A PID is accepted only if it still names the process whose environment
// was read once its pidfd is open (same start ticks, not exited), so a
// reused PID is never returned.
func markedProcs(mark string, notBefore uint64, except int) []marked {
	return scanEnv([]byte(MarkEnv+"="+mark+"\x00"), notBefore, except)
}

// scanEnv is markedProcs for any environment entry that starts with want.
func scanEnv(want []byte, notBefore uint64, except int) []marked {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []marked
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == self || pid == except {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' || st.state == 'X' || st.start < notBefore {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !hasVar(env, want) {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		// The pidfd is this PID's process from its open on; if that process
		// started when the one we read did and has not exited since, they
		// are the same.
		if st2, err := readStat(pid); err != nil || st2.start != st.start || exited(fd) {
			unix.Close(fd)
			continue
		}
		out = append(out, marked{pid: pid, fd: fd})
	}
	return out
}

// hasVar reports whether the NUL-separated environment env holds an entry
// that starts with want (with want's trailing NUL: is want).
func hasVar(env, want []byte) bool {
	for len(env) > 0 {
		if bytes.HasPrefix(env, want) {
			return true
		}
		i := bytes.IndexByte(env, 0)
		if i < 0 {
			return false
		}
		env = env[i+1:]
	}
	return false
}

// exited reports whether the process behind pidfd fd has exited.
func exited(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// waitExited waits up to d for every process in ms to exit and reports
// whether they all did.
func waitExited(ms []marked, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for _, m := range ms {
		for !exited(m.fd) {
			left := time.Until(deadline)
			if left <= 0 {
				return false
			}
			ms := int(min(left, time.Second)/time.Millisecond) + 1
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(m.fd), Events: unix.POLLIN}}, ms)
		}
	}
	return true
}

// reapAndClose collects the exit status of those processes in ms that are
// now zombies of this process (reparented to it as subreaper) and closes
// the pidfds. Waiting on a pidfd can only ever collect that one process:
// never a child os/exec is waiting for.
func reapAndClose(ms []marked) {
	for _, m := range ms {
		var info unix.Siginfo
		_ = ignoringEINTR(func() error {
			return unix.Waitid(unix.P_PIDFD, m.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
		}) // ECHILD: not ours; its parent reaps it
		unix.Close(m.fd)
	}
}

// killMarked sends sig to every live process carrying mark that started at
// or after notBefore (except the pid except), then scans again and SIGKILLs
// what it finds until none is left (a process forked during a scan is seen
// by the next one). Between scans it waits for those signalled to exit,
// first up to first, then up to killWait in all. At the end it reaps the
// ones reparented to this process. It returns how many distinct processes
// it signalled.
func killMarked(mark string, notBefore uint64, except int, sig syscall.Signal, first time.Duration) (int, error) {
	seen := map[int]bool{}
	var all []marked
	defer func() { reapAndClose(all) }()
	var deadline time.Time
	for round := 0; ; round++ {
		ms := markedProcs(mark, notBefore, except)
		if len(ms) == 0 {
			return len(seen), nil
		}
		all = append(all, ms...)
		if round == 1 {
			sig = unix.SIGKILL
			deadline = time.Now().Add(killWait)
		}
		if round >= 100 || (round > 1 && time.Now().After(deadline)) {
			return len(seen), fmt.Errorf("%d process(es) of instance %s still running after SIGKILL", len(ms), mark)
		}
		for _, m := range ms {
			seen[m.pid] = true
			if err := unix.PidfdSendSignal(m.fd, sig, nil, 0); err != nil && err != unix.ESRCH {
				return len(seen), fmt.Errorf("signal pid %d of instance %s: %s: %w", m.pid, mark, signalName(sig), err)
			}
		}
		wait := first
		if round > 0 {
			wait = time.Until(deadline)
		}
		waitExited(ms, wait)
	}
}

// Marked counts the live processes carrying mark that started at or after
// notBefore (clock ticks after boot), and those in mark's cgroup.
func Marked(mark string, notBefore uint64) int {
	seen := map[int]bool{}
	ms := markedProcs(mark, notBefore, 0)
	if dir, rel := instanceCgroup(mark); dir != "" {
		ms = append(ms, cgroupMembers(dir, rel)...)
	}
	for _, m := range ms {
		seen[m.pid] = true
		unix.Close(m.fd)
	}
	return len(seen)
}

// ReapMarked stops what is left of a crashed server's instance: the
// processes in its cgroup (when cgroups are on) and every live process
// whose environment carries mark (see Spec.Mark) and that started at or
// after notBefore, the instance leader's start. They get SIGTERM, up to
// grace to go, then SIGKILL. It returns how many there were.
func ReapMarked(mark string, notBefore uint64, grace time.Duration) (int, error) {
	if mark == "" {
		return 0, fmt.Errorf("reap marked processes: empty mark")
	}
	n := Marked(mark, notBefore)
	var cgErr error
	if dir, rel := instanceCgroup(mark); dir != "" {
		ms := cgroupMembers(dir, rel)
		for _, m := range ms {
			_ = unix.PidfdSendSignal(m.fd, unix.SIGTERM, nil, 0)
		}
		waitExited(ms, grace)
		reapAndClose(ms)
		_, cgErr = killCgroup(dir, rel, killWait)
	}
	_, err := killMarked(mark, notBefore, 0, unix.SIGTERM, grace)
	return n, errors.Join(cgErr, err)
}

// withMark returns env (nil: the server's own) with MarkEnv set to mark,
// replacing any inherited value.
func withMark(env []string, mark string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, MarkEnv+"=") {
			out = append(out, kv)
		}
	}
	return append(out, MarkEnv+"="+mark)
}

// killDescendants runs once the leader has exited (still an unreaped
// zombie, so neither its PID nor its group id can be reused): it kills the
// instance's cgroup, or without one every other process carrying its mark
// (those that left the group or session), and, when this process is a
// subreaper, reaps the instance's zombies that were reparented to it.
func (p *Process) killDescendants() {
	var err error
	switch {
	case p.cgDir != "":
		_, err = killCgroup(p.cgDir, p.cgRel, killWait)
	case p.mark != "":
		_, err = killMarked(p.mark, p.StartTicks, p.PID, unix.SIGKILL, killWait)
	}
	if err != nil {
		p.log.Error().Err(err).Msg("could not stop every process the worker started")
	}
	if !isSubreaper() {
		return
	}
	if p.cgDir == "" {
		// Group members killed by the group SIGKILL: let them die first.
		for deadline := time.Now().Add(killWait); len(groupMembers(p.PID, p.StartTicks)) > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // not (necessarily) our children: nothing to wait on
		}
	}
	reapZombies(p.PID, p.cgRel)
}

// StopAll kills, as the server exits, whatever is left of the instances of
// the app at root: its whole cgroup tree and every process carrying one of
// its marks. After a clean shutdown nothing is; after an interrupted one
// the leaders die of their parent-death signal but their descendants would
// not. It does not reap: os/exec may still be waiting for a leader.
func StopAll(root string) {
	hash := rootHash(root)
	if cg := activeCgroups.Load(); cg != nil && cg.hash == hash {
		if populated(cg.dir) {
			_ = writeKill(cg.dir) // recursive: every instance cgroup below
			for deadline := time.Now().Add(killWait); populated(cg.dir) && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
		if ents, err := os.ReadDir(cg.dir); err == nil {
			for _, e := range ents {
				if e.IsDir() {
					_ = unix.Rmdir(cg.dir + "/" + e.Name())
				}
			}
		}
	}
	ms := scanEnv([]byte(MarkEnv+"="+hash+"/"), 0, 0)
	for _, m := range ms {
		_ = unix.PidfdSendSignal(m.fd, unix.SIGKILL, nil, 0)
	}
	waitExited(ms, killWait)
	for _, m := range ms {
		unix.Close(m.fd)
	}
}
