package supervisor

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/mevdschee/tqserver/internal/core"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/logs"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/proxy"
	"github.com/mevdschee/tqserver/internal/stats"
)

// executor performs a committed step's effects. It holds what the core does
// not: processes, health-check goroutines and proxy backends, by instance
// name. It runs on the loop's goroutine; what takes time runs beside it and
// reports back with Send (or, for what must be handled before any other
// event — a process just started — with the loop's local queue).
type executor struct {
	s        *Supervisor
	procs    map[string]*process.Process
	cancels  map[string]context.CancelFunc
	backends map[string]*proxy.Backend
	canaries map[string]map[string]stats.RequestsSnapshot // canary → baselines at its start
}

func newExecutor(s *Supervisor) *executor {
	return &executor{s: s, procs: map[string]*process.Process{}, cancels: map[string]context.CancelFunc{},
		backends: map[string]*proxy.Backend{}, canaries: map[string]map[string]stats.RequestsSnapshot{}}
}

func (x *executor) do(e core.Effect) {
	s := x.s
	switch e := e.(type) {
	case core.Spawn:
		x.spawn(e)
	case core.Gate:
		proc := x.procs[e.Instance]
		ctx := x.context(e.Instance)
		go s.healthGate(ctx, e.Instance, e.Port, e.Settings, e.Delay, proc)
	case core.Warm:
		x.warm(e)
	case core.Routes:
		routes := make([]proxy.Route, 0, len(e.Table))
		for _, r := range e.Table {
			pr := proxy.Route{Prefix: r.Prefix, Worker: r.Worker}
			for _, b := range r.Backends {
				pr.Backends = append(pr.Backends, x.backend(r.Worker, b))
			}
			if r.Canary != nil {
				pr.Canary, pr.CanaryPercent = x.backend(r.Worker, *r.Canary), uint32(r.CanaryPercent)
			}
			routes = append(routes, pr)
		}
		s.px.Swap(proxy.NewTable(routes))
	case core.Probe:
		go s.probe(x.context(e.Instance), e.Instance, e.Port, e.Settings)
	case core.Cancel:
		if c := x.cancels[e.Instance]; c != nil {
			c()
			delete(x.cancels, e.Instance)
		}
	case core.Drain:
		x.drain(e)
	case core.Stop:
		if p := x.procs[e.Instance]; p != nil {
			go p.Stop(e.Grace)
		}
	case core.Kill:
		if p := x.procs[e.Instance]; p != nil {
			_ = p.Signal(syscall.SIGKILL)
		}
	case core.Forget:
		if c := x.cancels[e.Instance]; c != nil {
			c()
		}
		if b := x.backends[e.Instance]; b != nil {
			b.Close()
		}
		delete(x.cancels, e.Instance)
		delete(x.backends, e.Instance)
		delete(x.procs, e.Instance)
	case core.After:
		ev := e.Event
		time.AfterFunc(e.Delay, func() { s.Send(ev) })
	case core.Signal:
		if p := x.procs[e.Instance]; p != nil {
			if err := p.Signal(syscall.SIGUSR1); err != nil {
				s.log.Warn().Err(err).Str("instance", e.Instance).Msg("could not signal asset change")
			}
		}
	case core.CanaryStart:
		base := map[string]stats.RequestsSnapshot{}
		for _, o := range e.Old {
			if b := x.backends[o]; b != nil {
				base[o] = b.Requests()
			}
		}
		if b := x.backends[e.Instance]; b != nil {
			base[e.Instance] = b.Requests()
		}
		x.canaries[e.Instance] = base
	case core.Judge:
		s.local = append(s.local, x.judge(e))
	case core.Join:
		if p := s.batches[e.Batch]; p != nil {
			p.waiting[e.Instance] = true
		}
	case core.Settle:
		s.settle(e)
	case core.Superseded:
		if p := s.batches[e.Batch]; p != nil {
			p.supersede(e.Instance)
		}
	case core.Note:
		if p := s.batches[e.Batch]; p != nil {
			p.result.Changes = append(p.result.Changes, e.Msg)
		}
	case core.Notify:
		s.notifyReloaded(e.Worker)
	case core.Swapped:
		if !e.Since.IsZero() {
			s.log.Info().Str("instance", e.Instance).Int64("since_change_ms", time.Since(e.Since).Milliseconds()).
				Msg("swapped: new code serving (time from the save)")
		}
	case core.Log:
		ev := s.log.Info()
		switch e.Level {
		case "warn":
			ev = s.log.Warn()
		case "error":
			ev = s.log.Error()
		}
		if e.Worker != "" {
			ev = ev.Str("worker", e.Worker)
		}
		if e.Instance != "" {
			ev = ev.Str("instance", e.Instance)
		}
		ev.Msg(e.Msg)
	default:
		s.log.Error().Str("effect", fmt.Sprintf("%T", e)).Msg("supervisor: unknown effect")
	}
}

