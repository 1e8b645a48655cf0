package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mevdschee/tqserver/internal/process"
)

// Server self-upgrade, the process side (docs/architecture.md "Server
// self-upgrade"). The old server starts the new binary as its child with
// the listening sockets as inherited descriptors, named by EnvUpgradeFDs,
// plus the write end of a pipe; it has released the log first. The new
// server opens the log, adopts the running instances and writes "ready" on
// the pipe once it serves. The old one then stops accepting, finishes its
// in-flight requests and stays, as the parent of the instances it started,
// until they have exited (it reaps them and logs their output; their
// parent-death signal still ties them to it, so none outlives every
// server). If the new server exits, never gets ready, or cannot be
// started, the old one takes the log back and serves on.

const (
	// EnvUpgradeFDs names the inherited descriptors:
	// "public=3,sock=4,ready=5[,admin=6]".
	EnvUpgradeFDs = "TQ_UPGRADE_FDS"
	// EnvUpgradeTimeout (milliseconds) bounds the wait for the new server
	// to become ready; default DefaultUpgradeTimeout.
	EnvUpgradeTimeout = "TQ_UPGRADE_TIMEOUT_MS"
	// EnvUpgradeHook is a test hook: a directory in which the servers
	// pause at the named points of a hand-off (see hook).
	EnvUpgradeHook = "TQ_UPGRADE_HOOK"
)

// HandOffNotifier is a Notifier that follows a self-upgrade too (systemd:
// the new server becomes the unit's main process).
type HandOffNotifier interface {
	// ChildEnv is what the new server's environment needs to notify.
	ChildEnv() []string
	// HandedOff: the new server, pid, serves from now on.
	HandedOff(pid int)
}

// DefaultUpgradeTimeout is how long the old server waits for the new one.
const DefaultUpgradeTimeout = 30 * time.Second

// inherited are the descriptors a new server got from the old one.
type inherited struct {
	public, admin, sock net.Listener
	ready               *os.File
}

// takeInherited reads EnvUpgradeFDs (and unsets it, so the workers do not
// inherit it); nil when this server was not started by a hand-off.
func takeInherited() (*inherited, error) {
	v, ok := os.LookupEnv(EnvUpgradeFDs)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvUpgradeFDs)
	in := &inherited{}
	for _, kv := range strings.Split(v, ",") {
		k, s, _ := strings.Cut(kv, "=")
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("%s=%q: %q is not a descriptor number; this variable is set by a running tqserver for its successor only", EnvUpgradeFDs, v, kv)
		}
		f := os.NewFile(uintptr(fd), k)
		if k == "ready" {
			in.ready = f
			continue
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: inherited %s listener (fd %d): %w", EnvUpgradeFDs, k, fd, err)
		}
		switch k {
		case "public":
			in.public = ln
		case "admin":
			in.admin = ln
		case "sock":
			in.sock = ln
		default:
			ln.Close()
			return nil, fmt.Errorf("%s=%q: unknown name %q", EnvUpgradeFDs, v, k)
		}
	}
	if in.public == nil || in.sock == nil || in.ready == nil {
		return nil, fmt.Errorf("%s=%q: needs public, sock and ready", EnvUpgradeFDs, v)
	}
	return in, nil
}

// upgradeTimeout is EnvUpgradeTimeout or the default.
func upgradeTimeout() time.Duration {
	if ms, err := strconv.Atoi(os.Getenv(EnvUpgradeTimeout)); err == nil && ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return DefaultUpgradeTimeout
}

// hook pauses at a named point of a hand-off when EnvUpgradeHook names a
// directory: it writes its pid to DIR/POINT and waits (up to a minute)
// until the file is removed. Tests kill -9 a server there.
func hook(point string) {
	dir := os.Getenv(EnvUpgradeHook)
	if dir == "" {
		return
	}
	path := filepath.Join(dir, point)
	if os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())), 0o644) != nil {
		return
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if _, err := os.Stat(path); err != nil {
			return
		}
		time.Sleep(5 * time.Millisecond) // a test hook: polling a file
	}
}

