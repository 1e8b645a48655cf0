package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// lifecycle appends a start/healthy pair for each instance name given.
func lifecycle(t *testing.T, s *Store, names ...string) {
	t.Helper()
	for _, n := range names {
		w, _, _ := strings.Cut(n, "-")
		for _, r := range []Record{
			{Worker: w, Instance: n, To: "starting", Event: "start", Reason: "startup", Port: 9000},
			{Worker: w, Instance: n, From: "starting", To: "healthy", Event: "health_ok", Reason: "startup", PID: 4242, Port: 9000},
		} {
			if err := s.Append(&r); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A log whose directory is deleted while it is open is recreated at its
// path on the next append, with every old record, the same seq and
// instance numbering, and a log_recreated record; it is reported once.
func TestAppendRecreatesDeletedLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "var", "tqserver.db")
	var reports atomic.Int32
	var detail atomic.Value
	s := openT(t, path, Options{Recreated: func(d string) { reports.Add(1); detail.Store(d) }})
	lifecycle(t, s, "index-1", "index-2", "api-1") // seq 1..6

	if err := os.RemoveAll(filepath.Join(dir, "var")); err != nil {
		t.Fatal(err)
	}
	r := Record{Event: "config_reloaded"}
	if err := s.Append(&r); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 8 {
		t.Fatalf("first record after the delete has seq %d, want 8 (7 is log_recreated)", r.Seq)
	}
	if reports.Load() != 1 {
		t.Fatalf("reported %d times, want 1", reports.Load())
	}
	d, _ := detail.Load().(string)
	if !strings.Contains(d, "was deleted while the server ran") || !strings.Contains(d, "ended at seq 6") {
		t.Fatalf("detail %q", d)
	}
	lifecycle(t, s, "index-3")
	if reports.Load() != 1 {
		t.Fatalf("reported %d times after more appends, want 1", reports.Load())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// What is at the path now is the whole history.
	s = openT(t, path, Options{})
	recs, err := s.Records(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(recs); len(got) != 10 || got[0] != 1 || got[9] != 10 {
		t.Fatalf("seqs after reopen: %v", got)
	}
	if recs[6].Event != sm.EventLogRecreated || recs[6].Detail != d || recs[6].Worker != "" || recs[6].Instance != "" {
		t.Fatalf("record 7: %+v", recs[6])
	}
	g, err := Replay(s, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if g.MaxInstance["index"] != 3 || g.MaxInstance["api"] != 1 || g.LastSeq != 10 {
		t.Fatalf("replayed: max instance %v, last seq %d", g.MaxInstance, g.LastSeq)
	}
}

// A file put in the log's place is moved aside, not written into.
func TestAppendMovesReplacedLogAside(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path, Options{})
	lifecycle(t, s, "index-1")
	if err := os.WriteFile(path+".new", []byte("not a log"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	r := Record{Event: "config_reloaded"}
	if err := s.Append(&r); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 4 {
		t.Fatalf("seq %d, want 4", r.Seq)
	}
	aside, _ := filepath.Glob(path + ".replaced-*")
	if len(aside) != 1 {
		t.Fatalf("moved aside: %v", aside)
	}
	if b, err := os.ReadFile(aside[0]); err != nil || string(b) != "not a log" {
		t.Fatalf("the replacing file: %q, %v", b, err)
	}
	recs, err := s.Records(Filter{})
	if err != nil || len(recs) != 4 || recs[2].Event != sm.EventLogRecreated || !strings.Contains(recs[2].Detail, aside[0]) {
		t.Fatalf("records %+v, %v", recs, err)
	}
}

// BenchmarkAppendFileCheck is the stat ensureFile adds to every append;
// compare with BenchmarkAppend, the fsync'd append it guards.
func BenchmarkAppendFileCheck(b *testing.B) {
	s := openT(b, dbPath(b), Options{})
	for b.Loop() {
		if _, err := s.ensureFile(); err != nil {
			b.Fatal(err)
		}
	}
}

// When the log cannot be recreated, Append fails with an error the caller
// sees, leaves the record as it was and uses no seq; once the path is
// usable again the next append recreates it and seq has no gap.
func TestAppendFailsWhileLogCannotBeRecreated(t *testing.T) {
	dir := t.TempDir()
	varDir := filepath.Join(dir, "var")
	path := filepath.Join(varDir, "tqserver.db")
	s := openT(t, path, Options{})
	lifecycle(t, s, "index-1") // seq 1, 2
	if err := os.RemoveAll(varDir); err != nil {
		t.Fatal(err)
	}
	// A plain file where the directory was: nothing can be created under it.
	if err := os.WriteFile(varDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := Record{Event: "config_reloaded"}
	err := s.Append(&r)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "recreate the deleted log") {
		t.Fatalf("got %v, want an error naming %s", err, path)
	}
	if r.Seq != 0 || !r.Time.IsZero() {
		t.Fatalf("failed append changed the record: %+v", r)
	}
	if err := os.Remove(varDir); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(&r); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Records(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(recs); len(got) != 4 || got[2] != 3 || got[3] != 4 || recs[2].Event != sm.EventLogRecreated {
		t.Fatalf("records after recovery: %+v", recs)
	}
	if ms, _ := filepath.Glob(filepath.Join(varDir, "*.recreating")); len(ms) != 0 {
		t.Fatalf("left %v", ms)
	}
}

// Readers running while the log is recreated see the old file or the new
// one, never a closed one, and every read succeeds (run with -race).
func TestRecreateWhileReading(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "var", "tqserver.db")
	s := openT(t, path, Options{})
	lifecycle(t, s, "index-1", "index-2")
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		prev := 0
		for i := 0; i < 100_000; i++ {
			select {
			case <-done:
				return
			default:
			}
			recs, err := s.Records(Filter{})
			if err == nil && len(recs) < prev {
				err = fmt.Errorf("read %d records after %d", len(recs), prev)
			}
			if err != nil {
				errs <- err
				return
			}
			prev = len(recs)
		}
	}()
	for range 3 {
		if err := os.RemoveAll(filepath.Join(dir, "var")); err != nil {
			t.Fatal(err)
		}
		lifecycle(t, s, "api-1")
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	recs, err := s.Records(Filter{})
	if err != nil || len(recs) != 4+3*3 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
}
