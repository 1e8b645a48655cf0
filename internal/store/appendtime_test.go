package store

import (
	"encoding/json"
	"testing"
)

// Every Append is timed, a failed one too; the histogram's sum is real
// time (a bbolt commit with fsync takes more than nothing).
func TestAppendDurations(t *testing.T) {
	s := openT(t, dbPath(t), Options{})
	for range 3 {
		if err := s.Append(&Record{Event: "config_reloaded"}); err != nil {
			t.Fatal(err)
		}
	}
	h := s.AppendDurations()
	if h.Count() != 3 || h.SumNs <= 0 {
		t.Fatalf("after 3 appends: %d timed, sum %d ns", h.Count(), h.SumNs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(&Record{Event: "config_reloaded"}); err == nil {
		t.Fatal("append to a closed store succeeded")
	}
	if n := s.AppendDurations().Count(); n != 4 {
		t.Fatalf("after a failed append: %d timed, want 4", n)
	}
}

// took_ms is in the JSON of a record that has it and absent otherwise.
func TestRecordTookMs(t *testing.T) {
	b, err := json.Marshal(Record{Event: "build_ok", TookMs: 1234})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["took_ms"] != float64(1234) {
		t.Fatalf("took_ms in %s", b)
	}
	b, err = json.Marshal(Record{Event: "build_ok"})
	if err != nil {
		t.Fatal(err)
	}
	var m2 map[string]any
	if err := json.Unmarshal(b, &m2); err != nil {
		t.Fatal(err)
	}
	if _, ok := m2["took_ms"]; ok {
		t.Fatalf("took_ms present without a duration: %s", b)
	}
}
