// Package metrics serves the Prometheus metrics of CONTRACT.md §10. A
// Collector reads everything at scrape time: the proxy's request counters
// (proxy.Stats: atomics the request path updates, nothing added to it),
// the supervisor's status snapshot, the store's append timings, and what
// it counted itself from history records as they were appended (restarts
// and builds, through store.Observe). Handler serves those together with
// the standard go_* and process_* collectors.
//
// Concurrency contract: Collect may run from several scrapes at once; the
// observer that store.Observe calls takes one short mutex the scrape also
// takes only to copy two small maps, so an append never waits for a
// scrape's output.
package metrics
