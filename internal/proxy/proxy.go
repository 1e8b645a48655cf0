package proxy

import (
	"errors"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/stats"
)

// Options configures a Proxy.
type Options struct {
	WorkersDir    string // absolute path of {root}/workers (static files)
	StaticEnabled bool
	StaticPrefix  string // "/static" when empty
	CacheMaxAge   int    // seconds, Cache-Control: public, max-age=N
	// OnMaxRequests is called once per backend, from the request goroutine,
	// when the backend's served count reaches its MaxRequests. It must not block.
	OnMaxRequests func(instance string)
	Logger        zerolog.Logger
	// WorkerTimeout bounds the wait for a worker's next bytes: its
	// response head, then each read of its body; and each write of a
	// request to it that makes no progress (0 = no limit). A stream that
	// keeps sending is never cut.
	WorkerTimeout time.Duration
	// WorkerIdleTimeout closes a pooled keep-alive connection to a worker
	// that has been idle that long (default 60 s).
	WorkerIdleTimeout time.Duration
	// WorkerIdleConns caps the idle keep-alive connections kept per
	// instance (default 256, at most 1024).
	WorkerIdleConns int
	// Local serves these exact paths itself (dev mode's reload events and
	// script), before routing.
	Local map[string]http.Handler
	// Rewrite, when set, may rewrite worker response bodies (dev mode).
	Rewrite Rewriter
	// Hold is how long a request waits for an instance when its route has
	// none, or its instance could not take it (hold.go); 0 = not at all.
	Hold time.Duration
	// HoldQueue bounds the requests held per route (default 1024).
	HoldQueue int
}

// Proxy routes requests to worker instances and serves static files. The
// Server (server.go) serves client connections with it.
type Proxy struct {
	table atomic.Pointer[Table]

	workerTimeout     time.Duration
	workerIdleTimeout time.Duration
	workerIdleConns   int
	// dial connects to a worker; a field so tests can interpose on it.
	dial func(network, addr string) (net.Conn, error)

	log      zerolog.Logger
	onMax    func(instance string)
	local    map[string]http.Handler
	rewriter Rewriter

	staticPrefix string // "" when static files are disabled
	workersDir   string
	cacheControl string

	// Request counters the proxy keeps itself (stats.go): per worker name
	// for what no instance answers (static files, 404, 503), and the
	// backends whose counters Stats reads.
	workerReqs atomic.Pointer[map[string]*stats.Requests] // copied on write, never modified
	statsMu    sync.Mutex                                 // guards seen, retired and writers of workerReqs
	seen       map[*Backend]struct{}
	retired    map[string]stats.RequestsSnapshot

	// Held requests (hold.go): the request path with a backend never
	// touches these.
	holdFor     time.Duration
	holdQueue   int
	holdMu      sync.Mutex            // guards the three below and table stores
	holds       map[string]*holdQueue // by route prefix, while it has waiters
	heldTotal   map[string]int64      // requests ever held, by worker
	holdStopped bool                  // a server shut down: hold no more
}

const (
	// acquireAttempts bounds how often a request re-routes after finding
	// its backend closed; each miss means a swap happened in between.
	acquireAttempts = 8
	// defaultHoldQueue is Options.HoldQueue when it is not set.
	defaultHoldQueue = 1024
	// statusClientClosedRequest is nginx's code for a client that went away
	// before the response; only loggers ever see it.
	statusClientClosedRequest = 499
)

// New returns a Proxy with an empty table (every request 404s, static files
// aside) until Swap installs one.
func New(opts Options) *Proxy {
	p := &Proxy{
		log:               opts.Logger,
		workerTimeout:     opts.WorkerTimeout,
		workerIdleTimeout: opts.WorkerIdleTimeout,
		workerIdleConns:   opts.WorkerIdleConns,
		onMax:             opts.OnMaxRequests,
		local:             opts.Local,
		rewriter:          opts.Rewrite,
		workersDir:        opts.WorkersDir,
		cacheControl:      "public, max-age=" + strconv.Itoa(max(opts.CacheMaxAge, 0)),
		holdFor:           max(opts.Hold, 0),
		holdQueue:         opts.HoldQueue,
		holds:             map[string]*holdQueue{},
		heldTotal:         map[string]int64{},
	}
	if p.holdQueue <= 0 {
		p.holdQueue = defaultHoldQueue
	}
	if p.workerIdleTimeout <= 0 {
		p.workerIdleTimeout = defaultWorkerIdleTimeout
	}
	if p.workerIdleConns <= 0 {
		p.workerIdleConns = defaultWorkerIdleConns
	}
	p.workerIdleConns = min(p.workerIdleConns, maxWorkerIdleConns)
	if opts.StaticEnabled {
		p.staticPrefix = strings.TrimRight(opts.StaticPrefix, "/")
		if p.staticPrefix == "" {
			p.staticPrefix = "/static"
		}
		if p.staticPrefix[0] != '/' {
			p.staticPrefix = "/" + p.staticPrefix
		}
	}
	p.seen = map[*Backend]struct{}{}
	p.retired = map[string]stats.RequestsSnapshot{}
	p.workerReqs.Store(&map[string]*stats.Requests{"": new(stats.Requests)})
	p.table.Store(NewTable(nil))
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	p.dial = dialer.Dial
	return p
}

// Swap installs t as the routing table; requests that already chose a
// backend finish there, and requests held for an instance that t gives
// their route proceed. Swap before closing backends that t drops.
func (p *Proxy) Swap(t *Table) {
	if t == nil {
		t = NewTable(nil)
	}
	p.register(t)
	p.swapTable(t)
}

// Table returns the current routing table (never nil).
func (p *Proxy) Table() *Table { return p.table.Load() }

