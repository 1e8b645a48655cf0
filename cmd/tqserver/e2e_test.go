package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

const fastConfig = `
workers:
  port_range_start: 21000
  port_range_end: 21999
  shutdown_grace_period_ms: 2000
  restart_delay_ms: 100
  default:
    health_timeout_ms: 3000
    health_interval_ms: 200
    health_probe_timeout_ms: 500
    health_failure_threshold: 3
`

func TestReplaceUnderLoadZeroFailures(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)

	l := testrig.StartLoad(s.URL("/"), 8, 1_000_000, 90*time.Second)
	var took []time.Duration
	for i := 2; i <= 6; i++ {
		v := fmt.Sprintf("v%d", i)
		install(t, root, "index", v, "normal")
		start := time.Now()
		s.signal(syscall.SIGHUP)
		testrig.WaitFor(t, 20*time.Second, v+" serving", func() bool {
			b := l.Last()
			return strings.HasPrefix(b, v+" ")
		})
		took = append(took, time.Since(start))
	}
	ok, failed, errs := l.Finish()
	t.Logf("5 replacements under 8 keep-alive clients: %d ok, %d failed; SIGHUP→new version serving: %v", ok, failed, took)
	if failed != 0 {
		t.Fatalf("%d failed requests: %v", failed, errs)
	}
	if ok < 100 {
		t.Fatalf("load too small to mean anything: %d", ok)
	}
	hstart := time.Now()
	all := history(t, root)
	t.Logf("tqserver history --json over %d records (through the running server): %v", len(all), time.Since(hstart))
	recs := history(t, root, "--worker", "index")
	if n := count(recs, func(r store.Record) bool { return r.To == "healthy" && r.Reason == "binary_changed" }); n != 5 {
		t.Fatalf("want 5 binary_changed healthy records, got %d", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.To == "draining" && r.Reason == "replaced" }); n != 5 {
		t.Fatalf("want 5 replaced drains, got %d", n)
	}
	// Exactly one live instance afterwards, and the old ones are gone.
	testrig.WaitFor(t, 10*time.Second, "one instance", func() bool {
		st := s.status()
		return len(st.Workers) == 1 && len(st.Workers[0].Instances) == 1 && st.Workers[0].Instances[0].State == "healthy"
	})
	for _, r := range recs {
		if r.To == "stopped" && r.PID != 0 && testrig.PIDAlive(r.PID) {
			t.Errorf("stopped instance %s pid %d still alive", r.Instance, r.PID)
		}
	}
}

func TestLongRequestSurvivesRestart(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		c, b := get(t, s.URL("/slow?ms=3000"))
		done <- result{c, b}
	}()
	// The slow request must be in flight on v1 before the swap.
	testrig.WaitFor(t, 5*time.Second, "slow request in flight", func() bool {
		st := s.status()
		for _, in := range st.Workers[0].Instances {
			if in.Inflight != nil && *in.Inflight > 0 {
				return true
			}
		}
		return false
	})
	install(t, root, "index", "v2", "normal")
	s.signal(syscall.SIGHUP)
	waitBody(t, s.URL("/"), "v2", 10*time.Second)
	r := <-done
	if r.code != 200 || !strings.Contains(r.body, "slow done v1") {
		t.Fatalf("in-flight request across restart: %d %q", r.code, r.body)
	}
}

