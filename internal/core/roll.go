package core

import (
	"fmt"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// startRoll replaces every slot of w, one at a time, with reason.
func (c *Core) startRoll(w *worker, reason, detail string, batch uint64, ev events.RollWorker) {
	for i := range w.slots {
		sl := &w.slots[i]
		sl.failures = 0
		if sl.next != "" {
			next := w.insts[sl.next]
			if next.batch != 0 && next.batch != batch {
				c.emit(Superseded{Batch: next.batch, Instance: next.name})
			}
			c.abandon(w, next, reason, "superseded by a newer change")
		}
		if sl.current != "" {
			w.insts[sl.current].drainReason = sm.ReasonReplaced
		}
	}
	if ev.Bin != "" {
		w.bin = ev.Bin
	}
	switch {
	case reason == sm.ReasonRollback:
		w.prevBin = "" // the binary rolled back from is not a good one
	case ev.Previous != "":
		w.prevBin = ev.Previous
	}
	c.tx.rollSeq++
	w.roll = &roll{id: c.tx.rollSeq, reason: reason, detail: detail, batch: batch, changedAt: ev.ChangedAt}
	c.rollSlot(w)
}

// rollSlot starts the successor of the roll's current slot.
func (c *Core) rollSlot(w *worker) {
	r := w.roll
	for r.pos < len(w.slots) {
		sl := &w.slots[r.pos]
		if r.reason == sm.ReasonRollback && sl.current != "" && sl.next == "" && w.insts[sl.current].bin == w.bin {
			r.pos++ // already runs the binary rolled back to
			continue
		}
		c.start(w, sl, r.reason, r.detail, r.batch)
		if sl.next != "" {
			next := w.insts[sl.next]
			next.roll = r.id
			if !r.changedAt.IsZero() {
				next.changedAt = r.changedAt
			}
			return
		}
		if sl.armed && sl.current != "" {
			// Not started (no free port): the old instance keeps serving
			// and the roll resumes here when the retry is due.
			return
		}
		r.pos++
	}
	w.roll = nil
}

// advanceRoll moves the roll on after in serves; it reports whether the
// worker's roll (if in was part of one) is complete.
func (c *Core) advanceRoll(w *worker, in *instance) bool {
	r := w.roll
	if in.roll == 0 || r == nil || r.id != in.roll {
		return true
	}
	r.pos++
	if r.pos >= len(w.slots) {
		w.roll = nil
		return true
	}
	c.rollSlot(w)
	return w.roll == nil
}

// abortRoll stops a roll whose instance failed: the other slots keep theirs.
func (c *Core) abortRoll(w *worker, in *instance) {
	if w.roll != nil && in.roll == w.roll.id {
		w.roll = nil
	}
}

// clearSlot stops everything of one slot: its restart, its successor and
// (draining it) its serving instance.
func (c *Core) clearSlot(w *worker, sl *slot, reason, detail string) {
	sl.armed = false
	sl.gen++
	if sl.next != "" {
		c.abandon(w, w.insts[sl.next], reason, detail)
	}
	if sl.current != "" {
		c.drain(w, w.insts[sl.current], reason, detail)
	}
}

// removeSlots cuts w to n slots; the slots cut drain and stop.
func (c *Core) removeSlots(w *worker, n int, reason, detail string) {
	if n >= len(w.slots) {
		return
	}
	gone := append([]slot(nil), w.slots[n:]...)
	w.slots = w.slots[:n]
	for i := range gone {
		c.clearSlot(w, &gone[i], reason, detail)
	}
	c.tx.routesDirty = true
}

func (c *Core) removeWorker(w *worker, reason, detail string) {
	w.removed = true
	w.roll = nil
	c.removeSlots(w, 0, reason, detail)
}

func (c *Core) onReconfigure(ev events.Reconfigure) {
	w := c.peek(ev.Worker)
	if w == nil || w.removed || c.tx.shutting {
		return
	}
	w = c.w(ev.Worker)
	w.settings = ev.Settings
	w.scale = scaleState{}
	before := len(w.slots)
	n := max(ev.Settings.ClampInstances(before), 1) // an autoscaled count stays if in range
	if n != before {
		c.emit(Note{Batch: ev.Batch, Msg: fmt.Sprintf("%s: instances %d → %d", w.name, before, n)})
	}
	if n < before {
		c.removeSlots(w, n, sm.ReasonConfigChanged, fmt.Sprintf("instances reduced to %d", n))
	}
	for len(w.slots) < n {
		w.addSlot()
	}
	if ev.Restart != "" {
		c.startRoll(w, ev.Restart, ev.Detail, ev.Batch, events.RollWorker{Bin: ev.Bin, Previous: ev.Previous})
		return
	}
	for i := before; i < n; i++ {
		c.start(w, &w.slots[i], sm.ReasonConfigChanged, fmt.Sprintf("instances increased to %d", n), ev.Batch)
	}
}

// onAssets: no restart. public/ is read fresh on each request; the worker is
// told about private/ changes with SIGUSR1.
func (c *Core) onAssets(ev events.Assets) {
	w := c.peek(ev.Worker)
	if w == nil || w.removed {
		return
	}
	var parts []string
	if ev.Public {
		parts = append(parts, "public/")
	}
	if ev.Private {
		parts = append(parts, "private/")
	}
	detail := strings.Join(parts, " and ") + " changed"
	var targets []string
	for _, sl := range w.slots {
		for _, name := range []string{sl.current, sl.next} {
			if name != "" && w.insts[name].spawned {
				targets = append(targets, name)
			}
		}
	}
	if len(targets) > 0 {
		detail += "; SIGUSR1 sent to " + strings.Join(targets, ", ")
	}
	c.record(&store.Record{Worker: w.name, Event: sm.EventAssetsChanged, Detail: detail})
	if ev.Batch != 0 {
		c.emit(Note{Batch: ev.Batch, Msg: w.name + ": " + detail})
	}
	for _, t := range targets {
		c.emit(Signal{Instance: t, Sig: "SIGUSR1"})
	}
}

// onShutdown stops everything: restarts and rolls are dropped, starting
// instances stopped, healthy ones drained. ForceKill is the backstop.
func (c *Core) onShutdown() {
	if c.tx.shutting {
		return
	}
	c.tx.shutting = true
	c.tx.anyway = true
	for _, name := range c.names() {
		w := c.w(name)
		w.roll = nil
		for i := range w.slots {
			w.slots[i].armed = false
			w.slots[i].gen++
		}
		for _, iname := range sortedInstances(w) {
			in := w.insts[iname]
			switch in.m.State() {
			case sm.Starting:
				c.fire(w, in, sm.Stop, sm.ReasonShutdown, "")
				c.emit(Cancel{Instance: in.name})
				if sl := w.slotByID(in.slot); sl != nil && sl.next == in.name {
					sl.next = ""
				}
				c.settle(in, false, in.name+": server shutting down")
				c.stopProcess(in)
			case sm.Healthy:
				c.drain(w, in, sm.ReasonShutdown, "server stopping")
			}
		}
	}
	c.emit(After{Delay: c.o.DrainTimeout + c.o.Grace + 5*time.Second, Event: events.ForceKill{}})
}

func (c *Core) onForceKill() {
	c.tx.anyway = true
	for _, name := range c.names() {
		w := c.peek(name)
		for _, iname := range sortedInstances(w) {
			if in := w.insts[iname]; in.spawned {
				c.logf("error", w, in.name, "shutdown deadline passed; killing")
				c.emit(Kill{Instance: in.name})
			}
		}
	}
}

// Superseded: a newer deploy abandoned Instance of reload Batch before it served.
type Superseded struct {
	Batch    uint64
	Instance string
}

// Note is a line for reload Batch's result.
type Note struct {
	Batch uint64
	Msg   string
}

func (e Superseded) String() string {
	return fmt.Sprintf("superseded batch=%d %s", e.Batch, e.Instance)
}
func (e Note) String() string { return fmt.Sprintf("note batch=%d %s", e.Batch, e.Msg) }
