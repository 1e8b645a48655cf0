package supervisor

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// warmConns is the most connections a new instance gets before traffic
// (proxy.Backend.Warm), as many as the load test's clients; warmTimeout
// bounds the warm-up.
const (
	warmConns   = 64
	warmTimeout = 50 * time.Millisecond
)

// AssetSignal is sent to a worker's process group when only its private/ (or
// public/) files changed, so it can reload templates without a restart.
const AssetSignal = "SIGUSR1"

// Options configure a Supervisor.
type Options struct {
	Root    string // absolute app root
	Mode    string // "dev" or "prod"
	Listen  string // shown in status
	Config  *config.Config
	Store   *store.Store
	Proxy   *proxy.Proxy
	Logger  zerolog.Logger
	Version string
	// Builds are the results of the builds made before Run (dev mode); they
	// are recorded right after server_start.
	Builds []events.BuildFinished
	// Dev, when set (dev mode), is told about swaps and build failures.
	Dev DevNotifier
	// Reap is how orphans of a crashed server are stopped (tests may wrap it).
	Reap func(pid int, ticks uint64, grace time.Duration) (bool, error)
}

// Supervisor is the event loop that owns all worker state.
type Supervisor struct {
	root    string
	mode    string
	listen  string
	version string
	cfg     *config.Config
	st      *store.Store
	px      *proxy.Proxy
	log     zerolog.Logger
	reap    func(int, uint64, time.Duration) (bool, error)
	// appendRecord is st.Append; tests wrap it to make chosen appends fail.
	appendRecord func(*store.Record) error
	initial      []events.BuildFinished
	dev          DevNotifier

	warmTimeout time.Duration // bounds a successor's warm-up (tests stretch it)

	builds       map[string]*buildState // dev builds in progress
	serverBuild  *buildState
	buildSeq     uint64
	buildSem     chan struct{}
	buildFailing map[string]bool

	events  chan events.Event
	quit    chan struct{} // closed when Run returns
	started chan struct{} // closed once Run has recorded server_start (or failed to)
	ctx     context.Context
	cancel  context.CancelFunc

	workers  map[string]*worker
	insts    map[string]*instance
	nextNum  map[string]uint64
	reloads  []*pendingReload
	closing  atomic.Bool
	stamps   map[string]fileStamp // config files and the server binary
	shutting bool
	killAt   time.Time // shutdown hard deadline
	lastPort int

	routesStale bool // a worker was added: publish its route after this event

	scaleTicker *time.Ticker // autoscaling samples (scale.go); nil when none autoscales

	status atomic.Pointer[snapshot]
	gates  atomic.Int32 // health gates running (health.go)
}

// snapshot is what readers see: the status as of the last event, plus the
// backends whose live counters Status reads.
type snapshot struct {
	st       *Status
	backends map[string]*proxy.Backend
}

// New prepares a supervisor; Run starts it.
func New(o Options) *Supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Supervisor{
		root: o.Root, mode: o.Mode, listen: o.Listen, version: o.Version,
		cfg: o.Config, st: o.Store, px: o.Proxy, log: o.Logger, reap: o.Reap, initial: o.Builds, dev: o.Dev,
		warmTimeout: warmTimeout,
		events:      make(chan events.Event, 1024),
		quit:        make(chan struct{}),
		started:     make(chan struct{}),
		ctx:         ctx,
		cancel:      cancel,
		workers:     map[string]*worker{},
		insts:       map[string]*instance{},
		nextNum:     map[string]uint64{},
		stamps:      map[string]fileStamp{},

		builds:       map[string]*buildState{},
		buildFailing: map[string]bool{},
		buildSem:     make(chan struct{}, max(o.Config.Deployment.Dev.Build.ParallelBuilds, 1)),
	}
	if s.reap == nil {
		s.reap = process.Reap
	}
	if o.Store != nil {
		s.appendRecord = o.Store.Append
	}
	s.prepublishRoutes()
	s.status.Store(&snapshot{st: &Status{Running: true, PID: os.Getpid(), Mode: s.mode, Listen: s.listen, Workers: []WorkerStatus{}}})
	return s
}

// Send hands an event to the loop. It never blocks once the loop has ended.
func (s *Supervisor) Send(ev events.Event) {
	select {
	case s.events <- ev:
	case <-s.quit:
	}
}

// Done is closed when Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.quit }

