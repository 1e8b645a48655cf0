package core

import (
	"fmt"
	"sort"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// Options are what the core decides with besides the registry.
type Options struct {
	RestartDelay        time.Duration // first backoff
	RestartBackoffMax   time.Duration
	RestartBackoffReset time.Duration // healthy this long resets the backoff
	DrainTimeout        time.Duration
	Grace               time.Duration // SIGTERM → SIGKILL
	StartupDelay        time.Duration // before the first health check (prod)
	Dev                 bool          // probe at once; notify browsers
	PortLo, PortHi      int
	// Port picks a free port that inUse does not claim (process.FreePort in
	// the server; a deterministic allocator in tests). The one input the
	// core asks for during a step.
	Port func(inUse func(int) bool) (int, error)
}

// Core is the registry and the rules. Only the loop's goroutine uses it.
type Core struct {
	o        Options
	workers  map[string]*worker
	shutting bool
	rollSeq  uint64
	tx       *txn                // the open step, if any
	releases map[uint64]*release // atomic releases in progress
	// floors: instance numbers used before this registry (replayed log);
	// a worker's numbering continues above its floor.
	floors map[string]uint64
}

// New returns an empty registry. Numbers continue instance numbering after a
// replayed log: worker → the highest N already used.
func New(o Options, numbers map[string]uint64) *Core {
	c := &Core{o: o, workers: map[string]*worker{}, floors: map[string]uint64{}, releases: map[uint64]*release{}}
	for w, n := range numbers {
		c.floors[w] = n
	}
	return c
}

// Configure replaces the options (a config reload), between steps.
func (c *Core) Configure(o Options) { c.o = o }

// Plan is one step's outcome: records to append, then effects to perform.
type Plan struct {
	Records []*store.Record
	// Anyway: commit (and perform the effects) even when the records could
	// not be appended — the step observes or removes.
	Anyway bool
	// Retry: when the append fails, send the event again after RetryIn.
	Retry   bool
	RetryIn time.Duration
	// OnFail, when set, is stepped (with its Err filled in) when the
	// append fails and the plan is aborted.
	OnFail  *events.Unrecorded
	effects []Effect
	tx      *txn
}

// Effects are the effects of a committed plan.
func (p *Plan) Effects() []Effect { return p.effects }

// txn is one step's view: workers it touched are copies, written back on commit.
type txn struct {
	now          time.Time
	ws           map[string]*worker  // touched (cloned or new)
	rels         map[uint64]*release // touched releases; nil value: ended
	shutting     bool
	rollSeq      uint64
	recs         []*store.Record
	fx           []Effect
	anyway       bool
	routesDirty  bool
	retryBackoff int // failures count for a retry delay
}

// Step decides what ev means. The registry is unchanged until Commit.
func (c *Core) Step(now time.Time, ev events.Event) *Plan {
	if c.tx != nil {
		panic("core: Step while a step is open")
	}
	tx := &txn{now: now, ws: map[string]*worker{}, rels: map[uint64]*release{}, shutting: c.shutting, rollSeq: c.rollSeq}
	c.tx = tx
	c.handle(ev)
	if tx.routesDirty {
		// First: the route moves before anything of this step closes,
		// drains or stops what it used to point at.
		tx.fx = append([]Effect{c.routes()}, tx.fx...)
	}
	p := &Plan{Records: tx.recs, Anyway: tx.anyway || tx.shutting, effects: tx.fx, tx: tx}
	if !p.Anyway && len(p.Records) > 0 {
		p.Retry = retryable(ev)
		p.RetryIn = backoff(c.o.RestartDelay, c.o.RestartBackoffMax, tx.retryBackoff)
		switch e := ev.(type) {
		case events.Spawned:
			p.Retry = false // the process is stopped instead
			p.OnFail = &events.Unrecorded{Instance: e.Instance, Event: ev, PID: e.PID, StartTicks: e.StartTicks}
		case events.HealthOK:
			p.OnFail = &events.Unrecorded{Instance: e.Instance, Event: ev}
		case events.Warmed:
			p.OnFail = &events.Unrecorded{Instance: e.Instance, Event: ev}
		}
	}
	return p
}

// Commit makes p's state the registry's. When its records were appended they
// move their instances' recorded state through store.Instance.Apply; when
// they were not (an Anyway plan whose append failed), the recorded state
// stays what the log holds and the next record of each instance starts from it.
func (c *Core) Commit(p *Plan, appended bool) error {
	if c.tx != p.tx {
		panic("core: Commit of a plan that is not the open step")
	}
	c.tx = nil
	tx := p.tx
	var err error
	for _, r := range p.Records {
		if r.Instance == "" {
			continue
		}
		if !appended {
			if in := c.instOf(tx, r); in != nil {
				in.logged = in.rec.State
			}
			continue
		}
		w := tx.ws[r.Worker]
		if w == nil {
			w = c.workers[r.Worker]
		}
		if w == nil || w.insts[r.Instance] == nil {
			continue
		}
		in := w.insts[r.Instance]
		if e := in.rec.Apply(*r); e != nil && err == nil {
			err = fmt.Errorf("core: %w", e)
		}
		if in.rec.State != in.m.State() && err == nil {
			err = fmt.Errorf("core: %s: machine says %s, log says %s", in.name, in.m.State(), in.rec.State)
		}
	}
	for name, w := range tx.ws {
		for n, in := range w.insts {
			if in.m.State() == sm.Stopped && !in.spawned {
				delete(w.insts, n) // no process left to wait for
			}
		}
		c.workers[name] = w
	}
	for id, r := range tx.rels {
		if r == nil {
			delete(c.releases, id)
		} else {
			c.releases[id] = r
		}
	}
	c.shutting = tx.shutting
	c.rollSeq = tx.rollSeq
	return err
}

func (c *Core) instOf(tx *txn, r *store.Record) *instance {
	w := tx.ws[r.Worker]
	if w == nil {
		w = c.workers[r.Worker]
	}
	if w == nil {
		return nil
	}
	return w.insts[r.Instance]
}

// Abort drops p: the registry is as before the event.
func (c *Core) Abort(p *Plan) {
	if c.tx != p.tx {
		panic("core: Abort of a plan that is not the open step")
	}
	c.tx = nil
}

// retryable events are retried after a failed append: their handlers check
// the state first, so a late copy does what is still needed or nothing.
func retryable(ev events.Event) bool {
	switch ev.(type) {
	case events.HealthOK, events.Warmed, events.RestartDue, events.RollWorker,
		events.AddWorker, events.AddWorkers, events.Reconfigure, events.Release, events.CanaryJudged, events.ProbeFailed, events.MaxRequests, events.ScaleTick:
		return true
	}
	return false
}

// --- the step's view ---

func (c *Core) w(name string) *worker {
	tx := c.tx
	if w, ok := tx.ws[name]; ok {
		return w
	}
	w := c.workers[name]
	if w == nil {
		return nil
	}
	w = w.clone()
	tx.ws[name] = w
	return w
}

// peek is a read-only view of a worker (the step's copy when it has one).
func (c *Core) peek(name string) *worker {
	if w, ok := c.tx.ws[name]; ok {
		return w
	}
	return c.workers[name]
}

func (c *Core) names() []string {
	set := map[string]bool{}
	for n := range c.workers {
		set[n] = true
	}
	for n := range c.tx.ws {
		set[n] = true
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// inst finds an instance (its worker copied for the step).
func (c *Core) inst(name string) (*worker, *instance) {
	w := c.peek(workerOf(name))
	if w == nil || w.insts[name] == nil {
		return nil, nil
	}
	w = c.w(w.name)
	return w, w.insts[name]
}

func (c *Core) emit(e Effect) { c.tx.fx = append(c.tx.fx, e) }

func (c *Core) logf(level string, w *worker, inst string, format string, a ...any) {
	name := ""
	if w != nil {
		name = w.name
	}
	c.emit(Log{Level: level, Worker: name, Instance: inst, Msg: fmt.Sprintf(format, a...)})
}

// record adds a record to the step.
func (c *Core) record(r *store.Record) *store.Record {
	r.Time = c.tx.now
	c.tx.recs = append(c.tx.recs, r)
	return r
}

// fire moves inst's machine by event and records it.
func (c *Core) fire(w *worker, in *instance, event, reason, detail string) *store.Record {
	// From is the state the log holds (which differs from the machine's
	// only after a record was lost), so the log always replays.
	from := in.logged
	_, to, err := in.m.Fire(event)
	if err != nil {
		// A rule bug: the caller checked the state. Shown loudly, not hidden.
		c.logf("error", w, in.name, "core: refused transition: %v", err)
		return &store.Record{}
	}
	in.logged = to
	r := &store.Record{Worker: w.name, Instance: in.name, From: from, To: to, Event: event, Reason: reason,
		Port: in.port, Detail: detail}
	if in.spawned {
		r.PID, r.StartTicks = in.pid, in.ticks
	}
	return c.record(r)
}

// routes is the table every worker's serving instances make.
func (c *Core) routes() Routes {
	var t Routes
	for _, name := range c.names() {
		w := c.peek(name)
		if w.removed {
			continue
		}
		r := Route{Prefix: w.route, Worker: w.name}
		for _, in := range w.serving() {
			r.Backends = append(r.Backends, Backend{Instance: in.name, Port: in.port, MaxRequests: w.settings.MaxRequests})
		}
		if cn := w.canaryOf(); cn != nil {
			r.Canary = &Backend{Instance: cn.name, Port: cn.port, MaxRequests: w.settings.MaxRequests}
			r.CanaryPercent = w.settings.Canary.WeightPercent
		}
		t.Table = append(t.Table, r)
	}
	return t
}

func (c *Core) portInUse(p int) bool {
	for _, name := range c.names() {
		for _, in := range c.peek(name).insts {
			if in.port == p && in.m.State() != sm.Stopped {
				return true
			}
		}
	}
	return false
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

// Route of a worker name (layout's rule, here so tests need no layout root).
func routeOf(name string) string { return layout.Route(name) }
