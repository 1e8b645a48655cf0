package proxy

import (
	"context"
	"net/http"
	"time"
)

// Held requests. A request whose route exists but has no serving instance
// (start-up, a crash restart and its backoff, a dev build that failed)
// waits up to Options.Hold for one instead of failing, and so does a
// request whose instance could not take it: the dial failed, or — for an
// idempotent request without a body — the connection died before any
// response byte came back. Then it goes to the new instance; when the hold
// ends first, 503 with Retry-After as without holding.
//
// Waiting does not poll: each route prefix that has waiters has a queue
// with a wake channel, and Swap closes (and renews) the channel of every
// queue whose route gained a backend, disappeared, or may now be shadowed
// by a new prefix. A waiter enqueues first and looks at the table second,
// and Swap stores the table and wakes under the same mutex, so a swap
// between the two is never missed. A woken waiter that still finds nothing
// for it waits again on the renewed channel.
//
// Only the slow path takes holdMu: a request whose route has a backend
// does not reach this file (no lock, no allocation added there).
//
// While held, a request without a body is watched like a forwarded one
// (watch.go): a client that hangs up frees its place at once. A request
// with a body is not read at all while held (no 100 Continue goes out
// before an instance takes it), so a hang-up there is noticed when the hold
// ends. Header and read timeouts are those of any request: the head was
// read in full before the hold, the body is read when forwarded.

// holdQueue is the requests held for one route prefix.
type holdQueue struct {
	worker string
	n      int           // waiting now (guarded by Proxy.holdMu)
	wake   chan struct{} // closed and renewed by Swap when they may proceed
}

// clientLeft is the outcome of a hold the client hung up on.
const clientLeft acquireResult = noBackend + 1

// maxHeldAttempts bounds the attempts of one request that the proxy
// retries on another instance after a dial failure.
const maxHeldAttempts = 4

