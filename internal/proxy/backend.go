package proxy

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mevdschee/tqserver/internal/stats"
)

// Backend is one worker instance that can receive traffic. Its counters are
// shared by every Table that contains it, so keep one *Backend per instance
// for the instance's lifetime. Do not copy a Backend.
type Backend struct {
	Instance    string // "index-17"
	Worker      string // "index"
	Addr        string // "127.0.0.1:9003"
	MaxRequests int64  // 0 = unlimited

	inflight atomic.Int64
	served   atomic.Int64
	closed   atomic.Bool
	conns    atomic.Pointer[connPool] // idle keep-alive connections (fast path)
	requests stats.Requests           // answers by status class, with latencies
}

// NewBackend returns an open backend with zeroed counters.
func NewBackend(worker, instance, addr string, maxRequests int64) *Backend {
	return &Backend{Instance: instance, Worker: worker, Addr: addr, MaxRequests: maxRequests}
}

// Inflight is the number of requests currently counted against b. It may
// briefly include a request that is backing out because b is closed.
func (b *Backend) Inflight() int64 { return b.inflight.Load() }

// Served is the number of requests b has completed (dial failures excluded).
func (b *Backend) Served() int64 { return b.served.Load() }

// Requests reads what b has answered so far: responses by status class
// and their latencies, counted as each request ends (before it stops
// counting in flight, so once b is closed and Inflight is zero the counts
// are final).
func (b *Backend) Requests() stats.RequestsSnapshot { return b.requests.Snapshot() }

// Close marks b closed: once Close has returned, a request that has not yet
// committed to b never will. Requests already committed keep running; wait
// for Inflight to reach zero (or use Drain). Close is idempotent.
// It also closes b's idle keep-alive connections; connections of requests
// still running are closed when they finish.
func (b *Backend) Close() {
	b.closed.Store(true)
	b.closeIdle()
}

// Closed reports whether Close has been called.
func (b *Backend) Closed() bool { return b.closed.Load() }

// Drain closes b and waits until no request is in flight on it, or ctx ends.
// Swap the table that no longer routes to b before calling Drain, or requests
// keep trying b, backing out, and failing with 503 after a few attempts.
func (b *Backend) Drain(ctx context.Context) error {
	b.Close()
	// Polling keeps the request path free of any wake-up machinery; a drain
	// lasts as long as the slowest request anyway.
	wait := 500 * time.Microsecond
	var timer *time.Timer
	for b.inflight.Load() != 0 {
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("draining %s: %d requests still in flight: %w", b.Instance, b.inflight.Load(), ctx.Err())
		case <-timer.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
	return nil
}
