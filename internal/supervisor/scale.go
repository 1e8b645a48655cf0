package supervisor

import (
	"time"

	"github.com/mevdschee/tqserver/internal/events"
)

// Autoscaling (min_instances < max_instances): a ticker, live only while
// some worker autoscales, samples the in-flight counters of each such
// worker's serving instances (atomic loads; the proxy's request path is not
// touched) and hands the means to the core (events.ScaleTick), which grows
// or shrinks the worker by one slot.

// scaleEvery is the sampling period of autoscaling.
const scaleEvery = 200 * time.Millisecond

// scaleC is the channel of the sampling ticker: nil (never ready) while no
// worker autoscales, so an idle server has no periodic wake-up.
func (s *Supervisor) scaleC() <-chan time.Time {
	on := len(s.core.Autoscaled()) > 0
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

func (s *Supervisor) sampleScale(now time.Time) {
	means := map[string]float64{}
	for _, name := range s.core.Autoscaled() {
		var sum int64
		serving := s.core.Serving(name)
		for _, in := range serving {
			if b := s.x.backends[in]; b != nil {
				sum += b.Inflight()
			}
		}
		if len(serving) > 0 {
			means[name] = float64(sum) / float64(len(serving))
		} else {
			means[name] = 0
		}
	}
	s.handle(events.ScaleTick{Now: now, Means: means})
}
