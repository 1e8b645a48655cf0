package supervisor

import (
	"fmt"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
)

// scheduleRestart restarts w after an exponential backoff.
func (s *Supervisor) scheduleRestart(sl *slot, reason string) {
	w := sl.w
	if s.shutting || w.removed || sl.timer != nil || !s.slotAlive(sl) {
		return
	}
	base := time.Duration(s.cfg.Workers.RestartDelayMs) * time.Millisecond
	max := time.Duration(s.cfg.Workers.RestartBackoffMaxMs) * time.Millisecond
	delay := backoff(base, max, sl.failures)
	sl.failures++
	name, idx := w.f.name, sl.idx
	s.log.Warn().Str("worker", name).Int("slot", idx).Dur("delay", delay).Int("attempt", sl.failures).Msg("restart scheduled")
	sl.retry = reason
	sl.timer = time.AfterFunc(delay, func() { s.Send(events.RestartDue{Worker: name, Slot: idx}) })
}

// backoff is base·2^n capped at max.
func backoff(base, max time.Duration, n int) time.Duration {
	if base <= 0 {
		base = time.Millisecond
	}
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if max > 0 && d > max {
		d = max
	}
	return d
}

func (s *Supervisor) onRestartDue(ev events.RestartDue) {
	w := s.workers[ev.Worker]
	if w == nil {
		return
	}
	if ev.Slot >= len(w.slots) {
		return
	}
	sl := w.slots[ev.Slot]
	sl.timer = nil
	switch {
	case sl.current == nil && sl.next == nil:
		s.start(sl, sl.retry, fmt.Sprintf("restart attempt %d", sl.failures), nil)
	case w.roll != nil && w.roll.pos == sl.idx && sl.next == nil:
		s.rollSlot(w) // a replacement that could not start before
	}
}
