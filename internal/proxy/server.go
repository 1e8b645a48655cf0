package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the engine's client side: it serves every HTTP/1.x connection
// on its listeners itself, in dev and in prod — keep-alive, pipelining,
// bodies of any framing and length, Expect: 100-continue, upgrades as byte
// tunnels, static files and the local handlers — and forwards requests to
// workers through its Proxy. Whatever breaks the grammar (http1.go) gets
// its 4xx/5xx and the connection is closed; nothing ambiguous is forwarded.
type Server struct {
	p    *Proxy
	opts ServerOptions

	inShutdown atomic.Bool
	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*conn]struct{}
	janitor    sync.Once
	stopJan    chan struct{}
	janDone    chan struct{}
}

// ServerOptions are the client-side limits. Every timeout bounds the time
// between two steps that make progress, not a whole request or response,
// so streams of any length pass; zero means none.
type ServerOptions struct {
	// HeaderTimeout bounds reading one request head, from its first byte
	// (from the accept for a connection's first request).
	HeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection.
	IdleTimeout time.Duration
	// ReadTimeout bounds the wait for more of a request body.
	ReadTimeout time.Duration
	// WriteTimeout bounds a write to the client that makes no progress.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request head (default 64 KiB); larger gets 431.
	MaxHeaderBytes int
}

const (
	clientReadBuf  = 8 << 10
	clientWriteBuf = 4 << 10
	// watchDelay is how long a request may wait for its worker before the
	// server starts watching the client connection for a hang-up.
	watchDelay = 20 * time.Millisecond
	// newConnGrace is how long Shutdown lets a connection that has sent
	// nothing yet live.
	newConnGrace = 5 * time.Second
	// defaultMaxHeaderBytes is the request head limit by default.
	defaultMaxHeaderBytes = 64 << 10
)

// NewServer returns a server for p.
func NewServer(p *Proxy, opts ServerOptions) *Server {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	return &Server{
		p: p, opts: opts,
		listeners: map[*net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		stopJan:   make(chan struct{}),
		janDone:   make(chan struct{}),
	}
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	s.janitor.Do(func() { go s.p.sweepIdle(s.stopJan, s.janDone) })
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			//lint:ignore SA1019 the same test http.Server uses
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

func (s *Server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for ln := range s.listeners {
		if cerr := (*ln).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

func (s *Server) stopJanitor() {
	s.janitor.Do(func() { close(s.janDone) }) // never started
	select {
	case <-s.stopJan:
	default:
		close(s.stopJan)
	}
	<-s.janDone
}

// Shutdown stops accepting, closes idle connections, and waits until the
// connections still serving a request have finished it, or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.inShutdown.Store(true)
	s.mu.Unlock()
	s.p.stopHolding()
	lnErr := s.closeListeners()
	wait := time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	for !s.closeIdle() {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-timer.C:
			wait = min(2*wait, 100*time.Millisecond)
			timer.Reset(wait)
			continue
		}
		break
	}
	s.stopJanitor()
	if err == nil {
		err = lnErr
	}
	return err
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.inShutdown.Store(true)
	s.mu.Unlock()
	s.p.stopHolding()
	err := s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.state.Store(connClosed)
		c.nc.Close()
	}
	s.mu.Unlock()
	s.stopJanitor()
	return err
}

// closeIdle closes the connections that wait for a request and reports
// whether none was left to begin with.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	quiet := len(s.conns) == 0
	old := time.Now().Add(-newConnGrace).Unix()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) ||
			c.acceptedAt < old && c.state.CompareAndSwap(connNew, connClosed) {
			c.nc.Close()
		}
	}
	return quiet
}

// Connection states (for Shutdown).
const (
	connNew    int32 = iota // nothing read yet
	connActive              // reading or serving a request
	connIdle                // waiting for the next request
	connClosed              // closed by Shutdown or Close
)