func TestBrokenBinaryRollsBack(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1", 10*time.Second)
	l := testrig.StartLoad(s.URL("/"), 4, 1_000_000, 60*time.Second)

	// 1. A truncated binary (a deploy cut short) is not even started
	// (CONTRACT.md §11: checksum_mismatch).
	good, _ := os.ReadFile(builds.TestWorker(t, "v2", "normal"))
	installBytes(t, root, "index", good[:len(good)/3])
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err == nil {
		t.Fatalf("reload of a truncated binary succeeded: %s", out)
	}
	if !strings.Contains(out+errOut, "checksum_mismatch") {
		t.Fatalf("reload output does not say checksum_mismatch: %s %s", out, errOut)
	}
	// 2. A binary that runs but never becomes healthy.
	install(t, root, "index", "v3", "nohealth")
	if out, _, err := runCLI(t, "reload", "--root", root); err == nil {
		t.Fatalf("reload of a never-healthy binary succeeded: %s", out)
	}
	// 3. A binary that exits at once.
	install(t, root, "index", "v4", "crash")
	if out, _, err := runCLI(t, "reload", "--root", root); err == nil {
		t.Fatalf("reload of a crashing binary succeeded: %s", out)
	}
	ok, failed, errs := l.Finish()
	if failed != 0 {
		t.Fatalf("%d failed requests during rollbacks (of %d): %v", failed, ok+failed, errs)
	}
	if b := l.Last(); !strings.HasPrefix(b, "v1 ") {
		t.Fatalf("old instance no longer serving: %q", b)
	}
	recs := history(t, root, "--worker", "index")
	if n := count(recs, func(r store.Record) bool { return r.Reason == "rollback" && r.To == "stopped" }); n != 2 {
		t.Fatalf("want 2 rollback records, got %d", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.Event == "binary_rejected" && r.Reason == "checksum_mismatch" }); n != 1 {
		t.Fatalf("want 1 checksum_mismatch record (the truncated binary), got %d", n)
	}
	for _, r := range recs {
		if r.Reason == "rollback" && r.Detail == "" {
			t.Errorf("rollback record without detail: %+v", r)
		}
	}
	// A good binary afterwards still deploys.
	install(t, root, "index", "v5", "normal")
	if out, errs, err := runCLI(t, "reload", "--root", root); err != nil {
		t.Fatalf("reload after rollbacks: %v %s %s", err, out, errs)
	}
	waitBody(t, s.URL("/"), "v5", 10*time.Second)
}

func TestCrashingWorkerBacksOff(t *testing.T) {
	root := newRoot(t, fastConfig+"  restart_backoff_max_ms: 800\n")
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_crash", "v1", "crash")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	// Wait for several crash records; the gaps between starts must grow.
	var starts []time.Time
	testrig.WaitFor(t, 20*time.Second, "6 crash restarts", func() bool {
		starts = starts[:0]
		for _, r := range history(t, root, "--worker", "api_crash") {
			if r.To == "starting" && r.From == "" {
				starts = append(starts, r.Time)
			}
		}
		return len(starts) >= 6
	})
	recs := history(t, root, "--worker", "api_crash")
	crashed := 0
	for _, r := range recs {
		if r.Reason == "crashed" && r.To == "stopped" {
			crashed++
			if r.ExitCode == nil || *r.ExitCode != 3 {
				t.Errorf("crash record without exit code 3: %+v", r)
			}
			if !strings.Contains(r.Detail, "boom") {
				t.Errorf("crash record without stderr tail: %q", r.Detail)
			}
		}
	}
	if crashed < 5 {
		t.Fatalf("want ≥5 crashed records, got %d", crashed)
	}
	gap := func(i int) time.Duration { return starts[i].Sub(starts[i-1]) }
	if !(gap(3) > gap(1) && gap(4) >= 700*time.Millisecond) {
		t.Fatalf("restarts do not back off: gaps %v %v %v %v %v", gap(1), gap(2), gap(3), gap(4), gap(5))
	}
	if gap(5) > 3*time.Second {
		t.Fatalf("backoff exceeded its cap: %v", gap(5))
	}
	// The other worker is unaffected; the crashing one answers 503 meanwhile.
	if code, body := get(t, s.URL("/")); code != 200 || !strings.Contains(body, "v1 index") {
		t.Fatalf("index affected: %d %q", code, body)
	}
	if code, _ := get(t, s.URL("/api/crash")); code != 503 && code != 502 {
		t.Fatalf("crashing worker: %d", code)
	}
}

