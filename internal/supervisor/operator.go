package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	p := &pendingReload{reply: ev.Reply, waiting: map[*instance]bool{}}
	if s.shutting || s.closing.Load() {
		p.result.Error = "server is shutting down"
		s.finish(p)
		return
	}
	w := s.workers[ev.Worker]
	if w == nil || w.removed {
		p.result.Error = events.UnknownWorker + " " + ev.Worker
		s.finish(p)
		return
	}
	if msg := s.binaryMoved(w); msg != "" {
		p.result.Error = msg
		s.finish(p)
		return
	}
	s.reloads = append(s.reloads, p)
	s.log.Info().Str("worker", ev.Worker).Str("reason", sm.ReasonOperator).Msg("restart requested")
	p.result.Changes = append(p.result.Changes, ev.Worker+": "+sm.ReasonOperator)
	for _, sl := range w.slots {
		// A successor of an earlier reload that this roll abandons is a
		// failure of that reload only.
		if n := sl.next; n != nil && n.batch != nil && n.batch != p {
			n.batch.supersede(n.name)
		}
	}
	s.startRoll(w, sm.ReasonOperator, "restart requested by the operator", p, time.Time{})
	p.checked = true
	s.settleReloads()
}

// binaryMoved says why w must not be restarted as it is: its binary on disk
// is not the one it runs (a deploy that no reload has checked yet, or a
// binary that a reload would reject). A restart starts what is on disk, so
// it would deploy that binary unverified and under reason operator; the
// operator is told to reload instead. With timestamp checks off no reload
// ever looks at binaries, and a restart runs what is there.
func (s *Supervisor) binaryMoved(w *worker) string {
	if !s.cfg.TimestampCheckEnabled(s.mode) || statBin(w.f.bin).sameStat(w.stamp.bin) {
		return ""
	}
	b, err := s.acceptBinary(w.f, w)
	switch {
	case errors.Is(err, errSameContent):
		w.stamp.bin = b // touched or copied again: the same bytes
		return ""
	case err == nil:
		return fmt.Sprintf("%s: nothing restarted: its binary on disk is not the one running (a deploy not yet loaded); run `tqserver reload` to deploy it", w.f.name)
	default:
		return fmt.Sprintf("%s: nothing restarted: its binary on disk is not the one running and would be rejected: %v", w.f.name, err)
	}
}
