// Package proxy is the HTTP front of tqserver: one HTTP/1.x engine that
// serves client connections (Server), routes each request to the serving
// instance of a worker and forwards it over pooled keep-alive connections,
// and serves workers/{name}/public/ and any local handlers itself. Dev and
// prod run the same engine; dev adds local handlers and a body rewriter.
//
// It owns the route table (Table, immutable once built), the per-instance
// counters and connection pools (Backend), the HTTP/1.1 grammar of both
// sides (http1.go, request.go, response.go, chunked.go: fail-closed, every
// ambiguity refused and the connection closed), and static-file path
// validation. It does not start, stop or health-check workers; the
// supervisor builds tables and hands them over with Swap.
//
// Forwarding: method, target (origin form) and Host as received;
// hop-by-hop fields removed both ways; X-Forwarded-For/-Host/-Proto set
// fresh (client-sent values and Forwarded are dropped: this is the edge);
// bodies framed by the engine. A request whose route has no serving
// instance, or whose instance could not take it, is held up to
// Options.Hold for the next one (hold.go). Errors: no route 404, no serving
// instance (after the hold) 503 with Retry-After, worker unreachable 502,
// too slow 504, a malformed request 400 (431, 501, 505), a malformed worker
// answer 502 or a cut response; a client that left gets 499 (logs only).
//
// Concurrency contract:
//   - The request path takes no locks: it loads the current *Table with one
//     atomic load and only touches atomic counters on the chosen Backend,
//     or, for an answer no instance gives (static, 404, 503), on the
//     worker name's counters in a map it only reads (stats.go). Stats (a
//     scrape) and Swap share one mutex the request path never takes.
//     A Backend's idle connections are a buffered channel.
//   - Swap publishes a new Table with one atomic store; a Table and its Routes
//     are never modified after NewTable, so readers need no synchronisation.
//     It stores under holdMu and wakes the held requests its table lets
//     proceed; only held requests take holdMu, never a request whose
//     route has a backend.
//   - Draining an instance: Swap(newTable), then old.Close(), then wait until
//     old.Inflight() == 0 (Backend.Drain does the last two). A request
//     increments inflight before it checks closed, and backs out and re-routes
//     if closed is set; with sequentially consistent atomics no request is
//     sent to a backend after the supervisor observed it closed and idle.
//     An upgraded (tunnelled) connection counts as in flight until it ends.
//   - One goroutine serves a client connection; while a request body is
//     forwarded, a sender goroutine reads it, and a watcher may read the
//     connection to notice a hang-up. Their hand-offs are atomics.
//   - Options.OnMaxRequests runs on a request goroutine and must not block.
package proxy
