package store

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// Observers see every committed record once, in seq order, even when
// appends race; a cancelled observer sees nothing more.
func TestObserveDeliversCommittedRecordsInOrder(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	var mu sync.Mutex
	var got, got2 []Record
	cancel := s.Observe(func(r Record) { mu.Lock(); got = append(got, r); mu.Unlock() })
	cancel2 := s.Observe(func(r Record) { mu.Lock(); got2 = append(got2, r); mu.Unlock() })
	defer cancel2()

	const writers, each = 4, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := Record{Event: "config_reloaded", Detail: string(rune('a'+w)) + string(rune('0'+i))}
				if err := s.Append(&r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	recs, err := s.Records(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(got) != writers*each || len(got2) != writers*each {
		t.Fatalf("observed %d and %d records, want %d", len(got), len(got2), writers*each)
	}
	for i := range recs {
		if got[i].Seq != uint64(i+1) || got[i].Detail != recs[i].Detail || !got[i].Time.Equal(recs[i].Time) || got2[i].Seq != got[i].Seq {
			t.Fatalf("observed record %d: %+v and %+v, stored %+v", i, got[i], got2[i], recs[i])
		}
	}
	mu.Unlock()

	cancel()
	cancel() // harmless twice
	r := Record{Event: "config_reloaded"}
	if err := s.Append(&r); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != writers*each {
		t.Fatalf("cancelled observer saw seq %d", got[len(got)-1].Seq)
	}
	if len(got2) != writers*each+1 || got2[len(got2)-1].Seq != r.Seq {
		t.Fatalf("remaining observer saw %d records, want the new seq %d last", len(got2), r.Seq)
	}
}

// A failed append calls no observer; the log_recreated record written when
// the log was deleted is delivered before the record that noticed it.
func TestObserveFailedAndRecreated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "var", "tqserver.db")
	s := openT(t, path, Options{})
	var got []Record // appends below are sequential: no lock needed
	defer s.Observe(func(r Record) { got = append(got, r) })()

	lifecycle(t, s, "index-1") // seq 1..2
	if len(got) != 2 {
		t.Fatalf("observed %d records, want 2", len(got))
	}
	// Make the log impossible to recreate: var/ becomes a plain file.
	if err := os.RemoveAll(filepath.Join(dir, "var")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "var"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := Record{Event: "config_reloaded"}
	if err := s.Append(&r); err == nil {
		t.Fatal("append succeeded with var/ a plain file")
	}
	if len(got) != 2 {
		t.Fatalf("a failed append was observed: %+v", got[2:])
	}
	if err := os.Remove(filepath.Join(dir, "var")); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(&r); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[2].Event != sm.EventLogRecreated || got[2].Seq != 3 || got[3].Seq != 4 || got[3].Event != "config_reloaded" {
		t.Fatalf("observed after recreate: %+v", got[2:])
	}
}
