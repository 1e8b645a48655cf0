//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// TestDiskFullVar runs the real server with var/ on a small tmpfs, fills
// that filesystem to ENOSPC under load, and checks the write-ahead promise
// end to end: the server keeps serving what runs, says loudly that it cannot
// write the log, starts no worker whose start it could not record (neither
// the crash restart of a killed worker nor a deploy's successor), and once
// space is freed makes the restart that was due and loses no record it had
// acknowledged.
//
// bbolt reuses freed pages of its file, so on a full filesystem the first
// few appends can still succeed; only one that has to grow into a new page
// fails. The test therefore drives events (kill -9 of the victim, then
// deploys) until a start record fails with ENOSPC, and asserts on that
// failure instead of assuming it.
func TestDiskFullVar(t *testing.T) {
	root := newRoot(t, fastConfig+"  restart_backoff_max_ms: 400\n")
	varDir := filepath.Join(root, "var")
	mountTmpfs(t, varDir, "2m")
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	s := startServer(t, root)
	kids := watchChildren(t, s.PID())
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)

	// Load on index for the whole test; api_users is the victim.
	l := testrig.StartLoad(s.URL("/"), 2, 10_000_000, 3*time.Minute)
	loadOpen := true
	t.Cleanup(func() {
		if loadOpen {
			l.Finish()
		}
	})

	// Fill the filesystem; the log file itself is left alone.
	filler := filepath.Join(varDir, "filler")
	if err := fillUntilFull(filler); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: want ENOSPC, got %v", varDir, err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(varDir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Bfree != 0 {
		t.Fatalf("var/ still has %d free blocks after the filler hit ENOSPC", sfs.Bfree)
	}

	alive := func() {
		t.Helper()
		select {
		case <-s.Done():
			t.Fatalf("the server exited on a full var/: %v", s.ExitErr())
		default:
		}
	}
	failedStarts := func(worker string) []logEntry {
		return failedRecords(s, func(e logEntry) bool { return e.str("worker") == worker && e.str("event") == "start" })
	}

	// 1. Crash restart: kill -9 api_users until its restart cannot be recorded.
	var victimPIDs []int
	for i := 0; ; i++ {
		if i == 30 {
			t.Fatalf("30 crashes on a full var/ and no start record failed:\n%s", s.Logs())
		}
		n0 := len(failedStarts("api_users"))
		var pid int
		testrig.WaitFor(t, 15*time.Second, "a healthy api_users", func() bool {
			pid, _ = healthyInstance(s, "api_users")
			return pid != 0
		})
		victimPIDs = append(victimPIDs, pid)
		if err := killPID(pid); err != nil {
			t.Fatal(err)
		}
		refused := false
		testrig.WaitFor(t, 15*time.Second, "api_users restarted, or its start refused", func() bool {
			if len(failedStarts("api_users")) > n0 {
				refused = true
				return true
			}
			p, _ := healthyInstance(s, "api_users")
			return p != 0 && p != pid
		})
		if refused {
			t.Logf("start refused after %d kill(s) on the full var/", i+1)
			break
		}
	}
	alive()
	fs := failedStarts("api_users")
	pendingInst := fs[len(fs)-1].str("instance")
	if !strings.HasPrefix(pendingInst, "api_users-") {
		t.Fatalf("failed start line names instance %q", pendingInst)
	}

	// 2. Deploy: a new index binary + reload, until its start cannot be
	// recorded. Each deploy that could be recorded must serve at once.
	serving, pendingVer := 1, 0
	for v := 2; ; v++ {
		if v == 12 {
			t.Fatalf("10 deploys on a full var/ and no record failed")
		}
		install(t, root, "index", fmt.Sprintf("v%d", v), "normal")
		out, errs, err := runCLI(t, "reload", "--root", root)
		if err == nil {
			waitBody(t, s.URL("/"), fmt.Sprintf("v%d index", v), 10*time.Second)
			serving = v
			continue
		}
		if !strings.Contains(out+errs, "no space left on device") {
			t.Fatalf("reload failed, but not for the full disk: %v\n%s%s", err, out, errs)
		}
		t.Logf("reload of v%d refused: %s", v, strings.TrimSpace(out))
		pendingVer = v
		break
	}
	alive()
	if code, body := get(t, s.URL("/")); code != 200 || !strings.Contains(body, fmt.Sprintf("v%d index", serving)) {
		t.Fatalf("after the refused deploy of v%d, / answers %d %q; want v%d still serving", pendingVer, code, body, serving)
	}

	// 3. While the disk stays full: every api_users process seen so far has
	// gone, then three more starts are refused, and still none runs.
	testrig.WaitFor(t, 10*time.Second, "every api_users process gone", func() bool {
		for _, k := range kids.of("api_users") {
			if testrig.PIDAlive(k.pid) {
				return false
			}
		}
		return true
	})
	seen := len(kids.of("api_users"))
	n1 := len(failedStarts("api_users"))
	testrig.WaitFor(t, 15*time.Second, "three more refused restarts of api_users", func() bool {
		alive()
		return len(failedStarts("api_users")) >= n1+3
	})
	kids.scan()
	if got := kids.of("api_users"); len(got) != seen {
		t.Fatalf("an api_users process was started while its start could not be recorded: %+v", got[seen:])
	}
	for _, e := range failedStarts("api_users") {
		if !strings.Contains(e.str("error"), "no space left on device") || !strings.Contains(e.str("error"), "tqserver.db") {
			t.Fatalf("failed start logged without the cause: %v", e)
		}
	}
	for _, e := range failedStarts("api_users")[len(fs)-1:] {
		if e.str("instance") != pendingInst {
			t.Fatalf("refused starts consumed instance names: %s then %s", pendingInst, e.str("instance"))
		}
	}
	if code, body := get(t, s.URL("/api/users")); code != 503 {
		t.Fatalf("/api/users with no instance it could record: %d %q, want 503", code, body)
	}
	for _, w := range s.status().Workers {
		if w.Name == "api_users" && len(w.Instances) != 0 {
			t.Fatalf("status shows api_users instances that were never recorded: %+v", w.Instances)
		}
	}
	if n := l.Failed(); n != 0 {
		_, _, errs := l.Finish()
		loadOpen = false
		t.Fatalf("load on index while var/ was full: %d failed: %v", n, errs)
	}

	// Reading the log needs no space: history still answers, with every
	// record acknowledged so far.
	var maxAcked float64
	for _, e := range logEntries(s) {
		if seq, ok := e["seq"].(float64); ok && e.str("level") == "info" && seq > maxAcked {
			maxAcked = seq
		}
	}
	if h := history(t, root); len(h) == 0 || h[len(h)-1].Seq != uint64(maxAcked) {
		t.Fatalf("history on the full disk: %d records, want the last to be seq %d", len(h), uint64(maxAcked))
	}

	// 4. Free the space: the due restart happens by itself (backoff retry),
	// under the instance name it was refused with.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	testrig.WaitFor(t, 15*time.Second, pendingInst+" healthy once space is free", func() bool {
		_, name := healthyInstance(s, "api_users")
		return name == pendingInst
	})
	for _, e := range logEntries(s) {
		if e.str("instance") == pendingInst && e.str("event") == "health_ok" && e.str("level") == "info" {
			if at, err := time.Parse(time.RFC3339Nano, e.str("time")); err == nil {
				t.Logf("%s recorded healthy %s after the space was freed", pendingInst, at.Sub(freed).Round(time.Millisecond))
			}
		}
	}
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)

	// The refused deploy resumes by itself too: the replacement is retried
	// with backoff like the crashed worker's restart, no second reload.
	want := fmt.Sprintf("v%d index", pendingVer)
	testrig.WaitFor(t, 15*time.Second, "the deploy refused on the full disk to resume by itself", func() bool {
		code, body := get(t, s.URL("/"))
		return code == 200 && strings.Contains(body, want)
	})
	t.Logf("the refused v%d deploy serves %s after the space was freed", pendingVer, time.Since(freed).Round(time.Millisecond))
	// And it is done: a reload now finds nothing to do.
	out, errs, err := runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out+errs, "nothing changed") {
		t.Fatalf("reload after the resumed deploy: %v\n%s%s", err, out, errs)
	}

	ok, failed, lerrs := l.Finish()
	loadOpen = false
	if failed != 0 || ok == 0 {
		t.Fatalf("load on index: %d ok, %d failed: %v", ok, failed, lerrs)
	}
	t.Logf("load on index: %d requests, 0 failed", ok)

	// 5. The history: seq strictly increasing, every record the server
	// acknowledged is there, and every worker process that ran has the
	// start record of its worker and port.
	recs := history(t, root)
	bySeq := map[uint64]store.Record{}
	var prev uint64
	for _, r := range recs {
		if r.Seq <= prev {
			t.Fatalf("seq %d after %d", r.Seq, prev)
		}
		prev = r.Seq
		bySeq[r.Seq] = r
	}
	acked := 0
	for _, e := range logEntries(s) {
		seq, ok := e["seq"].(float64)
		if e.str("level") != "info" || !ok || seq == 0 {
			continue
		}
		acked++
		r, found := bySeq[uint64(seq)]
		if !found || r.Event != e.str("event") || r.Instance != e.str("instance") {
			t.Fatalf("acknowledged record seq %d (%s %s) is not in the history: %+v", uint64(seq), e.str("event"), e.str("instance"), r)
		}
	}
	if acked < 10 {
		t.Fatalf("only %d acknowledged records in the server log", acked)
	}
	kids.scan()
	watched := map[int]bool{}
	for _, k := range kids.of("api_users") {
		watched[k.pid] = true
	}
	for _, pid := range victimPIDs {
		if !watched[pid] {
			t.Fatalf("the /proc watcher missed killed api_users pid %d (saw %+v)", pid, kids.all())
		}
	}
	t.Logf("%d acknowledged records, all in the history; %d worker processes ran, each with its start record", acked, len(kids.all()))
	for _, k := range kids.all() {
		if count(recs, func(r store.Record) bool {
			return r.Event == "start" && r.Worker == k.worker && r.Port == k.port
		}) == 0 {
			t.Fatalf("worker process %d (%s on port %d) ran without a start record", k.pid, k.worker, k.port)
		}
	}
	if count(recs, func(r store.Record) bool { return r.Instance == pendingInst && r.Event == "start" }) != 1 {
		t.Fatalf("want exactly one start record of %s", pendingInst)
	}

	s.signal(syscall.SIGTERM)
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatalf("clean stop after the full disk: %v", err)
	}
	for _, k := range kids.all() {
		if testrig.PIDAlive(k.pid) {
			t.Fatalf("worker pid %d outlived the server", k.pid)
		}
	}
}

