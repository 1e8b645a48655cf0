package core

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// The registry: workers, their slots and their instances. Everything here is
// plain data, cloned per worker when a step first touches it.

// SlotState names what a slot is doing; it is derived, never stored, so it
// cannot drift from the slot's fields.
type SlotState string

// Slot states.
const (
	SlotEmpty      SlotState = "empty"       // nothing runs and nothing is due (never started, or removed)
	SlotStarting   SlotState = "starting"    // no instance serves; one is starting
	SlotServing    SlotState = "serving"     // one instance serves
	SlotRolling    SlotState = "rolling"     // one serves; its successor is starting
	SlotWarming    SlotState = "warming"     // one serves; its healthy successor is being warmed
	SlotCanary     SlotState = "canary"      // one serves; its successor serves a share until judged
	SlotBackingOff SlotState = "backing_off" // nothing serves; a restart is due after a backoff
	SlotPending    SlotState = "pending"     // one serves; its replacement waits for a retry (log or ports)
)

type worker struct {
	name, route, bin, dir string
	prevBin               string // a saved copy of the previous good binary ("" none)
	settings              config.WorkerSettings
	slots                 []slot
	slotSeq               int
	roll                  *roll
	removed               bool
	nextNum               uint64
	insts                 map[string]*instance
	scale                 scaleState
}

// slot is one of a worker's serving positions.
type slot struct {
	id       int
	current  string // serving instance
	next     string // starting (or warming) successor
	failures int    // consecutive failed starts / crashes, for backoff
	gen      uint64 // timer generation: a RestartDue of another one is stale
	armed    bool   // a restart is due after a backoff
	retry    string // reason of that restart
}

// roll replaces a worker's slots one after the other.
type roll struct {
	id             uint64
	reason, detail string
	batch          uint64
	pos            int
	changedAt      time.Time
	canaryDone     bool // its canary was started (one per roll)
}

type instance struct {
	name        string
	slot        int // slot id
	port        int
	m           *sm.Machine
	rec         store.Instance // as the log says: moved only by applying records
	logged      string         // its state once this step's records are in the log (From of the next)
	spawned     bool           // its process exists (Spawned seen)
	pid         int
	ticks       uint64
	bin         string // the binary it was started from
	startReason string
	drainReason string
	healthyAt   time.Time
	changedAt   time.Time
	roll        uint64
	release     uint64 // the atomic release it belongs to (0: none)
	batch       uint64
	warming     bool // healthy, connections being warmed; its predecessor still serves
	canary      bool // healthy, serving a share beside its predecessor until judged
	stopping    bool // Stop sent
}

func (w *worker) clone() *worker {
	c := *w
	c.slots = slices.Clone(w.slots)
	if w.roll != nil {
		r := *w.roll
		c.roll = &r
	}
	c.insts = make(map[string]*instance, len(w.insts))
	for k, in := range w.insts {
		ci := *in
		ci.m = sm.New(in.m.State())
		c.insts[k] = &ci
	}
	c.settings.Env = maps.Clone(w.settings.Env)
	return &c
}

func (w *worker) slotByID(id int) *slot {
	for i := range w.slots {
		if w.slots[i].id == id {
			return &w.slots[i]
		}
	}
	return nil
}

func (w *worker) addSlot() *slot {
	w.slotSeq++
	w.slots = append(w.slots, slot{id: w.slotSeq})
	return &w.slots[len(w.slots)-1]
}

// serving lists the worker's serving instances in slot order.
func (w *worker) serving() []*instance {
	var out []*instance
	for _, sl := range w.slots {
		if sl.current != "" {
			out = append(out, w.insts[sl.current])
		}
	}
	return out
}

func (w *worker) idle() bool {
	for _, sl := range w.slots {
		if sl.current != "" || sl.next != "" {
			return false
		}
	}
	return true
}

func (sl *slot) state(w *worker) SlotState {
	switch {
	case sl.current != "" && sl.next != "" && w.insts[sl.next] != nil && w.insts[sl.next].warming:
		return SlotWarming
	case sl.current != "" && sl.next != "" && w.insts[sl.next] != nil && w.insts[sl.next].canary:
		return SlotCanary
	case sl.current != "" && sl.next != "":
		return SlotRolling
	case sl.current != "" && sl.armed:
		return SlotPending
	case sl.current != "":
		return SlotServing
	case sl.next != "":
		return SlotStarting
	case sl.armed:
		return SlotBackingOff
	}
	return SlotEmpty
}

// workerOf is the worker part of an instance name "{worker}-{N}".
func workerOf(instance string) string {
	i := strings.LastIndexByte(instance, '-')
	if i <= 0 {
		return ""
	}
	return instance[:i]
}
