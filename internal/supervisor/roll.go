package supervisor

import (
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// slotAlive reports whether sl is still one of its worker's slots (a config
// change may have removed it).
func (s *Supervisor) slotAlive(sl *slot) bool {
	return sl.idx < len(sl.w.slots) && sl.w.slots[sl.idx] == sl
}

// startRoll replaces every slot of w, one at a time, with reason.
func (s *Supervisor) startRoll(w *worker, reason, detail string, batch *pendingReload, changedAt time.Time) {
	for _, sl := range w.slots {
		sl.failures = 0
		if sl.next != nil {
			s.abandon(sl.next, reason, "superseded by a newer change")
		}
		if sl.current != nil {
			sl.current.drainReason = sm.ReasonReplaced
		}
	}
	w.roll = &roll{reason: reason, detail: detail, batch: batch, changedAt: changedAt}
	s.rollSlot(w)
}

// rollSlot starts the successor of the roll's current slot.
func (s *Supervisor) rollSlot(w *worker) {
	r := w.roll
	for r.pos < len(w.slots) {
		sl := w.slots[r.pos]
		s.start(sl, r.reason, r.detail, r.batch)
		if sl.next != nil {
			sl.next.roll = r
			if !r.changedAt.IsZero() {
				sl.next.changedAt = r.changedAt
			}
			return
		}
		if sl.timer != nil && sl.current != nil {
			// Not started and nothing recorded (the log could not be
			// written, no free port): the old instance keeps serving and
			// the roll resumes here when the retry is due.
			return
		}
		r.pos++ // could not start (recorded); move on
	}
	w.roll = nil
}

// advanceRoll moves the roll on after inst became healthy. It reports
// whether the worker's roll (if inst was part of one) is complete.
func (s *Supervisor) advanceRoll(inst *instance) bool {
	w := inst.w
	r := inst.roll
	if r == nil || w.roll != r {
		return true
	}
	r.pos++
	if r.pos >= len(w.slots) {
		w.roll = nil
		return true
	}
	s.rollSlot(w)
	return w.roll == nil
}

// abortRoll stops a roll whose instance failed: the remaining slots keep
// their instances.
func (s *Supervisor) abortRoll(inst *instance) {
	if r := inst.roll; r != nil && inst.w.roll == r {
		inst.w.roll = nil
	}
}