// mountTmpfs mounts a tmpfs of the given size on dir for the test's
// lifetime. It skips the test where mounting is not permitted.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0755"); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENODEV) {
			t.Skipf("cannot mount a tmpfs on %s (needs root with CAP_SYS_ADMIN and tmpfs support): %v", dir, err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			if err2 := syscall.Unmount(dir, syscall.MNT_DETACH); err2 != nil {
				t.Errorf("unmount %s: %v; lazy unmount: %v", dir, err, err2)
			}
		}
	})
}

// fillUntilFull writes to path until a write fails and returns that error.
func fillUntilFull(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 64<<10)
	for i := 0; i < 1<<20; i++ { // 64 GiB: far beyond any test tmpfs
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return errors.New("no error after 64 GiB")
}

// healthyInstance returns the PID and name of worker's healthy instance.
func healthyInstance(s *server, worker string) (int, string) {
	st, err := s.statusErr()
	if err != nil {
		return 0, ""
	}
	for _, w := range st.Workers {
		if w.Name == worker {
			for _, in := range w.Instances {
				if in.State == "healthy" {
					return in.PID, in.Instance
				}
			}
		}
	}
	return 0, ""
}

// logEntry is one JSON line of the server's (prod mode) log.
type logEntry map[string]any

func (e logEntry) str(k string) string { v, _ := e[k].(string); return v }

