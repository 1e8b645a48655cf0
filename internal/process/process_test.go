package process

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mevdschee/tqserver/internal/testrig"
	"github.com/rs/zerolog"
)

const waitLimit = 10 * time.Second // upper bound for anything that should happen "soon"

func helperSpec(t *testing.T, args ...string) Spec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Path:   exe,
		Args:   args,
		Dir:    t.TempDir(),
		Env:    helperEnviron(),
		Logger: zerolog.Nop(),
	}
}

// start starts spec and makes sure the process is gone when the test ends.
func start(t *testing.T, spec Spec) *Process {
	t.Helper()
	p, err := Start(spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

func waitDone(t *testing.T, p *Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(waitLimit):
		t.Fatalf("pid %d: not done after %s; tail:\n%s", p.PID, waitLimit, p.Tail())
	}
}

// stop calls Stop and returns how long it took; a Stop that does not return
// fails the test (after killing the group so that cleanup can finish).
func stop(t *testing.T, p *Process, grace time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	returned := make(chan struct{})
	go func() {
		p.Stop(grace)
		close(returned)
	}()
	select {
	case <-returned:
		return time.Since(t0)
	case <-time.After(grace + waitLimit):
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		<-returned
		t.Fatalf("Stop(%s) did not return within %s", grace, grace+waitLimit)
		return 0
	}
}

// eventually polls cond until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testrig.WaitEvery(t, waitLimit, 5*time.Millisecond, what, cond)
}

func tailLines(p *Process) []string {
	t := p.Tail()
	if t == "" {
		return nil
	}
	return strings.Split(t, "\n")
}

