// Package statemachine is the pure per-instance lifecycle:
// starting → healthy → draining → stopped (a start that never becomes healthy
// goes starting → stopped).
//
// It does no I/O and knows nothing of processes or logs: an event goes in, a
// transition comes out, or an error for an illegal one. A Machine is owned by
// one goroutine (the supervisor loop); it is not safe for concurrent use. The
// same table validates transitions when the log is replayed.
//
// It is also the one home of every code a history record carries: the
// states (from, to), the events (transitions, Start, and the record events
// that are no transition) and the reasons (codes.go). They live here, not in
// package events, because they are the log's vocabulary: the FSM table
// already names the states and transition events, and the supervisor that
// writes records and the store that replays them both import this pure
// package. Package events holds the Go types that flow into the supervisor
// loop; they are never stored, and their names are no codes.
package statemachine
