package proxy

import (
	"sort"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/stats"
)

// Request counters. Every request the engine answers counts once, by the
// worker it belongs to and its status class, with its latency (from its
// head read to its last byte handed to the connection): a forwarded one on
// its Backend, one no instance answers on the proxy's counter for the
// worker name — static files under the worker whose public/ they come
// from, 503 (no serving instance) under the route's worker, 404 (no route)
// and refused request heads under "". Static paths naming no worker the
// table has count under "" too, so a client cannot create label values.
// The dev server's own endpoints (Options.Local) are not counted.
//
// The request path only loads a pointer, looks a name up in a map it
// never writes, and adds to atomics: no lock, no allocation. The map is
// replaced (copied) by Swap when a new worker name appears.

// WorkerStats is what Stats reports for one worker name.
type WorkerStats struct {
	Worker   string
	Requests stats.RequestsSnapshot // since the proxy started, instances long gone included
	Inflight int64                  // requests in flight on its instances now
	// Held is how many requests wait for one of its instances now
	// (hold.go); HeldTotal counts every wait so far (a request held before
	// its first attempt and again after its instance died counts twice).
	Held, HeldTotal int64
}

// register makes t's workers and backends known to Stats before t serves.
func (p *Proxy) register(t *Table) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	cur := *p.workerReqs.Load()
	var next map[string]*stats.Requests
	for _, rt := range t.sorted {
		for _, b := range rt.Backends {
			p.seen[b] = struct{}{}
		}
		if _, ok := cur[rt.Worker]; ok {
			continue
		}
		if next == nil {
			next = make(map[string]*stats.Requests, len(cur)+1)
			for k, v := range cur {
				next[k] = v
			}
		}
		if _, ok := next[rt.Worker]; !ok {
			next[rt.Worker] = new(stats.Requests)
		}
	}
	if next != nil {
		p.workerReqs.Store(&next)
	}
}

// countWorker counts an answer no instance gave under worker (or under ""
// when the name is unknown).
func (p *Proxy) countWorker(worker string, code int, start time.Time) {
	m := *p.workerReqs.Load()
	r := m[worker]
	if r == nil {
		r = m[""]
	}
	r.Observe(code, time.Since(start))
}

// countStatic counts a static file answer under the worker named by the
// path's first segment after the static prefix.
func (p *Proxy) countStatic(path string, code int, start time.Time) {
	rest := strings.TrimPrefix(path[len(p.staticPrefix):], "/")
	worker, _, _ := strings.Cut(rest, "/")
	p.countWorker(worker, code, start)
}

// Stats returns the request counters of every worker name the proxy has
// seen, sorted by name ("" first): what its instances answered, the ones
// drained and gone included (their totals are kept, so counts never go
// back), plus what the proxy answered itself.
func (p *Proxy) Stats() []WorkerStats {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	by := map[string]*WorkerStats{}
	get := func(name string) *WorkerStats {
		ws := by[name]
		if ws == nil {
			ws = &WorkerStats{Worker: name}
			by[name] = ws
		}
		return ws
	}
	for b := range p.seen {
		// Closed with nothing in flight: no request can count on b any
		// more (a request counts before it leaves inflight, and one that
		// comes later backs out without counting). Fold its totals.
		final := b.Closed() && b.Inflight() == 0
		snap := b.Requests()
		if final {
			r := p.retired[b.Worker]
			r.Add(snap)
			p.retired[b.Worker] = r
			delete(p.seen, b)
			continue
		}
		ws := get(b.Worker)
		ws.Requests.Add(snap)
		ws.Inflight += b.Inflight()
	}
	for name, r := range p.retired {
		get(name).Requests.Add(r)
	}
	for name, r := range *p.workerReqs.Load() {
		get(name).Requests.Add(r.Snapshot())
	}
	p.heldStats(get)
	out := make([]WorkerStats, 0, len(by))
	for _, ws := range by {
		out = append(out, *ws)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Worker < out[j].Worker })
	return out
}
