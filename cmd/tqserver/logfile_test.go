package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// The history log under damage, deletion and time travel, through the real
// binary (CONTRACT.md §5, §8, §11).

// stopServer sends SIGTERM and waits for a clean exit.
func stopServer(t *testing.T, s *server) {
	t.Helper()
	s.signal(syscall.SIGTERM)
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, s.Logs())
	}
}

func maxInstance(recs []store.Record, worker string) int {
	top := 0
	for _, r := range recs {
		if r.Worker == worker {
			if n, err := strconv.Atoi(strings.TrimPrefix(r.Instance, worker+"-")); err == nil {
				top = max(top, n)
			}
		}
	}
	return top
}

// checkSeqs fails unless seqs strictly increase.
func checkSeqs(t *testing.T, recs []store.Record) {
	t.Helper()
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			t.Fatalf("seq %d follows %d", recs[i].Seq, recs[i-1].Seq)
		}
	}
}

// oneLineFailure checks a command failed with exactly one line on stderr,
// naming the log and saying to salvage it, and no Go panic or trace.
func oneLineFailure(t *testing.T, what, stderr string, err error, db string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded on a damaged log", what)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() <= 0 {
		t.Fatalf("%s: %v (killed, not a clean exit)", what, err)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tqserver: "+db+" is damaged (") ||
		!strings.Contains(stderr, "tqserver log salvage") || strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
		t.Fatalf("%s: want one line '%s is damaged (...) ... tqserver log salvage', got:\n%s", what, db, stderr)
	}
}

// TestDamagedLogFailsCleanlyAndSalvages damages the log of a root a server
// has run on, three ways. serve, history and status each fail with one
// line (no panic, no pid or socket file left); log check reports it; log
// salvage keeps what is readable; a server then starts on it with seq and
// instance numbering continuing.
func TestDamagedLogFailsCleanlyAndSalvages(t *testing.T) {
	damages := map[string]func(t *testing.T, db string){
		"truncated to half": func(t *testing.T, db string) {
			fi, err := os.Stat(db)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(db, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		},
		"middle page overwritten": func(t *testing.T, db string) {
			id, ps := middleLeaf(t, db)
			junk := make([]byte, ps)
			rand.Read(junk)
			testrig.WriteAt(t, db, junk, id*ps)
		},
		"header pages zeroed": func(t *testing.T, db string) {
			testrig.WriteAt(t, db, make([]byte, 2*os.Getpagesize()), 0)
		},
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			root := newRoot(t, fastConfig)
			install(t, root, "index", "v1", "normal")
			s := startServer(t, root)
			waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
			stopServer(t, s)
			db := filepath.Join(root, "var", "tqserver.db")
			before := history(t, root)
			// A history long enough to span many pages, of records a
			// replay accepts.
			st, err := store.Open(db, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2000 {
				r := store.Record{Worker: "index", Event: "assets_changed", Detail: fmt.Sprintf("filler %d", i)}
				if err := st.Append(&r); err != nil {
					t.Fatal(err)
				}
			}
			st.Close()
			topInstance := maxInstance(before, "index")

			damage(t, db)

			_, errs, err := runCLI(t, "serve", "--root", root, "--mode", "prod", "--listen", "127.0.0.1:0")
			oneLineFailure(t, "serve", errs, err, db)
			for _, f := range []string{"tqserver.pid", "tqserver.sock"} {
				if _, err := os.Stat(filepath.Join(root, "var", f)); !os.IsNotExist(err) {
					t.Fatalf("serve left var/%s behind: %v", f, err)
				}
			}
			_, errs, err = runCLI(t, "history", "--root", root)
			oneLineFailure(t, "history", errs, err, db)
			_, errs, err = runCLI(t, "history", "--json", "--root", root)
			oneLineFailure(t, "history --json", errs, err, db)
			_, errs, err = runCLI(t, "status", "--root", root)
			oneLineFailure(t, "status", errs, err, db)
			_, errs, err = runCLI(t, "status", "--json", "--root", root, "--at", "1h")
			oneLineFailure(t, "status --at", errs, err, db)
			_, errs, err = runCLI(t, "log", "check", "--root", root)
			oneLineFailure(t, "log check", errs, err, db)

			out, errs, err := runCLI(t, "log", "salvage", "--root", root)
			if err != nil {
				t.Fatalf("log salvage: %v: %s", err, errs)
			}
			m := regexp.MustCompile(`^kept (\d+) records, lost (\d+) \(of seq 1\.\.(\d+)\); the damaged file is now (var/tqserver\.db\.damaged-\d{8}T\d{6}Z); the log continues at seq (\d+)\n$`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("log salvage printed %q", out)
			}
			kept, _ := strconv.Atoi(m[1])
			last, _ := strconv.ParseUint(m[3], 10, 64)
			if kept < 500 {
				t.Fatalf("kept only %d records: %s", kept, out)
			}
			if _, err := os.Stat(filepath.Join(root, m[4])); err != nil {
				t.Fatalf("damaged file not kept: %v", err)
			}
			out, errs, err = runCLI(t, "log", "check", "--root", root)
			if err != nil || !strings.HasPrefix(out, fmt.Sprintf("ok: %d records, seq ", kept+1)) || !strings.HasSuffix(out, fmt.Sprintf("..%d\n", last+1)) {
				t.Fatalf("log check after salvage: %v %q %s", err, out, errs)
			}

			s = startServer(t, root)
			waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
			stopServer(t, s)
			after := history(t, root)
			checkSeqs(t, after)
			var start store.Record
			for _, r := range after {
				if r.Event == "server_start" && r.Seq > last {
					start = r
					break
				}
			}
			if start.Seq <= last+1 {
				t.Fatalf("the next server_start has seq %d, want > %d (salvaged up to %d)", start.Seq, last+1, last)
			}
			if got := maxInstance(after, "index"); got <= topInstance {
				t.Fatalf("newest index instance is index-%d, want a number after %d", got, topInstance)
			}
		})
	}
}

