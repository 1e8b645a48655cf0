package core

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// onAdopt adds a worker whose instances a previous server started and that
// still run (a server self-upgrade, CONTRACT.md §11). Each adopted instance
// takes a slot as healthy and serving: its route points at it at once and
// its periodic probe starts. Slots left without one start a fresh instance
// as AddWorker would; instances beyond the configured count keep serving in
// slots of their own (autoscaling or the next reload trims them). A
// draining instance stays draining in no slot: the old server, its parent,
// stops it once its own requests in flight are done; should that not
// happen within the drain timeout, this server stops it (Drained).
func (c *Core) onAdopt(ev events.Adopt) {
	if c.tx.shutting || ev.Add.Bin == "" {
		return
	}
	name := ev.Add.Worker
	if w := c.peek(name); w != nil && !w.removed {
		// Adoption happens once, right after start; a worker already in
		// the registry has instances of its own.
		c.logf("error", w, "", "core: %s is already running; not adopting %d instance(s)", name, len(ev.Instances))
		return
	}
	w := &worker{name: name, nextNum: c.floors[name], insts: map[string]*instance{}}
	if old := c.peek(name); old != nil {
		w = c.w(name)
		w.removed, w.roll, w.slots, w.scale = false, nil, nil, scaleState{}
	} else {
		c.tx.ws[name] = w
	}
	a := ev.Add
	w.route, w.bin, w.dir, w.settings = a.Route, a.Bin, a.Dir, a.Settings
	if w.route == "" {
		w.route = routeOf(name)
	}
	var serving, draining []events.Adopted
	for _, ad := range ev.Instances {
		if n := instanceNumber(name, ad.Instance); n > w.nextNum {
			w.nextNum = n // never reuse a number, even one the floors missed
		}
		if ad.Draining {
			draining = append(draining, ad)
		} else {
			serving = append(serving, ad)
		}
	}
	slots := max(w.settings.ClampInstances(w.settings.Instances), 1, len(serving))
	for range slots {
		w.addSlot()
	}
	c.tx.routesDirty = true
	for _, ad := range draining {
		c.adoptDraining(w, ad)
	}
	for i, ad := range serving {
		sl := &w.slots[i]
		in := &instance{name: ad.Instance, slot: sl.id, port: ad.Port, m: sm.New(sm.Healthy), logged: sm.Healthy,
			spawned: true, pid: ad.PID, ticks: ad.StartTicks, bin: w.bin, startReason: sm.ReasonServerUpgrade, healthyAt: c.tx.now,
			rec: store.Instance{Instance: ad.Instance, Worker: name, State: sm.Healthy, PID: ad.PID, Port: ad.Port, StartTicks: ad.StartTicks, Since: ad.Since}}
		w.insts[in.name] = in
		sl.current = in.name
		c.record(&store.Record{Worker: name, Instance: in.name, From: sm.Healthy, To: sm.Healthy, Event: sm.EventAdopt,
			Reason: sm.ReasonServerUpgrade, PID: ad.PID, Port: ad.Port, StartTicks: ad.StartTicks, Route: w.route,
			Detail: fmt.Sprintf("adopted from the previous server: pid %d alive (start time matches) and /health answered", ad.PID)})
		c.emit(Probe{Instance: in.name, Port: in.port, Settings: w.settings})
	}
	for i := len(serving); i < len(w.slots); i++ {
		c.start(w, &w.slots[i], a.Reason, a.Detail, a.Batch)
	}
}

// instanceNumber is N of "{worker}-{N}" (0 when it is not one).
func instanceNumber(worker, instance string) uint64 {
	s, ok := strings.CutPrefix(instance, worker+"-")
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// adoptDraining takes over an instance that was draining: no route, no
// probe; its exit is recorded with its drain reason.
func (c *Core) adoptDraining(w *worker, ad events.Adopted) {
	in := &instance{name: ad.Instance, port: ad.Port, m: sm.New(sm.Draining), logged: sm.Draining,
		spawned: true, pid: ad.PID, ticks: ad.StartTicks, bin: w.bin, startReason: sm.ReasonServerUpgrade, drainReason: ad.DrainReason,
		rec: store.Instance{Instance: ad.Instance, Worker: w.name, State: sm.Draining, PID: ad.PID, Port: ad.Port, StartTicks: ad.StartTicks, Since: ad.Since}}
	if in.drainReason == "" || in.drainReason == sm.ReasonServerUpgrade { // adopted twice: the first reason is not in its last record
		in.drainReason = sm.ReasonReplaced
	}
	w.insts[in.name] = in
	c.record(&store.Record{Worker: w.name, Instance: in.name, From: sm.Draining, To: sm.Draining, Event: sm.EventAdopt,
		Reason: sm.ReasonServerUpgrade, PID: ad.PID, Port: ad.Port, StartTicks: ad.StartTicks, Route: w.route,
		Detail: fmt.Sprintf("adopted while draining (%s) from the previous server, which stops it once its requests in flight are done", in.drainReason)})
	c.emit(After{Delay: c.o.DrainTimeout, Event: events.Drained{Instance: in.name, TimedOut: true}})
}