// replayable reports whether the request may be sent again after a
// connection to a worker died before any response byte: an idempotent
// method (RFC 9110 §9.2.2) and no body, so nothing of it was consumed and a
// second delivery means the same as one. net/http's transport replays the
// same set (and PUT and DELETE only with Idempotency-Key). POST and PATCH
// never are: the worker may have acted on a request it could not answer.
func (r *request) replayable() bool {
	if r.length != 0 || r.upgrade != nil {
		return false
	}
	switch r.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// pickOther is the route's least loaded backend other than avoid (the one
// that just failed the request), or nil.
func pickOther(rt Route, avoid *Backend) *Backend {
	var b *Backend
	for _, x := range rt.Backends {
		if x != avoid && (b == nil || x.Inflight() < b.Inflight()) {
			b = x
		}
	}
	return b
}

// hold waits until end for the route of path to have a backend other than
// avoid and commits the request to it (as acquire does). It returns at
// once when the route has one already, the route is gone (noRoute),
// holding is off, or the route's queue is full (noBackend); noBackend after
// the wait means the hold timed out, clientLeft that the client hung up.
func (c *conn) hold(path string, avoid *Backend, end time.Time) (Route, *Backend, acquireResult) {
	p := c.p
	rt, b, res := p.acquireOther(path, avoid)
	if res != noBackend || p.holdFor <= 0 {
		return rt, b, res
	}
	q := p.enqueue(rt)
	if q == nil {
		p.log.Debug().Str("worker", rt.Worker).Str("path", path).Int("hold_queue", p.holdQueue).
			Msg("hold queue full: 503 at once")
		return rt, nil, noBackend
	}
	defer p.dequeue(rt.Prefix, q)
	wake, stopped := p.wakeOf(q)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.localCancel = cancel // lost() cancels it when the watcher sees a hang-up
	c.watch(nil)
	defer func() {
		c.unwatch()
		c.localCancel = nil
	}()
	timer := time.NewTimer(time.Until(end))
	defer timer.Stop()
	for {
		// Enqueued before this look: a swap from now on closes wake.
		if rt, b, res = p.acquireOther(path, avoid); res != noBackend || stopped {
			return rt, b, res
		}
		select {
		case <-wake:
			wake, stopped = p.wakeOf(q)
		case <-timer.C:
			p.log.Debug().Str("worker", rt.Worker).Str("path", path).Msg("no instance within proxy.hold_ms: 503")
			return rt, nil, noBackend
		case <-ctx.Done():
			return rt, nil, clientLeft
		}
	}
}

// enqueue counts one more request held on rt's prefix, or returns nil when
// its queue is full or holding has stopped.
func (p *Proxy) enqueue(rt Route) *holdQueue {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	if p.holdStopped {
		return nil
	}
	q := p.holds[rt.Prefix]
	if q == nil {
		q = &holdQueue{worker: rt.Worker, wake: make(chan struct{})}
		p.holds[rt.Prefix] = q
	}
	if q.n >= p.holdQueue {
		return nil
	}
	q.n++
	p.heldTotal[rt.Worker]++
	return q
}

func (p *Proxy) dequeue(prefix string, q *holdQueue) {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	if q.n--; q.n == 0 && p.holds[prefix] == q {
		delete(p.holds, prefix)
	}
}

// wakeOf is q's wake channel now, and whether holding has stopped.
func (p *Proxy) wakeOf(q *holdQueue) (<-chan struct{}, bool) {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	return q.wake, p.holdStopped
}

// stopHolding ends every hold (503 at once) and refuses new ones: the
// server is shutting down and no instance is coming; waiting would only
// delay its shutdown by up to Options.Hold.
func (p *Proxy) stopHolding() {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	p.holdStopped = true
	for _, q := range p.holds {
		close(q.wake)
		q.wake = make(chan struct{})
	}
}

// swapTable stores t and wakes the requests held on routes that t lets
// proceed. The caller holds nothing; Swap calls it.
func (p *Proxy) swapTable(t *Table) {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	old := p.table.Swap(t)
	if len(p.holds) == 0 {
		return
	}
	// A new prefix may now be the longest match of a held request's path.
	newPrefix := false
	for prefix := range t.byPrefix {
		if _, ok := old.byPrefix[prefix]; !ok {
			newPrefix = true
			break
		}
	}
	for prefix, q := range p.holds {
		nr, ok := t.byPrefix[prefix]
		if !ok || newPrefix || gained(old.byPrefix[prefix], nr) {
			close(q.wake)
			q.wake = make(chan struct{})
		}
	}
}

// gained reports whether next has a backend prev has not.
func gained(prev, next Route) bool {
	for _, b := range next.Backends {
		found := false
		for _, x := range prev.Backends {
			if x == b {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}

// nextInstance reports whether a request whose connection to st.backend
// died unanswered should go to another instance: one serves the route
// already, or st.backend's address refuses connections — its process is
// gone and the supervisor will start the next. A worker that still
// accepts dropped only this request (a Go handler that panicked closes
// the connection without a word): 502 at once, as without holding, rather
// than a wait for an instance that is not coming.
func (p *Proxy) nextInstance(st *reqState) bool {
	if rt, ok := p.table.Load().Lookup(st.path); ok && rt.hasOtherThan(st.backend) {
		return true
	}
	nc, err := p.dial("tcp", st.backend.Addr)
	if err != nil {
		return isDialError(err)
	}
	nc.Close()
	return false
}

// retry sends the request again after fail asked for it (st.retry): with
// holding on, to another instance of the route, waiting for one to appear
// if need be; with holding off, once, to whatever instance the route has
// now, as before holds existed.
func (c *conn) retry(path string) {
	p := c.p
	end := time.Now().Add(p.holdFor)
	for attempt := 1; c.st.retry; attempt++ {
		failed, unanswered := c.st.backend, c.st.unanswered
		c.st.retry, c.st.dialErr, c.st.unanswered = false, false, false
		var rt Route
		var b *Backend
		var res acquireResult
		if p.holdFor > 0 {
			// A request that reached a worker which then died may have
			// killed it: it gets one more instance, not every one.
			if unanswered || attempt >= maxHeldAttempts {
				c.st.canRetry = false
			}
			rt, b, res = c.hold(path, failed, end)
		} else {
			c.st.canRetry = false
			rt, b, res = p.acquire(path)
		}
		if res != acquired {
			c.unrouted(rt, res)
			return
		}
		c.st.worker, c.st.backend = rt.Worker, b
		c.forward()
	}
}

// unrouted answers a request no instance takes: 404 without a route, 503
// with Retry-After without an instance, nothing to a client that hung up
// while held (counted as 499).
func (c *conn) unrouted(rt Route, res acquireResult) {
	if c.req.length != 0 {
		c.closing = true // its body stays unread
	}
	if res == clientLeft {
		c.code = statusClientClosedRequest
		c.broken = true
	} else {
		c.writeUnrouted(rt, res)
	}
	c.p.countWorker(rt.Worker, c.code, c.now)
}

// heldStats adds the held requests, now and in total, to by (Stats).
func (p *Proxy) heldStats(get func(string) *WorkerStats) {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	for _, q := range p.holds {
		get(q.worker).Held += int64(q.n)
	}
	for w, n := range p.heldTotal {
		get(w).HeldTotal += n
	}
}
