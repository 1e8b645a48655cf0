package statemachine

import (
	"context"
	"errors"
	"fmt"

	"github.com/looplab/fsm"
)

// States.
const (
	Starting = "starting"
	Healthy  = "healthy"
	Draining = "draining"
	Stopped  = "stopped"
)

// Events. Their names are the "event" field of history records.
const (
	// Spawned: the process now exists; recorded with its PID (starting → starting).
	Spawned = "spawned"
	// HealthOK: first 200 from /health.
	HealthOK = "health_ok"
	// HealthFailed: not healthy within the startup timeout.
	HealthFailed = "health_failed"
	// StartFailed: the process could not be started at all (missing,
	// truncated or non-executable binary).
	StartFailed = "start_failed"
	// Drain: stop sending new requests; finish in-flight ones, then stop.
	Drain = "drain"
	// Exited: the process exited (on its own, or after being signalled).
	Exited = "exited"
	// Stop: abandon an instance before it became healthy, or stop a draining
	// one without waiting for its exit.
	Stop = "stop"
	// Reap: found alive (or recorded alive) after a server crash.
	Reap = "reap"
)

var table = fsm.Events{
	{Name: Spawned, Src: []string{Starting}, Dst: Starting},
	{Name: HealthOK, Src: []string{Starting}, Dst: Healthy},
	{Name: HealthFailed, Src: []string{Starting}, Dst: Stopped},
	{Name: StartFailed, Src: []string{Starting}, Dst: Stopped},
	{Name: Drain, Src: []string{Healthy}, Dst: Draining},
	{Name: Exited, Src: []string{Starting, Healthy, Draining}, Dst: Stopped},
	{Name: Stop, Src: []string{Starting, Draining}, Dst: Stopped},
	{Name: Reap, Src: []string{Starting, Healthy, Draining}, Dst: Stopped},
}

// ErrIllegal is wrapped by every error for a transition the table forbids.
var ErrIllegal = errors.New("illegal transition")

// Machine is one instance's lifecycle.
type Machine struct {
	f *fsm.FSM
}

// New returns a machine in state (normally Starting; replay may resume others).
func New(state string) *Machine {
	return &Machine{f: fsm.NewFSM(state, table, nil)}
}

// State is the current state.
func (m *Machine) State() string { return m.f.Current() }

// Fire applies event and returns the transition. A same-state event
// (Spawned) is a legal transition to the same state, not an error.
func (m *Machine) Fire(event string) (from, to string, err error) {
	from = m.f.Current()
	err = m.f.Event(context.Background(), event)
	var noTransition fsm.NoTransitionError
	if err != nil && !errors.As(err, &noTransition) {
		return from, from, fmt.Errorf("%w: %s in state %s", ErrIllegal, event, from)
	}
	return from, m.f.Current(), nil
}

// Next is the pure table lookup: the state event leads to from state, or an
// error when the table forbids it.
func Next(state, event string) (string, error) {
	for _, e := range table {
		if e.Name != event {
			continue
		}
		for _, s := range e.Src {
			if s == state {
				return e.Dst, nil
			}
		}
	}
	return state, fmt.Errorf("%w: %s in state %s", ErrIllegal, event, state)
}

// States lists every state; Events every event name.
func States() []string { return []string{Starting, Healthy, Draining, Stopped} }

// Events lists every event name.
func Events() []string {
	out := make([]string, 0, len(table))
	for _, e := range table {
		out = append(out, e.Name)
	}
	return out
}