// Status returns the latest published snapshot, with live request counters.
func (s *Supervisor) Status() *Status {
	snap := s.status.Load()
	st := *snap.st
	st.Workers = make([]WorkerStatus, len(snap.st.Workers))
	for i, w := range snap.st.Workers {
		w.Instances = append([]InstanceStatus(nil), w.Instances...)
		for j := range w.Instances {
			if b := snap.backends[w.Instances[j].Instance]; b != nil {
				fl, sv := b.Inflight(), b.Served()
				w.Instances[j].Inflight, w.Instances[j].Served = &fl, &sv
			}
		}
		st.Workers[i] = w
	}
	return &st
}

// Reload runs a change check and waits for its result.
func (s *Supervisor) Reload(ctx context.Context, source string) events.ReloadResult {
	reply := make(chan events.ReloadResult, 1)
	s.Send(events.Reload{Source: source, Reply: reply})
	select {
	case r := <-reply:
		return r
	case <-s.quit:
		return events.ReloadResult{Error: "server is shutting down"}
	case <-ctx.Done():
		return events.ReloadResult{Error: ctx.Err().Error()}
	}
}

// Run recovers from the log, starts every worker and consumes events until a
// Shutdown event has stopped every instance.
// Started is closed once Run has recorded server_start (or found that it
// cannot): what answers for the server (the admin socket) waits for it.
func (s *Supervisor) Started() <-chan struct{} { return s.started }

func (s *Supervisor) Run() error {
	defer close(s.quit)
	defer s.cancel()
	defer s.stopScaler()
	if err := s.recover(); err != nil {
		return err
	}
	if err := s.record(&store.Record{Event: sm.EventServerStart, Detail: fmt.Sprintf("pid %d, mode %s, version %s, listen %s", os.Getpid(), s.mode, s.version, s.listen)}); err != nil {
		// Nothing follows from this record itself; every start needs its
		// own, so nothing starts until the log can be written again.
		s.log.Error().Err(err).Msg("the log cannot be written: serving what can be recorded only; workers start once their start records can be written (retried with backoff)")
	}
	close(s.started)
	for _, b := range s.initial {
		s.onBuildFinished(b)
	}
	s.stampServerFiles()
	found, warnings, err := discover(s.layout())
	if err != nil {
		return err
	}
	for _, w := range warnings {
		s.log.Warn().Msg(w)
	}
	for _, name := range sortedKeys(found) {
		s.addWorker(found[name])
	}
	// Every route is in the table (503 + Retry-After until it serves)
	// before the first instance starts; a worker gone since New loses its.
	s.publishRoutes()
	for _, name := range sortedKeys(found) {
		for _, sl := range s.workers[name].slots {
			s.start(sl, sm.ReasonStartup, "", nil)
		}
	}
	s.publish()
	var killTimer <-chan time.Time
	for {
		select {
		case ev := <-s.events:
			s.handle(ev)
		case <-killTimer:
			s.forceKill()
		case now := <-s.scaleC():
			s.onScaleTick(now)
			s.publish()
		}
		if s.shutting {
			if len(s.insts) == 0 {
				// A failure is logged by record; there is nothing left to skip.
				_ = s.record(&store.Record{Event: sm.EventServerStop, Reason: sm.ReasonShutdown})
				s.publish()
				return nil
			}
			if killTimer == nil {
				killTimer = time.After(time.Until(s.killAt))
			}
		}
	}
}

// layout is the app root's layout under the current config.
func (s *Supervisor) layout() layout.Root { return s.cfg.Layout(s.root) }

func (s *Supervisor) addWorker(f found) *worker {
	route := layout.Route(f.name)
	w := &worker{f: f, route: route, settings: s.cfg.ForWorker(route), stamp: f.stamp}
	w.resize(w.settings.ClampInstances(w.settings.Instances))
	s.workers[f.name] = w
	s.routesStale = true // its route is published (no backends) after this event
	return w
}

func (s *Supervisor) handle(ev events.Event) {
	switch ev := ev.(type) {
	case events.HealthOK:
		s.onHealthOK(ev)
	case events.Warmed:
		s.onWarmed(ev)
	case events.HealthTimeout:
		s.onHealthTimeout(ev)
	case events.ProbeFailed:
		s.onProbeFailed(ev)
	case events.Exited:
		s.onExited(ev)
	case events.MaxRequests:
		s.onMaxRequests(ev)
	case events.Drained:
		s.onDrained(ev)
	case events.RestartDue:
		s.onRestartDue(ev)
	case events.Reload:
		s.onReload(ev)
	case events.Restart:
		s.onRestart(ev) // operator.go
	case events.BuildFinished:
		s.onBuildFinished(ev)
	case events.FilesChanged:
		s.onFilesChanged(ev)
	case events.Shutdown:
		s.onShutdown()
	default:
		s.log.Error().Str("event", fmt.Sprintf("%T", ev)).Msg("supervisor: unknown event")
	}
	if s.routesStale {
		s.publishRoutes()
	}
	s.publish()
}

