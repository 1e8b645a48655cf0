package stats

import (
	"sync/atomic"
	"time"
)

// Bounds are the upper bounds of the histogram buckets, in seconds, from
// 100 µs (a hello-world worker behind the proxy) to 10 s; slower goes to
// the +Inf bucket.
var Bounds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NumBuckets is the number of finite buckets; a histogram has one more (+Inf).
const NumBuckets = len(Bounds)

// boundsNs are Bounds in nanoseconds, for the comparison on the hot path.
var boundsNs = func() (b [NumBuckets]int64) {
	for i, s := range Bounds {
		b[i] = int64(s * float64(time.Second))
	}
	return b
}()

// Histogram counts durations in the buckets of Bounds. The zero value is
// ready; do not copy a Histogram once in use.
type Histogram struct {
	counts [NumBuckets + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumNs  atomic.Int64
}

// Observe counts d. A negative d counts as zero.
func (h *Histogram) Observe(d time.Duration) {
	ns := max(int64(d), 0)
	i := 0
	for i < NumBuckets && ns > boundsNs[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(ns)
}

// Snapshot reads h.
func (h *Histogram) Snapshot() HistSnapshot {
	var s HistSnapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.SumNs = h.sumNs.Load()
	return s
}

// HistSnapshot is a histogram's counts at one time.
type HistSnapshot struct {
	Counts [NumBuckets + 1]uint64 // per bucket (le Bounds[i]), not cumulative; the last is +Inf
	SumNs  int64                  // the sum of the observed durations
}

// Add adds o's counts to s.
func (s *HistSnapshot) Add(o HistSnapshot) {
	for i := range s.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.SumNs += o.SumNs
}

// Count is the number of observations.
func (s HistSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Sum is the sum of the observations in seconds.
func (s HistSnapshot) Sum() float64 { return float64(s.SumNs) / float64(time.Second) }

// Cumulative returns the count at or below each of Bounds, as Prometheus
// histograms want them (the +Inf bucket is Count).
func (s HistSnapshot) Cumulative() map[float64]uint64 {
	m := make(map[float64]uint64, NumBuckets)
	var n uint64
	for i, b := range Bounds {
		n += s.Counts[i]
		m[b] = n
	}
	return m
}

// Quantile estimates the q-quantile (0 < q ≤ 1) in seconds the way
// Prometheus's histogram_quantile does: linear within the bucket where the
// rank falls (the first bucket starts at 0). A rank in the +Inf bucket
// answers the highest finite bound. ok is false without observations.
func (s HistSnapshot) Quantile(q float64) (seconds float64, ok bool) {
	total := s.Count()
	if total == 0 || q <= 0 || q > 1 {
		return 0, false
	}
	rank := q * float64(total)
	var below uint64
	for i, c := range s.Counts {
		if c == 0 || float64(below+c) < rank {
			below += c
			continue
		}
		if i == NumBuckets {
			return Bounds[NumBuckets-1], true
		}
		lo := 0.0
		if i > 0 {
			lo = Bounds[i-1]
		}
		return lo + (Bounds[i]-lo)*(rank-float64(below))/float64(c), true
	}
	return Bounds[NumBuckets-1], true
}

// Classes are the status classes Requests counts, index 0 for 1xx.
var Classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Requests counts answered requests by status class, with their latencies.
// The zero value is ready; do not copy one in use.
type Requests struct {
	byClass [len(Classes)]atomic.Uint64
	latency Histogram
}

// classOf maps a status code to its index in Classes: 1xx…5xx, codes
// above 599 (which a worker may send) count as 5xx, below 100 as 1xx.
func classOf(code int) int {
	return min(max(code/100, 1), len(Classes)) - 1
}

// Observe counts one response with status code, answered in d.
func (r *Requests) Observe(code int, d time.Duration) {
	r.byClass[classOf(code)].Add(1)
	r.latency.Observe(d)
}

// Snapshot reads r.
func (r *Requests) Snapshot() RequestsSnapshot {
	var s RequestsSnapshot
	for i := range r.byClass {
		s.ByClass[i] = r.byClass[i].Load()
	}
	s.Latency = r.latency.Snapshot()
	return s
}

// RequestsSnapshot is what a Requests counted up to one time.
type RequestsSnapshot struct {
	ByClass [len(Classes)]uint64 // index i counts Classes[i]
	Latency HistSnapshot
}

// Add adds o's counts to s.
func (s *RequestsSnapshot) Add(o RequestsSnapshot) {
	for i := range s.ByClass {
		s.ByClass[i] += o.ByClass[i]
	}
	s.Latency.Add(o.Latency)
}

// Sub is s minus an earlier snapshot o of the same counters: what was
// counted between the two.
func (s RequestsSnapshot) Sub(o RequestsSnapshot) RequestsSnapshot {
	for i := range s.ByClass {
		s.ByClass[i] -= o.ByClass[i]
	}
	for i := range s.Latency.Counts {
		s.Latency.Counts[i] -= o.Latency.Counts[i]
	}
	s.Latency.SumNs -= o.Latency.SumNs
	return s
}

// Total is the number of requests counted.
func (s RequestsSnapshot) Total() uint64 {
	var n uint64
	for _, c := range s.ByClass {
		n += c
	}
	return n
}

// ClassMap returns the counts by class name ("2xx": n), every class present.
func (s RequestsSnapshot) ClassMap() map[string]uint64 {
	m := make(map[string]uint64, len(Classes))
	for i, c := range Classes {
		m[c] = s.ByClass[i]
	}
	return m
}
