package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// Reasons (CONTRACT.md §4).
const (
	ReasonStartup          = "startup"
	ReasonBinaryChanged    = "binary_changed"
	ReasonSourceChanged    = "source_changed"
	ReasonConfigChanged    = "config_changed"
	ReasonCrashed          = "crashed"
	ReasonHealthFailed     = "health_failed"
	ReasonMaxRequests      = "max_requests"
	ReasonReplaced         = "replaced"
	ReasonRollback         = "rollback"
	ReasonShutdown         = "shutdown"
	ReasonOrphanReaped     = "orphan_reaped"
	ReasonOperator         = "operator"
	ReasonChecksumMismatch = "checksum_mismatch"
	ReasonServerUpgrade    = "server_upgrade"
)

// Server-level and worker-level record events (records without a transition).
const (
	EventServerStart          = "server_start"
	EventServerStop           = "server_stop"
	EventConfigReloaded       = "config_reloaded"
	EventConfigRejected       = "config_rejected"
	EventAssetsChanged        = "assets_changed"
	EventBinaryRejected       = "binary_rejected"
	EventServerUpgradePending = "server_upgrade_pending"
	EventBuildStarted         = "build_started"
	EventBuildOK              = "build_ok"
	EventBuildFailed          = "build_failed"
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
	initial []events.BuildFinished
	dev     DevNotifier

	warmTimeout time.Duration // bounds a successor's warm-up (tests stretch it)

	builds       map[string]*buildState // dev builds in progress
	serverBuild  *buildState
	buildSeq     uint64
	buildSem     chan struct{}
	buildFailing map[string]bool

	events chan events.Event
	quit   chan struct{} // closed when Run returns
	ctx    context.Context
	cancel context.CancelFunc

	workers  map[string]*worker
	insts    map[string]*instance
	nextNum  map[string]uint64
	reloads  []*pendingReload
	stamps   map[string]fileStamp // config files and the server binary
	shutting bool
	killAt   time.Time // shutdown hard deadline
	lastPort int

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

type worker struct {
	f        found
	route    string
	settings config.WorkerSettings
	stamp    workerStamp
	slots    []*slot // settings.Instances of them (autoscaled: min..max); each serves one instance
	roll     *roll   // a replacement of every slot, one at a time
	removed  bool
	scale    scaleState // autoscaling (scale.go)
}

// slot is one of a worker's serving positions: its instance, the successor
// being started, and its crash backoff.
type slot struct {
	w        *worker
	idx      int
	current  *instance // healthy and receiving traffic
	next     *instance // starting successor
	failures int       // consecutive failed starts / crashes, for backoff
	timer    *time.Timer
	retry    string // reason of the restart the timer will make
}

// roll replaces a worker's slots one after the other: the next slot starts
// only once the previous one's successor is healthy; a failure stops it.
type roll struct {
	reason, detail string
	batch          *pendingReload
	pos            int       // slot being replaced
	changedAt      time.Time // dev: when the change was seen
}

// serving lists the worker's healthy instances.
func (w *worker) serving() []*instance {
	var out []*instance
	for _, sl := range w.slots {
		if sl.current != nil {
			out = append(out, sl.current)
		}
	}
	return out
}

// idle reports whether no slot has an instance or a successor.
func (w *worker) idle() bool {
	for _, sl := range w.slots {
		if sl.current != nil || sl.next != nil {
			return false
		}
	}
	return true
}

// resize makes len(w.slots) == n; it returns the slots removed.
func (w *worker) resize(n int) []*slot {
	n = max(n, 1)
	for len(w.slots) < n {
		w.slots = append(w.slots, &slot{w: w, idx: len(w.slots)})
	}
	gone := w.slots[n:]
	w.slots = w.slots[:n]
	return gone
}

type instance struct {
	name        string
	w           *worker
	sl          *slot
	port        int
	m           *sm.Machine
	proc        *process.Process
	backend     *proxy.Backend
	startReason string
	drainReason string
	since       time.Time
	healthyAt   time.Time
	cancel      context.CancelFunc // stops its health gate / probe
	changedAt   time.Time          // dev: when the change that caused it was seen
	roll        *roll              // the replacement it is part of
	stopping    bool
	batch       *pendingReload
	// warming: healthy, its connections being warmed (Warmed ends it);
	// still its slot's next, and its predecessor still serves.
	warming bool
}

type pendingReload struct {
	reply   chan<- events.ReloadResult
	result  events.ReloadResult
	waiting map[*instance]bool
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
func (s *Supervisor) Run() error {
	defer close(s.quit)
	defer s.cancel()
	defer s.stopScaler()
	if err := s.recover(); err != nil {
		return err
	}
	s.record(&store.Record{Event: EventServerStart, Detail: fmt.Sprintf("pid %d, mode %s, version %s, listen %s", os.Getpid(), s.mode, s.version, s.listen)})
	for _, b := range s.initial {
		s.onBuildFinished(b)
	}
	s.stampServerFiles()
	found, warnings, err := discover(s.workersDir())
	if err != nil {
		return err
	}
	for _, w := range warnings {
		s.log.Warn().Msg(w)
	}
	for _, name := range sortedKeys(found) {
		w := s.addWorker(found[name])
		for _, sl := range w.slots {
			s.start(sl, ReasonStartup, "", nil)
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
				s.record(&store.Record{Event: EventServerStop, Reason: ReasonShutdown})
				s.publish()
				return nil
			}
			if killTimer == nil {
				killTimer = time.After(time.Until(s.killAt))
			}
		}
	}
}

func (s *Supervisor) workersDir() string {
	d := s.cfg.Workers.WorkersDir
	if d == "" {
		d = "workers"
	}
	if filepath.IsAbs(d) {
		return d
	}
	return filepath.Join(s.root, d)
}

func (s *Supervisor) addWorker(f found) *worker {
	route := proxy.WorkerRoute(f.name)
	w := &worker{f: f, route: route, settings: s.cfg.ForWorker(route), stamp: f.stamp}
	w.resize(w.settings.ClampInstances(w.settings.Instances))
	s.workers[f.name] = w
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
	case events.BuildFinished:
		s.onBuildFinished(ev)
	case events.FilesChanged:
		s.onFilesChanged(ev)
	case events.Shutdown:
		s.onShutdown()
	default:
		s.log.Error().Str("event", fmt.Sprintf("%T", ev)).Msg("supervisor: unknown event")
	}
	s.publish()
}