// start launches a new instance of w (the successor, when one is serving).
func (s *Supervisor) start(sl *slot, reason, detail string, batch *pendingReload) {
	w := sl.w
	if s.shutting || w.removed || sl.next != nil {
		return
	}
	if sl.timer != nil {
		sl.timer.Stop()
		sl.timer = nil
	}
	port, err := process.FreePort(s.cfg.Workers.PortRangeStart, s.cfg.Workers.PortRangeEnd, s.portInUse)
	if err != nil {
		s.noPort(sl, reason, batch, err)
		return
	}
	num := s.nextNum[w.f.name] + 1
	inst := &instance{
		name: fmt.Sprintf("%s-%d", w.f.name, num), w: w, sl: sl, port: port,
		m: sm.New(sm.Starting), startReason: reason, batch: batch,
	}
	r := &store.Record{Worker: w.f.name, Instance: inst.name, To: sm.Starting, Event: sm.Start,
		Reason: reason, Port: port, Route: w.route, Detail: detail}
	if err := s.record(r); err != nil {
		// Write-ahead: no process without its record. Try again later
		// (with backoff) in case the disk frees up.
		s.failBatch(batch, fmt.Sprintf("%s: %v (retrying with backoff)", w.f.name, err))
		s.scheduleRestart(sl, reason)
		return
	}
	s.nextNum[w.f.name] = num
	inst.since = r.Time
	s.insts[inst.name] = inst
	sl.next = inst
	if batch != nil {
		batch.waiting[inst] = true
	}

	proc, err := process.Start(process.Spec{
		Path: w.f.bin, Dir: w.f.dir, Env: s.workerEnv(w, port),
		Logger:    s.log.With().Str("worker", w.f.name).Str("instance", inst.name).Logger(),
		TailLines: 20,
		Mark:      process.Mark(s.root, inst.name), // finds its descendants, also after a crash
	})
	if err != nil {
		s.failStart(inst, sm.StartFailed, err.Error())
		return
	}
	inst.proc = proc
	ctx, cancel := context.WithCancel(s.ctx)
	inst.cancel = cancel
	go s.waitExit(inst.name, proc)
	delay := time.Duration(s.cfg.Workers.StartupDelayMs) * time.Millisecond
	if s.mode == "dev" {
		delay = 0 // hot swaps: probe at once (fast, growing intervals)
	}
	// Probing starts while the pid is being recorded: what the probe and
	// the exit watcher report is handled after this event, in order.
	go s.healthGate(ctx, inst.name, port, w.settings, delay)
	if err := s.transition(inst, sm.Spawned, reason, nil); err != nil {
		// The pid is not in the log, so a crash of the server now could
		// not reap this process: it never serves. Stop it; the start is
		// retried with backoff.
		s.failStart(inst, sm.Stop, "its pid could not be recorded: "+err.Error())
	}
}

// failStart ends a starting instance that will never serve: its predecessor
// (if any) keeps serving and the record says rollback.
func (s *Supervisor) failStart(inst *instance, event, detail string) {
	sl := inst.sl
	reason := sm.ReasonHealthFailed
	if sl.current != nil {
		reason = sm.ReasonRollback
		detail = fmt.Sprintf("%s; %s keeps serving", detail, sl.current.name)
	}
	if inst.proc != nil {
		if t := strings.TrimSpace(inst.proc.Tail()); t != "" {
			detail += "\n" + t
		}
	}
	// It will never serve: it is stopped even when this cannot be recorded
	// (the log then shows it starting until the next server start closes it).
	_ = s.transitionAnyway(inst, event, reason, func(r *store.Record) { r.Detail = detail })
	if inst.cancel != nil {
		inst.cancel()
	}
	if sl.next == inst {
		sl.next = nil
	}
	s.resolve(inst, false, fmt.Sprintf("%s: %s (%s)", inst.name, reason, firstLine(detail)))
	s.abortRoll(inst)
	if inst.proc != nil {
		s.stopProcess(inst)
	} else {
		delete(s.insts, inst.name)
	}
	if sl.current == nil {
		s.scheduleRestart(sl, sm.ReasonHealthFailed)
	}
}

