package store

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv, when set to a log path, turns the test binary into a writer
// that appends to that log forever, printing each committed seq.
const crashChildEnv = "TQ_STORE_CRASH_CHILD"

func crashChild(path string) {
	s, err := Open(path, Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		// Varying sizes make bbolt split pages and grow the file while it
		// may be killed.
		r := Record{
			Worker:   "index",
			Instance: fmt.Sprintf("index-%d", i),
			Event:    "crash_test",
			PID:      os.Getpid(),
			Detail:   strings.Repeat("x", i%700),
		}
		if err := s.Append(&r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		// Printed only once committed: every printed seq must survive.
		fmt.Println(r.Seq)
	}
}

// TestKill9 kills a writer mid-append three times on the same log and checks
// that every committed record survives intact and seq never goes back.
func TestKill9(t *testing.T) {
	path := dbPath(t)
	var maxSeen uint64
	for round := range 3 {
		printed := runAndKill(t, path)
		if printed[0] <= maxSeen {
			t.Fatalf("round %d: child's first seq %d is not after %d", round, printed[0], maxSeen)
		}
		lastPrinted := printed[len(printed)-1]

		// A reader opens what the dead process left behind.
		ro, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("round %d: read-only open after kill: %v", round, err)
		}
		var prev uint64
		found := false
		err = ro.Scan(Filter{}, func(r Record) error {
			if r.Seq <= prev {
				return fmt.Errorf("seq %d after %d", r.Seq, prev)
			}
			prev = r.Seq
			found = found || r.Seq == lastPrinted
			return nil
		})
		ro.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !found || prev < lastPrinted {
			t.Fatalf("round %d: last printed seq %d missing (log ends at %d)", round, lastPrinted, prev)
		}

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		r := Record{Event: "server_start", Reason: "startup"}
		if err := s.Append(&r); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if r.Seq <= prev {
			t.Fatalf("round %d: seq %d appended after kill is not after %d", round, r.Seq, prev)
		}
		maxSeen = r.Seq
		t.Logf("round %d: child printed %d seqs up to %d, log ended at %d, next append got %d", round, len(printed), lastPrinted, prev, r.Seq)
	}
}

// runAndKill starts a writer child on path, SIGKILLs it once it has printed
// at least 200 seqs, and returns every seq it printed.
func runAndKill(t *testing.T, path string) []uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var printed []uint64
	parse := func(line string) {
		n, err := strconv.ParseUint(line, 10, 64)
		if err != nil {
			t.Errorf("child printed %q", line)
			return
		}
		printed = append(printed, n)
	}
	deadline := time.After(30 * time.Second)
	for len(printed) < 200 {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child exited after %d seqs: %s", len(printed), stderr.String())
			}
			parse(line)
		case <-deadline:
			_ = cmd.Process.Kill()
			for range lines {
			}
			_ = cmd.Wait()
			t.Fatalf("child printed only %d seqs in 30s: %s", len(printed), stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines printed before the kill landed are committed too.
	for line := range lines {
		parse(line)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v: %s", err, stderr.String())
	}
	for i := 1; i < len(printed); i++ {
		if printed[i] <= printed[i-1] {
			t.Fatalf("child printed seq %d after %d", printed[i], printed[i-1])
		}
	}
	return printed
}