// CloseIdleConnections closes idle keep-alive connections to workers (those
// of backends no longer in the table close when the backend is closed).
func (p *Proxy) CloseIdleConnections() {
	for _, rt := range p.table.Load().sorted {
		for _, b := range rt.Backends {
			b.closeIdle()
		}
	}
}

// reqState is one forwarded request's routing state.
type reqState struct {
	path     string
	worker   string
	backend  *Backend
	canRetry bool // no request body, not retried yet
	retry    bool // set by fail: send the request again (conn.retry)
	dialErr  bool // this attempt never reached the backend
	// unanswered: the worker connection died before any response byte
	// (not a timeout, the client still there).
	unanswered bool
}

type acquireResult int

const (
	acquired acquireResult = iota
	noRoute
	noBackend
)

// acquire routes path and commits the request to the route's backend: it
// counts itself in flight first, then checks closed, so a supervisor that
// saw closed and zero in flight can never be followed by a request here.
func (p *Proxy) acquire(path string) (Route, *Backend, acquireResult) {
	return p.acquireOther(path, nil)
}

// acquireOther is acquire avoiding one backend (the one that just failed
// the request); avoid nil is acquire.
func (p *Proxy) acquireOther(path string, avoid *Backend) (Route, *Backend, acquireResult) {
	var rt Route
	for range acquireAttempts {
		var ok bool
		rt, ok = p.table.Load().Lookup(path)
		if !ok {
			return rt, nil, noRoute
		}
		var b *Backend
		if avoid == nil {
			b = rt.Pick()
		} else {
			b = pickOther(rt, avoid)
		}
		if b == nil {
			return rt, nil, noBackend
		}
		b.inflight.Add(1)
		if !b.closed.Load() {
			return rt, b, acquired
		}
		b.inflight.Add(-1)
	}
	return rt, nil, noBackend
}

// localHandler returns the handler that serves path on the server itself
// (static files, Options.Local), or nil when the path is routed.
func (p *Proxy) localHandler(path string) http.Handler {
	if p.staticPrefix != "" && hasSegmentPrefix(path, p.staticPrefix) {
		return staticHandler{p}
	}
	if p.local != nil {
		if h, ok := p.local[path]; ok {
			return h
		}
	}
	return nil
}

// release ends an attempt on st.backend: it counts the request served
// (unless it never reached the worker), then no longer in flight.
func (p *Proxy) release(st *reqState) {
	b := st.backend
	if !st.dialErr {
		if n := b.served.Add(1); n == b.MaxRequests && p.onMax != nil {
			p.onMax(b.Instance)
		}
	}
	b.inflight.Add(-1)
}

// fail answers a request whose attempt on st.backend failed before any
// response went out: the client's own fault (400, 408), 499 (client left),
// a retry, 504 or 502.
func (p *Proxy) fail(c *conn, st *reqState, err error) {
	dialFailed := isDialError(err)
	if dialFailed {
		st.dialErr = true
	}
	switch {
	case c.body.bad.Load():
		p.log.Debug().Str("worker", st.worker).Str("path", st.path).Err(c.body.err).Msg("request body refused")
		c.closing = true
		c.writeError(http.StatusBadRequest, "400 bad request: "+c.body.err.Error(), false)
		return
	case c.body.timedOut.Load():
		c.closing = true
		c.writeError(http.StatusRequestTimeout, "408 request timeout: the request body stalled", false)
		return
	case c.gone():
		p.log.Debug().Str("worker", st.worker).Str("instance", st.backend.Instance).
			Str("path", st.path).Err(err).Msg("client went away")
		c.broken = true
		return
	}
	if dialFailed && st.canRetry {
		if rt, ok := p.table.Load().Lookup(st.path); p.holdFor > 0 || ok && rt.hasOtherThan(st.backend) {
			p.log.Debug().Str("worker", st.worker).Str("instance", st.backend.Instance).
				Err(err).Msg("worker unreachable, retrying on another instance")
			st.retry = true
			return
		}
	}
	if st.unanswered && st.canRetry && p.holdFor > 0 && c.req.replayable() && p.nextInstance(st) {
		// Nothing came back, so nothing went out: the request can still
		// have its answer from the next instance (see hold.go).
		p.log.Debug().Str("worker", st.worker).Str("instance", st.backend.Instance).
			Err(err).Msg("worker connection died before answering, retrying on another instance")
		st.retry = true
		return
	}
	if isTimeout(err) && !dialFailed {
		p.log.Warn().Str("worker", st.worker).Str("instance", st.backend.Instance).
			Str("addr", st.backend.Addr).Str("path", st.path).Err(err).Msg("worker did not answer in time")
		c.writeError(http.StatusGatewayTimeout, "504 gateway timeout: worker "+st.worker+" did not answer in time", false)
		return
	}
	p.log.Warn().Str("worker", st.worker).Str("instance", st.backend.Instance).
		Str("addr", st.backend.Addr).Str("path", st.path).Err(err).Msg("worker unavailable")
	c.writeError(http.StatusBadGateway, "502 bad gateway: worker "+st.worker+" unavailable", false)
}

// isDialError reports whether err means no connection to the worker was made,
// so the request was certainly not delivered.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// recoverConn is the last line of defence of a connection's goroutines: a
// bug that panics on some input costs that connection, logged with its
// stack, not the server and every other connection.
func (p *Proxy) recoverConn(what string, nc net.Conn) {
	if r := recover(); r != nil {
		nc.Close()
		p.log.Error().Str("remote", nc.RemoteAddr().String()).Interface("panic", r).
			Str("stack", string(debug.Stack())).Msg(what + " panicked: closed")
	}
}
