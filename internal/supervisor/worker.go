package supervisor

import (
	"context"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// A worker, its slots and their instances: the state the loop owns.

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
	// swapRetries counts swaps put off because the predecessor's drain
	// could not be recorded (writeahead.go).
	swapRetries int
}
