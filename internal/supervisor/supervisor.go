package supervisor

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/core"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// The supervisor is the shell around the decision core (internal/core):
//
//	sources (watcher, signals, admin, health gates, process exits, timers)
//	  → typed events → one loop → core.Step → records appended (fsync'd)
//	  → core.Commit → executor → effects (processes, probes, routes, timers)
//
// The loop is the only goroutine that touches the registry. What needs I/O
// (config loads, discovery, stat and hash checks, health probes, builds,
// drains) runs beside it and comes back as events. docs/architecture.md has
// the picture.

// warmConns is the most connections a new instance gets before traffic
// (proxy.Backend.Warm); warmTimeout bounds the warm-up.
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
	// Adopt: this server replaces one that handed over to it (upgrade.go):
	// live, healthy instances of the log are adopted, not reaped.
	Adopt bool
	// Upgrade, when set, hands over to a changed server/bin/tqserver.
	Upgrade Upgrader
}

// Supervisor runs the loop that owns all worker state.
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
	// appendRecords is st.AppendAll; tests wrap it to make appends fail.
	appendRecords func([]*store.Record) error
	initial       []events.BuildFinished
	dev           DevNotifier

	warmTimeout time.Duration // bounds a successor's warm-up (tests stretch it)

	core *core.Core
	x    *executor

	builds       map[string]*buildState // dev builds in progress
	serverBuild  *buildState
	buildSeq     uint64
	buildSem     chan struct{}
	buildFailing map[string]bool

	events  chan events.Event
	local   []events.Event // produced by the executor during a step; handled first
	quit    chan struct{}  // closed when Run returns
	started chan struct{}  // closed once Run has recorded server_start (or failed to)
	ctx     context.Context
	cancel  context.CancelFunc

	known    map[string]*known // workers on disk and what a reload compares
	reloads  []*pendingReload
	batches  map[uint64]*pendingReload
	batchSeq uint64
	checking bool             // a change check runs beside the loop
	queued   []*pendingReload // reloads waiting for their check
	closing  atomic.Bool
	stamps   map[string]fileStamp // config files and the server binary

	scaleTicker *time.Ticker // autoscaling samples; nil when none autoscales

	// Server self-upgrade (upgrade.go).
	upgrader  Upgrader
	adopting  bool
	adoptees  []adoptee
	adoptDone chan struct{}
	handedOff bool

	status atomic.Pointer[snapshot]
	gates  atomic.Int32 // health gates running (health.go)
}

// known is a worker the supervisor runs: where it lives and the stamps of
// its files as last accepted.
type known struct {
	f     found
	stamp workerStamp
	nobin bool // dev: sources only, its first build failed; the route answers 503
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
		warmTimeout:  warmTimeout,
		events:       make(chan events.Event, 1024),
		quit:         make(chan struct{}),
		started:      make(chan struct{}),
		ctx:          ctx,
		cancel:       cancel,
		known:        map[string]*known{},
		batches:      map[uint64]*pendingReload{},
		stamps:       map[string]fileStamp{},
		builds:       map[string]*buildState{},
		buildFailing: map[string]bool{},
		buildSem:     make(chan struct{}, max(o.Config.Deployment.Dev.Build.ParallelBuilds, 1)),
		upgrader:     o.Upgrade,
		adopting:     o.Adopt,
		adoptDone:    make(chan struct{}),
	}
	if s.reap == nil {
		s.reap = process.Reap
	}
	if o.Store != nil {
		s.appendRecords = o.Store.AppendAll
	}
	s.x = newExecutor(s)
	s.prepublishRoutes()
	s.status.Store(&snapshot{st: &Status{Running: true, PID: os.Getpid(), Mode: s.mode, Listen: s.listen, Workers: []WorkerStatus{}}})
	return s
}