// record appends a record and logs it. The caller performs the effect only
// when record returns nil: no effect without its record.
func (s *Supervisor) record(r *store.Record) error {
	err := s.st.Append(r)
	ev := s.log.Info()
	if err != nil {
		ev = s.log.Error().Err(err)
	}
	if r.Worker != "" {
		ev = ev.Str("worker", r.Worker)
	}
	if r.Instance != "" {
		ev = ev.Str("instance", r.Instance).Str("from", r.From).Str("to", r.To)
	}
	ev = ev.Str("event", r.Event)
	if r.Reason != "" {
		ev = ev.Str("reason", r.Reason)
	}
	if r.PID != 0 {
		ev = ev.Int("pid", r.PID)
	}
	if r.Port != 0 {
		ev = ev.Int("port", r.Port)
	}
	if r.ExitCode != nil {
		ev = ev.Int("exit_code", *r.ExitCode)
	}
	if r.Signal != "" {
		ev = ev.Str("signal", r.Signal)
	}
	if r.Detail != "" {
		ev = ev.Str("detail", r.Detail)
	}
	ev = ev.Uint64("seq", r.Seq)
	if err != nil {
		ev.Msg("could not record; effect skipped")
		return fmt.Errorf("record %s: %w", r.Event, err)
	}
	if r.Instance != "" && r.From == "" {
		ev.Msg(r.Instance + " → " + r.To)
	} else if r.Instance != "" {
		ev.Msg(r.Instance + " " + r.From + " → " + r.To)
	} else {
		ev.Msg(r.Event)
	}
	return nil
}

