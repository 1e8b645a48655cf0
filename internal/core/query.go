package core

import (
	"slices"
	"strconv"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// InstanceView is one live instance as the registry holds it.
type InstanceView struct {
	Instance, Worker, State, Reason string
	PID, Port                       int
	Since                           time.Time
	Slot                            int
	Spawned                         bool
}

// WorkerView is one worker, its slots' states and its live instances.
type WorkerView struct {
	Name, Route string
	Bin         string // the binary it runs
	Previous    string // the saved previous good binary; "" none
	Removed     bool
	Settings    config.WorkerSettings
	Slots       []SlotState
	Instances   []InstanceView
}

// Workers lists the registry, sorted by name (removed workers without
// instances are left out).
func (c *Core) Workers() []WorkerView {
	var out []WorkerView
	names := make([]string, 0, len(c.workers))
	for n := range c.workers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		w := c.workers[n]
		if w.removed && len(w.insts) == 0 {
			continue
		}
		v := WorkerView{Name: w.name, Route: w.route, Bin: w.bin, Previous: w.prevBin, Removed: w.removed, Settings: w.settings}
		for i := range w.slots {
			v.Slots = append(v.Slots, w.slots[i].state(w))
		}
		for _, iname := range sortedInstances(w) {
			in := w.insts[iname]
			if in.m.State() == sm.Stopped && !in.spawned {
				continue
			}
			v.Instances = append(v.Instances, InstanceView{Instance: in.name, Worker: w.name, State: in.m.State(),
				Reason: in.startReason, PID: in.pid, Port: in.port, Since: in.rec.Since, Slot: in.slot, Spawned: in.spawned})
		}
		out = append(out, v)
	}
	return out
}

// Binaries are the binary worker runs and the saved previous good one
// ("" when there is none).
func (c *Core) Binaries(worker string) (bin, previous string) {
	if w := c.workers[worker]; w != nil {
		return w.bin, w.prevBin
	}
	return "", ""
}

// Done reports whether shutdown has finished: no process is left.
func (c *Core) Done() bool {
	if !c.shutting {
		return false
	}
	for _, w := range c.workers {
		for _, in := range w.insts {
			if in.spawned || in.m.State() != sm.Stopped {
				return false
			}
		}
	}
	return true
}

// Shutting reports whether a shutdown has begun.
func (c *Core) Shutting() bool { return c.shutting }

// Has reports whether name is a worker the registry runs.
func (c *Core) Has(name string) bool {
	w := c.workers[name]
	return w != nil && !w.removed
}

func sortedInstances(w *worker) []string {
	out := make([]string, 0, len(w.insts))
	for n := range w.insts {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b string) int {
		an, _ := strconv.ParseUint(a[len(w.name)+1:], 10, 64)
		bn, _ := strconv.ParseUint(b[len(w.name)+1:], 10, 64)
		return int(an) - int(bn)
	})
	return out
}