// coreOptions are the config's rules for the core.
func (s *Supervisor) coreOptions() core.Options {
	wc := s.cfg.Workers
	lo, hi := wc.PortRangeStart, wc.PortRangeEnd
	return core.Options{
		RestartDelay: wc.RestartDelay(), RestartBackoffMax: wc.RestartBackoffMax(),
		RestartBackoffReset: wc.RestartBackoffReset(), DrainTimeout: wc.DrainTimeout(),
		Grace: wc.ShutdownGracePeriod(), StartupDelay: wc.StartupDelay(), Dev: s.mode == "dev",
		PortLo: lo, PortHi: hi,
		Port: func(inUse func(int) bool) (int, error) { return process.FreePort(lo, hi, inUse) },
	}
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

// Started is closed once Run has recorded server_start (or found that it
// cannot): what answers for the server (the admin socket) waits for it.
func (s *Supervisor) Started() <-chan struct{} { return s.started }

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
				rq := b.Requests()
				w.Instances[j].Requests = rq.ClassMap()
				if q, ok := rq.Latency.Quantile(0.99); ok {
					ms := q * 1000
					w.Instances[j].P99Ms = &ms
				}
			}
		}
		st.Workers[i] = w
	}
	return &st
}

// Reload runs a change check and waits for its result.
func (s *Supervisor) Reload(ctx context.Context, source string) events.ReloadResult {
	reply := make(chan events.ReloadResult, 1)
	return s.await(ctx, events.Reload{Source: source, Reply: reply}, reply)
}

// await sends ev to the loop and waits for its result on reply.
func (s *Supervisor) await(ctx context.Context, ev events.Event, reply <-chan events.ReloadResult) events.ReloadResult {
	s.Send(ev)
	select {
	case r := <-reply:
		return r
	case <-s.quit:
		select {
		case r := <-reply: // answered just before the loop ended (a hand-off)
			return r
		default:
		}
		return events.ReloadResult{Error: "server is shutting down"}
	case <-ctx.Done():
		select {
		case r := <-reply:
			return r
		default:
		}
		return events.ReloadResult{Error: ctx.Err().Error()}
	}
}

// BeginShutdown is called when the server starts stopping, before it waits
// for in-flight requests: from then on a reload answers "server is shutting
// down" and starts nothing. Safe from any goroutine.
func (s *Supervisor) BeginShutdown() { s.closing.Store(true) }

