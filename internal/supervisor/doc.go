// Package supervisor owns worker state: one goroutine (Run) consumes typed
// events, asks each instance's state machine for the transition, appends the
// record to the log, and only then carries out the effect (spawn, swap the
// proxy's route table, signal a process group).
//
// Concurrency: every field of Supervisor is touched only by the loop
// goroutine, except the events channel (any goroutine may Send), the
// published Status snapshot (an atomic pointer readers load) and the
// shutdown flag BeginShutdown sets (atomic). Helper
// goroutines (health gates, probes, exit waiters, drain watchers, timers)
// only send events; they never read or write worker state.
package supervisor