// rawFD is ln's descriptor, read without os.File's Fd, which would put
// the socket (shared with the child) in blocking mode: an Accept of this
// server blocked in the kernel then keeps Close from returning.
func rawFD(ln net.Listener) (uintptr, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("listener %s cannot be handed over", ln.Addr())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("listener %s: %w", ln.Addr(), err)
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil {
		return 0, fmt.Errorf("listener %s: %w", ln.Addr(), err)
	}
	return fd, nil
}

// HandOff is supervisor.Upgrader: it runs on the supervisor's loop once
// server_upgrade is recorded.
func (m *Main) HandOff(bin string) (int, error) {
	// The child's descriptors: stdin, stdout, stderr, then the listeners
	// and the readiness pipe (syscall.ForkExec dup2s them into place).
	fds := []uintptr{os.Stdin.Fd(), os.Stdout.Fd(), os.Stderr.Fd()}
	var names []string
	for _, l := range []struct {
		name string
		ln   net.Listener
	}{{"public", m.ln}, {"sock", m.sockLn}, {"admin", m.adminLn}} {
		if l.ln == nil {
			continue
		}
		fd, err := rawFD(l.ln)
		if err != nil {
			return 0, err
		}
		names = append(names, l.name+"="+strconv.Itoa(len(fds)))
		fds = append(fds, fd)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("readiness pipe: %w", err)
	}
	defer r.Close()
	names = append(names, "ready="+strconv.Itoa(len(fds)))
	fds = append(fds, w.Fd())

	hook("old-before-release")
	if err := m.st.Release(); err != nil {
		w.Close()
		return 0, err
	}
	env := append(withoutEnv(os.Environ(), EnvUpgradeFDs), EnvUpgradeFDs+"="+strings.Join(names, ","))
	hn, _ := m.notify.(HandOffNotifier)
	if hn != nil {
		env = append(env, hn.ChildEnv()...)
	}
	pid, err := syscall.ForkExec(bin, append([]string{bin}, os.Args[1:]...), &syscall.ProcAttr{Env: env, Files: fds})
	w.Close()
	if err != nil {
		return 0, m.takeBack(fmt.Errorf("start %s: %w", bin, err))
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return 0, m.takeBack(fmt.Errorf("new server pid %d: %w", pid, err))
	}
	m.log.Info().Int("new_pid", pid).Str("bin", bin).Msg("server upgrade: new server started; waiting until it is ready")
	exited := make(chan error, 1)
	go func() { // reaps it whenever it exits
		st, err := proc.Wait()
		if err == nil && !st.Success() {
			err = &exec.ExitError{ProcessState: st}
		}
		exited <- err
	}()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if strings.TrimSpace(line) == "ready" {
			ready <- nil
			return
		}
		if err == nil {
			err = fmt.Errorf("said %q", line)
		}
		ready <- err
	}()
	timeout := upgradeTimeout()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-ready:
		if err == nil {
			m.childPID = pid // the goroutine above keeps waiting for it
			if hn != nil {
				hn.HandedOff(pid)
			}
			m.stopAccepting()
			return pid, nil
		}
		// It closed the pipe without a word: it exits (or exited).
		select {
		case xerr := <-exited:
			return 0, m.takeBack(fmt.Errorf("new server pid %d exited before it was ready (%v)", pid, exitText(xerr)))
		case <-time.After(timeout):
			_ = unix.Kill(pid, unix.SIGKILL)
			<-exited
			return 0, m.takeBack(fmt.Errorf("new server pid %d closed its readiness pipe without being ready (%v); killed", pid, err))
		}
	case xerr := <-exited:
		return 0, m.takeBack(fmt.Errorf("new server pid %d exited before it was ready (%v)", pid, exitText(xerr)))
	case <-t.C:
		_ = unix.Kill(pid, unix.SIGKILL)
		<-exited
		return 0, m.takeBack(fmt.Errorf("new server pid %d was not ready within %s (%s); killed", pid, timeout, EnvUpgradeTimeout))
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit code 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "signal " + unix.SignalName(ws.Signal())
		}
		return "exit code " + strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}

