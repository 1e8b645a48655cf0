package core

import (
	"fmt"
	"strconv"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// Autoscaling (min_instances < max_instances): the loop samples the mean
// in-flight requests per serving instance (ScaleTick) and the core grows or
// shrinks a worker by one slot through the same slot rules as a resize.

// ScaleUpSamples is how many samples in a row must reach the target.
const ScaleUpSamples = 2

// scaleState is one worker's autoscaling memory between samples.
type scaleState struct {
	high     int       // samples in a row with mean >= target
	lowSince time.Time // first sample of the current run below target/2
}

type scaleInput struct {
	now       time.Time
	count     int
	lo, hi    int
	mean      float64
	target    float64
	downAfter time.Duration
	busy      bool // a roll, or an instance starting
	degraded  bool // a slot without a serving instance
}

// decideScale returns +1, -1 or 0, updating st.
func decideScale(st *scaleState, in scaleInput) int {
	if in.busy {
		*st = scaleState{}
		return 0
	}
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
	case st.high >= ScaleUpSamples && in.count < in.hi:
		*st = scaleState{}
		return +1
	case !st.lowSince.IsZero() && in.now.Sub(st.lowSince) >= in.downAfter && in.count > in.lo:
		*st = scaleState{lowSince: in.now}
		return -1
	}
	return 0
}

// Autoscaled lists the workers that autoscale (the loop samples only these).
func (c *Core) Autoscaled() []string {
	if c.shutting {
		return nil
	}
	var out []string
	for n, w := range c.workers {
		if !w.removed && w.settings.Autoscaled() {
			out = append(out, n)
		}
	}
	return out
}

// Serving lists a worker's serving instances (the loop reads their counters).
func (c *Core) Serving(worker string) []string {
	w := c.workers[worker]
	if w == nil {
		return nil
	}
	var out []string
	for _, in := range w.serving() {
		out = append(out, in.name)
	}
	return out
}

func (c *Core) onScaleTick(ev events.ScaleTick) {
	if c.tx.shutting {
		return
	}
	for _, name := range c.names() {
		mean, ok := ev.Means[name]
		w := c.peek(name)
		if !ok || w.removed || !w.settings.Autoscaled() {
			continue
		}
		w = c.w(name)
		lo, hi := w.settings.InstanceRange()
		in := scaleInput{now: ev.Now, count: len(w.slots), lo: lo, hi: hi, mean: mean,
			target: float64(max(w.settings.ScaleTargetInflight, 1)), downAfter: w.settings.ScaleDownAfter()}
		in.busy = w.roll != nil
		for _, sl := range w.slots {
			in.busy = in.busy || sl.next != ""
			in.degraded = in.degraded || sl.current == ""
		}
		switch decideScale(&w.scale, in) {
		case +1:
			n := in.count + 1
			detail := fmt.Sprintf("autoscale: mean in-flight %s ≥ %s over %d instances, %d → %d (max %d)",
				fmtMean(in.mean), fmtMean(in.target), in.count, in.count, n, in.hi)
			c.logf("info", w, "", "autoscale: scaling up")
			c.start(w, w.addSlot(), sm.ReasonConfigChanged, detail, 0)
		case -1:
			n := in.count - 1
			detail := fmt.Sprintf("autoscale: mean in-flight %s < %s for %s over %d instances, %d → %d (min %d)",
				fmtMean(in.mean), fmtMean(in.target/2), in.downAfter, in.count, in.count, n, in.lo)
			c.logf("info", w, "", "autoscale: scaling down")
			c.removeSlots(w, n, sm.ReasonConfigChanged, detail)
		}
	}
}

func fmtMean(f float64) string {
	return strconv.FormatFloat(float64(int64(f*10+0.5))/10, 'f', -1, 64)
}
