package supervisor

import (
	"fmt"
	"strconv"
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// Autoscaling (min_instances < max_instances) runs in the supervisor loop:
// a ticker, live only while some worker autoscales, samples the in-flight
// counters of the worker's serving instances (atomic loads; the proxy's
// request path is not touched) and grows or shrinks the worker by one slot
// through the same slot machinery as a config resize.

// scaleEvery is the sampling period of autoscaling.
const scaleEvery = 200 * time.Millisecond

// scaleUpSamples is how many samples in a row must reach the target.
const scaleUpSamples = 2

// scaleState is one worker's autoscaling memory between samples.
type scaleState struct {
	high     int       // samples in a row with mean >= target
	lowSince time.Time // first sample of the current run below target/2; zero when none
}

// scaleInput is one sample of one worker.
type scaleInput struct {
	now       time.Time
	count     int     // slots
	lo, hi    int     // the range
	mean      float64 // in flight per serving instance
	target    float64
	downAfter time.Duration
	busy      bool // a roll, or an instance starting
	degraded  bool // a slot without a serving instance (crash backoff)
}

// decideScale returns +1 (add a slot), -1 (remove one) or 0, updating st.
// It is pure apart from st, so the policy is table-testable.
func decideScale(st *scaleState, in scaleInput) int {
	if in.busy {
		// A starting or replaced instance skews the mean; start over once
		// it serves.
		*st = scaleState{}
		return 0
	}
	// A slot that cannot keep an instance up is no reason to add another;
	// low load may still remove one.
	if in.mean >= in.target && !in.degraded {
		st.high++
	} else {
		st.high = 0
	}
	if in.mean < in.target/2 {
		if st.lowSince.IsZero() {
			st.lowSince = in.now
		}
	} else {
		st.lowSince = time.Time{}
	}
	switch {
	case st.high >= scaleUpSamples && in.count < in.hi:
		*st = scaleState{}
		return +1
	case !st.lowSince.IsZero() && in.now.Sub(st.lowSince) >= in.downAfter && in.count > in.lo:
		// The next step down needs another full period of low load.
		*st = scaleState{lowSince: in.now}
		return -1
	}
	return 0
}

// autoscaling reports whether some worker autoscales.
func (s *Supervisor) autoscaling() bool {
	if s.shutting {
		return false
	}
	for _, w := range s.workers {
		if !w.removed && w.settings.Autoscaled() {
			return true
		}
	}
	return false
}

// scaleC is the channel of the sampling ticker: nil (never ready) while no
// worker autoscales, so an idle server has no periodic wake-up.
func (s *Supervisor) scaleC() <-chan time.Time {
	on := s.autoscaling()
	switch {
	case on && s.scaleTicker == nil:
		s.scaleTicker = time.NewTicker(scaleEvery)
	case !on && s.scaleTicker != nil:
		s.stopScaler()
	}
	if s.scaleTicker == nil {
		return nil
	}
	return s.scaleTicker.C
}

func (s *Supervisor) stopScaler() {
	if s.scaleTicker != nil {
		s.scaleTicker.Stop()
		s.scaleTicker = nil
	}
}

// scaleBusy reports whether w is rolling or has an instance starting, and
// whether a slot has no serving instance (it waits to restart).
func (w *worker) scaleBusy() (busy, degraded bool) {
	if w.roll != nil {
		return true, false
	}
	for _, sl := range w.slots {
		busy = busy || sl.next != nil
		degraded = degraded || sl.current == nil
	}
	return busy, degraded
}

// onScaleTick samples every autoscaled worker and takes at most one step
// for each.
func (s *Supervisor) onScaleTick(now time.Time) {
	if s.shutting {
		return
	}
	for _, name := range sortedKeys(s.workers) {
		w := s.workers[name]
		if w.removed || !w.settings.Autoscaled() {
			continue
		}
		var sum int64
		serving := w.serving()
		for _, in := range serving {
			sum += in.backend.Inflight()
		}
		mean := 0.0
		if len(serving) > 0 {
			mean = float64(sum) / float64(len(serving))
		}
		lo, hi := w.settings.InstanceRange()
		in := scaleInput{
			now: now, count: len(w.slots), lo: lo, hi: hi, mean: mean,
			target:    float64(max(w.settings.ScaleTargetInflight, 1)),
			downAfter: w.settings.ScaleDownAfter(),
		}
		in.busy, in.degraded = w.scaleBusy()
		switch decideScale(&w.scale, in) {
		case +1:
			s.scaleUp(w, in)
		case -1:
			s.scaleDown(w, in)
		}
	}
}

func (s *Supervisor) scaleUp(w *worker, in scaleInput) {
	n := in.count + 1
	detail := fmt.Sprintf("autoscale: mean in-flight %s ≥ %s over %d instances, %d → %d (max %d)",
		fmtMean(in.mean), fmtMean(in.target), in.count, in.count, n, in.hi)
	s.log.Info().Str("worker", w.f.name).Int("from", in.count).Int("to", n).Float64("mean_inflight", in.mean).
		Int("target", int(in.target)).Msg("autoscale: scaling up")
	w.resize(n)
	s.start(w.slots[n-1], sm.ReasonConfigChanged, detail, nil)
}

func (s *Supervisor) scaleDown(w *worker, in scaleInput) {
	n := in.count - 1
	detail := fmt.Sprintf("autoscale: mean in-flight %s < %s for %s over %d instances, %d → %d (min %d)",
		fmtMean(in.mean), fmtMean(in.target/2), in.downAfter, in.count, in.count, n, in.lo)
	s.log.Info().Str("worker", w.f.name).Int("from", in.count).Int("to", n).Float64("mean_inflight", in.mean).
		Int("target", int(in.target)).Msg("autoscale: scaling down")
	for _, sl := range w.resize(n) {
		s.clearSlot(sl, sm.ReasonConfigChanged, detail)
	}
	s.publishRoutes()
}

// fmtMean prints a mean with at most one decimal: 12.5, 8, 0.3.
func fmtMean(f float64) string {
	return strconv.FormatFloat(float64(int64(f*10+0.5))/10, 'f', -1, 64)
}
