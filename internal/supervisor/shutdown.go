package supervisor

import (
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// onShutdown stops everything: timers and builds are dropped, starting
// instances stopped, healthy ones drained; Run returns once none is left
// (forceKill at drain + grace + 5 s is the backstop). Records that fail
// meanwhile do not hold it up (writeahead.go).
func (s *Supervisor) onShutdown() {
	if s.shutting {
		return
	}
	s.shutting = true
	grace := time.Duration(s.cfg.Workers.ShutdownGracePeriodMs) * time.Millisecond
	s.killAt = time.Now().Add(time.Duration(s.cfg.Workers.DrainTimeoutMs)*time.Millisecond + grace + 5*time.Second)
	for _, w := range s.workers {
		w.roll = nil
		for _, sl := range w.slots {
			if sl.timer != nil {
				sl.timer.Stop()
				sl.timer = nil
			}
		}
	}
	for _, b := range s.builds {
		s.dropBuild(b)
	}
	for _, name := range sortedKeys(s.insts) {
		inst := s.insts[name]
		switch inst.m.State() {
		case sm.Starting:
			if err := s.transition(inst, sm.Stop, sm.ReasonShutdown, nil); err == nil {
				if inst.cancel != nil {
					inst.cancel()
				}
				if inst.sl.next == inst {
					inst.sl.next = nil
				}
				s.resolve(inst, false, inst.name+": server shutting down")
				if inst.proc == nil {
					delete(s.insts, name)
				} else {
					s.stopProcess(inst)
				}
			}
		case sm.Healthy:
			s.drain(inst, sm.ReasonShutdown, "server stopping")
		}
	}
	s.failReloads("server is shutting down")
}

// forceKill runs when shutdown overran its deadline.
func (s *Supervisor) forceKill() {
	for _, inst := range s.insts {
		if inst.proc != nil {
			s.log.Error().Str("instance", inst.name).Msg("shutdown deadline passed; killing")
			_ = inst.proc.Signal(9)
		} else {
			delete(s.insts, inst.name)
		}
	}
}