// middleLeaf finds a leaf page in the middle of the log's tree.
func middleLeaf(t *testing.T, db string) (int64, int64) {
	t.Helper()
	bdb, err := bolt.Open(db, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	var leaves []int
	err = bdb.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return err
			}
			if info.Type == "leaf" {
				leaves = append(leaves, id)
			}
		}
	})
	if err != nil || len(leaves) < 3 {
		t.Fatalf("leaf pages %v: %v", leaves, err)
	}
	return int64(leaves[len(leaves)/2]), int64(bdb.Info().PageSize)
}

// TestVarDeletedWhileServing: rm -rf var/ under a running server. The next
// record recreates the log (reported once in the server's log) with the
// old records, and after a restart seq and instance numbers continue.
func TestVarDeletedWhileServing(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	before := history(t, root)
	if err := os.RemoveAll(filepath.Join(root, "var")); err != nil {
		t.Fatal(err)
	}
	// The socket went with var/: a deploy and SIGHUP make the server write.
	install(t, root, "index", "v2", "normal")
	s.signal(syscall.SIGHUP)
	waitBody(t, s.URL("/"), "v2 index", 20*time.Second)
	stopServer(t, s)
	if n := strings.Count(s.Logs(), "was deleted while the server ran"); n != 1 {
		t.Fatalf("the recreation was reported %d times, want 1:\n%s", n, s.Logs())
	}
	var line map[string]any
	for _, l := range strings.Split(s.Logs(), "\n") {
		if strings.Contains(l, "was deleted while the server ran") {
			if err := json.Unmarshal([]byte(l), &line); err != nil || line["level"] != "error" {
				t.Fatalf("report is not an error-level log line: %q", l)
			}
		}
	}

	recs := history(t, root)
	checkSeqs(t, recs)
	if len(recs) < len(before)+3 || recs[len(before)-1] != before[len(before)-1] {
		t.Fatalf("the recreated log lost the old records: %d then %d", len(before), len(recs))
	}
	recreated := -1
	for i, r := range recs {
		if r.Event == sm.EventLogRecreated {
			recreated = i
		}
	}
	if recreated < len(before) || recs[len(recs)-1].Event != "server_stop" {
		t.Fatalf("no log_recreated record after the old ones: %+v", recs[len(before):])
	}
	v2 := maxInstance(recs, "index")
	if v2 <= maxInstance(before, "index") {
		t.Fatalf("v2 instance index-%d reuses a number", v2)
	}

	s = startServer(t, root)
	waitBody(t, s.URL("/"), "v2 index", 10*time.Second)
	stopServer(t, s)
	again := history(t, root)
	checkSeqs(t, again)
	if again[len(recs)-1] != recs[len(recs)-1] || maxInstance(again, "index") <= v2 {
		t.Fatalf("after restart: seq or instance numbering did not continue: %+v", again[len(recs)-1:])
	}
}

// TestStatusAtShowsTheServerThen: status --at T reports running and pid as
// they were at T, and live status reports the log's real last seq.
func TestStatusAtShowsTheServerThen(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	t0 := time.Now()
	testrig.WaitFor(t, time.Second, "the clock to move", func() bool { return time.Since(t0) > 5*time.Millisecond })
	s1 := startServer(t, root)
	waitBody(t, s1.URL("/"), "v1 index", 10*time.Second)
	pid1 := s1.PID()
	t1 := time.Now()
	stopServer(t, s1)
	t2 := time.Now()
	testrig.WaitFor(t, time.Second, "the clock to move", func() bool { return time.Since(t2) > 5*time.Millisecond })
	s2 := startServer(t, root)
	waitBody(t, s2.URL("/"), "v1 index", 10*time.Second)
	pid2 := s2.PID()

	at := func(tm time.Time) *supervisor.Status {
		out, errs, err := runCLI(t, "status", "--json", "--root", root, "--at", tm.UTC().Format(time.RFC3339Nano))
		if err != nil {
			t.Fatalf("status --at: %v: %s", err, errs)
		}
		var st supervisor.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	check := func(when string) {
		if st := at(t0); st.Running || st.PID != 0 {
			t.Fatalf("%s: before the first start: running %v pid %d", when, st.Running, st.PID)
		}
		if st := at(t1); !st.Running || st.PID != pid1 {
			t.Fatalf("%s: during the first run: running %v pid %d, want pid %d", when, st.Running, st.PID, pid1)
		}
		if st := at(t2); st.Running || st.PID != 0 {
			t.Fatalf("%s: after the first stop: running %v pid %d", when, st.Running, st.PID)
		}
	}
	live := s2.status()
	recs := history(t, root)
	if !live.Running || live.PID != pid2 || live.LastSeq == 0 || live.LastSeq < recs[len(recs)-1].Seq {
		t.Fatalf("live status: running %v pid %d last_seq %d; want pid %d, last_seq ≥ %d", live.Running, live.PID, live.LastSeq, pid2, recs[len(recs)-1].Seq)
	}
	check("server running")
	stopServer(t, s2)
	check("server stopped")
}
