package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The kill -9 test re-executes this binary as the writer it kills.
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	goleak.VerifyTestMain(m)
}

func openT(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dbPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "var", "tqserver.db")
}

// fill stores recs in one transaction, the way Append would one at a time;
// it exists so benchmarks and large tests do not pay an fsync per record.
func fill(t testing.TB, s *Store, recs []Record) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range recs {
			if recs[i].Time.IsZero() {
				recs[i].Time = time.Now()
			}
			recs[i].Time = recs[i].Time.UTC()
			if err := put(tx, &recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// poke writes raw bytes under key into the log bucket of the closed log at path.
func poke(t *testing.T, path string, key, value []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(logBucket).Put(key, value) })
	if err != nil {
		t.Fatal(err)
	}
}

func seqs(recs []Record) []uint64 {
	out := make([]uint64, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

func TestAppendAssignsSeqAndTime(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	before := time.Now()
	var got []Record
	for i := range 3 {
		r := Record{Worker: "index", Instance: fmt.Sprintf("index-%d", i+1), From: "", To: "starting", Event: "start", Reason: "startup"}
		if err := s.Append(&r); err != nil {
			t.Fatal(err)
		}
		if r.Seq != uint64(i+1) {
			t.Fatalf("append %d: seq = %d", i, r.Seq)
		}
		if r.Time.Location() != time.UTC || r.Time.Before(before.Truncate(time.Microsecond)) || r.Time.After(time.Now()) {
			t.Fatalf("append %d: time = %v, want UTC now", i, r.Time)
		}
		got = append(got, r)
	}
	// A given time is kept (as UTC); a given seq is not.
	at := time.Date(2026, 11, 24, 11, 30, 0, 123456789, time.FixedZone("CET", 3600))
	r := Record{Seq: 99, Time: at, Event: "server_start"}
	if err := s.Append(&r); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 4 || !r.Time.Equal(at) || r.Time.Location() != time.UTC {
		t.Fatalf("explicit time: got seq %d time %v", r.Seq, r.Time)
	}
	got = append(got, r)

	all, err := s.Records(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(all, got) {
		t.Fatalf("read back\n%+v\nwant\n%+v", all, got)
	}
	last, err := s.LastSeq()
	if err != nil || last != 4 {
		t.Fatalf("LastSeq = %d, %v", last, err)
	}
	if err := s.Append(nil); err == nil {
		t.Fatal("Append(nil) succeeded")
	}
}

func TestEmptyLog(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	last, err := s.LastSeq()
	if err != nil || last != 0 {
		t.Fatalf("LastSeq = %d, %v", last, err)
	}
	for _, f := range []Filter{{}, {Limit: 5}} {
		recs, err := s.Records(f)
		if err != nil || len(recs) != 0 {
			t.Fatalf("%+v: %v, %v", f, recs, err)
		}
	}
}

func TestScanFilters(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	// seq:    1       2      3      4       5      6      7       8
	// worker: -       index  api    index   api    -      index   api
	// time:   0       1      2      3       4      5      6       7
	workers := []string{"", "index", "api", "index", "api", "", "index", "api"}
	recs := make([]Record, len(workers))
	for i, w := range workers {
		recs[i] = Record{Time: at(i), Worker: w, Event: "e"}
	}
	fill(t, s, recs)

	cases := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"worker", Filter{Worker: "index"}, []uint64{2, 4, 7}},
		{"worker is exact", Filter{Worker: "inde"}, nil},
		{"since inclusive", Filter{Since: at(5)}, []uint64{6, 7, 8}},
		{"until inclusive", Filter{Until: at(2)}, []uint64{1, 2, 3}},
		{"since and until", Filter{Since: at(2), Until: at(4)}, []uint64{3, 4, 5}},
		{"between records", Filter{Since: at(2).Add(time.Millisecond), Until: at(4).Add(-time.Millisecond)}, []uint64{4}},
		{"limit keeps newest, oldest first", Filter{Limit: 3}, []uint64{6, 7, 8}},
		{"limit 1 of a worker is its newest", Filter{Worker: "index", Limit: 1}, []uint64{7}},
		{"limit beyond matches", Filter{Worker: "api", Limit: 10}, []uint64{3, 5, 8}},
		{"limit with until", Filter{Until: at(4), Limit: 2}, []uint64{4, 5}},
		{"all combined", Filter{Worker: "api", Since: at(1), Until: at(6), Limit: 1}, []uint64{5}},
		{"since after everything", Filter{Since: at(8), Limit: 2}, nil},
		{"negative limit is no limit", Filter{Worker: "index", Limit: -1}, []uint64{2, 4, 7}},
		{"after seq", Filter{AfterSeq: 5}, []uint64{6, 7, 8}},
		{"after seq of a worker", Filter{Worker: "index", AfterSeq: 2}, []uint64{4, 7}},
		{"after seq with limit", Filter{AfterSeq: 6, Limit: 5}, []uint64{7, 8}},
		{"after seq, limit keeps newest", Filter{AfterSeq: 2, Limit: 2}, []uint64{7, 8}},
		{"after the last seq", Filter{AfterSeq: 8}, nil},
		{"after seq and since", Filter{AfterSeq: 3, Since: at(6)}, []uint64{7, 8}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := s.Records(c.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), c.want) {
				t.Fatalf("got %v, want %v", seqs(got), c.want)
			}
		})
	}
}

