package process

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// orphan is a helper process started like a worker (own process group) but
// not through Start, as the server before a crash would have left it.
type orphan struct {
	cmd   *exec.Cmd
	pid   int
	ticks uint64
	lines chan string

	waitOnce sync.Once
	state    *os.ProcessState
}

func startOrphan(t *testing.T, args ...string) *orphan {
	t.Helper()
	return startOrphanEnv(t, helperEnviron(), args...)
}

func startOrphanEnv(t *testing.T, env []string, args ...string) *orphan {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		_ = r.Close()
		t.Fatal(err)
	}
	o := &orphan{cmd: cmd, pid: cmd.Process.Pid, lines: make(chan string)}
	stop, readerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(o.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case o.lines <- sc.Text():
			case <-stop:
				_, _ = io.Copy(io.Discard, r)
				return
			}
		}
	}()
	t.Cleanup(func() {
		if o.state == nil {
			_ = syscall.Kill(-o.pid, syscall.SIGKILL) // not reaped yet: the group is still ours
		}
		o.wait(t)
		close(stop)
		_ = r.Close() // grandchildren may still hold the write end
		<-readerDone
	})
	if o.ticks, err = StartTicks(o.pid); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *orphan) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	o.waitOnce.Do(func() {
		_ = o.cmd.Wait()
		o.state = o.cmd.ProcessState
	})
	return o.state
}

func (o *orphan) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case l, ok := <-o.lines:
			if !ok {
				t.Fatalf("pid %d: output ended before %q", o.pid, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("pid %d: no line %q after %s", o.pid, prefix, waitLimit)
		}
	}
}

func signalOf(t *testing.T, st *os.ProcessState) string {
	t.Helper()
	ws := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() {
		return fmt.Sprintf("exit code %d", ws.ExitStatus())
	}
	return signalName(ws.Signal())
}

// startTicksViaComm reads field 22 knowing comm exactly, independently of
// the last-')' rule.
func startTicksViaComm(t *testing.T, pid int) uint64 {
	t.Helper()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("%d (%s) ", pid, strings.TrimSuffix(string(comm), "\n"))
	rest, ok := strings.CutPrefix(string(stat), prefix)
	if !ok {
		t.Fatalf("stat %q does not start with %q", stat, prefix)
	}
	v, err := strconv.ParseUint(strings.Fields(rest)[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStartTicksSelf(t *testing.T) {
	got, err := StartTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if want := startTicksViaComm(t, os.Getpid()); got != want {
		t.Errorf("StartTicks(self) = %d, want %d", got, want)
	}
	if !Alive(os.Getpid(), got) {
		t.Error("Alive(self) = false")
	}
	if _, err := StartTicks(0); err == nil {
		t.Error("StartTicks(0) succeeded")
	}
}

func TestStartTicksIsStartTime(t *testing.T) {
	btime := bootTime(t)
	before := time.Now()
	p := start(t, helperSpec(t, "sleep"))
	after := time.Now()
	// USER_HZ is 100 on Linux.
	started := btime.Add(time.Duration(p.StartTicks) * 10 * time.Millisecond)
	if started.Before(before.Add(-3*time.Second)) || started.After(after.Add(3*time.Second)) {
		t.Errorf("start ticks %d put the start at %v, want between %v and %v", p.StartTicks, started, before, after)
	}
}

func bootTime(t *testing.T) time.Time {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return time.Unix(s, 0)
		}
	}
	t.Fatal("no btime in /proc/stat")
	return time.Time{}
}

func TestStartTicksOddComm(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a b) (c) S 1")
	if err := os.WriteFile(odd, data, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := helperSpec(t, "sleep")
	spec.Path = odd
	p := start(t, spec)
	waitLine(t, p, "ready")
	if want := startTicksViaComm(t, p.PID); p.StartTicks != want {
		t.Errorf("StartTicks = %d, want %d", p.StartTicks, want)
	}
	if !Alive(p.PID, p.StartTicks) {
		t.Error("Alive = false for a running process with an odd name")
	}
}

func TestParseStat(t *testing.T) {
	const rest = " 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 1000 50 18446744073709551615"
	for _, tc := range []struct {
		name, stat string
		want       procStat
		wantErr    bool
	}{
		{"plain", "4242 (worker) S" + rest, procStat{'S', 1, 4242, 123456}, false},
		{"spaces and parens", "4242 (a b) (c) R" + rest, procStat{'R', 1, 4242, 123456}, false},
		{"comm mimics fields", "4242 (x) S 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 9) Z" + rest, procStat{'Z', 1, 4242, 123456}, false},
		{"no paren", "4242 worker S" + rest, procStat{}, true},
		{"too short", "4242 (worker) S 1 4242", procStat{}, true},
		{"bad starttime", "4242 (worker) S" + strings.Replace(rest, "123456", "12x", 1), procStat{}, true},
		{"bad ppid", "4242 (worker) S x" + rest[2:], procStat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.stat + "\n"))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestAlive(t *testing.T) {
	p := start(t, helperSpec(t, "sleep"))
	waitLine(t, p, "ready")
	if !Alive(p.PID, p.StartTicks) {
		t.Fatal("Alive = false for a running process")
	}
	for _, ticks := range []uint64{p.StartTicks + 1, p.StartTicks - 1, 0} {
		if Alive(p.PID, ticks) {
			t.Errorf("Alive(pid, %d) = true, start ticks are %d", ticks, p.StartTicks)
		}
	}
	p.Stop(time.Second)
	if Alive(p.PID, p.StartTicks) {
		t.Error("Alive = true after Stop")
	}
	if Alive(0, 0) || Alive(-1, 0) {
		t.Error("Alive of an invalid pid")
	}
}

func TestAliveZombie(t *testing.T) {
	o := startOrphan(t, "exit", "0")
	// Not waited for: it stays a zombie, which must not count as alive.
	eventually(t, "zombie state", func() bool {
		st, err := readStat(o.pid)
		return err == nil && st.state == 'Z'
	})
	if Alive(o.pid, o.ticks) {
		t.Error("Alive = true for a zombie")
	}
	o.wait(t)
}

func TestReap(t *testing.T) {
	for _, tc := range []struct {
		mode, signal string
		grace        time.Duration
	}{
		{"sleep", "SIGTERM", time.Minute},
		{"ignoreterm", "SIGKILL", 400 * time.Millisecond},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			o := startOrphan(t, tc.mode)
			o.expect(t, "ready")
			t0 := time.Now()
			alive, err := Reap(o.pid, o.ticks, tc.grace)
			d := time.Since(t0)
			if !alive || err != nil {
				t.Fatalf("Reap = %v, %v; want true, nil", alive, err)
			}
			if tc.signal == "SIGKILL" && d < tc.grace {
				t.Errorf("Reap took %s, less than the grace %s", d, tc.grace)
			}
			if d > min(tc.grace, waitLimit)+waitLimit {
				t.Errorf("Reap took %s", d)
			}
			if Alive(o.pid, o.ticks) {
				t.Error("still alive after Reap")
			}
			if got := signalOf(t, o.wait(t)); got != tc.signal {
				t.Errorf("ended by %s, want %s", got, tc.signal)
			}
			if alive, err := Reap(o.pid, o.ticks, time.Second); alive || err != nil {
				t.Errorf("second Reap = %v, %v; want false, nil", alive, err)
			}
		})
	}
}

