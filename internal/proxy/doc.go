// Package proxy is the HTTP front of tqserver: it routes each request to the
// serving instance of a worker through a reverse proxy, and serves
// workers/{name}/public/ under the static prefix.
//
// It owns the route table (Table, immutable once built), the per-instance
// counters (Backend: in-flight and served requests, closed flag), the
// connections to the workers, and static-file path validation.
//
// Two forwarding paths give workers and clients the same view. The fast path
// (fast.go, the default) handles plain HTTP/1.1 requests itself over each
// Backend's pool of keep-alive connections (a channel as free list; Close
// empties it, and a connection returned to a closed backend is closed).
// Everything else (WebSocket and other upgrades, Expect, HTTP/1.0 or HTTP/2
// clients, other methods, queries ReverseProxy would rewrite) and all
// requests under Options.DisableFastPath go through httputil.ReverseProxy
// with a shared http.Transport.
// Front (front.go) serves client connections itself for the requests the
// fast path takes, writing to the socket directly, and hands every other
// connection (with the bytes already read) to a fallback http.Server, where
// it stays; its watcher stands in for net/http's background read.
// It does not start, stop or health-check workers; the supervisor builds
// tables and hands them over with Swap.
//
// Forwarding: path, raw path and query as received; the client's Host is
// kept; X-Forwarded-For/-Host/-Proto are set fresh (client-sent values and
// Forwarded are dropped: this is the edge). Errors: no route 404, no serving
// instance 503, worker unreachable 502; a client that left gets 499 (logs only).
//
// Concurrency contract:
//   - The request path takes no locks: it loads the current *Table with one
//     atomic load and only touches atomic counters on the chosen Backend.
//   - Swap publishes a new Table with one atomic store; a Table and its Routes
//     are never modified after NewTable, so readers need no synchronisation.
//   - Draining an instance: Swap(newTable), then old.Close(), then wait until
//     old.Inflight() == 0 (Backend.Drain does the last two). A request
//     increments inflight before it checks closed, and backs out and re-routes
//     if closed is set; with sequentially consistent atomics no request is
//     sent to a backend after the supervisor observed it closed and idle.
//     A WebSocket connection counts as in flight until it ends.
//   - Options.OnMaxRequests runs on a request goroutine and must not block.
package proxy