// TestScanFiltersExhaustive checks every combination of filters over a log
// whose clock stepped backwards once against a plain reference filter.
func TestScanFiltersExhaustive(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	offsets := []int{0, 1, 2, 3, 4, 2, 3, 5, 6, 6, 7} // the clock stepped back after seq 5
	workers := []string{"", "a", "b", "a", "b", "a", "", "b", "a", "a", "b"}
	recs := make([]Record, len(offsets))
	for i := range offsets {
		recs[i] = Record{Time: t0.Add(time.Duration(offsets[i]) * time.Second), Worker: workers[i], Event: "e"}
	}
	fill(t, s, recs)
	bounds := []time.Time{{}}
	for sec := -1; sec <= 8; sec++ {
		bounds = append(bounds, t0.Add(time.Duration(sec)*time.Second))
	}
	n := 0
	for _, w := range []string{"", "a", "b", "c"} {
		for _, since := range bounds {
			for _, until := range bounds {
				for limit := 0; limit <= len(recs)+1; limit++ {
					f := Filter{Worker: w, Since: since, Until: until, Limit: limit}
					var want []uint64
					for _, r := range recs {
						if (w == "" || r.Worker == w) && (since.IsZero() || !r.Time.Before(since)) && (until.IsZero() || !r.Time.After(until)) {
							want = append(want, r.Seq)
						}
					}
					if limit > 0 && len(want) > limit {
						want = want[len(want)-limit:]
					}
					got, err := s.Records(f)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(seqs(got), want) {
						t.Fatalf("%+v: got %v, want %v", f, seqs(got), want)
					}
					n++
				}
			}
		}
	}
	t.Logf("%d filters checked", n)
}

// TestScanAcrossChunks reads more records than one read transaction takes.
func TestScanAcrossChunks(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	const n = 2*scanChunk + 17
	recs := make([]Record, n)
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	for i := range recs {
		recs[i] = Record{Time: t0.Add(time.Duration(i) * time.Millisecond), Worker: []string{"index", "api"}[i%2], Event: "e"}
	}
	fill(t, s, recs)
	var want uint64 = 1
	err := s.Scan(Filter{}, func(r Record) error {
		if r.Seq != want {
			return fmt.Errorf("got seq %d, want %d", r.Seq, want)
		}
		want++
		return nil
	})
	if err != nil || want != n+1 {
		t.Fatalf("scan ended at %d of %d: %v", want-1, n, err)
	}
	api, err := s.Records(Filter{Worker: "api"})
	if err != nil || len(api) != n/2 {
		t.Fatalf("api records: %d, %v", len(api), err)
	}
}

func TestScanCallbackMayAppend(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	fill(t, s, make([]Record, 3))
	for _, f := range []Filter{{}, {Limit: 2}} {
		err := s.Scan(f, func(r Record) error {
			// Growing the file while a read transaction is open would
			// deadlock bbolt's remap; Scan must not hold one here.
			big := Record{Event: "note", Detail: strings.Repeat("x", 64<<10)}
			return s.Append(&big)
		})
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
	}
}

func TestScanStopsAtCallbackError(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	fill(t, s, make([]Record, 5))
	stop := errors.New("stop here")
	for _, f := range []Filter{{}, {Limit: 4}} {
		var seen []uint64
		err := s.Scan(f, func(r Record) error {
			seen = append(seen, r.Seq)
			if len(seen) == 2 {
				return stop
			}
			return nil
		})
		if err != stop || len(seen) != 2 {
			t.Fatalf("%+v: err %v after %v", f, err, seen)
		}
	}
}