func TestReapKillsGroupLeftovers(t *testing.T) {
	// The orphan leader obeys SIGTERM; its helper in the same group does not.
	o := startOrphan(t, "spawn", "ignoreterm", "same", "sleep")
	gpid, gticks := childOf(t, o.expect(t, "child "))
	o.expect(t, "ready")
	if alive, err := Reap(o.pid, o.ticks, time.Minute); !alive || err != nil {
		t.Fatalf("Reap = %v, %v", alive, err)
	}
	if got := signalOf(t, o.wait(t)); got != "SIGTERM" {
		t.Errorf("leader ended by %s, want SIGTERM", got)
	}
	eventually(t, "the group member to die", func() bool { return !Alive(gpid, gticks) })
}

func TestReapWrongTicksDoesNotSignal(t *testing.T) {
	o := startOrphan(t, "echo")
	o.expect(t, "ready")
	for _, ticks := range []uint64{o.ticks + 1, o.ticks - 1} {
		if alive, err := Reap(o.pid, ticks, 50*time.Millisecond); alive || err != nil {
			t.Errorf("Reap(pid, %d) = %v, %v; want false, nil", ticks, alive, err)
		}
	}
	// SIGWINCH has a higher number than SIGTERM and SIGKILL, so had either
	// been sent it would have been delivered, and killed the helper, first.
	if err := syscall.Kill(o.pid, syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	o.expect(t, "got SIGWINCH")
	if !Alive(o.pid, o.ticks) {
		t.Error("process with a different start time was killed")
	}
}

func TestReapRefuses(t *testing.T) {
	self, err := StartTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{-1, 0, 1, os.Getpid()} {
		if alive, err := Reap(pid, self, 0); alive || err == nil {
			t.Errorf("Reap(%d) = %v, %v; want a refusal", pid, alive, err)
		}
	}
	o := startOrphan(t, "exit", "0")
	o.wait(t)
	if alive, err := Reap(o.pid, o.ticks, 0); alive || err != nil {
		t.Errorf("Reap of an exited process = %v, %v; want false, nil", alive, err)
	}
}

func TestParentDeathSignal(t *testing.T) {
	// middle starts a grandchild through Start (in the grandchild's own group,
	// so only the parent-death signal can reach it) and is then SIGKILLed.
	middle := start(t, helperSpec(t, "middle"))
	gpid, gticks := childOf(t, waitLine(t, middle, "grandchild "))
	if !Alive(gpid, gticks) {
		t.Fatal("grandchild not running")
	}
	if err := middle.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, middle)
	eventually(t, "grandchild to die with its parent", func() bool { return !Alive(gpid, gticks) })
}
