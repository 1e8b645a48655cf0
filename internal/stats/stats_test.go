package stats

import (
	"math"
	"sync"
	"testing"
	"time"
)

// Each duration lands in the first bucket whose bound is at or above it
// (Prometheus's "le"); past the last bound it lands in +Inf.
func TestHistogramBuckets(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 0},
		{0, 0},
		{100 * time.Microsecond, 0},
		{100*time.Microsecond + 1, 1},
		{250 * time.Microsecond, 1},
		{3 * time.Millisecond, 5},
		{time.Second, 12},
		{10 * time.Second, NumBuckets - 1},
		{10*time.Second + 1, NumBuckets},
		{time.Hour, NumBuckets},
	} {
		var h Histogram
		h.Observe(tc.d)
		s := h.Snapshot()
		for i, c := range s.Counts {
			if want := uint64(0); i == tc.want {
				if c != 1 {
					t.Errorf("%v: bucket %d has %d, want 1", tc.d, i, c)
				}
			} else if c != want {
				t.Errorf("%v: bucket %d has %d, want 0", tc.d, i, c)
			}
		}
		if want := max(int64(tc.d), 0); s.SumNs != want {
			t.Errorf("%v: sum %d ns, want %d", tc.d, s.SumNs, want)
		}
	}
}

func TestCumulativeAndQuantile(t *testing.T) {
	var h Histogram
	for range 90 {
		h.Observe(200 * time.Microsecond) // bucket (0.0001, 0.00025]
	}
	for range 10 {
		h.Observe(40 * time.Millisecond) // bucket (0.025, 0.05]
	}
	s := h.Snapshot()
	if s.Count() != 100 {
		t.Fatalf("count %d, want 100", s.Count())
	}
	cum := s.Cumulative()
	if cum[0.0001] != 0 || cum[0.00025] != 90 || cum[0.025] != 90 || cum[0.05] != 100 || cum[10] != 100 {
		t.Fatalf("cumulative %v", cum)
	}
	if got := s.Sum(); math.Abs(got-(90*0.0002+10*0.04)) > 1e-9 {
		t.Fatalf("sum %v s", got)
	}
	for _, tc := range []struct{ q, want float64 }{
		{0.5, 0.0001 + 0.00015*50/90},
		{0.9, 0.00025},
		{0.99, 0.025 + 0.025*9/10},
		{1, 0.05},
	} {
		got, ok := s.Quantile(tc.q)
		if !ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("q%v = %v (%v), want %v", tc.q, got, ok, tc.want)
		}
	}
	var slow Histogram
	slow.Observe(time.Minute)
	if got, ok := slow.Snapshot().Quantile(0.99); !ok || got != 10 {
		t.Errorf("q0.99 of one observation above every bound = %v (%v), want 10", got, ok)
	}
	if _, ok := (HistSnapshot{}).Quantile(0.99); ok {
		t.Error("a quantile of nothing")
	}
}

func TestRequestsClasses(t *testing.T) {
	var r Requests
	for _, code := range []int{101, 200, 204, 301, 404, 499, 500, 503, 600, 999, 0} {
		r.Observe(code, time.Millisecond)
	}
	s := r.Snapshot()
	want := map[string]uint64{"1xx": 2, "2xx": 2, "3xx": 1, "4xx": 2, "5xx": 4}
	got := s.ClassMap()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if s.Total() != 11 || s.Latency.Count() != 11 {
		t.Fatalf("total %d, latency count %d, want 11", s.Total(), s.Latency.Count())
	}
	var sum RequestsSnapshot
	sum.Add(s)
	sum.Add(s)
	if sum.Total() != 22 || sum.Latency.Count() != 22 || sum.ByClass[4] != 8 {
		t.Fatalf("sum of two snapshots: %+v", sum)
	}
}

// The request path's update allocates nothing.
func TestObserveAllocatesNothing(t *testing.T) {
	var r Requests
	if n := testing.AllocsPerRun(1000, func() { r.Observe(200, 3*time.Millisecond) }); n != 0 {
		t.Fatalf("Observe allocates %v times", n)
	}
}

// Concurrent updates all count (run with -race).
func TestConcurrentObserve(t *testing.T) {
	var r Requests
	const goroutines, each = 8, 1000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r.Observe(200+100*(g%4), time.Duration(i)*time.Microsecond)
			}
		})
	}
	wg.Wait()
	s := r.Snapshot()
	if s.Total() != goroutines*each || s.Latency.Count() != goroutines*each {
		t.Fatalf("total %d, latency count %d, want %d", s.Total(), s.Latency.Count(), goroutines*each)
	}
}