func TestReopenKeepsSeqIncreasing(t *testing.T) {
	path := dbPath(t)
	var last uint64
	for round := range 3 {
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.LastSeq()
		if err != nil || got != last {
			t.Fatalf("round %d: LastSeq = %d, %v; want %d", round, got, err, last)
		}
		for range 2 {
			r := Record{Event: "e"}
			if err := s.Append(&r); err != nil {
				t.Fatal(err)
			}
			if r.Seq <= last {
				t.Fatalf("round %d: seq %d after %d", round, r.Seq, last)
			}
			last = r.Seq
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if last != 6 {
		t.Fatalf("last seq = %d", last)
	}
}

func TestSchemaVersion(t *testing.T) {
	path := dbPath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setSchema := func(v string) {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket(metaBucket)
			if got := string(m.Get(schemaKey)); got != "1" {
				return fmt.Errorf("schema key = %q, want \"1\"", got)
			}
			return m.Put(schemaKey, []byte(v))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setSchema("7")
	want := path + ": schema version 7 is newer than this tqserver understands (1)"
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro})
		if err == nil || err.Error() != want {
			t.Fatalf("read-only %v: got %v, want %s", ro, err, want)
		}
	}
	// Refusing must not have touched the file.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket(metaBucket).Get(schemaKey)); got != "7" {
			t.Errorf("schema now %q", got)
		}
		return nil
	})
	db.Close()
}

func TestForeignBoltFileRefused(t *testing.T) {
	path := dbPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("widgets")); return err })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{})
	if want := path + ": not a tqserver log (no schema version)"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestLocked(t *testing.T) {
	path := dbPath(t)
	openT(t, path, Options{})
	cases := []struct {
		opts Options
		wait time.Duration // at least; bbolt polls the lock every 50ms
	}{
		{Options{Timeout: 200 * time.Millisecond}, 150 * time.Millisecond},
		{Options{Timeout: 200 * time.Millisecond, ReadOnly: true}, 150 * time.Millisecond},
		// Zero is not "wait forever".
		{Options{}, DefaultTimeout - 50*time.Millisecond},
	}
	for _, c := range cases {
		start := time.Now()
		s, err := Open(path, c.opts)
		waited := time.Since(start)
		if err == nil {
			s.Close()
			t.Fatalf("%+v: second open succeeded while the file is locked", c.opts)
		}
		if !errors.Is(err, ErrLocked) || !strings.HasPrefix(err.Error(), path+": ") {
			t.Fatalf("%+v: got %v, want %s: ...%v", c.opts, err, path, ErrLocked)
		}
		if waited < c.wait {
			t.Fatalf("%+v: gave up after %v", c.opts, waited)
		}
	}
}

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "var", "tqserver.db")
	_, err := Open(missing, Options{ReadOnly: true})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: got %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only open created %s", filepath.Dir(missing))
	}

	w := openT(t, missing, Options{})
	r := Record{Event: "server_start"}
	if err := w.Append(&r); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Readers share the lock.
	r1 := openT(t, missing, Options{ReadOnly: true})
	r2 := openT(t, missing, Options{ReadOnly: true})
	for _, s := range []*Store{r1, r2} {
		recs, err := s.Records(Filter{})
		if err != nil || len(recs) != 1 || recs[0].Event != "server_start" {
			t.Fatalf("read-only records: %+v, %v", recs, err)
		}
	}
	x := Record{Event: "nope"}
	if err := r1.Append(&x); err == nil {
		t.Fatal("append to a read-only log succeeded")
	}
	if x.Seq != 0 || !x.Time.IsZero() {
		t.Fatalf("failed append changed the record: %+v", x)
	}
}