// waitLine waits for an output line starting with prefix and returns it.
func waitLine(t *testing.T, p *Process, prefix string) string {
	t.Helper()
	var found string
	eventually(t, fmt.Sprintf("output line %q of pid %d", prefix, p.PID), func() bool {
		for _, l := range tailLines(p) {
			if strings.HasPrefix(l, prefix) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// childOf parses "WORD PID TICKS" and reaps that process at the end of the test
// should it still run.
func childOf(t *testing.T, line string) (int, uint64) {
	t.Helper()
	var word string
	var pid int
	var ticks uint64
	if _, err := fmt.Sscanf(line, "%s %d %d", &word, &pid, &ticks); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	t.Cleanup(func() {
		if _, err := Reap(pid, ticks, 0); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return pid, ticks
}

func TestExitCode(t *testing.T) {
	for _, code := range []int{0, 3} {
		p := start(t, helperSpec(t, "exit", fmt.Sprint(code)))
		waitDone(t, p)
		want := ExitStatus{Code: code}
		if got := p.Exit(); got != want {
			t.Errorf("exit %d: Exit() = %+v, want %+v", code, got, want)
		}
		if got, want := p.Exit().String(), fmt.Sprintf("exit code %d", code); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestKilledBySignal(t *testing.T) {
	for _, tc := range []struct{ mode, signal string }{
		{"kill", "SIGKILL"},
		{"panic", "SIGABRT"}, // a Go worker crashing under GOTRACEBACK=crash
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := start(t, helperSpec(t, tc.mode))
			waitDone(t, p)
			want := ExitStatus{Code: -1, Signal: tc.signal}
			if got := p.Exit(); got != want {
				t.Fatalf("Exit() = %+v, want %+v; tail:\n%s", got, want, p.Tail())
			}
			if got := p.Exit().String(); got != "signal "+tc.signal {
				t.Errorf("String() = %q", got)
			}
		})
	}
}

func TestStopOnSIGTERM(t *testing.T) {
	p := start(t, helperSpec(t, "sleep"))
	waitLine(t, p, "ready")
	if d := stop(t, p, time.Minute); d > waitLimit {
		t.Errorf("Stop took %s although the process exits on SIGTERM", d)
	}
	if got := p.Exit(); got.Signal != "SIGTERM" {
		t.Errorf("Exit() = %v, want signal SIGTERM", got)
	}
	if Alive(p.PID, p.StartTicks) {
		t.Error("still alive after Stop")
	}
}

func TestStopEscalatesAfterGrace(t *testing.T) {
	p := start(t, helperSpec(t, "ignoreterm"))
	waitLine(t, p, "ready")
	const grace = 400 * time.Millisecond
	d := stop(t, p, grace)
	if d < grace || d > grace+waitLimit {
		t.Errorf("Stop took %s, want about %s", d, grace)
	}
	if got := p.Exit(); got.Signal != "SIGKILL" {
		t.Errorf("Exit() = %v, want signal SIGKILL", got)
	}
}

func TestStopConcurrent(t *testing.T) {
	p := start(t, helperSpec(t, "ignoreterm"))
	waitLine(t, p, "ready")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			p.Stop(100 * time.Millisecond)
			select {
			case <-p.Done():
			default:
				t.Error("Stop returned before Done")
			}
		})
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(waitLimit):
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		<-all
		t.Fatal("concurrent Stop calls did not return")
	}
	p.Stop(time.Second) // once more, after the end
	if got := p.Exit(); got.Signal != "SIGKILL" {
		t.Errorf("Exit() = %v, want signal SIGKILL", got)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
}

func TestStopKillsGrandchild(t *testing.T) {
	for _, tc := range []struct {
		name, leader string
		grace        time.Duration
		maxStop      time.Duration
	}{
		// The leader ignores SIGTERM too: SIGKILL after grace hits the whole group.
		{"leader ignores SIGTERM", "ignoreterm", 300 * time.Millisecond, waitLimit},
		// The leader obeys at once: the grandchild must not hold Stop for the grace period.
		{"leader obeys SIGTERM", "sleep", time.Minute, waitLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, helperSpec(t, "spawn", "ignoreterm", "same", tc.leader))
			gpid, gticks := childOf(t, waitLine(t, p, "child "))
			waitLine(t, p, "ready") // the grandchild ignores SIGTERM from here on
			if d := stop(t, p, tc.grace); d > tc.maxStop {
				t.Errorf("Stop took %s", d)
			}
			eventually(t, "grandchild to die", func() bool { return !Alive(gpid, gticks) })
		})
	}
}

func TestLeaderExitTakesGroupDown(t *testing.T) {
	// A worker that dies on its own must not leave helpers behind.
	p := start(t, helperSpec(t, "spawn", "ignoreterm", "same", "exit"))
	waitDone(t, p)
	gpid, gticks := childOf(t, waitLine(t, p, "child "))
	if got := p.Exit(); got != (ExitStatus{}) {
		t.Errorf("Exit() = %v, want exit code 0", got)
	}
	eventually(t, "grandchild to die", func() bool { return !Alive(gpid, gticks) })
}

func TestDoneNotBlockedByPipeHolder(t *testing.T) {
	// A grandchild in its own group is out of reach but holds the output
	// pipes; WaitDelay must end the wait.
	spec := helperSpec(t, "spawn", "sleep", "own", "exit")
	spec.WaitDelay = 300 * time.Millisecond
	t0 := time.Now()
	p := start(t, spec)
	gpid, gticks := childOf(t, waitLine(t, p, "child "))
	waitDone(t, p)
	d := time.Since(t0)
	if !Alive(gpid, gticks) {
		t.Fatal("grandchild in its own group died; the test proves nothing")
	}
	if d < spec.WaitDelay {
		t.Errorf("Done after %s, before WaitDelay %s although the pipe was held", d, spec.WaitDelay)
	}
	if got := p.Exit(); got != (ExitStatus{}) {
		t.Errorf("Exit() = %v, want exit code 0", got)
	}
	if alive, err := Reap(gpid, gticks, time.Second); !alive || err != nil {
		t.Errorf("Reap(grandchild) = %v, %v", alive, err)
	}
}

// syncBuffer is a thread-safe log sink that decodes its JSON lines.
type syncBuffer struct{ testrig.Buffer }

type logLine struct {
	Level    string `json:"level"`
	Message  string `json:"message"`
	Stream   string `json:"stream"`
	Worker   string `json:"worker"`
	Instance string `json:"instance"`
}

func (b *syncBuffer) lines(t *testing.T) []logLine {
	t.Helper()
	var out []logLine
	for _, raw := range bytes.Split(bytes.TrimSpace([]byte(b.String())), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var l logLine
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		out = append(out, l)
	}
	return out
}

func TestTailAndLogger(t *testing.T) {
	var logs syncBuffer
	spec := helperSpec(t, "phases")
	spec.TailLines = 5
	spec.Logger = zerolog.New(&logs).With().Str("worker", "api").Str("instance", "api-7").Logger()
	p := start(t, spec)
	// Each phase is released only once the previous one was read, so the
	// order across the two pipes is fixed.
	waitLine(t, p, "out 3")
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitLine(t, p, "err 6")
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	if got := p.Exit(); got != (ExitStatus{}) {
		t.Fatalf("Exit() = %v; tail:\n%s", got, p.Tail())
	}
	if got, want := p.Tail(), "err 5\nerr 6\nout 7\nout 8\nout 9"; got != want {
		t.Errorf("Tail() = %q, want %q", got, want)
	}

	var out, errs []string
	for _, l := range logs.lines(t) {
		if l.Worker != "api" || l.Instance != "api-7" {
			t.Errorf("log line lost the caller's fields: %+v", l)
		}
		switch {
		case l.Stream == "stdout" && l.Level == "info":
			out = append(out, l.Message)
		case l.Stream == "stderr" && l.Level == "info":
			errs = append(errs, l.Message)
		default:
			t.Errorf("unexpected log line %+v", l)
		}
	}
	if got, want := strings.Join(out, ","), "out 1,out 2,out 3,out 7,out 8,out 9"; got != want {
		t.Errorf("stdout lines logged: %q, want %q", got, want)
	}
	if got, want := strings.Join(errs, ","), "err 4,err 5,err 6"; got != want {
		t.Errorf("stderr lines logged: %q, want %q", got, want)
	}
}

func TestLongLines(t *testing.T) {
	var logs syncBuffer
	spec := helperSpec(t, "long")
	spec.TailLines = 3
	spec.Logger = zerolog.New(&logs)
	p := start(t, spec)
	waitDone(t, p)
	var got []string
	for _, l := range logs.lines(t) {
		m := l.Message
		if strings.Trim(m, "x") == "" {
			m = fmt.Sprintf("x*%d", len(m))
		}
		got = append(got, l.Stream+":"+m)
	}
	want := []string{"stdout:x*65536", "stdout:x*65536", "stdout:x*65536", "stdout:x*3392", "stdout:end", "stderr:partial"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("logged %v, want %v", got, want)
	}
	if got, want := p.Tail(), strings.Repeat("x", maxTailLine)+"\nend\npartial"; got != want {
		t.Errorf("Tail() = %.40q..., want %.40q...", got, want)
	}
}

func TestLineWriter(t *testing.T) {
	o := newOutput(zerolog.Nop(), 10, Output{})
	w := o.stdout
	write := func(s string) {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	write("a")
	write("b\r\nc\n\nd")
	write(strings.Repeat("y", maxLine))
	write("\ne")
	o.flush()
	want := "ab\nc\n\nd" + strings.Repeat("y", maxLine-1)[:maxTailLine-1] + "\ny\ne"
	if got := o.tail(); got != want {
		t.Errorf("tail = %.60q, want %.60q", got, want)
	}

	// A line of exactly maxLine bytes is one line, not a line and an empty one.
	o = newOutput(zerolog.Nop(), 10, Output{})
	_, _ = o.stderr.Write([]byte(strings.Repeat("z", maxLine) + "\nnext\n"))
	if got := strings.Split(o.tail(), "\n"); len(got) != 2 || got[1] != "next" {
		t.Errorf("tail = %.40q, want two lines", o.tail())
	}

	// The tail cut keeps UTF-8 intact.
	o = newOutput(zerolog.Nop(), 1, Output{})
	_, _ = o.stdout.Write([]byte("a" + strings.Repeat("é", maxTailLine) + "\n"))
	if got := o.tail(); len(got) != maxTailLine-1 || !utf8.ValidString(got) {
		t.Errorf("tail of %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	garbage := make([]byte, 4096)
	_, _ = rand.Read(garbage)
	garbage[0] = 0 // never "#!"
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		spec Spec
		want error // nil: any error
	}{
		{"missing file", Spec{Path: filepath.Join(dir, "nope")}, fs.ErrNotExist},
		{"not executable", Spec{Path: write("script", []byte("#!/bin/sh\nexit 0\n"), 0o644)}, syscall.EACCES},
		{"garbage", Spec{Path: write("garbage", garbage, 0o755)}, syscall.ENOEXEC},
		{"truncated binary", Spec{Path: write("truncated", elf[:100], 0o755)}, nil},
		{"directory", Spec{Path: dir}, syscall.EACCES},
		{"missing working directory", Spec{Path: exe, Dir: filepath.Join(dir, "gone")}, fs.ErrNotExist},
		{"not in PATH", Spec{Path: "tq-no-such-command-7f3a"}, nil},
		{"empty path", Spec{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start(tc.spec)
			if err == nil {
				p.Stop(0)
				t.Fatal("Start succeeded")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if tc.spec.Path != "" && !strings.Contains(msg, tc.spec.Path) {
				t.Errorf("error %q does not name %s", msg, tc.spec.Path)
			}
			if tc.spec.Path != "" && tc.spec.Dir == "" && strings.Count(msg, tc.spec.Path) > 1 {
				t.Errorf("error %q repeats the path", msg)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %q is not %v", msg, tc.want)
			}
		})
	}
}

func TestSignalNoGroupIsNotAnError(t *testing.T) {
	p := start(t, helperSpec(t, "exit", "0"))
	waitDone(t, p)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := p.Signal(sig); err != nil {
			t.Errorf("Signal(%v) after exit: %v", sig, err)
		}
	}
}
