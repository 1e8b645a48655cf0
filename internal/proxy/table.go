package proxy

import (
	"sort"
	"strings"
	"sync/atomic"
)

// Route maps a path prefix to a worker and its serving instances.
// Backends lists them (a worker may run several instances); Backend is the
// shorthand for one. No backend means the worker has no serving instance:
// requests get 503.
type Route struct {
	Prefix   string
	Worker   string
	Backend  *Backend
	Backends []*Backend
	// Canary, when set, takes CanaryPercent of the route's requests (every
	// n-th by a counter, no randomness); Backends share the rest.
	Canary        *Backend
	CanaryPercent uint32
	rr            *atomic.Uint32 // rotates the starting point among equally loaded backends
}

// hasOtherThan reports whether the route has a backend other than b.
func (r Route) hasOtherThan(b *Backend) bool {
	for _, x := range r.Backends {
		if x != b {
			return true
		}
	}
	return false
}

// Pick returns the backend with the fewest requests in flight (ties go
// round-robin), or nil when the route has none. Lock-free.
func (r Route) Pick() *Backend {
	if r.Canary != nil && (len(r.Backends) == 0 || r.rr.Add(1)%100 < r.CanaryPercent) {
		return r.Canary
	}
	switch len(r.Backends) {
	case 0:
		return nil
	case 1:
		return r.Backends[0]
	}
	n := uint32(len(r.Backends))
	start := r.rr.Add(1) % n
	best := r.Backends[start]
	bestLoad := best.Inflight()
	for i := uint32(1); i < n && bestLoad > 0; i++ {
		b := r.Backends[(start+i)%n]
		if l := b.Inflight(); l < bestLoad {
			best, bestLoad = b, l
		}
	}
	return best
}

// Table is an immutable routing table. Build it with NewTable and publish it
// with Proxy.Swap; it is safe for concurrent use without locks.
type Table struct {
	byPrefix map[string]Route
	sorted   []Route // by Prefix, for Routes
	maxLen   int     // longest Prefix, bounds the candidates Lookup tries
}

// NewTable builds a table from routes. Prefixes that do not start with "/"
// are ignored; when a prefix repeats, the last route wins. The slice is
// copied, so the caller may reuse it.
func NewTable(routes []Route) *Table {
	t := &Table{byPrefix: make(map[string]Route, len(routes))}
	for _, r := range routes {
		if !strings.HasPrefix(r.Prefix, "/") {
			continue
		}
		if len(r.Backends) == 0 && r.Backend != nil {
			r.Backends = []*Backend{r.Backend}
		} else {
			r.Backends = append([]*Backend(nil), r.Backends...)
		}
		if r.Backend == nil && len(r.Backends) > 0 {
			r.Backend = r.Backends[0]
		}
		r.rr = new(atomic.Uint32)
		t.byPrefix[r.Prefix] = r
		t.maxLen = max(t.maxLen, len(r.Prefix))
	}
	t.sorted = make([]Route, 0, len(t.byPrefix))
	for _, r := range t.byPrefix {
		t.sorted = append(t.sorted, r)
	}
	sort.Slice(t.sorted, func(i, j int) bool { return t.sorted[i].Prefix < t.sorted[j].Prefix })
	return t
}

// Routes returns a copy of the table's routes, sorted by prefix.
func (t *Table) Routes() []Route {
	if t == nil {
		return nil
	}
	return append([]Route(nil), t.sorted...)
}

// Lookup returns the route with the longest prefix that matches path on a
// segment boundary: prefix P matches path when path starts with P and either
// they are equal, P ends in "/", or the next byte of path is "/". So
// "/api/users" matches "/api/users" and "/api/users/7" but not "/api/usersx",
// and "/" matches every path that starts with "/". path is a URL path without
// the query.
func (t *Table) Lookup(path string) (Route, bool) {
	if t == nil || len(t.byPrefix) == 0 || path == "" || path[0] != '/' {
		return Route{}, false
	}
	// Candidates, longest first: path itself, then for each '/' from the
	// right the prefix including it and the prefix ending just before it.
	// That is O(segments) map probes whatever the table size, and allocates
	// nothing because candidates are substrings of path.
	if len(path) <= t.maxLen {
		if r, ok := t.byPrefix[path]; ok {
			return r, true
		}
	}
	end := min(len(path), t.maxLen+1)
	for {
		i := strings.LastIndexByte(path[:end], '/')
		if i < 0 {
			return Route{}, false
		}
		if i+1 < len(path) && i+1 <= t.maxLen {
			if r, ok := t.byPrefix[path[:i+1]]; ok {
				return r, true
			}
		}
		if i > 0 && i <= t.maxLen {
			if r, ok := t.byPrefix[path[:i]]; ok {
				return r, true
			}
		}
		end = i
	}
}

// hasSegmentPrefix reports whether prefix matches path on a segment boundary,
// with the same rule as Table.Lookup.
func hasSegmentPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}
