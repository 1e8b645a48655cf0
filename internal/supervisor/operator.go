package supervisor

import (
	"context"
	"errors"
	"fmt"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// Restart replaces every instance of worker, one at a time and without
// dropping a request, with reason operator, and waits until each new
// instance serves or failed. A worker the server does not run answers an
// Error starting with events.UnknownWorker.
func (s *Supervisor) Restart(ctx context.Context, worker string) events.ReloadResult {
	reply := make(chan events.ReloadResult, 1)
	return s.await(ctx, events.Restart{Worker: worker, Reply: reply}, reply)
}

// Rollback swaps worker back to its previous good binary with zero downtime
// (reason rollback) and waits until each new instance serves or failed. It
// fails with a one-line reason when there is no previous binary.
func (s *Supervisor) Rollback(ctx context.Context, worker string) events.ReloadResult {
	reply := make(chan events.ReloadResult, 1)
	return s.await(ctx, events.Restart{Worker: worker, Reply: reply, Rollback: true}, reply)
}

// onRestart starts an operator restart. Its reply is settled like a
// reload's (pendingReload): it does not wait for reloads already in
// progress, but a reload arriving during the roll waits for it. First the
// binary on disk is compared with the running one, beside the loop.
func (s *Supervisor) onRestart(ev events.Restart) {
	s.batchSeq++
	p := &pendingReload{id: s.batchSeq, source: "operator", reply: ev.Reply, waiting: map[string]bool{}}
	if s.core.Shutting() || s.closing.Load() {
		p.result.Error = "server is shutting down"
		s.finish(p)
		return
	}
	k := s.known[ev.Worker]
	if !s.core.Has(ev.Worker) || k == nil || k.nobin {
		p.result.Error = events.UnknownWorker + " " + ev.Worker
		s.finish(p)
		return
	}
	if ev.Rollback {
		_, prev := s.core.Binaries(ev.Worker)
		if prev == "" {
			p.result.Error = ev.Worker + ": no previous binary to roll back to (one is kept when a reload deploys a new binary)"
			s.finish(p)
			return
		}
		s.batches[p.id] = p
		s.reloads = append(s.reloads, p)
		s.log.Info().Str("worker", ev.Worker).Str("reason", sm.ReasonRollback).Str("binary", prev).Msg("rollback requested")
		p.result.Changes = append(p.result.Changes, ev.Worker+": "+sm.ReasonRollback+" to "+prev)
		s.handle(events.RollWorker{Worker: ev.Worker, Reason: sm.ReasonRollback, Bin: prev, Batch: p.id,
			Detail: "rollback requested by the operator: back to the previous binary " + prev})
		p.checked = true
		s.settleReloads()
		return
	}
	s.batches[p.id] = p
	s.reloads = append(s.reloads, p)
	if !s.cfg.TimestampCheckEnabled(s.mode) {
		s.startOperatorRoll(p, ev.Worker)
		return
	}
	f, old := k.f, k.stamp.bin
	var pids []int
	for _, w := range s.core.Workers() {
		if w.Name == ev.Worker {
			for _, in := range w.Instances {
				if in.PID > 0 {
					pids = append(pids, in.PID)
				}
			}
		}
	}
	go func() {
		c := restartChecked{p: p, worker: f.name}
		if !statBin(f.bin).sameStat(old) {
			c.stamp, c.err = acceptBinary(f, &old, pids)
			c.moved = true
		}
		s.Send(events.Local{V: c})
	}()
}

// restartChecked is the comparison of an operator restart's binary.
type restartChecked struct {
	p      *pendingReload
	worker string
	moved  bool // its stat differs from the running binary's
	stamp  binStamp
	err    error
}

// onRestartChecked: a restart starts what is on disk, so a binary that is
// not the one running (a deploy no reload has checked, or one a reload
// would reject) would be deployed unverified under reason operator; the
// operator is told to reload instead.
func (s *Supervisor) onRestartChecked(c restartChecked) {
	p := c.p
	k := s.known[c.worker]
	switch {
	case s.core.Shutting():
		p.result.Error = "server is shutting down"
	case k == nil || !s.core.Has(c.worker):
		p.result.Error = events.UnknownWorker + " " + c.worker
	case !c.moved:
	case errors.Is(c.err, errSameContent):
		k.stamp.bin = c.stamp // touched or copied again: the same bytes
	case c.err == nil:
		p.result.Error = fmt.Sprintf("%s: nothing restarted: its binary on disk is not the one running (a deploy not yet loaded); run `tqserver reload` to deploy it", c.worker)
	default:
		p.result.Error = fmt.Sprintf("%s: nothing restarted: its binary on disk is not the one running and would be rejected: %v", c.worker, c.err)
	}
	if p.result.Error != "" {
		p.checked = true
		s.settleReloads()
		return
	}
	s.startOperatorRoll(p, c.worker)
}

func (s *Supervisor) startOperatorRoll(p *pendingReload, worker string) {
	s.log.Info().Str("worker", worker).Str("reason", sm.ReasonOperator).Msg("restart requested")
	p.result.Changes = append(p.result.Changes, worker+": "+sm.ReasonOperator)
	s.handle(events.RollWorker{Worker: worker, Reason: sm.ReasonOperator, Detail: "restart requested by the operator", Batch: p.id})
	p.checked = true
	s.settleReloads()
}