// takeBack reopens the log after a failed hand-off; cause says why it failed.
func (m *Main) takeBack(cause error) error {
	if err := m.st.Reacquire(10 * time.Second); err != nil {
		m.log.Error().Err(err).Msg("server upgrade failed and the log could not be taken back: records are lost until a restart")
		return fmt.Errorf("%w; and the log could not be taken back: %v", cause, err)
	}
	return cause
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// signalReady tells the old server this one serves (a hand-off).
func (m *Main) signalReady() {
	if m.ready == nil {
		return
	}
	hook("new-before-ready")
	_, _ = m.ready.WriteString("ready\n") // the old one may be gone: nothing to tell
	m.ready.Close()
	m.ready = nil
}

// retire is the old server's end after a hand-off: it stops accepting,
// finishes its in-flight requests, closes what it served, and stays the
// parent of the instances it started until they exit (the new server
// stops them as it replaces them). Should no server hold the log for
// longer than a hand-off may take (the new one was killed and nothing
// restarted), it stops them itself: no instance outlives every server.
func (m *Main) retire() error {
	hook("old-handed")
	m.handed = true
	if m.hub != nil {
		m.hub.Close()
	}
	m.stopAccepting() // (done already unless the loop ended first)
	<-m.frontDone
	grace := m.o.Config.Workers.ShutdownGracePeriod()
	// Its requests in flight are done: the instances it was draining (the
	// new server adopted them as draining) can stop.
	for _, p := range m.sup.DrainingOwn() {
		go p.Stop(grace)
	}
	m.cleanup()
	procs := m.sup.Orphans()
	if len(procs) == 0 {
		m.log.Info().Msg("handed over; exiting")
		return nil
	}
	m.log.Info().Int("instances", len(procs)).Msg("handed over; staying the parent of the instances this process started until they exit")
	stopAll := func(why string) {
		m.log.Warn().Msg(why + ": stopping the instances this process started")
		for _, p := range procs {
			go p.Stop(grace)
		}
	}
	free, freeSince, stopped := false, time.Time{}, false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for _, p := range procs {
		for done := false; !done; {
			select {
			case <-p.Done():
				done = true
			case <-m.closeReq:
				if !stopped {
					stopped = true
					stopAll("asked to stop")
				}
			case <-tick.C:
				process.ReapServerZombies(m.childPID)
				if stopped {
					continue
				}
				if lockFree(m.lay.DB()) {
					if !free {
						free, freeSince = true, time.Now()
					}
					if time.Since(freeSince) > upgradeTimeout()+5*time.Second {
						stopped = true
						stopAll("no server holds the log any more")
					}
				} else {
					free = false
				}
			}
		}
	}
	m.log.Info().Msg("the instances this process started have exited; exiting")
	return nil
}

// lockFree reports whether nobody holds the log's file lock (bbolt's
// flock) right now.
func lockFree(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return true
}

// stopAccepting is the old server's first step once the new one is ready:
// the admin socket and listener stop accepting at once (status, reload and
// history reach the new server from now on) and the public listener too,
// while the requests in flight finish (up to the drain timeout; frontDone
// is closed then). The new server accepts on the same sockets.
func (m *Main) stopAccepting() {
	m.stopOnce.Do(func() {
		m.handing.Store(true)
		if m.sockLn != nil {
			m.sockLn.Close()
		}
		if m.adminLn != nil {
			m.adminLn.Close()
		}
		go func() {
			defer close(m.frontDone)
			ctx, cancel := context.WithTimeout(context.Background(), m.o.Config.Workers.DrainTimeout())
			defer cancel()
			if err := m.front.Shutdown(ctx); err != nil {
				m.log.Warn().Err(err).Msg("in-flight requests did not finish in time")
				m.front.Close()
			}
		}()
	})
}