func (s *Supervisor) onHealthOK(ev events.HealthOK) {
	inst := s.insts[ev.Instance]
	if inst == nil || inst.m.State() != sm.Starting {
		return
	}
	w, sl := inst.w, inst.sl
	if err := s.transition(inst, sm.HealthOK, inst.startReason, nil); err != nil {
		s.failStart(inst, sm.Stop, "could not record health_ok: "+err.Error())
		return
	}
	inst.healthyAt = time.Now()
	inst.backend = proxy.NewBackend(w.f.name, inst.name, fmt.Sprintf("127.0.0.1:%d", inst.port), w.settings.MaxRequests)
	// Open keep-alive connections before traffic moves and have the worker
	// serve a health request on each, so the swap is not a burst of dials
	// and of first requests on a fresh process. As many as the predecessor
	// uses, at most warmConns: an idle worker gets none, so a thousand of
	// them do not hold 64,000 sockets. It runs beside the loop (under load
	// it takes tens of ms, bounded by warmTimeout); the predecessor serves
	// until Warmed arrives.
	if old := sl.current; old != nil && old.backend != nil {
		if n := min(warmConns, old.backend.IdleConns()+int(old.backend.Inflight())); n > 0 {
			inst.warming = true
			b, name := inst.backend, inst.name
			go func() {
				ev := events.Warmed{Instance: name}
				if _, err := b.Warm(n, "/health", s.warmTimeout); err != nil {
					ev.Err = err.Error()
				}
				s.Send(ev)
			}()
			return
		}
	}
	s.swapIn(inst)
}

// onWarmed swaps in an instance whose warm-up ended, unless it was
// abandoned, stopped or exited meanwhile. One that refused or dropped a
// warm-up connection (typically: it is dying) never takes the traffic; its
// predecessor keeps serving.
func (s *Supervisor) onWarmed(ev events.Warmed) {
	inst := s.insts[ev.Instance]
	if inst == nil || !inst.warming || inst.m.State() != sm.Healthy || s.shutting {
		return
	}
	if ev.Err != "" {
		keeps := ""
		if cur := inst.sl.current; cur != nil {
			keeps = "; " + cur.name + " keeps serving"
		}
		s.log.Warn().Str("instance", inst.name).Str("error", ev.Err).Msg("warm-up failed; not swapping in")
		s.drain(inst, sm.ReasonRollback, "warm-up failed: "+ev.Err)
		s.resolve(inst, false, inst.name+": "+sm.ReasonRollback+": warm-up failed: "+ev.Err+keeps)
		s.abortRoll(inst)
		return
	}
	inst.warming = false
	s.swapIn(inst)
}

