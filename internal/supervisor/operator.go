package supervisor

import (
	"context"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// Restart replaces every instance of worker, one at a time and without
// dropping a request, with reason operator, and waits until each new
// instance serves or failed. A worker the server does not run answers an
// Error starting with events.UnknownWorker.
func (s *Supervisor) Restart(ctx context.Context, worker string) events.ReloadResult {
	reply := make(chan events.ReloadResult, 1)
	s.Send(events.Restart{Worker: worker, Reply: reply})
	select {
	case r := <-reply:
		return r
	case <-s.quit:
		return events.ReloadResult{Error: "server is shutting down"}
	case <-ctx.Done():
		return events.ReloadResult{Error: ctx.Err().Error()}
	}
}

// onRestart starts the roll of an operator restart. Its reply is settled
// like a reload's (pendingReload): it does not wait for reloads already in
// progress, but a reload arriving during the roll waits for it.
func (s *Supervisor) onRestart(ev events.Restart) {
	s.batchSeq++
	p := &pendingReload{id: s.batchSeq, source: "operator", reply: ev.Reply, waiting: map[string]bool{}}
	if s.core.Shutting() || s.closing.Load() {
		p.result.Error = "server is shutting down"
		s.finish(p)
		return
	}
	if !s.core.Has(ev.Worker) || s.known[ev.Worker] == nil || s.known[ev.Worker].nobin {
		p.result.Error = events.UnknownWorker + " " + ev.Worker
		s.finish(p)
		return
	}
	s.batches[p.id] = p
	s.reloads = append(s.reloads, p)
	s.log.Info().Str("worker", ev.Worker).Str("reason", sm.ReasonOperator).Msg("restart requested")
	p.result.Changes = append(p.result.Changes, ev.Worker+": "+sm.ReasonOperator)
	s.handle(events.RollWorker{Worker: ev.Worker, Reason: sm.ReasonOperator, Detail: "restart requested by the operator", Batch: p.id})
	p.checked = true
	s.settleReloads()
}