func logEntries(s *server) []logEntry {
	var out []logEntry
	for _, line := range strings.Split(s.Logs(), "\n") {
		var e logEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// failedRecords are the error-level "could not record" lines matching pred.
func failedRecords(s *server, pred func(logEntry) bool) []logEntry {
	var out []logEntry
	for _, e := range logEntries(s) {
		if e.str("level") == "error" && e.str("message") == "could not record; effect skipped" && pred(e) {
			out = append(out, e)
		}
	}
	return out
}

// child is a worker process seen as a child of the server.
type child struct {
	pid    int
	worker string
	port   int
}

// children records every worker process the server runs, by polling /proc
// for its children (and reading their TQ_WORKER_NAME and PORT).
type children struct {
	parent int
	mu     sync.Mutex
	seen   map[int]child
	order  []int
}

func watchChildren(t *testing.T, parent int) *children {
	c := &children{parent: parent, seen: map[int]child{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.scan()
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return c
}

func (c *children) scan() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c.mu.Lock()
		_, known := c.seen[pid]
		c.mu.Unlock()
		if known {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(c.parent) {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		k := child{pid: pid}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("TQ_WORKER_NAME=")); ok {
				k.worker = string(v)
			}
			if v, ok := bytes.CutPrefix(kv, []byte("PORT=")); ok {
				k.port, _ = strconv.Atoi(string(v))
			}
		}
		if k.worker == "" {
			continue // forked, not yet exec'd: look again next time
		}
		c.mu.Lock()
		c.seen[pid] = k
		c.order = append(c.order, pid)
		c.mu.Unlock()
	}
}

func (c *children) all() []child {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]child, 0, len(c.order))
	for _, pid := range c.order {
		out = append(out, c.seen[pid])
	}
	return out
}

func (c *children) of(worker string) []child {
	var out []child
	for _, k := range c.all() {
		if k.worker == worker {
			out = append(out, k)
		}
	}
	return out
}