var (
	clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientReadBuf) }}
	clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientWriteBuf) }}
)

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{s: s, p: s.p, nc: nc, acceptedAt: time.Now().Unix(), watchDone: make(chan struct{}, 1)}
	if ip, _, err := net.SplitHostPort(nc.RemoteAddr().String()); err == nil {
		c.xff = []byte("X-Forwarded-For: " + ip + "\r\n")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inShutdown.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

// conn is one client connection. It serves one request at a time; while a
// request is forwarded, the body sender goroutine reads the request body
// from it and, once the body is in, a watcher may read it to notice a
// client that hangs up.
type conn struct {
	s          *Server
	p          *Proxy
	nc         net.Conn
	rio        *rawIO // nil when nc is not a socket
	br         *bufio.Reader
	bw         *bufio.Writer
	state      atomic.Int32
	acceptedAt int64
	xff        []byte    // "X-Forwarded-For: ip\r\n"
	rdl        time.Time // the read deadline set (aLongTimeAgo: not known)
	wdl        time.Time // the write deadline set

	// The request being served.
	headBuf  []byte
	req      request
	st       reqState
	body     reqBody
	now      time.Time
	closing  bool // Connection: close goes (or went) out; no further request
	broken   bool // the response cannot be completed: close
	chunkOut bool // the response body is chunked by the engine
	code     int  // the final status sent for the request (0: none yet)
	rewrite  BodyRewriter
	scratch  []byte

	// Watching the client while the worker works (see watch).
	cur         *workerConn
	localCancel context.CancelFunc
	watchState  atomic.Int32
	watchAbort  atomic.Bool
	clientGone  atomic.Bool
	interrupted atomic.Bool // the exchange stopped the body reader itself
	watchDone   chan struct{}
	timer       *time.Timer
}

// Client-watch states (see watch).
const (
	watchOff     int32 = iota
	watchPending       // armed once the request body is read
	watchArmed         // the timer runs
	watchRunning       // the watcher reads the client connection
	watchDone          // the watcher stopped by itself
)

var aLongTimeAgo = time.Unix(1, 0)

func (c *conn) setRead(t time.Time) {
	if !t.Equal(c.rdl) {
		c.nc.SetReadDeadline(t)
		c.rdl = t
	}
}

// setReadBy sets the read deadline to t, or leaves one already set at most
// slack later: a busy connection then moves its deadline (a runtime timer
// update) once per slack rather than per read. Callers pass a sixteenth of
// the timeout, so a timeout fires up to 6 % late, never early.
func (c *conn) setReadBy(t time.Time, slack time.Duration) {
	if laterBy(c.rdl, t, slack) {
		return
	}
	c.setRead(t.Add(slack))
}

// readProgress gives the client ReadTimeout from now for its next bytes.
func (c *conn) readProgress() {
	if rt := c.s.opts.ReadTimeout; rt > 0 {
		c.setReadBy(time.Now().Add(rt), rt/16)
	} else if !c.rdl.IsZero() {
		c.setRead(time.Time{})
	}
}

// writeProgress gives a write to the client WriteTimeout from now.
func (c *conn) writeProgress() {
	wt := c.s.opts.WriteTimeout
	if wt <= 0 {
		return
	}
	if t, slack := time.Now().Add(wt), wt/16; !laterBy(c.wdl, t, slack) {
		c.wdl = t.Add(slack)
		c.nc.SetWriteDeadline(c.wdl)
	}
}

// laterBy reports whether the deadline set is t or later, by at most slack.
// A zero (no) deadline is not.
func laterBy(set, t time.Time, slack time.Duration) bool {
	return !set.IsZero() && !set.Before(t) && set.Sub(t) <= slack
}

func (c *conn) serve() {
	s := c.s
	var rw interface {
		Read([]byte) (int, error)
		Write([]byte) (int, error)
	} = c.nc
	if r := socketIO(c.nc); r != nil {
		c.rio = r
		rw = r
		if wt := s.opts.WriteTimeout; wt > 0 {
			// A write that makes progress earns a fresh deadline.
			r.progress = func() { c.nc.SetWriteDeadline(time.Now().Add(wt)) }
		}
	}
	c.br = clientReaders.Get().(*bufio.Reader)
	c.br.Reset(rw)
	c.bw = clientWriters.Get().(*bufio.Writer)
	c.bw.Reset(rw)
	c.timer = time.AfterFunc(time.Hour, c.watchFire)
	c.timer.Stop()
	defer c.finish()
	defer c.p.recoverConn("client connection", c.nc)

	ht := s.opts.HeaderTimeout
	if ht > 0 {
		c.setRead(time.Now().Add(ht))
	}
	for first := true; ; first = false {
		if !first && c.br.Buffered() == 0 {
			c.state.Store(connIdle)
			if s.inShutdown.Load() {
				return
			}
			if it := s.opts.IdleTimeout; it > 0 {
				c.setReadBy(time.Now().Add(it), it/16)
			} else {
				c.setRead(time.Time{})
			}
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		}
		if !c.state.CompareAndSwap(connIdle, connActive) && !c.state.CompareAndSwap(connNew, connActive) &&
			c.state.Load() != connActive {
			return // closed by Shutdown
		}
		if !first && ht > 0 && !bytes.Contains(c.peekAll(), crlfcrlf) {
			c.setReadBy(time.Now().Add(ht), ht/16)
		}
		var err error
		c.headBuf, err = readRequestHead(c.br, c.headBuf, s.opts.MaxHeaderBytes)
		if err == nil {
			err = parseRequest(c.headBuf, &c.req)
		}
		if err != nil {
			c.refuse(err)
			return
		}
		if !c.serveRequest() {
			return
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

func (c *conn) peekAll() []byte {
	b, _ := c.br.Peek(c.br.Buffered())
	return b
}

// refuse answers a request head that could not be read or parsed, then the
// connection closes. A client that went silent or away gets nothing.
func (c *conn) refuse(err error) {
	var he *httpError
	switch {
	case errors.As(err, &he):
	case err == errHeadTooLarge || err == errTooManyFields:
		he = &httpError{code: http.StatusRequestHeaderFieldsTooLarge, reason: err.Error()}
	default:
		return // EOF, reset, timeout: nobody to answer
	}
	c.p.log.Debug().Str("remote", c.nc.RemoteAddr().String()).Int("status", he.code).
		Str("reason", he.reason).Msg("request refused")
	c.now = time.Now()
	c.closing = true
	c.req.method = ""
	c.writeError(he.code, http.StatusText(he.code)+": "+he.reason, false)
	c.p.countWorker("", c.code, c.now)
	c.writeProgress()
	c.bw.Flush()
	c.lingerClose()
}

// lingerClose closes after a refusal without resetting the connection
// under the answer: it stops writing, then reads (briefly, bounded) what
// the client still sends, as net/http's closeWriteAndWait does.
func (c *conn) lingerClose() {
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
		c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		var buf [4 << 10]byte
		for range 64 {
			if _, err := c.nc.Read(buf[:]); err != nil {
				break
			}
		}
	}
}

// serveRequest serves the parsed request and reports whether the
// connection can carry another.
func (c *conn) serveRequest() bool {
	s, p, r := c.s, c.p, &c.req
	c.now = time.Now()
	c.writeProgress()
	c.closing = r.close || s.inShutdown.Load()
	c.broken = false
	c.code = 0
	c.rewrite = nil
	c.clientGone.Store(false)
	c.interrupted.Store(false)
	c.body.reset(c, r.length)
	hasBody := r.length != 0

	path := bytesView(r.path)
	if h := p.localHandler(path); h != nil {
		c.serveLocal(h)
		if _, ok := h.(staticHandler); ok {
			p.countStatic(path, c.code, c.now)
		}
		return c.finishResponse()
	}
	rt, b, res := p.acquire(path)
	if res != acquired {
		if res == noBackend && p.holdFor > 0 {
			rt, b, res = c.hold(path, nil, time.Now().Add(p.holdFor))
		}
		if res != acquired {
			c.unrouted(rt, res)
			return c.finishResponse()
		}
	}
	if r.expect {
		// The engine answers the expectation itself: the body will be
		// read (and streamed to the worker) from now on.
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		c.flush()
	}
	c.st = reqState{path: path, worker: rt.Worker, backend: b, canRetry: !hasBody}
	c.forward()
	if c.st.retry {
		c.retry(path)
	}
	return c.finishResponse()
}

// finishResponse flushes the response and reports whether the connection
// can carry another request.
func (c *conn) finishResponse() bool {
	if c.broken || c.clientGone.Load() {
		return false
	}
	c.writeProgress()
	if c.bw.Flush() != nil {
		return false
	}
	if c.closing || c.s.inShutdown.Load() {
		return false
	}
	if !c.body.done() {
		return false // the worker answered without reading all of it
	}
	return true
}

func (c *conn) forward() {
	defer c.release()
	c.p.forwardTo(c, &c.st)
}

// release counts the attempt's answer on its backend, then ends the
// attempt. An attempt that hands the request to another instance counts
// nothing here; one that sent no status counts as 499 (the client left).
func (c *conn) release() {
	if st := &c.st; !st.retry {
		code := c.code
		if code == 0 {
			code = statusClientClosedRequest
		}
		st.backend.requests.Observe(code, time.Since(c.now))
	}
	c.p.release(&c.st)
}

func (c *conn) writeUnrouted(rt Route, res acquireResult) {
	if res == noRoute {
		c.writeError(http.StatusNotFound, "404 not found", false)
		return
	}
	c.writeError(http.StatusServiceUnavailable, "503 service unavailable: worker "+rt.Worker+" has no serving instance", true)
}

// writeError answers as http.Error would.
func (c *conn) writeError(code int, msg string, retryAfter bool) {
	c.code = code
	bw := c.bw
	bw.WriteString(statusLine(code))
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	bw.Write(dateLine(c.now))
	bw.WriteString("Content-Length: ")
	bw.Write(appendInt(bw.AvailableBuffer(), int64(len(msg)+1)))
	bw.WriteString("\r\n")
	if retryAfter {
		bw.WriteString("Retry-After: 1\r\n")
	}
	if c.closing {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if c.req.method != http.MethodHead {
		bw.WriteString(msg)
		bw.WriteByte('\n')
	}
}

func (c *conn) finish() {
	c.timer.Stop()
	s := c.s
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.nc.Close()
	c.br.Reset(nil)
	clientReaders.Put(c.br)
	c.bw.Reset(nil)
	clientWriters.Put(c.bw)
}
