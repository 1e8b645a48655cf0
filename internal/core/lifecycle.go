package core

import (
	"fmt"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

func (c *Core) handle(ev events.Event) {
	switch ev := ev.(type) {
	case events.AddWorker:
		c.onAddWorker(ev)
	case events.AddWorkers:
		for _, a := range ev.Workers {
			c.onAddWorker(a)
		}
	case events.Spawned:
		c.onSpawned(ev)
	case events.SpawnFailed:
		if w, in := c.inst(ev.Instance); in != nil && in.m.State() == sm.Starting && !in.spawned {
			c.failStart(w, in, sm.StartFailed, ev.Err)
		}
	case events.HealthOK:
		c.onHealthOK(ev)
	case events.Warmed:
		c.onWarmed(ev)
	case events.HealthTimeout:
		if w, in := c.inst(ev.Instance); in != nil && in.m.State() == sm.Starting {
			c.failStart(w, in, sm.HealthFailed, ev.Detail)
		}
	case events.ProbeFailed:
		c.replaceServing(ev.Instance, sm.ReasonHealthFailed, func(*worker) string { return ev.Detail })
	case events.MaxRequests:
		c.replaceServing(ev.Instance, sm.ReasonMaxRequests, func(w *worker) string {
			return fmt.Sprintf("%s served %d requests", ev.Instance, w.settings.MaxRequests)
		})
	case events.Exited:
		c.onExited(ev)
	case events.Drained:
		if w, in := c.inst(ev.Instance); in != nil && in.m.State() == sm.Draining {
			if ev.TimedOut {
				c.logf("warn", w, in.name, "drain timeout: requests still in flight, stopping anyway")
			}
			c.stopProcess(in)
		}
	case events.RestartDue:
		c.onRestartDue(ev)
	case events.RollWorker:
		if w := c.peek(ev.Worker); w != nil && !w.removed {
			c.startRoll(c.w(ev.Worker), ev.Reason, ev.Detail, ev.Batch, ev)
		}
	case events.RemoveWorker:
		if w := c.peek(ev.Worker); w != nil && !w.removed {
			c.removeWorker(c.w(ev.Worker), ev.Reason, ev.Detail)
		}
	case events.Reconfigure:
		c.onReconfigure(ev)
	case events.Assets:
		c.onAssets(ev)
	case events.ScaleTick:
		c.onScaleTick(ev)
	case events.Shutdown:
		c.onShutdown()
	case events.ForceKill:
		c.onForceKill()
	case events.Unrecorded:
		c.onUnrecorded(ev)
	case events.Release:
		c.onRelease(ev)
	case events.CanaryDue:
		c.onCanaryDue(ev)
	case events.CanaryJudged:
		c.onCanaryJudged(ev)
	case events.Adopt:
		c.onAdopt(ev) // adopt.go
	default:
		c.logf("error", nil, "", "core: unknown event %T", ev)
	}
}

func (c *Core) onAddWorker(ev events.AddWorker) {
	if c.tx.shutting {
		return
	}
	w := c.peek(ev.Worker)
	if w != nil && !w.removed && (w.bin != "" || ev.Bin == "") {
		return
	}
	if w != nil && !w.removed {
		// Its route was served without a binary (dev: the first build
		// failed); now there is one.
		w = c.w(ev.Worker)
		w.bin, w.dir, w.settings = ev.Bin, ev.Dir, ev.Settings
		for i := range w.slots {
			c.start(w, &w.slots[i], ev.Reason, ev.Detail, ev.Batch)
			if n := w.slots[i].next; n != "" {
				w.insts[n].changedAt = ev.ChangedAt
			}
		}
		return
	}
	if w == nil {
		w = &worker{name: ev.Worker, nextNum: c.floors[ev.Worker], insts: map[string]*instance{}}
		c.tx.ws[ev.Worker] = w
	} else {
		w = c.w(ev.Worker)
		w.removed, w.roll, w.slots, w.scale = false, nil, nil, scaleState{}
	}
	w.route, w.bin, w.dir, w.settings = ev.Route, ev.Bin, ev.Dir, ev.Settings
	if w.route == "" {
		w.route = routeOf(w.name)
	}
	for range max(w.settings.ClampInstances(w.settings.Instances), 1) {
		w.addSlot()
	}
	c.tx.routesDirty = true // its route is served (503 until an instance is) from now on
	if w.bin == "" {
		return // dev: sources without a binary yet; the first good build starts it
	}
	for i := range w.slots {
		c.start(w, &w.slots[i], ev.Reason, ev.Detail, ev.Batch)
		if n := w.slots[i].next; n != "" {
			w.insts[n].changedAt = ev.ChangedAt
		}
	}
}

// start launches a new instance in sl (the successor, when one serves).
func (c *Core) start(w *worker, sl *slot, reason, detail string, batch uint64) {
	if c.tx.shutting || w.removed || sl.next != "" || w.bin == "" {
		return
	}
	sl.armed = false
	sl.gen++
	port, err := c.o.Port(c.portInUse)
	if err != nil {
		c.noPort(w, sl, reason, batch, err)
		return
	}
	num := w.nextNum + 1
	in := &instance{name: fmt.Sprintf("%s-%d", w.name, num), slot: sl.id, port: port, logged: sm.Starting, bin: w.bin,
		m: sm.New(sm.Starting), startReason: reason, batch: batch}
	c.record(&store.Record{Worker: w.name, Instance: in.name, To: sm.Starting, Event: sm.Start,
		Reason: reason, Port: port, Route: w.route, Detail: detail})
	w.nextNum = num
	w.insts[in.name] = in
	sl.next = in.name
	c.tx.retryBackoff = sl.failures
	if batch != 0 {
		c.emit(Join{Batch: batch, Instance: in.name})
	}
	c.emit(Spawn{Instance: in.name, Worker: w.name, Bin: w.bin, Dir: w.dir, Route: w.route, Port: port, Settings: w.settings})
}

func (c *Core) noPort(w *worker, sl *slot, reason string, batch uint64, cause error) {
	mine := 0
	for _, name := range c.names() {
		for _, in := range c.peek(name).insts {
			if in.port >= c.o.PortLo && in.port <= c.o.PortHi && in.m.State() != sm.Stopped {
				mine++
			}
		}
	}
	detail := fmt.Sprintf("port_range_start..port_range_end (%d..%d) is exhausted: %d port(s) held by instances, the rest by other processes; retrying in %s (widen the range in config/server.yaml or free ports)",
		c.o.PortLo, c.o.PortHi, mine, backoff(c.o.RestartDelay, c.o.RestartBackoffMax, sl.failures))
	c.logf("error", w, "", "no free port")
	c.record(&store.Record{Worker: w.name, Event: sm.EventPortsExhausted, Reason: reason, Detail: detail})
	if batch != 0 {
		c.emit(Settle{Batch: batch, Msg: w.name + ": " + detail})
	}
	c.scheduleRestart(w, sl, reason)
}

func (c *Core) onSpawned(ev events.Spawned) {
	w, in := c.inst(ev.Instance)
	if in == nil || in.m.State() != sm.Starting || in.spawned {
		return
	}
	in.spawned, in.pid, in.ticks = true, ev.PID, ev.StartTicks
	c.fire(w, in, sm.Spawned, in.startReason, "")
	delay := c.o.StartupDelay
	if c.o.Dev {
		delay = 0 // hot swaps: probe at once
	}
	c.emit(Gate{Instance: in.name, Port: in.port, Settings: w.settings, Delay: delay})
}

// onUnrecorded: a step of an instance could not be written to the log.
func (c *Core) onUnrecorded(ev events.Unrecorded) {
	w, in := c.inst(ev.Instance)
	if in == nil {
		return
	}
	switch ev.Event.(type) {
	case events.Spawned:
		// A process whose pid is not in the log could not be reaped after
		// a crash of the server: it never serves; the start is retried
		// with backoff.
		if in.m.State() == sm.Starting && !in.spawned {
			in.spawned, in.pid, in.ticks = true, ev.PID, ev.StartTicks
			c.failStart(w, in, sm.Stop, "its pid could not be recorded: "+ev.Err)
		}
	default:
		// The reload is told now; the swap is retried by itself.
		cur := ""
		if sl := w.slotByID(in.slot); sl != nil && sl.current != "" {
			cur = ", but " + sl.current + " keeps serving"
		}
		c.settle(in, false, fmt.Sprintf("%s: healthy%s: %s (retrying with backoff)", in.name, cur, ev.Err))
	}
}

// failStart ends a starting instance that will never serve: its predecessor
// (if any) keeps serving and the record says rollback. It happens whether or
// not it can be recorded.
func (c *Core) failStart(w *worker, in *instance, event, detail string) {
	c.tx.anyway = true
	sl := w.slotByID(in.slot)
	reason := sm.ReasonHealthFailed
	if sl != nil && sl.current != "" {
		reason = sm.ReasonRollback
		detail = fmt.Sprintf("%s; %s keeps serving", detail, sl.current)
	}
	c.fire(w, in, event, reason, detail)
	c.emit(Cancel{Instance: in.name})
	if sl != nil && sl.next == in.name {
		sl.next = ""
	}
	c.settle(in, false, fmt.Sprintf("%s: %s (%s)", in.name, reason, firstLine(detail)))
	c.abortRoll(w, in)
	c.stopProcess(in)
	c.releaseFailed(in, fmt.Sprintf("%s: %s", in.name, firstLine(detail)))
	if sl != nil && sl.current == "" {
		c.scheduleRestart(w, sl, sm.ReasonHealthFailed)
	}
}

func (c *Core) onHealthOK(ev events.HealthOK) {
	w, in := c.inst(ev.Instance)
	if in == nil || in.m.State() != sm.Starting {
		return
	}
	c.fire(w, in, sm.HealthOK, in.startReason, "")
	in.healthyAt = c.tx.now
	if in.release != 0 {
		c.releaseHealthy(w, in)
		return
	}
	sl := w.slotByID(in.slot)
	if sl != nil && sl.current != "" {
		// Connections are opened and warmed before traffic moves; the
		// predecessor serves until Warmed.
		in.warming = true
		c.emit(Warm{Instance: in.name, From: sl.current, Worker: w.name, Port: in.port, MaxRequests: w.settings.MaxRequests, Settings: w.settings})
		return
	}
	c.swapIn(w, in)
}

// onWarmed swaps in an instance whose warm-up ended, unless it was
// abandoned, stopped or exited meanwhile. One whose warm-up failed never
// takes the traffic: its predecessor keeps serving.
func (c *Core) onWarmed(ev events.Warmed) {
	w, in := c.inst(ev.Instance)
	if in == nil || !in.warming || in.m.State() != sm.Healthy || c.tx.shutting {
		return
	}
	if in.release != 0 {
		if ev.Err != "" {
			c.drain(w, in, sm.ReasonRollback, "warm-up failed: "+ev.Err)
			c.settle(in, false, in.name+": "+sm.ReasonRollback+": warm-up failed: "+ev.Err)
			c.releaseFailed(in, in.name+" failed its warm-up")
			return
		}
		if r := c.rel(in.release); r != nil {
			c.releaseWarmed(r, in)
		}
		return
	}
	if ev.Err != "" {
		keeps := ""
		if sl := w.slotByID(in.slot); sl != nil && sl.current != "" {
			keeps = "; " + sl.current + " keeps serving"
		}
		c.drain(w, in, sm.ReasonRollback, "warm-up failed: "+ev.Err)
		c.settle(in, false, in.name+": "+sm.ReasonRollback+": warm-up failed: "+ev.Err+keeps)
		c.abortRoll(w, in)
		return
	}
	in.warming = false
	if c.canaryApplies(w, in) {
		c.startCanary(w, in)
		return
	}
	c.swapIn(w, in)
}

// swapIn makes a healthy instance its slot's serving one: its predecessor's
// drain is recorded in the same step, before the route moves.
func (c *Core) swapIn(w *worker, in *instance) {
	sl := w.slotByID(in.slot)
	if sl == nil {
		return
	}
	var old *instance
	if sl.current != "" {
		old = w.insts[sl.current]
	}
	if old != nil && old.m.State() == sm.Healthy {
		reason := old.drainReason
		if reason == "" {
			reason = sm.ReasonReplaced
		}
		c.fire(w, old, sm.Drain, reason, "replaced by "+in.name)
		old.drainReason = reason
	} else {
		old = nil
	}
	sl.current = in.name
	if sl.next == in.name {
		sl.next = ""
	}
	c.tx.routesDirty = true
	rollDone := c.advanceRoll(w, in)
	c.settle(in, true, "")
	c.emit(Cancel{Instance: in.name})
	c.emit(Probe{Instance: in.name, Port: in.port, Settings: w.settings})
	c.emit(Swapped{Instance: in.name, Since: in.changedAt})
	if c.o.Dev && rollDone && (in.startReason == sm.ReasonSourceChanged || in.startReason == sm.ReasonBinaryChanged) {
		c.emit(Notify{Worker: w.name})
	}
	if old != nil {
		c.drainEffects(w, old)
	}
}

// replaceServing starts a successor for a serving instance that must go.
func (c *Core) replaceServing(name, reason string, detail func(*worker) string) {
	w, in := c.inst(name)
	if in == nil || in.m.State() != sm.Healthy {
		return
	}
	sl := w.slotByID(in.slot)
	if sl == nil || sl.current != in.name || sl.next != "" {
		return
	}
	c.logf("warn", w, in.name, "replacing: %s", reason)
	in.drainReason = reason
	c.start(w, sl, reason, detail(w), 0)
}

func (c *Core) onExited(ev events.Exited) {
	w, in := c.inst(ev.Instance)
	if in == nil {
		return
	}
	c.tx.anyway = true // an observation: the process is gone either way
	sl := w.slotByID(in.slot)
	state := in.m.State()
	beforeServing := state == sm.Starting || in.warming
	in.warming = false
	cur := ""
	if sl != nil {
		cur = sl.current
		if cur == in.name {
			cur = ""
		}
	}
	if state != sm.Stopped {
		reason := sm.ReasonCrashed
		switch {
		case state == sm.Draining:
			reason = in.drainReason
		case beforeServing && cur != "":
			reason = sm.ReasonRollback
		}
		detail := strings.TrimSpace(ev.Tail)
		if beforeServing && cur != "" {
			detail = strings.TrimSpace(fmt.Sprintf("exited before serving; %s keeps serving\n%s", cur, detail))
		}
		r := c.fire(w, in, sm.Exited, reason, "")
		if ev.Signal != "" {
			r.Signal = ev.Signal
		} else {
			code := ev.Code
			r.ExitCode = &code
		}
		if reason == sm.ReasonCrashed || reason == sm.ReasonRollback {
			r.Detail = detail
		}
		c.emit(Cancel{Instance: in.name})
		if beforeServing {
			msg := fmt.Sprintf("%s: %s: exited before serving (%s)", in.name, reason, exitString(ev))
			if cur != "" {
				msg += "; " + cur + " keeps serving"
			}
			c.settle(in, false, msg)
			c.abortRoll(w, in)
			c.releaseFailed(in, in.name+" exited before serving")
		}
		if in.canary {
			in.canary = false
			c.tx.routesDirty = true
			c.record(&store.Record{Worker: w.name, Event: sm.EventCanaryFailed, Reason: sm.ReasonRollback,
				Detail: fmt.Sprintf("canary %s exited (%s)", in.name, exitString(ev))})
			c.canaryFailed(w, in, "canary exited")
		}
		if sl != nil && sl.current == in.name {
			sl.current = ""
			c.tx.routesDirty = true
			// A successor being warmed (or serving as a canary) takes over at once.
			if sl.next != "" && w.insts[sl.next] != nil && (w.insts[sl.next].warming || w.insts[sl.next].canary) {
				next := w.insts[sl.next]
				next.warming, next.canary = false, false
				c.swapIn(w, next)
			}
		}
		if sl != nil && sl.next == in.name {
			sl.next = ""
		}
		rolledBack := state == sm.Healthy && !beforeServing && c.autoRollback(w, in)
		if !rolledBack && state != sm.Draining && sl != nil && sl.current == "" && sl.next == "" {
			if !in.healthyAt.IsZero() && c.tx.now.Sub(in.healthyAt) >= c.o.RestartBackoffReset {
				sl.failures = 0
			}
			c.scheduleRestart(w, sl, sm.ReasonCrashed)
		}
	}
	in.spawned = false // after its last record, which still carries the pid
	c.emit(Forget{Instance: in.name})
}

// autoRollback: a new binary whose instance crashed within
// rollback_window_ms of becoming healthy is replaced, in every slot, by the
// previous good binary (when one was saved).
func (c *Core) autoRollback(w *worker, in *instance) bool {
	window := time.Duration(w.settings.RollbackWindowMs) * time.Millisecond
	up := c.tx.now.Sub(in.healthyAt)
	if in.startReason != sm.ReasonBinaryChanged || window <= 0 || up >= window || w.prevBin == "" || w.removed || c.tx.shutting {
		return false
	}
	detail := fmt.Sprintf("%s (a new binary) crashed %s after becoming healthy, within rollback_window_ms %d: back to the previous binary %s",
		in.name, up.Round(time.Millisecond), w.settings.RollbackWindowMs, w.prevBin)
	c.logf("warn", w, in.name, "%s", detail)
	c.startRoll(w, sm.ReasonRollback, detail, 0, events.RollWorker{Bin: w.prevBin})
	return true
}

func (c *Core) onRestartDue(ev events.RestartDue) {
	w := c.peek(ev.Worker)
	if w == nil || w.removed {
		return
	}
	w = c.w(ev.Worker)
	sl := w.slotByID(ev.Slot)
	if sl == nil || !sl.armed || sl.gen != ev.Gen {
		return // stale: started, cleared or rescheduled since
	}
	sl.armed = false
	switch {
	case sl.current == "" && sl.next == "":
		c.start(w, sl, sl.retry, fmt.Sprintf("restart attempt %d", sl.failures), 0)
	case w.roll != nil && w.roll.pos < len(w.slots) && w.slots[w.roll.pos].id == sl.id && sl.next == "":
		c.rollSlot(w) // a replacement that could not start before
	}
}

// scheduleRestart restarts sl after an exponential backoff.
func (c *Core) scheduleRestart(w *worker, sl *slot, reason string) {
	if c.tx.shutting || w.removed || sl.armed || w.slotByID(sl.id) == nil {
		return
	}
	delay := backoff(c.o.RestartDelay, c.o.RestartBackoffMax, sl.failures)
	sl.failures++
	sl.armed = true
	sl.retry = reason
	sl.gen++
	c.logf("warn", w, "", "restart scheduled: slot %d in %s (attempt %d)", sl.id, delay, sl.failures)
	c.emit(After{Delay: delay, Event: events.RestartDue{Worker: w.name, Slot: sl.id, Gen: sl.gen}})
}

// drain stops routing to a healthy instance; its process stops once its
// in-flight requests are done.
func (c *Core) drain(w *worker, in *instance, reason, detail string) {
	if in.m.State() != sm.Healthy {
		return
	}
	// One that never served (warming) or has no place any more is out of
	// the route table already: it goes even when this cannot be recorded.
	if in.warming || w.removed || w.slotByID(in.slot) == nil {
		c.tx.anyway = true
	}
	c.fire(w, in, sm.Drain, reason, detail)
	in.drainReason = reason
	c.drainEffects(w, in)
}

func (c *Core) drainEffects(w *worker, in *instance) {
	c.emit(Cancel{Instance: in.name})
	if sl := w.slotByID(in.slot); sl != nil {
		if sl.current == in.name {
			sl.current = ""
			c.tx.routesDirty = true
		}
		if in.warming && sl.next == in.name {
			sl.next = ""
		}
	}
	in.warming = false
	c.emit(Drain{Instance: in.name, Timeout: c.o.DrainTimeout})
}

// stopProcess asks for the instance's process to stop (Exited follows); an
// instance without a process is simply forgotten.
func (c *Core) stopProcess(in *instance) {
	if !in.spawned {
		c.emit(Forget{Instance: in.name})
		return
	}
	if in.stopping {
		return
	}
	in.stopping = true
	c.emit(Stop{Instance: in.name, Grace: c.o.Grace})
}

// abandon stops a starting (or warming) instance that is no longer wanted.
func (c *Core) abandon(w *worker, in *instance, reason, detail string) {
	if in.warming {
		c.drain(w, in, reason, detail)
		c.settle(in, false, in.name+": "+detail)
		return
	}
	if in.m.State() != sm.Starting {
		return
	}
	c.tx.anyway = true // it will never serve
	c.fire(w, in, sm.Stop, reason, detail)
	c.emit(Cancel{Instance: in.name})
	if sl := w.slotByID(in.slot); sl != nil && sl.next == in.name {
		sl.next = ""
	}
	c.settle(in, false, in.name+": "+detail)
	c.stopProcess(in)
}

// settle tells the reload that started in how it ended.
func (c *Core) settle(in *instance, ok bool, msg string) {
	if in.batch == 0 {
		return
	}
	c.emit(Settle{Batch: in.batch, Instance: in.name, OK: ok, Msg: msg})
	in.batch = 0
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
