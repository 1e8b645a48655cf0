package process

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a child process (runHelper)
// instead of running tests.
const helperEnv = "TQ_PROCESS_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		runHelper(os.Args[1:])
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// runHelper is the child side. Modes:
//
//	exit N                  exit with code N
//	kill                    SIGKILL itself
//	panic                   crash like a Go worker with GOTRACEBACK=crash (SIGABRT)
//	sleep                   print "ready", run until signalled
//	ignoreterm              ignore SIGTERM, print "ready", run
//	echo                    print "got SIGWINCH" for each SIGWINCH (SIGTERM kills it)
//	phases                  out 1-3 on stdout; SIGUSR1; err 4-6 on stderr; SIGUSR1; out 7-9
//	flood N                 "line 1".."line N" on stdout as fast as it can, then "done" on stderr
//	long                    a 200000-byte line and "end" on stdout, "partial" (no newline) on stderr
//	spawn MODE same|own|setsid|bare THEN  start a child helper in MODE (in this
//	                        group, its own, its own session, or its own session
//	                        with a clean environment)
//	                        sharing stdout/stderr, print "child PID TICKS", then THEN:
//	                        sleep, ignoreterm or exit
//	orphanmaker             start a "waitorphan" helper in this group, print
//	                        "grandchild PID TICKS", exit
//	waitorphan PPID         exit as soon as the parent PPID has exited
//	middle                  Start a "sleep" helper, print "grandchild PID TICKS", run
func runHelper(args []string) {
	if len(args) == 0 {
		fail("no helper mode")
	}
	switch args[0] {
	case "exit":
		code, _ := strconv.Atoi(args[1])
		os.Exit(code)
	case "kill":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		block()
	case "panic":
		_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
		debug.SetTraceback("crash")
		var m map[string]int
		m["boom"]++
	case "sleep":
		fmt.Println("ready")
		block()
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		block()
	case "echo":
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGWINCH)
		fmt.Println("ready")
		for s := range ch {
			fmt.Println("got", unix.SignalName(s.(syscall.Signal)))
		}
	case "phases":
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGUSR1)
		for i := 1; i <= 9; i++ {
			if i == 4 || i == 7 {
				<-ch
			}
			if i >= 4 && i <= 6 {
				fmt.Fprintf(os.Stderr, "err %d\n", i)
			} else {
				fmt.Printf("out %d\n", i)
			}
		}
	case "flood":
		n, _ := strconv.Atoi(args[1])
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "line %d\n", i)
		}
		w.Flush()
		fmt.Fprintln(os.Stderr, "done")
	case "long":
		_, _ = os.Stdout.WriteString(strings.Repeat("x", 200000) + "\nend\n")
		_, _ = os.Stderr.WriteString("partial")
	case "spawn":
		mode, group, then := args[1], args[2], args[3]
		if then == "ignoreterm" {
			signal.Ignore(syscall.SIGTERM)
		}
		cmd := exec.Command(exePath(), mode)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group == "own", Setsid: group == "setsid" || group == "bare"}
		if group == "bare" { // a new session and a clean environment: no mark
			cmd.Env = []string{helperEnv + "=1", "GORACE=atexit_sleep_ms=0"}
		}
		if err := cmd.Start(); err != nil {
			fail(err.Error())
		}
		ticks, err := StartTicks(cmd.Process.Pid)
		if err != nil {
			fail(err.Error())
		}
		fmt.Printf("child %d %d\n", cmd.Process.Pid, ticks)
		if then == "exit" {
			os.Exit(0)
		}
		block()
	case "orphanmaker":
		cmd := exec.Command(exePath(), "waitorphan", strconv.Itoa(os.Getpid()))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			fail(err.Error())
		}
		ticks, err := StartTicks(cmd.Process.Pid)
		if err != nil {
			fail(err.Error())
		}
		fmt.Printf("grandchild %d %d\n", cmd.Process.Pid, ticks)
		os.Exit(0)
	case "waitorphan":
		parent, _ := strconv.Atoi(args[1])
		for deadline := time.Now().Add(10 * time.Second); os.Getppid() == parent; {
			if time.Now().After(deadline) {
				fail("parent did not exit")
			}
			time.Sleep(time.Millisecond)
		}
	case "middle":
		p, err := Start(Spec{Path: exePath(), Args: []string{"sleep"}, Logger: zerolog.Nop()})
		if err != nil {
			fail(err.Error())
		}
		// Once "ready" is through, the grandchild writes nothing more: a write
		// after our death would kill it with SIGPIPE and prove nothing.
		for deadline := time.Now().Add(10 * time.Second); p.Tail() != "ready"; {
			if time.Now().After(deadline) {
				fail("grandchild not ready")
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Printf("grandchild %d %d\n", p.PID, p.StartTicks)
		block()
	default:
		fail("unknown helper mode " + args[0])
	}
}

func block() {
	for {
		time.Sleep(time.Hour)
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "helper:", msg)
	os.Exit(100)
}

func exePath() string {
	exe, err := os.Executable()
	if err != nil {
		fail(err.Error())
	}
	return exe
}

// helperEnviron is the environment of helper children. The race runtime
// otherwise sleeps a second in every exiting child.
func helperEnviron() []string {
	return append(os.Environ(), helperEnv+"=1", "GORACE=atexit_sleep_ms=0")
}
