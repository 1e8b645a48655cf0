// Package store owns tqserver's append-only history log: a bbolt file
// (var/tqserver.db) holding one JSON Record per key, keyed by a big-endian
// uint64 sequence number that strictly increases and is never reused, even
// after kill -9. It also owns the pure replay that rebuilds the instance
// registry from those records (Registry, Replay, ReplayJSONL).
//
// Concurrency: a *Store is safe for concurrent use. The supervisor loop is
// expected to be the only writer; Append is one fsync'd bbolt transaction per
// record. Scan reads in short read transactions and calls its callback outside
// any transaction, so a slow reader (a history client on the admin socket)
// never holds up Append, and the callback may itself call Append. bbolt's file
// lock admits one read-write process at a time: a second Open waits at most
// Options.Timeout and then fails with ErrLocked; such callers ask the running
// server over its socket instead.
//
// Observe (observe.go) hands every committed record, in seq order, to
// registered functions, called from the appending goroutine while the next
// Append waits: they must copy and hand off, never block (the admin API's
// /v1/events stream uses a bounded channel per client).
//
// Open checks the file before anyone reads it (check.go): a damaged log is
// an error wrapping ErrDamaged, and reads that meet a page damaged later
// return one instead of faulting. Salvage rebuilds a damaged log from its
// readable records. Append recreates a log deleted under it (recreate.go);
// the swap of the open file happens under Store.mu, which every
// transaction holds for reading. Every Append is timed in a lock-free
// histogram (AppendDurations, for tqserver_log_append_duration_seconds).
//
// A Registry is a plain value with no locking: it is owned by whoever replays
// into it.
package store