// context is a fresh context for the instance's gate or probe (the one
// before it is cancelled).
func (x *executor) context(inst string) context.Context {
	if c := x.cancels[inst]; c != nil {
		c()
	}
	ctx, cancel := context.WithCancel(x.s.ctx)
	x.cancels[inst] = cancel
	return ctx
}

func (x *executor) spawn(e core.Spawn) {
	s := x.s
	proc, err := process.Start(process.Spec{
		Path: e.Bin, Dir: e.Dir, Env: s.workerEnv(e.Worker, e.Route, e.Dir, e.Settings, e.Port),
		Logger:    s.log.With().Str("worker", e.Worker).Str("instance", e.Instance).Logger(),
		Output:    logs.Output(s.cfg, e.Worker, e.Instance), // rate limit; logs/{worker}.log when logs.dir is set
		TailLines: 20,
		Mark:      process.Mark(s.root, e.Instance), // finds its descendants, also after a crash
	})
	if err != nil {
		s.local = append(s.local, events.SpawnFailed{Instance: e.Instance, Err: err.Error()})
		return
	}
	x.procs[e.Instance] = proc
	// Spawned is handled before any other event, so the exit watcher's
	// Exited always follows it.
	s.local = append(s.local, events.Spawned{Instance: e.Instance, PID: proc.PID, StartTicks: proc.StartTicks})
	go func() {
		<-proc.Done()
		st := proc.Exit()
		s.Send(events.Exited{Instance: e.Instance, Code: st.Code, Signal: st.Signal, Tail: proc.Tail()})
	}()
}

func (x *executor) backend(worker string, b core.Backend) *proxy.Backend {
	be := x.backends[b.Instance]
	if be == nil {
		be = proxy.NewBackend(worker, b.Instance, fmt.Sprintf("127.0.0.1:%d", b.Port), b.MaxRequests)
		x.backends[b.Instance] = be
	}
	return be
}

// warm opens keep-alive connections to a successor before traffic moves and
// has it serve a health request on each: as many as the predecessor uses,
// at most warmConns (an idle worker gets none). It runs beside the loop,
// bounded by warmTimeout; the predecessor serves until Warmed.
func (x *executor) warm(e core.Warm) {
	s := x.s
	b := x.backend(e.Worker, core.Backend{Instance: e.Instance, Port: e.Port, MaxRequests: e.MaxRequests})
	n := 0
	if old := x.backends[e.From]; old != nil {
		n = min(warmConns, old.IdleConns()+int(old.Inflight()))
	}
	if n == 0 && len(e.Settings.WarmupURLs) == 0 {
		s.local = append(s.local, events.Warmed{Instance: e.Instance})
		return
	}
	name, timeout, port, ws := e.Instance, s.warmTimeout, e.Port, e.Settings
	go func() {
		ev := events.Warmed{Instance: name}
		// The configured warm-up URLs first (they may fill caches), then
		// the connections the predecessor's traffic needs.
		if err := warmupURLs(port, ws); err != nil {
			ev.Err = err.Error()
		} else if n > 0 {
			if _, err := b.Warm(n, "/health", timeout); err != nil {
				ev.Err = err.Error()
			}
		}
		s.Send(ev)
	}()
}

// drain closes the instance's backend (no new requests) and reports Drained
// once its in-flight requests are done or the timeout passed.
func (x *executor) drain(e core.Drain) {
	s := x.s
	b := x.backends[e.Instance]
	if c := x.cancels[e.Instance]; c != nil {
		c()
		delete(x.cancels, e.Instance)
	}
	if b == nil {
		s.local = append(s.local, events.Drained{Instance: e.Instance})
		return
	}
	b.Close()
	name := e.Instance
	go func() {
		deadline := time.Now().Add(e.Timeout)
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

// judge reads the proxy's counters of a canary and of the old instances
// since the canary started.
func (x *executor) judge(e core.Judge) events.CanaryJudged {
	base := x.canaries[e.Instance]
	delete(x.canaries, e.Instance)
	since := func(name string) stats.RequestsSnapshot {
		b := x.backends[name]
		if b == nil {
			return stats.RequestsSnapshot{}
		}
		return b.Requests().Sub(base[name])
	}
	p99 := func(s stats.RequestsSnapshot) float64 {
		if q, ok := s.Latency.Quantile(0.99); ok {
			return q * 1000
		}
		return 0
	}
	cn := since(e.Instance)
	var old stats.RequestsSnapshot
	for _, o := range e.Old {
		if _, ok := base[o]; ok {
			old.Add(since(o))
		}
	}
	fivexx := len(stats.Classes) - 1
	return events.CanaryJudged{Instance: e.Instance,
		Requests: cn.Total(), Errors: cn.ByClass[fivexx], P99Ms: p99(cn),
		OldRequests: old.Total(), OldErrors: old.ByClass[fivexx], OldP99Ms: p99(old)}
}