// swapIn makes a healthy instance its slot's current one: the route moves
// to it and its predecessor drains.
func (s *Supervisor) swapIn(inst *instance) {
	w, sl := inst.w, inst.sl
	old := sl.current
	drained := false
	if old != nil && old.m.State() == sm.Healthy {
		// Write-ahead: the predecessor's drain is recorded before the
		// traffic moves. Until it can be, the predecessor keeps serving
		// (as the log says) and inst waits, healthy, as while warming.
		reason := old.drainReason
		if reason == "" {
			reason = sm.ReasonReplaced
		}
		if err := s.transition(old, sm.Drain, reason, func(r *store.Record) { r.Detail = "replaced by " + inst.name }); err != nil {
			// A reload waiting for it is told now, as for a start that
			// could not be recorded; the swap goes ahead by itself later.
			s.resolve(inst, false, fmt.Sprintf("%s: healthy, but %s keeps serving: %v (retrying with backoff)", inst.name, old.name, err))
			s.retrySwap(inst)
			return
		}
		old.drainReason = reason
		drained = true
	}
	sl.current = inst
	if sl.next == inst {
		sl.next = nil
	}
	s.publishRoutes()
	// Start the roll's next slot before settling this one, so a reload
	// waiting on the roll replies only when every slot is done.
	rollDone := s.advanceRoll(inst)
	s.resolve(inst, true, "")
	if inst.cancel != nil {
		inst.cancel()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	inst.cancel = cancel
	go s.probe(ctx, inst.name, inst.port, w.settings)
	if !inst.changedAt.IsZero() {
		s.log.Info().Str("worker", w.f.name).Str("instance", inst.name).Dur("since_change", time.Since(inst.changedAt)).Msg("swapped: new code serving (time from the save)")
	}
	if rollDone && (inst.startReason == sm.ReasonSourceChanged || inst.startReason == sm.ReasonBinaryChanged) {
		s.notifyReloaded(w.f.name)
	}
	if drained {
		s.drainEffects(old)
	}
}

func (s *Supervisor) onHealthTimeout(ev events.HealthTimeout) {
	inst := s.insts[ev.Instance]
	if inst == nil || inst.m.State() != sm.Starting {
		return
	}
	s.failStart(inst, sm.HealthFailed, ev.Detail)
}

func (s *Supervisor) onProbeFailed(ev events.ProbeFailed) {
	inst := s.insts[ev.Instance]
	if inst == nil || inst.m.State() != sm.Healthy || inst.sl.current != inst || inst.sl.next != nil {
		return
	}
	s.log.Warn().Str("worker", inst.w.f.name).Str("instance", inst.name).Str("detail", ev.Detail).Msg("health probe failing; replacing")
	inst.drainReason = sm.ReasonHealthFailed
	s.start(inst.sl, sm.ReasonHealthFailed, ev.Detail, nil)
}

func (s *Supervisor) onMaxRequests(ev events.MaxRequests) {
	inst := s.insts[ev.Instance]
	if inst == nil || inst.m.State() != sm.Healthy || inst.sl.current != inst || inst.sl.next != nil {
		return
	}
	inst.drainReason = sm.ReasonMaxRequests
	s.start(inst.sl, sm.ReasonMaxRequests, fmt.Sprintf("%s served %d requests", inst.name, inst.w.settings.MaxRequests), nil)
}

func (s *Supervisor) onExited(ev events.Exited) {
	inst := s.insts[ev.Instance]
	if inst == nil {
		return
	}
	w, sl := inst.w, inst.sl
	state := inst.m.State()
	// A warming instance never served: its exit is a failed start.
	beforeServing := state == sm.Starting || inst.warming
	inst.warming = false
	if state != sm.Stopped {
		reason := sm.ReasonCrashed
		switch {
		case state == sm.Draining:
			reason = inst.drainReason
		case beforeServing && sl.current != nil:
			reason = sm.ReasonRollback
		}
		detail := strings.TrimSpace(ev.Tail)
		if beforeServing && sl.current != nil {
			detail = strings.TrimSpace(fmt.Sprintf("exited before serving; %s keeps serving\n%s", sl.current.name, detail))
		}
		// An observation: the process is gone whether or not it is recorded.
		_ = s.transitionAnyway(inst, sm.Exited, reason, func(r *store.Record) {
			if ev.Signal != "" {
				r.Signal = ev.Signal
			} else {
				code := ev.Code
				r.ExitCode = &code
			}
			if reason == sm.ReasonCrashed || reason == sm.ReasonRollback {
				r.Detail = detail
			}
		})
		if inst.cancel != nil {
			inst.cancel()
		}
		if beforeServing {
			msg := fmt.Sprintf("%s: %s: exited before serving (%s)", inst.name, reason, exitString(ev))
			if sl.current != nil {
				msg += "; " + sl.current.name + " keeps serving"
			}
			s.resolve(inst, false, msg)
			s.abortRoll(inst)
		}
		if sl.current == inst {
			sl.current = nil
			s.publishRoutes()
			// A successor being warmed takes over at once rather than
			// leaving the slot without an instance until its warm-up ends.
			if next := sl.next; next != nil && next.warming {
				next.warming = false
				s.swapIn(next)
			}
		}
		if sl.next == inst {
			sl.next = nil
		}
		if state != sm.Draining && sl.current == nil && sl.next == nil && s.slotAlive(sl) {
			// Backoff resets once an instance had been healthy for a while.
			if !inst.healthyAt.IsZero() && time.Since(inst.healthyAt) >= time.Duration(s.cfg.Workers.RestartBackoffResetMs)*time.Millisecond {
				sl.failures = 0
			}
			s.scheduleRestart(sl, sm.ReasonCrashed)
		}
	}
	delete(s.insts, inst.name)
	if w.removed && w.idle() && s.workers[w.f.name] == w && !s.hasInstances(w) {
		delete(s.workers, w.f.name)
	}
}

func (s *Supervisor) hasInstances(w *worker) bool {
	for _, in := range s.insts {
		if in.w == w {
			return true
		}
	}
	return false
}

func (s *Supervisor) portInUse(port int) bool {
	for _, in := range s.insts {
		if in.port == port {
			return true
		}
	}
	return false
}

func (s *Supervisor) waitExit(name string, p *process.Process) {
	<-p.Done()
	st := p.Exit()
	s.Send(events.Exited{Instance: name, Code: st.Code, Signal: st.Signal, Tail: p.Tail()})
}

func exitString(ev events.Exited) string {
	if ev.Signal != "" {
		return "signal " + ev.Signal
	}
	return fmt.Sprintf("exit code %d", ev.Code)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
