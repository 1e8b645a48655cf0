package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// damagedLog builds a log of n records spread over many pages (appended in
// small transactions, so bbolt also leaves freed copies of old pages behind)
// and closes it.
func damagedLog(t *testing.T, n int) string {
	t.Helper()
	path := dbPath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs := benchRecords(n)
	for i := 0; i < n; i += 50 {
		fill(t, s, recs[i:min(i+50, n)])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// leafPage returns the id and page size of a leaf page of the log bucket in
// the middle of the tree, found through bbolt's page info.
func leafPage(t *testing.T, path string) (int64, int64) {
	t.Helper()
	return pageOfType(t, path, "leaf")
}

func pageOfType(t *testing.T, path, typ string) (int64, int64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var leaves []int
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info == nil {
				return nil
			}
			if info.Type == typ {
				leaves = append(leaves, id)
			}
		}
	})
	if err != nil || len(leaves) == 0 || (typ == "leaf" && len(leaves) < 3) {
		t.Fatalf("leaf pages %v: %v", leaves, err)
	}
	return int64(leaves[len(leaves)/2]), int64(db.Info().PageSize)
}

type damage struct {
	name string
	do   func(t *testing.T, path string)
}

var damages = []damage{
	{"truncated to half", func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}},
	{"middle page overwritten", func(t *testing.T, path string) {
		id, ps := leafPage(t, path)
		junk := make([]byte, ps)
		rand.Read(junk)
		testrig.WriteAt(t, path, junk, id*ps)
	}},
	{"free list overwritten", func(t *testing.T, path string) {
		id, ps := pageOfType(t, path, "freelist")
		junk := make([]byte, ps)
		rand.Read(junk)
		testrig.WriteAt(t, path, junk, id*ps)
	}},
	{"header pages zeroed", func(t *testing.T, path string) {
		ps := int64(os.Getpagesize())
		testrig.WriteAt(t, path, make([]byte, 2*ps), 0)
	}},
	{"emptied", func(t *testing.T, path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	}},
}

// A damaged file is refused at open, read-only or not, with one line that
// names it and says what to do; nothing panics or faults.
func TestOpenRefusesDamagedLog(t *testing.T) {
	for _, dm := range damages {
		t.Run(dm.name, func(t *testing.T) {
			path := damagedLog(t, 3000)
			dm.do(t, path)
			for _, ro := range []bool{true, false} {
				s, err := Open(path, Options{ReadOnly: ro})
				if err == nil {
					s.Close()
					t.Fatalf("read-only %v: open of a damaged log succeeded", ro)
				}
				msg := err.Error()
				if !errors.Is(err, ErrDamaged) || !strings.HasPrefix(msg, path+" is damaged (") ||
					!strings.Contains(msg, "tqserver log salvage") || strings.Contains(msg, "\n") {
					t.Fatalf("read-only %v: got %q, want one line: %s is damaged (...) ... tqserver log salvage", ro, msg, path)
				}
			}
			if _, err := Check(path, time.Second); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Check: got %v, want ErrDamaged", err)
			}
		})
	}
}

