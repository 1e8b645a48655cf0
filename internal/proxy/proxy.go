package proxy

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
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
	// ResponseHeaderTimeout bounds how long a worker may take to start its
	// answer (0 = no limit), so a hung worker cannot pin proxy requests
	// forever. Streaming bodies are not limited by it.
	ResponseHeaderTimeout time.Duration
	// DisableFastPath sends every request through httputil.ReverseProxy
	// instead of only those the fast path leaves to it (upgrades, Expect,
	// HTTP/1.0 and HTTP/2 clients, unusual methods and queries).
	DisableFastPath bool
}

// Proxy routes requests to worker instances and serves static files.
// It is an http.Handler; see the package doc for its concurrency contract.
type Proxy struct {
	table atomic.Pointer[Table]

	rp        *httputil.ReverseProxy
	transport *http.Transport
	// fast enables the hand-rolled HTTP/1.1 forwarder (fast.go) for the
	// requests it handles; the rest take rp.
	fast          bool
	headerTimeout time.Duration
	// dial is the transport's dialer; a field so tests can interpose on it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	log   zerolog.Logger
	onMax func(instance string)

	staticPrefix string // "" when static files are disabled
	workersDir   string
	cacheControl string
}

const (
	// acquireAttempts bounds how often a request re-routes after finding
	// its backend closed; each miss means a swap happened in between.
	acquireAttempts = 8
	// statusClientClosedRequest is nginx's code for a client that went away
	// before the response; only loggers and middleware ever see it.
	statusClientClosedRequest = 499
)

// New returns a Proxy with an empty table (every request 404s, static files
// aside) until Swap installs one.
func New(opts Options) *Proxy {
	p := &Proxy{
		log:           opts.Logger,
		fast:          !opts.DisableFastPath && !stockByDefault,
		headerTimeout: opts.ResponseHeaderTimeout,
		onMax:         opts.OnMaxRequests,
		workersDir:    opts.WorkersDir,
		cacheControl:  "public, max-age=" + strconv.Itoa(max(opts.CacheMaxAge, 0)),
	}
	if opts.StaticEnabled {
		p.staticPrefix = strings.TrimRight(opts.StaticPrefix, "/")
		if p.staticPrefix == "" {
			p.staticPrefix = "/static"
		}
		if p.staticPrefix[0] != '/' {
			p.staticPrefix = "/" + p.staticPrefix
		}
	}
	p.table.Store(NewTable(nil))

	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	p.dial = dialer.DialContext
	p.transport = &http.Transport{
		Proxy: nil, // workers are on loopback; never route through HTTP_PROXY
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.dial(ctx, network, addr)
		},
		MaxIdleConns:          16384,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: opts.ResponseHeaderTimeout,
		ForceAttemptHTTP2:     false,
		// Pass Content-Encoding through untouched instead of letting the
		// transport ask for gzip and decompress on the worker's behalf.
		DisableCompression: true,
		WriteBufferSize:    32 << 10,
		ReadBufferSize:     32 << 10,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:       p.rewrite,
		Transport:     p.transport,
		FlushInterval: -1, // stream every write: server-sent events, long polls
		ErrorHandler:  p.errorHandler,
		ErrorLog:      log.New(debugWriter{&p.log}, "", 0),
		BufferPool:    bufferPool{},
	}
	return p
}

// Swap installs t as the routing table; requests that already chose a
// backend finish there. Swap before closing backends that t drops.
func (p *Proxy) Swap(t *Table) {
	if t == nil {
		t = NewTable(nil)
	}
	p.table.Store(t)
}

// Table returns the current routing table (never nil).
func (p *Proxy) Table() *Table { return p.table.Load() }

// CloseIdleConnections closes idle keep-alive connections to workers (those
// of backends no longer in the table close when the backend is closed).
func (p *Proxy) CloseIdleConnections() {
	p.transport.CloseIdleConnections()
	for _, rt := range p.table.Load().sorted {
		for _, b := range rt.Backends {
			b.closeIdle()
		}
	}
}

// stockByDefault makes New disable the fast path; tests set it to run the
// whole suite against the stock path.
var stockByDefault bool

// reqState travels with a forwarded request. It is also the request's
// context (the client's context embedded), which saves a context.WithValue
// allocation on every request.
type reqState struct {
	context.Context
	path     string
	worker   string
	backend  *Backend
	canRetry bool // no request body, not retried yet
	retry    bool // set by errorHandler: dial failed and another backend now serves the route
	dialErr  bool // this attempt never reached the backend
	fast     bool // forwarded by forwardFast rather than rp
}

type stateKey struct{}

func (s *reqState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return s
	}
	return s.Context.Value(key)
}

