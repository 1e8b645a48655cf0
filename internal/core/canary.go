package core

import (
	"fmt"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// Canary deploys (workers.*.canary): the first successor of a deploy's roll
// (binary_changed), once healthy and warmed, does not replace its
// predecessor yet: it takes weight_percent of the worker's requests beside
// the old instances for duration_ms (its slot shows "canary"). Then the
// executor reads the proxy's counters of both (CanaryJudged) and the core
// promotes it — the roll goes on as usual — or rolls it back: it drains,
// the roll stops, and the worker runs the previous binary again. Each step
// is a record with its figures: canary_started, canary_promoted,
// canary_failed.

// CanaryStart: the executor takes the old instances' counters as the
// baseline of Instance's canary.
type CanaryStart struct {
	Instance string
	Old      []string
}

// Judge: the executor reads the counters of Instance and Old since
// CanaryStart and sends CanaryJudged.
type Judge struct {
	Instance string
	Old      []string
}

func (e CanaryStart) String() string { return fmt.Sprintf("canary-start %s old=%v", e.Instance, e.Old) }
func (e Judge) String() string       { return fmt.Sprintf("judge %s old=%v", e.Instance, e.Old) }

// canaryApplies: in, warmed, is the first successor of a deploy's roll of a
// worker whose settings ask for a canary.
func (c *Core) canaryApplies(w *worker, in *instance) bool {
	cn := w.settings.Canary
	if !cn.Enabled() || in.startReason != sm.ReasonBinaryChanged || in.roll == 0 || w.roll == nil || w.roll.id != in.roll || w.roll.canaryDone {
		return false
	}
	sl := w.slotByID(in.slot)
	return sl != nil && sl.current != "" && sl.next == in.name
}

func (c *Core) startCanary(w *worker, in *instance) {
	cn := w.settings.Canary
	in.warming = false
	in.canary = true
	w.roll.canaryDone = true
	old := w.servingNames()
	c.tx.routesDirty = true
	c.record(&store.Record{Worker: w.name, Event: sm.EventCanaryStarted, Reason: sm.ReasonBinaryChanged,
		Detail: fmt.Sprintf("%s takes %d%% of requests beside %v for %dms (max_error_rate %g, max_p99_ratio %g)",
			in.name, cn.WeightPercent, old, cn.DurationMs, cn.MaxErrorRate, cn.MaxP99Ratio)})
	c.emit(Cancel{Instance: in.name})
	c.emit(Probe{Instance: in.name, Port: in.port, Settings: w.settings})
	c.emit(CanaryStart{Instance: in.name, Old: old})
	c.emit(After{Delay: time.Duration(cn.DurationMs) * time.Millisecond, Event: events.CanaryDue{Instance: in.name}})
}

func (c *Core) onCanaryDue(ev events.CanaryDue) {
	w, in := c.inst(ev.Instance)
	if in == nil || !in.canary || in.m.State() != sm.Healthy || c.tx.shutting {
		return
	}
	c.emit(Judge{Instance: in.name, Old: w.servingNames()})
}

func (c *Core) onCanaryJudged(ev events.CanaryJudged) {
	w, in := c.inst(ev.Instance)
	if in == nil || !in.canary || in.m.State() != sm.Healthy || c.tx.shutting {
		return
	}
	cn := w.settings.Canary
	in.canary = false
	c.tx.routesDirty = true
	rate := 0.0
	if ev.Requests > 0 {
		rate = float64(ev.Errors) / float64(ev.Requests)
	}
	figures := fmt.Sprintf("canary %s: %d requests, %d 5xx (%.2f%%), p99 %.1fms; old: %d requests, %d 5xx, p99 %.1fms",
		in.name, ev.Requests, ev.Errors, 100*rate, ev.P99Ms, ev.OldRequests, ev.OldErrors, ev.OldP99Ms)
	why := ""
	switch {
	case rate > cn.MaxErrorRate:
		why = fmt.Sprintf("error rate %.2f%% above max_error_rate %g", 100*rate, cn.MaxErrorRate)
	case cn.MaxP99Ratio > 0 && ev.OldP99Ms > 0 && ev.P99Ms > cn.MaxP99Ratio*ev.OldP99Ms:
		why = fmt.Sprintf("p99 %.1fms above max_p99_ratio %g × old p99 %.1fms", ev.P99Ms, cn.MaxP99Ratio, ev.OldP99Ms)
	}
	if why == "" {
		c.record(&store.Record{Worker: w.name, Event: sm.EventCanaryPromoted, Reason: sm.ReasonBinaryChanged, Detail: figures})
		c.swapIn(w, in)
		return
	}
	c.record(&store.Record{Worker: w.name, Event: sm.EventCanaryFailed, Reason: sm.ReasonRollback, Detail: figures + "; " + why})
	c.canaryFailed(w, in, "canary failed: "+why)
}

// canaryFailed drains the canary and stops its roll; the worker runs the
// previous binary again (for later starts), when one was saved.
func (c *Core) canaryFailed(w *worker, in *instance, why string) {
	if in.m.State() == sm.Healthy {
		c.drain(w, in, sm.ReasonRollback, why)
	}
	if sl := w.slotByID(in.slot); sl != nil && sl.next == in.name {
		sl.next = ""
	}
	c.settle(in, false, in.name+": "+sm.ReasonRollback+": "+why)
	c.abortRoll(w, in)
	if w.prevBin != "" {
		w.bin, w.prevBin = w.prevBin, ""
	}
}

// servingNames lists w's serving instances.
func (w *worker) servingNames() []string {
	var out []string
	for _, in := range w.serving() {
		out = append(out, in.name)
	}
	return out
}

// canaryOf is w's canary instance, if one runs.
func (w *worker) canaryOf() *instance {
	for _, sl := range w.slots {
		if sl.next != "" {
			if in := w.insts[sl.next]; in != nil && in.canary {
				return in
			}
		}
	}
	return nil
}