// Salvage keeps every readable record with its seq, moves the damaged file
// aside, and a writer on the new file continues seq and instance numbering.
func TestSalvage(t *testing.T) {
	const n = 3000
	for _, dm := range damages {
		t.Run(dm.name, func(t *testing.T) {
			path := damagedLog(t, n)
			want := benchRecords(n)
			dm.do(t, path)
			now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
			res, err := Salvage(path, now)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", res)
			if res.Moved != path+".damaged-20261203T100000Z" {
				t.Fatalf("moved to %q", res.Moved)
			}
			if _, err := os.Stat(res.Moved); err != nil {
				t.Fatalf("damaged file not kept: %v", err)
			}
			if res.Kept+int(res.Lost) != int(res.LastSeq) {
				t.Fatalf("kept %d + lost %d != last seq %d", res.Kept, res.Lost, res.LastSeq)
			}
			switch dm.name {
			case "emptied":
				if res.Kept != 0 {
					t.Fatalf("kept %d records of an empty file", res.Kept)
				}
			case "middle page overwritten", "header pages zeroed", "free list overwritten":
				// Freed copies of pages usually hold what one page lost, but
				// not always: most records must be back either way.
				if res.Kept < n*9/10 {
					t.Fatalf("kept only %d of %d records", res.Kept, n)
				}
			case "truncated to half":
				if res.Kept < n/4 {
					t.Fatalf("kept only %d of %d records", res.Kept, n)
				}
			}
			sum, err := Check(path, time.Second)
			if err != nil {
				t.Fatalf("check after salvage: %v", err)
			}
			if sum.Records != res.Kept+1 || sum.Last != res.LastSeq+1 {
				t.Fatalf("check after salvage: %+v, want %d records ending at %d", sum, res.Kept+1, res.LastSeq+1)
			}
			s := openT(t, path, Options{})
			got, err := s.Records(Filter{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range got[:len(got)-1] {
				w := want[r.Seq-1]
				if r.Worker != w.Worker || r.Instance != w.Instance || r.Event != w.Event || r.PID != w.PID {
					t.Fatalf("record %d: got %+v, want %+v", r.Seq, r, w)
				}
			}
			last := got[len(got)-1]
			wantNote := fmt.Sprintf("kept %d records, lost %d", res.Kept, res.Lost)
			if res.LastSeq == 0 {
				wantNote = "nothing in it was readable"
			}
			if last.Event != sm.EventLogSalvaged || !strings.Contains(last.Detail, wantNote) {
				t.Fatalf("last record: %+v", last)
			}
			next := Record{Event: "server_start"}
			if err := s.Append(&next); err != nil {
				t.Fatal(err)
			}
			if next.Seq != res.LastSeq+2 {
				t.Fatalf("next seq %d, want %d", next.Seq, res.LastSeq+2)
			}
			if res.Kept > 0 {
				// The highest instance number any kept record used is where
				// numbering continues (benchRecords is no lifecycle Replay
				// accepts, so read the floors Replay starts from).
				var top uint64
				for _, r := range got {
					if n, ok := instanceNumber(r.Worker, r.Instance); ok && r.Worker == "index" {
						top = max(top, n)
					}
				}
				fl, err := s.instanceFloors()
				if err != nil || fl["index"] < top || top == 0 {
					t.Fatalf("instance floors %v, %v; want index ≥ %d", fl, err, top)
				}
			}
		})
	}
}

// Salvage refuses a log another process holds open for writing.
func TestSalvageRefusesLockedLog(t *testing.T) {
	path := damagedLog(t, 10)
	s := openT(t, path, Options{})
	if _, err := Salvage(path, time.Now()); !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	if ms, _ := filepath.Glob(path + ".*"); len(ms) != 0 {
		t.Fatalf("salvage left %v", ms)
	}
	_ = s
}

// A log damaged while it is open makes reads fail with an error, not a
// fault: the guard at the store boundary.
func TestReadsOfLogDamagedWhileOpen(t *testing.T) {
	path := damagedLog(t, 3000)
	s := openT(t, path, Options{ReadOnly: true})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/4); err != nil {
		t.Fatal(err)
	}
	_, err = s.Records(Filter{})
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("Records: got %v, want ErrDamaged", err)
	}
	if _, err := Replay(s, time.Time{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Replay: got %v, want ErrDamaged", err)
	}
}

func TestCheck(t *testing.T) {
	path := damagedLog(t, 120)
	res, err := Check(path, time.Second)
	if err != nil || res != (CheckResult{Records: 120, First: 1, Last: 120}) {
		t.Fatalf("got %+v, %v", res, err)
	}
	poke(t, path, seqKey(7), []byte(`{"seq":7,"time":"2026-11-24T10:30:00Z","ev`))
	_, err = Check(path, time.Second)
	if !errors.Is(err, ErrDamaged) || err.Error() != path+" is damaged (record 7: unexpected end of JSON input): stop the server if it runs, then run `tqserver log salvage` to copy its readable records into a new log" {
		t.Fatalf("got %v", err)
	}
}

// BenchmarkOpenCheck is what checking the log at open costs: a 100k record
// log (about 30 MB) opened read-only, which walks every page.
func BenchmarkOpenCheck(b *testing.B) {
	path := dbPath(b)
	s := openT(b, path, Options{})
	recs := benchRecords(100_000)
	for i := 0; i < len(recs); i += 10_000 {
		fill(b, s, recs[i:i+10_000])
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// A second salvage in the same second keeps the first damaged file.
func TestSalvageTwiceKeepsBothFiles(t *testing.T) {
	path := damagedLog(t, 10)
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	a, err := Salvage(path, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Salvage(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if a.Moved == b.Moved || b.Moved != a.Moved+".1" {
		t.Fatalf("moved to %s then %s", a.Moved, b.Moved)
	}
	for _, p := range []string{a.Moved, b.Moved} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	// The second salvage read the first's output: same records, plus its note.
	if b.Kept != a.Kept+1 || b.LastSeq != a.LastSeq+1 || b.Lost != 0 {
		t.Fatalf("first %+v, second %+v", a, b)
	}
}

// Whatever page is overwritten and wherever the file is cut, opening and
// reading the log returns (records or an error) and never takes the process
// down. Deterministic: the seed is fixed, every page of a small log is tried.
func TestNoDamageCrashes(t *testing.T) {
	orig := damagedLog(t, 600)
	data, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	pages := len(data) / ps
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	dir := t.TempDir()
	try := func(name string, b []byte) {
		path := filepath.Join(dir, "tqserver.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, ro := range []bool{true, false} {
			s, err := Open(path, Options{ReadOnly: ro})
			if err != nil {
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("%s: error of more than one line: %q", name, err)
				}
				continue
			}
			_, _ = s.Records(Filter{})
			_, _ = s.Records(Filter{Limit: 10})
			_, _ = Replay(s, time.Time{})
			if err := s.Close(); err != nil {
				t.Fatalf("%s: close: %v", name, err)
			}
		}
		if _, err := Salvage(path, time.Now()); err != nil {
			t.Fatalf("%s: salvage: %v", name, err)
		}
		ms, _ := filepath.Glob(path + "*")
		for _, m := range ms {
			os.Remove(m)
		}
	}
	for p := range pages {
		b := append([]byte(nil), data...)
		for i := p * ps; i < (p+1)*ps; i++ {
			b[i] = byte(rng.Uint32())
		}
		try(fmt.Sprintf("page %d random", p), b)
		b = append([]byte(nil), data...)
		clear(b[p*ps : (p+1)*ps])
		try(fmt.Sprintf("page %d zeroed", p), b)
	}
	for range 20 {
		n := rng.IntN(len(data))
		try(fmt.Sprintf("cut at %d", n), append([]byte(nil), data[:n]...))
	}
}