func stateOf(r *http.Request) *reqState {
	s, _ := r.Context().Value(stateKey{}).(*reqState)
	return s
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
	var rt Route
	for range acquireAttempts {
		var ok bool
		rt, ok = p.table.Load().Lookup(path)
		if !ok {
			return rt, nil, noRoute
		}
		b := rt.Pick()
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

// ServeHTTP serves static files under the static prefix and proxies
// everything else to the worker whose route matches.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if p.staticPrefix != "" && hasSegmentPrefix(path, p.staticPrefix) {
		p.serveStatic(w, r, path[len(p.staticPrefix):])
		return
	}
	rt, b, res := p.acquire(path)
	if res != acquired {
		p.writeUnrouted(w, rt, res)
		return
	}
	if r.ContentLength != 0 {
		// Without this, net/http drains (and so steals) unread request body
		// once the worker's response headers are written, instead of letting
		// the body keep streaming to the worker.
		_ = http.NewResponseController(w).EnableFullDuplex()
		// With full duplex, a body left unread (the worker failed before
		// reading it) makes net/http panic at the next keep-alive read
		// (golang/go#68560) unless the handler closes it itself.
		defer r.Body.Close()
	}
	st := &reqState{
		Context:  r.Context(),
		path:     path,
		worker:   rt.Worker,
		backend:  b,
		canRetry: r.ContentLength == 0 && (r.Body == nil || r.Body == http.NoBody),
		fast:     p.fastEligible(r),
	}
	req := r
	if !st.fast {
		req = r.WithContext(st)
	}
	p.forward(w, req, st)
	if !st.retry {
		return
	}
	st.retry, st.canRetry, st.dialErr = false, false, false
	rt, b, res = p.acquire(path)
	if res != acquired {
		p.writeUnrouted(w, rt, res)
		return
	}
	st.worker, st.backend = rt.Worker, b
	p.forward(w, req, st)
}

func (p *Proxy) writeUnrouted(w http.ResponseWriter, rt Route, res acquireResult) {
	if res == noRoute {
		http.Error(w, "404 not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Retry-After", "1")
	http.Error(w, "503 service unavailable: worker "+rt.Worker+" has no serving instance", http.StatusServiceUnavailable)
}

// forward sends one attempt to st.backend, which acquire committed to.
// The deferred accounting also runs when ReverseProxy aborts the response
// with panic(http.ErrAbortHandler).
func (p *Proxy) forward(w http.ResponseWriter, req *http.Request, st *reqState) {
	defer p.release(st)
	if st.fast {
		hasBody := req.ContentLength != 0 && req.Body != nil && req.Body != http.NoBody
		p.forwardFast(&rwSink{w: w, r: req}, st, st, fastReq{
			hasBody:    hasBody,
			isHead:     req.Method == http.MethodHead,
			replayable: !hasBody && (req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions),
			length:     req.ContentLength,
		})
		return
	}
	p.rp.ServeHTTP(w, req)
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

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In)
	// Path, raw path and query stay as the client sent them; Host too, so
	// workers see the public host (also in X-Forwarded-Host).
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.backend.Addr
	pr.SetXForwarded()
}

func (p *Proxy) errorHandler(w http.ResponseWriter, out *http.Request, err error) {
	p.fail(&rwSink{w: w, r: out}, stateOf(out), err)
}

// fail answers a request whose attempt on st.backend failed before any
// response went out: 499 (client left), a retry, 504 or 502.
func (p *Proxy) fail(s sink, st *reqState, err error) {
	dialFailed := isDialError(err)
	if dialFailed {
		st.dialErr = true
	}
	if s.gone() {
		p.log.Debug().Str("worker", st.worker).Str("instance", st.backend.Instance).
			Str("path", st.path).Err(err).Msg("client went away")
		s.fail(statusClientClosedRequest, "")
		return
	}
	if dialFailed && st.canRetry {
		if rt, ok := p.table.Load().Lookup(st.path); ok && rt.hasOtherThan(st.backend) {
			p.log.Debug().Str("worker", st.worker).Str("instance", st.backend.Instance).
				Err(err).Msg("worker unreachable, retrying on another instance")
			st.retry = true
			return
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !dialFailed {
		p.log.Warn().Str("worker", st.worker).Str("instance", st.backend.Instance).
			Str("addr", st.backend.Addr).Str("path", st.path).Err(err).Msg("worker did not answer in time")
		s.fail(http.StatusGatewayTimeout, "504 gateway timeout: worker "+st.worker+" did not answer in time")
		return
	}
	p.log.Warn().Str("worker", st.worker).Str("instance", st.backend.Instance).
		Str("addr", st.backend.Addr).Str("path", st.path).Err(err).Msg("worker unavailable")
	s.fail(http.StatusBadGateway, "502 bad gateway: worker "+st.worker+" unavailable")
}

// isDialError reports whether err means no connection to the worker was made,
// so the request was certainly not delivered.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// debugWriter sends ReverseProxy's own log lines (mostly clients that left
// mid-response) to zerolog at debug level.
type debugWriter struct{ log *zerolog.Logger }

func (d debugWriter) Write(b []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
