// Package core is the supervisor's decision core: a pure machine that, given
// the registry of workers, slots and instances and one typed event, returns
// the records to append to the history log and the effects to perform, in
// that order.
//
// It does no I/O: no processes, sockets, files, clocks or goroutines. The
// time of a step is an input; so is the choice of a free port. Everything it
// cannot see for itself (a process started, a health check answered, a
// drain finished, a timer fired) comes back as an event.
//
// Write-ahead by construction: Step works on a transaction. The caller
// appends the plan's records (one fsync'd batch) and only then calls Commit,
// which makes the step's state the registry's and hands back its effects.
// When the append fails the caller calls Abort: the registry is as before the
// event and no effect exists to perform. A plan marked Anyway is an
// observation or a removal (a process exited, an instance that will never
// serve is stopped, anything during shutdown): it commits even when its
// records could not be written, because what it describes is true regardless.
//
// Every instance has a looplab/fsm machine (internal/statemachine). Its
// recorded state (store.Instance) moves only by applying the step's records
// with store.Instance.Apply, the code replay uses, so the live registry,
// `status --at` and crash recovery cannot disagree.
package core