func TestSIGTERMStopsEverything(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	waitBody(t, s.URL("/api/users/7"), "v1 api_users", 10*time.Second)
	st := s.status()
	var pids, ports []int
	for _, w := range st.Workers {
		for _, in := range w.Instances {
			pids = append(pids, in.PID)
			ports = append(ports, in.Port)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("want 2 instances, got %+v", st)
	}
	slow := make(chan int, 1)
	go func() { c, _ := get(t, s.URL("/slow?ms=1000")); slow <- c }()
	testrig.WaitFor(t, 5*time.Second, "slow request in flight", func() bool {
		for _, w := range s.status().Workers {
			for _, in := range w.Instances {
				if in.Inflight != nil && *in.Inflight > 0 {
					return true
				}
			}
		}
		return false
	})
	s.signal(syscall.SIGTERM)
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, s.Logs())
	}
	if c := <-slow; c != 200 {
		t.Fatalf("in-flight request during shutdown: %d", c)
	}
	for _, pid := range pids {
		if testrig.PIDAlive(pid) {
			t.Errorf("worker pid %d outlived the server", pid)
		}
	}
	for _, p := range ports {
		assertPortFree(t, p)
	}
	recs := history(t, root)
	if n := count(recs, func(r store.Record) bool { return r.Reason == "shutdown" && r.To == "stopped" }); n != 2 {
		t.Fatalf("want 2 shutdown stops, got %d", n)
	}
	if _, err := os.Stat(filepath.Join(root, "var", "tqserver.sock")); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	// status after stop reads the log: nothing live.
	out, _, err := runCLI(t, "status", "--json", "--root", root)
	if err != nil || !strings.Contains(out, `"running":false`) || strings.Contains(out, `"instance"`) {
		t.Fatalf("status after stop: %v %s", err, out)
	}
}

func assertPortFree(t *testing.T, port int) {
	t.Helper()
	testrig.WaitFor(t, 5*time.Second, fmt.Sprintf("port %d free", port), func() bool {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false
		}
		ln.Close()
		return true
	})
}

func TestKill9ThenRestartReapsOrphans(t *testing.T) {
	root := newRoot(t, fastConfig)
	// "orphan" drops its parent-death signal so it survives the server's
	// kill -9; "spawnchild" leaves a grandchild in its process group.
	install(t, root, "index", "v1", "orphan")
	install(t, root, "api_users", "v1", "spawnchild")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)
	st := s.status()
	var pids, ports []int
	for _, w := range st.Workers {
		for _, in := range w.Instances {
			pids = append(pids, in.PID)
			ports = append(ports, in.Port)
		}
	}
	childPID := 0
	testrig.WaitFor(t, 5*time.Second, "grandchild pid", func() bool {
		b, err := os.ReadFile(filepath.Join(root, "workers", "api_users", "child.pid"))
		if err != nil {
			return false
		}
		childPID, _ = strconv.Atoi(string(b))
		return childPID > 0
	})
	t.Cleanup(func() { // never leave the test's orphans behind, whatever happens
		for _, pid := range append(pids, childPID) {
			if testrig.PIDAlive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	lastSeq := history(t, root, "--limit", "1")[0].Seq

	s.signal(syscall.SIGKILL)
	s.wait(10 * time.Second)
	if !testrig.PIDAlive(pids[0]) && !testrig.PIDAlive(childPID) {
		t.Fatal("test setup: expected an orphan to survive the kill -9")
	}
	// history works on the dead server's log.
	if n := len(history(t, root)); n == 0 {
		t.Fatal("history empty after crash")
	}
	s2 := startServer(t, root)
	for _, pid := range append(pids, childPID) {
		pid := pid
		testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("pid %d reaped", pid), func() bool { return !testrig.PIDAlive(pid) })
	}
	waitBody(t, s2.URL("/"), "v1 index", 10*time.Second)
	recs := history(t, root)
	reaped := count(recs, func(r store.Record) bool { return r.Reason == "orphan_reaped" && r.To == "stopped" })
	if reaped != 2 {
		t.Fatalf("want 2 orphan_reaped records, got %d", reaped)
	}
	var prev uint64
	for _, r := range recs {
		if r.Seq <= prev {
			t.Fatalf("seq not increasing: %d after %d", r.Seq, prev)
		}
		prev = r.Seq
	}
	if recs[len(recs)-1].Seq <= lastSeq {
		t.Fatal("no new records after restart")
	}
	// Instance names are never reused.
	names := map[string]bool{}
	for _, r := range recs {
		if r.From == "" && r.To == "starting" {
			if names[r.Instance] {
				t.Fatalf("instance name %s reused", r.Instance)
			}
			names[r.Instance] = true
		}
	}
	// After a clean stop nothing is left and the old ports are free.
	s2.signal(syscall.SIGTERM)
	if err := s2.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		assertPortFree(t, p)
	}
}