// transition fires event on inst's machine and records it. On a record
// failure the machine is left unchanged.
func (s *Supervisor) transition(inst *instance, event, reason string, fill func(*store.Record)) error {
	from := inst.m.State()
	to, err := sm.Next(from, event)
	if err != nil {
		s.log.Error().Err(err).Str("instance", inst.name).Msg("supervisor: refused transition")
		return err
	}
	r := &store.Record{Worker: inst.w.f.name, Instance: inst.name, From: from, To: to, Event: event, Reason: reason, Port: inst.port}
	if inst.proc != nil {
		r.PID = inst.proc.PID
		r.StartTicks = inst.proc.StartTicks
	}
	if fill != nil {
		fill(r)
	}
	if err := s.record(r); err != nil {
		return err
	}
	if _, _, err := inst.m.Fire(event); err != nil {
		return err
	}
	inst.since = r.Time
	return nil
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
		s.log.Error().Err(err).Str("worker", w.f.name).Msg("no free port")
		s.failBatch(batch, fmt.Sprintf("%s: %v", w.f.name, err))
		s.scheduleRestart(sl, reason)
		return
	}
	num := s.nextNum[w.f.name] + 1
	inst := &instance{
		name: fmt.Sprintf("%s-%d", w.f.name, num), w: w, sl: sl, port: port,
		m: sm.New(sm.Starting), startReason: reason, batch: batch,
	}
	r := &store.Record{Worker: w.f.name, Instance: inst.name, To: sm.Starting, Event: "start",
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
	_ = s.transition(inst, sm.Spawned, reason, nil) // an observation: the process exists either way
}

