package core

import (
	"testing"
	"time"
)

// The scaling policy, sample by sample: up after two samples in a row at or
// above the target, down after scale_down_after_ms below half of it, one
// step at a time, never outside min..max, and nothing while unsettled.
func TestDecideScale(t *testing.T) {
	type step struct {
		at    time.Duration // since the first sample
		count int
		mean  float64
		state string // "", "busy" (starting, rolling) or "degraded" (a slot in crash backoff)
		want  int
	}
	const lo, hi, target, downAfter = 1, 3, 4.0, 300 * time.Millisecond
	for _, tc := range []struct {
		name  string
		down  time.Duration
		steps []step
	}{
		{"two high samples in a row grow by one", downAfter, []step{
			{0, 1, 4, "", 0}, {200, 1, 9, "", +1},
			{400, 2, 0, "busy", 0}, // the new instance is starting
			{600, 2, 5, "", 0}, {800, 2, 4, "", +1},
		}},
		{"a dip resets the run", downAfter, []step{
			{0, 1, 5, "", 0}, {200, 1, 3.9, "", 0}, {400, 1, 5, "", 0}, {600, 1, 5, "", +1},
		}},
		{"a busy sample resets the run", downAfter, []step{
			{0, 1, 5, "", 0}, {200, 1, 5, "busy", 0}, {400, 1, 5, "", 0}, {600, 1, 5, "", +1},
		}},
		{"never beyond max", downAfter, []step{
			{0, 3, 50, "", 0}, {200, 3, 50, "", 0}, {400, 3, 50, "", 0}, {600, 3, 50, "", 0},
		}},
		{"down after the period, then another full period", downAfter, []step{
			{0, 3, 1.9, "", 0}, {200, 3, 0, "", 0}, {300, 3, 0, "", -1},
			{400, 2, 0, "", 0}, {500, 2, 0, "", 0}, {600, 2, 0, "", -1},
			{900, 1, 0, "", 0}, {5000, 1, 0, "", 0}, // never below min
		}},
		{"a mean between half and the target keeps the count", downAfter, []step{
			{0, 2, 1, "", 0}, {200, 2, 2, "", 0}, {400, 2, 1, "", 0}, {600, 2, 1, "", 0}, {700, 2, 1, "", -1},
		}},
		{"busy restarts the low period", downAfter, []step{
			{0, 2, 0, "", 0}, {200, 2, 0, "busy", 0}, {400, 2, 0, "", 0}, {600, 2, 0, "", 0}, {700, 2, 0, "", -1},
		}},
		{"a slot in crash backoff blocks growing, not shrinking", downAfter, []step{
			{0, 2, 9, "degraded", 0}, {200, 2, 9, "degraded", 0}, {400, 2, 9, "", 0}, {600, 2, 9, "", +1},
			{800, 3, 0, "degraded", 0}, {1100, 3, 0, "degraded", -1},
		}},
		{"scale_down_after_ms 0 steps down at the first low sample", 0, []step{
			{0, 3, 0, "", -1}, {200, 2, 0, "", -1}, {400, 1, 0, "", 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st scaleState
			t0 := time.Unix(1000, 0)
			for i, s := range tc.steps {
				got := decideScale(&st, scaleInput{
					now: t0.Add(s.at * time.Millisecond), count: s.count, lo: lo, hi: hi,
					mean: s.mean, target: target, downAfter: tc.down, busy: s.state == "busy", degraded: s.state == "degraded",
				})
				if got != s.want {
					t.Fatalf("step %d (%+v): got %+d, want %+d", i, s, got, s.want)
				}
			}
		})
	}
}

func TestFmtMean(t *testing.T) {
	for f, want := range map[float64]string{12.5: "12.5", 8: "8", 0.34: "0.3", 0: "0", 2.96: "3"} {
		if got := fmtMean(f); got != want {
			t.Errorf("fmtMean(%v) = %q, want %q", f, got, want)
		}
	}
}

// buildVersion builds the test worker with main.version set and returns
// the binary's path (next to workers/{name}/bin/{name}, not yet installed).
