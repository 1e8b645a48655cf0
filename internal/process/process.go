package process

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

const (
	defaultTailLines = 20
	defaultWaitDelay = time.Second
)

// Spec describes one process to start.
type Spec struct {
	// Path is the executable. A name without a slash is looked up in $PATH; a
	// relative path is taken relative to Dir (os/exec semantics).
	Path string
	Args []string
	// Dir is the working directory; empty means the server's own.
	Dir string
	// Env is the full environment; nil inherits the server's (os/exec semantics).
	Env []string
	// Logger receives every output line (unless Output.Lines is set) at
	// Info, stdout and stderr alike, the line as message and a "stream"
	// field ("stdout"/"stderr"), and the package's own messages about the
	// process. The caller sets identifying fields (worker, instance) on it.
	// The zero value discards.
	Logger zerolog.Logger
	// Output routes and rate-limits the output lines; see Output.
	Output Output
	// TailLines is how many last output lines Tail keeps; 0 means 20.
	TailLines int
	// ParentDeathSignal is sent to the process when the server dies, a second
	// line of defence behind Stop; 0 means SIGKILL.
	ParentDeathSignal syscall.Signal
	// WaitDelay bounds how long Done waits, after the leader exited, for
	// processes outside its group that still hold its stdout/stderr; 0 means 1s.
	WaitDelay time.Duration
	// Mark, when set, is put in the environment as MarkEnv (see Mark) and,
	// once EnableCgroups succeeded, names the instance's cgroup. When the
	// leader exits, the cgroup (or, without one, every other process
	// carrying the mark: descendants that left the group or session) is
	// killed too, and ReapMarked finds them after a crash of the server.
	Mark string
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code   int    // exit code; -1 when killed by a signal
	Signal string // e.g. "SIGKILL"; "" when the process exited normally
}

// String reads "exit code 2" or "signal SIGKILL".
func (s ExitStatus) String() string {
	if s.Signal != "" {
		return "signal " + s.Signal
	}
	return fmt.Sprintf("exit code %d", s.Code)
}

// Process is one started process and the leader of its own process group.
type Process struct {
	PID        int
	StartTicks uint64 // see StartTicks; with PID it names this process, ever

	cmd   *exec.Cmd
	out   *output
	log   zerolog.Logger
	mark  string
	cgDir string // its cgroup (EnableCgroups), "" without
	cgRel string // the same as /proc/PID/cgroup shows it
	done  chan struct{}

	mu     sync.Mutex
	reaped bool // set before the leader is reaped; from then on its PID may be reused
	exit   ExitStatus
}

// Start starts spec.Path as the leader of a new process group. Failures to
// start (missing file, permission denied, exec format error) come back as
// one line naming the path.
func Start(spec Spec) (*Process, error) {
	if spec.Path == "" {
		return nil, errors.New("start process: empty executable path")
	}
	if spec.Dir != "" {
		// Checked here because a failing chdir in the child is reported as if
		// the executable were missing.
		fi, err := os.Stat(spec.Dir)
		if err != nil {
			return nil, fmt.Errorf("start %s: working directory: %w", spec.Path, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("start %s: working directory %s: %w", spec.Path, spec.Dir, syscall.ENOTDIR)
		}
	}
	tailLines := spec.TailLines
	if tailLines <= 0 {
		tailLines = defaultTailLines
	}
	deathSig := spec.ParentDeathSignal
	if deathSig == 0 {
		deathSig = syscall.SIGKILL
	}
	waitDelay := spec.WaitDelay
	if waitDelay <= 0 {
		waitDelay = defaultWaitDelay
	}

	out := newOutput(spec.Logger, tailLines, spec.Output)
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(spec.Path, spec.Args...)
		cmd.Dir = spec.Dir
		cmd.Env = spec.Env
		if spec.Mark != "" {
			cmd.Env = withMark(spec.Env, spec.Mark)
		}
		cmd.Stdout = out.stdout
		cmd.Stderr = out.stderr
		cmd.WaitDelay = waitDelay
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
		return cmd
	}
	cmd := newCmd()
	if cmd.Err != nil {
		return nil, startError(spec.Path, cmd.Err)
	}
	cgDir, cgRel, cgFD, err := openCgroup(spec.Mark)
	if err != nil {
		spec.Logger.Warn().Err(err).Msg("starting without a cgroup")
	}
	if cgFD >= 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cgFD
	}
	err = cmd.Start()
	if cgFD >= 0 {
		unix.Close(cgFD)
		if err != nil {
			// Maybe the cgroup refused the process: one more try without.
			_ = unix.Rmdir(cgDir)
			cgDir, cgRel = "", ""
			if retry := newCmd(); retry.Start() == nil {
				spec.Logger.Warn().Err(err).Msg("could not start in a cgroup; started without")
				cmd, err = retry, nil
			}
		}
	}
	if err != nil {
		return nil, startError(spec.Path, err)
	}
	pid := cmd.Process.Pid
	leaders.Store(pid, struct{}{}) // os/exec collects its status, never reapOrphans
	// Not reaped yet (wait starts below), so /proc/PID is this process even if
	// it already exited.
	ticks, err := StartTicks(pid)
	if err != nil {
		_ = unix.Kill(-pid, unix.SIGKILL)
		_ = cmd.Wait()
		leaders.Delete(pid)
		if cgDir != "" {
			_, _ = killCgroup(cgDir, cgRel, killWait)
		}
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	p := &Process{PID: pid, StartTicks: ticks, cmd: cmd, out: out, log: spec.Logger, mark: spec.Mark,
		cgDir: cgDir, cgRel: cgRel, done: make(chan struct{})}
	go p.wait()
	return p, nil
}