func TestCorruptRecord(t *testing.T) {
	cases := []struct {
		name       string
		key, value []byte
		want       string // after "path: "
	}{
		{"garbage", seqKey(3), []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0x7f}, "record 3: invalid character 'Þ' looking for beginning of value"},
		{"truncated", seqKey(3), []byte(`{"seq":3,"time":"2026-11-24T10:30:00Z","ev`), "record 3: unexpected end of JSON input"},
		{"empty", seqKey(3), []byte{}, "record 3: unexpected end of JSON input"},
		{"wrong type", seqKey(3), []byte(`{"seq":"3","time":"2026-11-24T10:30:00Z"}`), "record 3: json: cannot unmarshal string into Go struct field Record.seq of type uint64"},
		{"missing seq", seqKey(3), []byte(`{"time":"2026-11-24T10:30:00Z","event":"e"}`), "record 3: missing seq"},
		{"other seq", seqKey(3), []byte(`{"seq":2,"time":"2026-11-24T10:30:00Z","event":"e"}`), "record 3: holds seq 2"},
		{"bad key", []byte("k"), []byte(`{}`), "malformed key 6b in log bucket"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := dbPath(t)
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for range 4 {
				r := Record{Worker: "index", Event: "e"}
				if err := s.Append(&r); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			poke(t, path, c.key, c.value)
			s = openT(t, path, Options{ReadOnly: true})
			want := path + ": " + c.want

			var seen []uint64
			err = s.Scan(Filter{}, func(r Record) error { seen = append(seen, r.Seq); return nil })
			if err == nil || err.Error() != want {
				t.Fatalf("Scan: got %v, want %s", err, want)
			}
			if len(seen) != 0 {
				// Records are delivered per read transaction, after it.
				t.Fatalf("Scan delivered %v before the corrupt record", seen)
			}
			if _, err := s.Records(Filter{Limit: 10}); err == nil || err.Error() != want {
				t.Fatalf("Records with limit: got %v, want %s", err, want)
			}
			if _, err := Replay(s, time.Time{}); err == nil || err.Error() != want {
				t.Fatalf("Replay: got %v, want %s", err, want)
			}
			// The newest records are still readable past an older corrupt one.
			if c.name != "bad key" {
				got, err := s.Records(Filter{Limit: 1})
				if err != nil || len(got) != 1 || got[0].Seq != 4 {
					t.Fatalf("newest record: %+v, %v", got, err)
				}
			}
		})
	}
}

// ScanJSON must print exactly what encoding each scanned record prints.
func TestScanJSONMatchesEncoding(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "t.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code := 2
	for i := 0; i < 50; i++ {
		r := &Record{Worker: []string{"index", "api_users"}[i%2], Instance: "x-1", From: "starting", To: "healthy",
			Event: "health_ok", Reason: "startup", PID: 100 + i, Port: 9000 + i, Detail: "a <b> & \"c\"\nline2"}
		if i%7 == 0 {
			r.ExitCode = &code
		}
		if err := s.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []Filter{{}, {Worker: "index"}, {Limit: 5}, {Worker: "api_users", Limit: 3}, {AfterSeq: 40}, {AfterSeq: 40, Worker: "index"}} {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		if err := s.Scan(f, func(r Record) error { return enc.Encode(r) }); err != nil {
			t.Fatal(err)
		}
		if err := s.ScanJSON(f, &got); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() || got.Len() == 0 {
			t.Fatalf("filter %+v:\n got %q\nwant %q", f, got.String(), want.String())
		}
	}
}

func TestScanJSONRejectsCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := s.Append(&Record{Worker: "w", Event: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	// Truncate record 2 in place.
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(logBucket)
		k := make([]byte, 8)
		k[7] = 2
		v := b.Get(k)
		return b.Put(k, append([]byte(nil), v[:len(v)/2]...))
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []Filter{{}, {Worker: "w"}} {
		var buf bytes.Buffer
		err := s.ScanJSON(f, &buf)
		if err == nil || !strings.Contains(err.Error(), "record 2") {
			t.Fatalf("filter %+v: want an error naming record 2, got %v", f, err)
		}
	}
	s.Close()
}

func TestAppendAllIsOneTransaction(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "log.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rs := []*Record{{Event: "a"}, {Event: "b"}, {Event: "c"}}
	if err := st.AppendAll(rs); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.Seq != uint64(i+1) || r.Time.IsZero() {
			t.Fatalf("record %d: seq %d time %v", i, r.Seq, r.Time)
		}
	}
	st.Close()
	bad := []*Record{{Event: "d"}}
	if err := st.AppendAll(bad); err == nil {
		t.Fatal("append to a closed store succeeded")
	}
	if bad[0].Seq != 0 || !bad[0].Time.IsZero() {
		t.Fatalf("failed append changed the record: %+v", bad[0])
	}
}
