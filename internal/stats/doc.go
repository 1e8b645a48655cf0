// Package stats holds the lock-free counters the request path and the log
// write path update, and the plain snapshots readers take of them: a
// latency histogram with fixed buckets (Histogram) and responses counted by
// status class with their latencies (Requests).
//
// Concurrency contract: every update is a few atomic adds, with no lock and
// no allocation, safe from any number of goroutines. A Snapshot is read
// field by field while updates go on, so it is consistent only once the
// updates have stopped (a scrape may see a response counted in one field
// and not yet in another); every field only grows, so successive snapshots
// never go backwards. Snapshots are plain values: add them up freely.
package stats