// startError turns os/exec's "fork/exec PATH: ERR" into "start PATH: ERR".
func startError(path string, err error) error {
	var pe *fs.PathError
	var ee *exec.Error
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &ee):
		err = ee.Err
	}
	return fmt.Errorf("start %s: %w", path, err)
}

func (p *Process) wait() {
	// Wait without reaping: while the leader is a zombie its PID, and with it
	// the group id, cannot be reused, so killing the rest of the group is safe.
	var info unix.Siginfo
	err := ignoringEINTR(func() error {
		return unix.Waitid(unix.P_PID, p.PID, &info, unix.WEXITED|unix.WNOWAIT, nil)
	})
	p.mu.Lock()
	if err == nil {
		p.signalLocked(unix.SIGKILL)
	}
	p.reaped = true
	p.mu.Unlock()
	if err == nil {
		p.killDescendants()
	}

	_ = p.cmd.Wait() // the status is in ProcessState; ErrWaitDelay only means output was cut off
	leaders.Delete(p.PID)
	p.out.flush()

	st := ExitStatus{Code: -1}
	if ps := p.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = signalName(ws.Signal())
		} else {
			st.Code = ps.ExitCode()
		}
	}
	p.mu.Lock()
	p.exit = st
	p.mu.Unlock()
	close(p.done)
}

// Done is closed when the leader has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit is how the leader ended; valid once Done is closed.
func (p *Process) Exit() ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Tail returns the last output lines of stdout and stderr, in arrival order,
// joined by newlines; each line is cut to 512 bytes.
func (p *Process) Tail() string { return p.out.tail() }

// Signal sends sig to the process group. A group that no longer exists is
// not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.signalLocked(sig); err != nil {
		return fmt.Errorf("signal pid %d: %w", p.PID, err)
	}
	return nil
}

func (p *Process) signalLocked(sig syscall.Signal) error {
	if p.reaped {
		return nil // the PID may belong to someone else by now
	}
	return signalGroup(p.PID, sig, func() error { return unix.Kill(p.PID, sig) })
}

// Stop sends SIGTERM to the group, waits up to grace for the process to end,
// then sends SIGKILL. It returns once Done is closed. When the leader has
// exited, any member left in its group is SIGKILLed. Stop may be called
// concurrently and more than once.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// signalGroup sends sig to group pgid, and through leader also to the leader
// itself should it have moved to another group (it would not get the group
// signal). Signalling the leader twice is avoided: some programs take a second
// SIGTERM as "stop now".
func signalGroup(pgid int, sig syscall.Signal, leader func() error) error {
	if pgid <= 1 {
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	if err := unix.Kill(-pgid, sig); err != nil && err != unix.ESRCH {
		return err
	}
	if st, err := readStat(pgid); err == nil && st.pgrp != pgid {
		if err := leader(); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}

func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("SIG%d", int(sig))
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
