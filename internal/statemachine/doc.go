// Package statemachine is the pure per-instance lifecycle:
// starting → healthy → draining → stopped (a start that never becomes healthy
// goes starting → stopped).
//
// It does no I/O and knows nothing of processes or logs: an event goes in, a
// transition comes out, or an error for an illegal one. A Machine is owned by
// one goroutine (the supervisor loop); it is not safe for concurrent use. The
// same table validates transitions when the log is replayed.
package statemachine
