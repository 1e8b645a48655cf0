package core

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// An atomic release (deployment.switch: together): every new instance of
// every worker in it starts at once, beside the old set. A member that
// becomes healthy is warmed and then waits (its slot shows "warming").
// When the last member is warmed, one step swaps every member in: the
// predecessors' drain records and one route table for all. When any member
// fails — it does not start, exits, is not healthy in time, or fails its
// warm-up — every other member is stopped (reason rollback) and the old set
// keeps serving.

type release struct {
	id      uint64
	members map[string]bool // instance → warmed
	why     string          // what the release deploys, for messages
}

func (r *release) clone() *release {
	c := *r
	c.members = maps.Clone(r.members)
	return &c
}

// rel is the step's copy of release id (nil when it ended).
func (c *Core) rel(id uint64) *release {
	if id == 0 {
		return nil
	}
	if r, ok := c.tx.rels[id]; ok {
		return r
	}
	r := c.releases[id]
	if r == nil {
		return nil
	}
	r = r.clone()
	c.tx.rels[id] = r
	return r
}

func (c *Core) endRelease(id uint64) { c.tx.rels[id] = nil }

func (c *Core) onRelease(ev events.Release) {
	if c.tx.shutting {
		return
	}
	c.tx.rollSeq++
	r := &release{id: c.tx.rollSeq, members: map[string]bool{}}
	c.tx.rels[r.id] = r
	var names []string
	for _, rw := range ev.Rolls {
		names = append(names, rw.Worker)
	}
	r.why = "release of " + strings.Join(names, ", ")
	for _, rw := range ev.Rolls {
		w := c.peek(rw.Worker)
		if w == nil || w.removed {
			continue
		}
		w = c.w(rw.Worker)
		w.roll = nil
		if rw.Bin != "" {
			w.bin = rw.Bin
		}
		if rw.Previous != "" {
			w.prevBin = rw.Previous
		}
		detail := strings.TrimPrefix(rw.Detail+"; "+r.why+" (deployment.switch: together)", "; ")
		for i := range w.slots {
			sl := &w.slots[i]
			sl.failures = 0
			if sl.next != "" {
				next := w.insts[sl.next]
				if next.batch != 0 && next.batch != ev.Batch {
					c.emit(Superseded{Batch: next.batch, Instance: next.name})
				}
				c.abandon(w, next, rw.Reason, "superseded by a newer change")
			}
			if sl.current != "" {
				w.insts[sl.current].drainReason = sm.ReasonReplaced
			}
			c.start(w, sl, rw.Reason, detail, ev.Batch)
			if sl.next == "" {
				c.failRelease(r, fmt.Sprintf("%s: no new instance could be started", w.name))
				return
			}
			in := w.insts[sl.next]
			in.release = r.id
			r.members[in.name] = false
		}
	}
	if len(r.members) == 0 {
		c.endRelease(r.id)
	}
}

// releaseHealthy: a member passed its health gate; it is warmed, then waits.
func (c *Core) releaseHealthy(w *worker, in *instance) {
	from := ""
	if sl := w.slotByID(in.slot); sl != nil {
		from = sl.current
	}
	in.warming = true
	c.emit(Warm{Instance: in.name, From: from, Worker: w.name, Port: in.port, MaxRequests: w.settings.MaxRequests, Settings: w.settings})
}

// releaseWarmed: a member is ready; the last one swaps every member in.
func (c *Core) releaseWarmed(r *release, in *instance) {
	r.members[in.name] = true
	for _, ok := range r.members {
		if !ok {
			return
		}
	}
	c.endRelease(r.id)
	for _, name := range slices.Sorted(maps.Keys(r.members)) {
		w, m := c.inst(name)
		if m == nil || m.m.State() != sm.Healthy {
			continue
		}
		m.warming = false
		m.release = 0
		c.swapIn(w, m)
	}
	c.logf("info", nil, "", "%s: every route moved at once", r.why)
}

// failRelease stops every member that has not failed by itself: none of
// the release switches and the old set keeps serving.
func (c *Core) failRelease(r *release, why string) {
	if r == nil {
		return
	}
	c.endRelease(r.id)
	c.tx.anyway = true // stopping what will never serve
	c.logf("warn", nil, "", "%s aborted: %s; the old instances keep serving", r.why, why)
	for _, name := range slices.Sorted(maps.Keys(r.members)) {
		w, m := c.inst(name)
		if m == nil {
			continue
		}
		m.release = 0
		c.abandon(w, m, sm.ReasonRollback, r.why+" aborted: "+why)
	}
}

// releaseFailed is called when member in failed by itself.
func (c *Core) releaseFailed(in *instance, why string) {
	if in.release == 0 {
		return
	}
	r := c.rel(in.release)
	in.release = 0
	if r != nil {
		delete(r.members, in.name)
		c.failRelease(r, why)
	}
}