// Run recovers from the log, starts every worker and consumes events until a
// Shutdown event has stopped every instance.
func (s *Supervisor) Run() error {
	defer close(s.quit)
	defer s.cancel()
	defer s.stopScaler()
	adoptDone := sync.OnceFunc(func() { close(s.adoptDone) })
	defer adoptDone()
	floors, err := s.recover()
	if err != nil {
		close(s.started)
		return err
	}
	s.core = core.New(s.coreOptions(), floors)
	if err := s.record(&store.Record{Event: sm.EventServerStart, Detail: fmt.Sprintf("pid %d, mode %s, version %s, listen %s", os.Getpid(), s.mode, s.version, s.listen)}); err != nil {
		// Every start needs its own record: nothing starts until the log
		// can be written again (the start step is retried with backoff).
		s.log.Error().Err(err).Msg("the log cannot be written: workers start once their start records can be written (retried with backoff)")
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
	s.adoptAll(found)
	adoptDone()
	// One step: every route is in the table (503 + Retry-After until it
	// serves) before the first instance starts, and every start record is
	// in the log in one transaction.
	var add events.AddWorkers
	for _, name := range sortedKeys(found) {
		add.Workers = append(add.Workers, s.addWorker(found[name], sm.ReasonStartup, "", 0))
	}
	s.handle(add)
	if s.mode == "dev" {
		// Sources whose first build failed: their routes answer 503.
		srcs, _, _ := s.layout().Discover(layout.Sources)
		for _, f := range srcs {
			if s.known[f.Name] == nil {
				s.addSourceOnly(f.Name)
			}
		}
	}
	for {
		for len(s.local) > 0 {
			ev := s.local[0]
			s.local = s.local[1:]
			s.handle(ev)
		}
		s.publish()
		if s.handedOff {
			s.failReloads("the server was upgraded; ask the new one")
			return ErrHandedOff
		}
		if s.core.Done() {
			// A failure is logged by record; there is nothing left to skip.
			_ = s.record(&store.Record{Event: sm.EventServerStop, Reason: sm.ReasonShutdown})
			s.status.Load().st.Running = false
			return nil
		}
		select {
		case ev := <-s.events:
			s.handle(ev)
		case now := <-s.scaleC():
			s.sampleScale(now)
		}
	}
}

// layout is the app root's layout under the current config.
func (s *Supervisor) layout() layout.Root { return s.cfg.Layout(s.root) }

// addWorker notes f as known and returns the event that runs it.
func (s *Supervisor) addWorker(f found, reason, detail string, batch uint64) events.AddWorker {
	s.known[f.name] = &known{f: f, stamp: f.stamp}
	route := layout.Route(f.name)
	return events.AddWorker{Worker: f.name, Route: route, Bin: f.bin, Dir: f.dir,
		Settings: s.cfg.ForWorker(route), Reason: reason, Detail: detail, Batch: batch}
}

// handle is the loop's dispatch: the shell's own events, or a core step.
func (s *Supervisor) handle(ev events.Event) {
	switch ev := ev.(type) {
	case events.Reload:
		s.onReload(ev)
	case events.Local:
		switch v := ev.V.(type) {
		case checkDone:
			s.onCheckDone(v)
		case restamped:
			if k := s.known[v.worker]; k != nil {
				k.stamp = v.stamp
			}
		case retry:
			s.step(v.ev, v.attempt)
		case restartChecked:
			s.onRestartChecked(v)
		}
	case events.Restart:
		s.onRestart(ev) // operator.go
	case events.BuildFinished:
		s.onBuildFinished(ev)
	case events.FilesChanged:
		s.onFilesChanged(ev)
	case events.Shutdown:
		for _, b := range s.builds {
			s.dropBuild(b)
		}
		s.step(ev, 0)
		s.failReloads("server is shutting down")
	default:
		s.step(ev, 0)
	}
}

// retry is an event whose step could not be recorded, sent again.
type retry struct {
	ev      events.Event
	attempt int
}

// step runs one core step: records first (one fsync'd append), then, only
// if they are in the log (or the step observes or removes), its effects.
func (s *Supervisor) step(ev events.Event, attempt int) {
	p := s.core.Step(time.Now(), ev)
	err := s.appendRecords(p.Records)
	if err != nil && !p.Anyway {
		s.core.Abort(p)
		s.logRecords(p.Records, err, msgEffectSkipped)
		s.failBatchOf(ev, err)
		if p.OnFail != nil {
			u := *p.OnFail
			u.Err = err.Error()
			s.step(u, 0)
		}
		if p.Retry {
			delay := p.RetryIn
			for range attempt {
				delay = min(delay*2, max(s.cfg.Workers.RestartBackoffMax(), delay))
			}
			s.log.Warn().Str("event", core.EventString(ev)).Int64("retry_in_ms", delay.Milliseconds()).Int("attempt", attempt+1).
				Msg("not done: its record could not be written; retrying")
			next := events.Local{V: retry{ev: ev, attempt: attempt + 1}}
			time.AfterFunc(delay, func() { s.Send(next) })
		}
		return
	}
	msg := msgStoppedUnrecorded
	if s.core.Shutting() {
		msg = msgShutdownUnrecorded
	}
	s.logRecords(p.Records, err, msg)
	if cerr := s.core.Commit(p, err == nil); cerr != nil {
		s.log.Error().Err(cerr).Msg("supervisor: the registry and the log disagree")
	}
	for _, e := range p.Effects() {
		s.x.do(e)
	}
}

// The messages of a failed append, as logged at error level.
const (
	msgEffectSkipped      = "could not record; effect skipped"
	msgShutdownUnrecorded = "could not record during shutdown; stopping anyway (this record is lost)"
	msgStoppedUnrecorded  = "could not record; stopped anyway (this record is lost)"
)

// record appends one record of the shell's own (server, config, builds)
// and logs it. The caller performs the effect only when it returns nil.
func (s *Supervisor) record(r *store.Record) error {
	err := s.appendRecords([]*store.Record{r})
	s.logRecords([]*store.Record{r}, err, msgEffectSkipped)
	if err != nil {
		return fmt.Errorf("record %s: %w", r.Event, err)
	}
	return nil
}

func (s *Supervisor) logRecords(rs []*store.Record, err error, failMsg string) {
	for _, r := range rs {
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
		switch {
		case err != nil:
			ev.Msg(failMsg)
		case r.Instance != "" && r.From == "":
			ev.Msg(r.Instance + " → " + r.To)
		case r.Instance != "":
			ev.Msg(r.Instance + " " + r.From + " → " + r.To)
		default:
			ev.Msg(r.Event)
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
