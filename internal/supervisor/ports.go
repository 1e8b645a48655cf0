package supervisor

import (
	"fmt"
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// noPort handles a start that found no free port in the configured range:
// it is recorded (a ports_exhausted record of the worker, with the start's
// reason), logged, and retried with the crash backoff like a failed start.
// No instance name is used up: nothing was started.
func (s *Supervisor) noPort(sl *slot, reason string, batch *pendingReload, cause error) {
	w := sl.w
	lo, hi := s.cfg.Workers.PortRangeStart, s.cfg.Workers.PortRangeEnd
	mine := 0
	for _, in := range s.insts {
		if in.port >= lo && in.port <= hi {
			mine++
		}
	}
	base := time.Duration(s.cfg.Workers.RestartDelayMs) * time.Millisecond
	limit := time.Duration(s.cfg.Workers.RestartBackoffMaxMs) * time.Millisecond
	detail := fmt.Sprintf("port_range_start..port_range_end (%d..%d) is exhausted: %d port(s) held by instances, the rest by other processes; retrying in %s (widen the range in config/server.yaml or free ports)",
		lo, hi, mine, backoff(base, limit, sl.failures))
	s.log.Error().Err(cause).Str("worker", w.f.name).Int("port_range_start", lo).Int("port_range_end", hi).Msg("no free port")
	// Nothing follows this record but the retry timer, whose start will
	// need its own record; a failure here is logged by record.
	_ = s.record(&store.Record{Worker: w.f.name, Event: sm.EventPortsExhausted, Reason: reason, Detail: detail})
	s.failBatch(batch, w.f.name+": "+detail)
	s.scheduleRestart(sl, reason)
}