// failStart ends a starting instance that will never serve: its predecessor
// (if any) keeps serving and the record says rollback.
func (s *Supervisor) failStart(inst *instance, event, detail string) {
	sl := inst.sl
	reason := ReasonHealthFailed
	if sl.current != nil {
		reason = ReasonRollback
		detail = fmt.Sprintf("%s; %s keeps serving", detail, sl.current.name)
	}
	if inst.proc != nil {
		if t := strings.TrimSpace(inst.proc.Tail()); t != "" {
			detail += "\n" + t
		}
	}
	_ = s.transition(inst, event, reason, func(r *store.Record) { r.Detail = detail })
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
		s.scheduleRestart(sl, ReasonHealthFailed)
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
		s.drain(inst, ReasonRollback, "warm-up failed: "+ev.Err)
		s.resolve(inst, false, inst.name+": "+ReasonRollback+": warm-up failed: "+ev.Err+keeps)
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
	if rollDone && (inst.startReason == ReasonSourceChanged || inst.startReason == ReasonBinaryChanged) {
		s.notifyReloaded(w.f.name)
	}
	if old != nil {
		reason := old.drainReason
		if reason == "" {
			reason = ReasonReplaced
		}
		s.drain(old, reason, "replaced by "+inst.name)
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
	inst.drainReason = ReasonHealthFailed
	s.start(inst.sl, ReasonHealthFailed, ev.Detail, nil)
}

func (s *Supervisor) onMaxRequests(ev events.MaxRequests) {
	inst := s.insts[ev.Instance]
	if inst == nil || inst.m.State() != sm.Healthy || inst.sl.current != inst || inst.sl.next != nil {
		return
	}
	inst.drainReason = ReasonMaxRequests
	s.start(inst.sl, ReasonMaxRequests, fmt.Sprintf("%s served %d requests", inst.name, inst.w.settings.MaxRequests), nil)
}

// drain stops routing to inst, waits for its in-flight requests, then stops it.
func (s *Supervisor) drain(inst *instance, reason, detail string) {
	if inst.m.State() != sm.Healthy {
		return
	}
	if err := s.transition(inst, sm.Drain, reason, func(r *store.Record) { r.Detail = detail }); err != nil {
		return
	}
	inst.drainReason = reason
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
		reason := ReasonCrashed
		switch {
		case state == sm.Draining:
			reason = inst.drainReason
		case beforeServing && sl.current != nil:
			reason = ReasonRollback
		}
		detail := strings.TrimSpace(ev.Tail)
		if beforeServing && sl.current != nil {
			detail = strings.TrimSpace(fmt.Sprintf("exited before serving; %s keeps serving\n%s", sl.current.name, detail))
		}
		_ = s.transition(inst, sm.Exited, reason, func(r *store.Record) {
			if ev.Signal != "" {
				r.Signal = ev.Signal
			} else {
				code := ev.Code
				r.ExitCode = &code
			}
			if reason == ReasonCrashed || reason == ReasonRollback {
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
			s.scheduleRestart(sl, ReasonCrashed)
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
			if err := s.transition(inst, sm.Stop, ReasonShutdown, nil); err == nil {
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
			s.drain(inst, ReasonShutdown, "server stopping")
		}
	}
	for _, p := range s.reloads {
		p.result.Error = "server is shutting down"
		p.reply <- p.result
	}
	s.reloads = nil
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

func (s *Supervisor) portInUse(port int) bool {
	for _, in := range s.insts {
		if in.port == port {
			return true
		}
	}
	return false
}

// workerEnv is the server's environment, then the configured env entries,
// then the contract variables, which always win.
func (s *Supervisor) workerEnv(w *worker, port int) []string {
	vars := map[string]string{
		"WORKER_BASE": w.f.dir, "WORKER_NAME": w.f.name, "WORKER_ROUTE": w.route,
		"WORKER_PORT": fmt.Sprint(port), "DEPLOYMENT_MODE": s.mode,
	}
	set := map[string]string{}
	for k, v := range w.settings.Env {
		set[k] = config.ExpandWorkerVars(v, vars)
	}
	set["PORT"] = fmt.Sprint(port)
	set["TQ_WORKER_PORT"] = fmt.Sprint(port)
	set["TQ_WORKER_NAME"] = w.f.name
	set["TQ_WORKER_ROUTE"] = w.route
	set["TQ_WORKER_BASE"] = w.f.dir
	set["TQ_MODE"] = s.mode
	set["TQ_READ_TIMEOUT_SECONDS"] = fmt.Sprint(w.settings.ReadTimeoutSeconds)
	set["TQ_WRITE_TIMEOUT_SECONDS"] = fmt.Sprint(w.settings.WriteTimeoutSeconds)
	set["TQ_IDLE_TIMEOUT_SECONDS"] = fmt.Sprint(w.settings.IdleTimeoutSeconds)
	if w.settings.GoMaxProcs > 0 {
		set["GOMAXPROCS"] = fmt.Sprint(w.settings.GoMaxProcs)
	}
	if w.settings.GoMemLimit != "" {
		set["GOMEMLIMIT"] = w.settings.GoMemLimit
	}
	env := make([]string, 0, len(os.Environ())+len(set))
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok {
			continue
		}
		env = append(env, kv)
	}
	for _, k := range sortedKeys(set) {
		env = append(env, k+"="+set[k])
	}
	return env
}

func (s *Supervisor) publishRoutes() {
	routes := make([]proxy.Route, 0, len(s.workers))
	for _, w := range s.workers {
		if w.removed {
			continue
		}
		r := proxy.Route{Prefix: w.route, Worker: w.f.name}
		for _, in := range w.serving() {
			r.Backends = append(r.Backends, in.backend)
		}
		routes = append(routes, r)
	}
	s.px.Swap(proxy.NewTable(routes))
}

// publish stores a fresh status snapshot for readers.
func (s *Supervisor) publish() {
	st := &Status{Running: !s.shutting || len(s.insts) > 0, PID: os.Getpid(), Mode: s.mode, Listen: s.listen, Workers: []WorkerStatus{}}
	byWorker := map[string][]InstanceStatus{}
	backends := map[string]*proxy.Backend{}
	for _, name := range sortedKeys(s.insts) {
		in := s.insts[name]
		is := InstanceStatus{Instance: in.name, State: in.m.State(), Port: in.port, Since: in.since, Reason: in.startReason}
		if in.proc != nil {
			is.PID = in.proc.PID
		}
		if in.backend != nil {
			backends[in.name] = in.backend
		}
		byWorker[in.w.f.name] = append(byWorker[in.w.f.name], is)
	}
	for _, name := range sortedKeys(s.workers) {
		w := s.workers[name]
		ins := byWorker[name]
		if ins == nil {
			ins = []InstanceStatus{}
		}
		st.Workers = append(st.Workers, WorkerStatus{Name: name, Route: w.route, Instances: ins})
	}
	s.status.Store(&snapshot{st: st, backends: backends})
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
			sl.current.drainReason = ReasonReplaced
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
