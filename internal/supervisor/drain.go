package supervisor

import (
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// drain stops routing to inst, waits for its in-flight requests, then stops it.
func (s *Supervisor) drain(inst *instance, reason, detail string) {
	if inst.m.State() != sm.Healthy {
		return
	}
	// An instance that never served (warming) or has no place any more (its
	// worker removed, its slot gone) is out of the route table already: it
	// goes even when this cannot be recorded, rather than run on unreached.
	anyway := inst.warming || inst.w.removed || !s.slotAlive(inst.sl)
	if err := s.step(inst, sm.Drain, reason, func(r *store.Record) { r.Detail = detail }, anyway); err != nil {
		return
	}
	inst.drainReason = reason
	s.drainEffects(inst)
}

// drainEffects carries out a recorded drain: no new requests, in-flight ones
// finish (Drained), then the process is stopped.
func (s *Supervisor) drainEffects(inst *instance) {
	if inst.cancel != nil {
		inst.cancel()
	}
	if inst.sl.current == inst {
		inst.sl.current = nil
		s.publishRoutes()
	}
	if inst.warming { // never swapped in: its slot may start another
		inst.warming = false
		if inst.sl.next == inst {
			inst.sl.next = nil
		}
	}
	b := inst.backend
	b.Close()
	timeout := time.Duration(s.cfg.Workers.DrainTimeoutMs) * time.Millisecond
	name := inst.name
	go func() {
		deadline := time.Now().Add(timeout)
		wait := time.Millisecond
		for b.Inflight() > 0 && time.Now().Before(deadline) {
			time.Sleep(wait) // polling an atomic counter; no event to wait on
			if wait < 20*time.Millisecond {
				wait *= 2
			}
		}
		s.Send(events.Drained{Instance: name, TimedOut: b.Inflight() > 0})
	}()
}

func (s *Supervisor) onDrained(ev events.Drained) {
	inst := s.insts[ev.Instance]
	if inst == nil || inst.m.State() != sm.Draining {
		return
	}
	if ev.TimedOut {
		s.log.Warn().Str("instance", inst.name).Msg("drain timeout: requests still in flight, stopping anyway")
	}
	s.stopProcess(inst)
}

// stopProcess sends SIGTERM, then SIGKILL after the grace period, to the
// instance's process group. Its exit arrives as an Exited event.
func (s *Supervisor) stopProcess(inst *instance) {
	if inst.stopping || inst.proc == nil {
		return
	}
	inst.stopping = true
	grace := time.Duration(s.cfg.Workers.ShutdownGracePeriodMs) * time.Millisecond
	go inst.proc.Stop(grace)
}
