package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The front serves client connections itself for the common request — an
// HTTP/1.1 keep-alive GET/HEAD/POST/PUT/DELETE/PATCH/OPTIONS with an
// origin-form target, a plain Host, no Upgrade, Expect or Trailer, framed by
// Content-Length, chunked or nothing, routed to a worker — and writes the
// worker's answer straight to the connection: no http.Request, no header
// maps, no ResponseWriter. The first request it does not take (HTTP/1.0,
// HTTP/2, upgrades, static files, anything unusual or malformed, heads
// larger than its buffer) hands the whole connection, with the bytes already
// read, to the fallback http.Server through an in-memory listener, and the
// connection stays there.

// FrontOptions configures a Front. Timeouts and the header limit come from
// the fallback http.Server, so both halves apply the same ones.
type FrontOptions struct {
	// Disable hands every connection to the fallback server, as does
	// TQPROXY_FRONT=0 in the environment and a Proxy without its fast path.
	Disable bool
}

const (
	frontReadBuf  = 8 << 10 // request heads longer than this go to net/http
	frontWriteBuf = 4 << 10
	// watchDelay is how long a request may wait for its worker before the
	// front starts watching the client connection for a hang-up (net/http
	// watches from the start, at the cost of a goroutine and a read per
	// request).
	watchDelay = 20 * time.Millisecond
	// newConnGrace is how long Shutdown lets a connection that has sent
	// nothing yet live (net/http's rule for StateNew).
	newConnGrace = 5 * time.Second
)

// Front serves client connections; see the comment above.
type Front struct {
	p        *Proxy
	fallback *http.Server
	hl       *handoffListener
	enabled  bool

	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	maxHead           int

	inShutdown atomic.Bool
	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	conns      map[*frontConn]struct{}
	fbStart    sync.Once
	fbDone     chan struct{} // closed when fallback.Serve returns
	fbStarted  atomic.Bool
}

// NewFront returns a front for p that hands what it does not serve to
// fallback, whose Handler should be p (or wrap it).
func (p *Proxy) NewFront(fallback *http.Server, opts FrontOptions) *Front {
	f := &Front{
		p:                 p,
		fallback:          fallback,
		hl:                newHandoffListener(),
		enabled:           !opts.Disable && p.fast && os.Getenv("TQPROXY_FRONT") != "0",
		readHeaderTimeout: fallback.ReadHeaderTimeout,
		readTimeout:       fallback.ReadTimeout,
		writeTimeout:      fallback.WriteTimeout,
		idleTimeout:       fallback.IdleTimeout,
		maxHead:           fallback.MaxHeaderBytes,
		listeners:         map[*net.Listener]struct{}{},
		conns:             map[*frontConn]struct{}{},
		fbDone:            make(chan struct{}),
	}
	// net/http's fallbacks: header timeout from ReadTimeout, idle from
	// ReadTimeout.
	if f.readHeaderTimeout == 0 {
		f.readHeaderTimeout = f.readTimeout
	}
	if f.idleTimeout == 0 {
		f.idleTimeout = f.readTimeout
	}
	if f.maxHead <= 0 {
		f.maxHead = http.DefaultMaxHeaderBytes
	}
	f.maxHead = min(f.maxHead, frontReadBuf)
	return f
}

// Enabled reports whether the front serves connections itself.
func (f *Front) Enabled() bool { return f.enabled }

func (f *Front) startFallback() {
	f.fbStart.Do(func() {
		f.fbStarted.Store(true)
		go func() {
			defer close(f.fbDone)
			f.fallback.Serve(f.hl)
		}()
	})
}

// Serve accepts connections on ln until Shutdown or Close, like
// http.Server.Serve, and returns http.ErrServerClosed after them.
func (f *Front) Serve(ln net.Listener) error {
	if !f.enabled {
		return f.fallback.Serve(ln)
	}
	f.startFallback()
	if !f.trackListener(&ln, true) {
		return http.ErrServerClosed
	}
	defer f.trackListener(&ln, false)
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if f.inShutdown.Load() {
				return http.ErrServerClosed
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
		if _, isTLS := nc.(*tls.Conn); isTLS {
			f.hl.deliver(nc)
			continue
		}
		fc := f.newConn(nc)
		if fc == nil {
			nc.Close()
			continue
		}
		go fc.serve()
	}
}

func (f *Front) trackListener(ln *net.Listener, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.inShutdown.Load() {
			return false
		}
		f.listeners[ln] = struct{}{}
	} else {
		delete(f.listeners, ln)
	}
	return true
}

func (f *Front) closeListeners() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	for ln := range f.listeners {
		if cerr := (*ln).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// Shutdown stops accepting, closes idle connections, and waits until the
// connections still serving a request have finished it, or ctx ends. It
// shuts the fallback server down alongside.
func (f *Front) Shutdown(ctx context.Context) error {
	if !f.enabled {
		return f.fallback.Shutdown(ctx)
	}
	f.inShutdown.Store(true)
	lnErr := f.closeListeners()
	fbErr := make(chan error, 1)
	go func() { fbErr <- f.fallback.Shutdown(ctx) }()
	wait := time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	for !f.closeIdle() {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-timer.C:
			wait = min(2*wait, 500*time.Millisecond)
			timer.Reset(wait)
			continue
		}
		break
	}
	if ferr := <-fbErr; err == nil {
		err = ferr
	}
	f.hl.Close()
	if f.fbStarted.Load() {
		<-f.fbDone
	}
	if err == nil {
		err = lnErr
	}
	return err
}

// Close closes every listener and connection at once, the fallback
// server's too.
func (f *Front) Close() error {
	if !f.enabled {
		return f.fallback.Close()
	}
	f.inShutdown.Store(true)
	err := f.closeListeners()
	f.mu.Lock()
	for fc := range f.conns {
		fc.state.Store(connClosed)
		fc.nc.Close()
	}
	f.mu.Unlock()
	if ferr := f.fallback.Close(); err == nil {
		err = ferr
	}
	f.hl.Close()
	if f.fbStarted.Load() {
		<-f.fbDone
	}
	return err
}

// closeIdle closes the connections that wait for a request and reports
// whether none was left to begin with.
func (f *Front) closeIdle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	quiet := len(f.conns) == 0
	old := time.Now().Add(-newConnGrace).Unix()
	for fc := range f.conns {
		if fc.state.CompareAndSwap(connIdle, connClosed) ||
			fc.acceptedAt < old && fc.state.CompareAndSwap(connNew, connClosed) {
			fc.nc.Close()
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

// Client-watch states (see watch).
const (
	watchOff     int32 = iota
	watchPending       // armed once the request body is read
	watchArmed         // the timer runs
	watchRunning       // the watcher reads the client connection
	watchDone          // the watcher stopped by itself
)

// frontConn is one client connection served by the front. It is also the
// sink of its requests' exchanges.
type frontConn struct {
	f          *Front
	p          *Proxy
	nc         net.Conn
	br         *bufio.Reader
	bw         *bufio.Writer
	state      atomic.Int32
	acceptedAt int64
	xff        []byte    // "X-Forwarded-For: ip\r\n"
	rdl        time.Time // the read deadline set (aLongTimeAgo: not known)
	wdl        time.Time // the write deadline set

	// The request being served.
	headBuf  []byte // a copy of its head; req's slices alias it
	req      frontReq
	st       reqState
	reqBody  frontBody
	now      time.Time
	hdrDL    time.Time // deadlines of the request being read, for a handoff
	reqDL    time.Time
	handed   bool // the connection went to net/http
	chunkOut bool // the response body is re-chunked
	closing  bool // Connection: close goes (or went) out
	broken   bool // the response cannot be completed: close
	trailers []byte

	// Watching the client while the worker works (see watch).
	cur        *workerConn
	watchState atomic.Int32
	watchAbort atomic.Bool
	clientGone atomic.Bool
	// interrupted: the exchange ended before the body was read and stopped
	// its reader (not a client failure).
	interrupted atomic.Bool
	watchDone   chan struct{}
	timer       *time.Timer
}

var (
	frontReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frontReadBuf) }}
	frontWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, frontWriteBuf) }}
)

func (f *Front) newConn(nc net.Conn) *frontConn {
	fc := &frontConn{f: f, p: f.p, nc: nc, acceptedAt: time.Now().Unix(), watchDone: make(chan struct{}, 1)}
	if ip, _, err := net.SplitHostPort(nc.RemoteAddr().String()); err == nil {
		fc.xff = []byte("X-Forwarded-For: " + ip + "\r\n")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inShutdown.Load() {
		return nil
	}
	f.conns[fc] = struct{}{}
	return fc
}

func (fc *frontConn) setRead(t time.Time) {
	if !t.Equal(fc.rdl) {
		fc.nc.SetReadDeadline(t)
		fc.rdl = t
	}
}

// setReadBy sets the read deadline to t, or leaves one that is already set
// at most slack later: a keep-alive connection then updates its deadline
// (a runtime timer, under a lock) once per slack rather than per request.
// Callers pass slack as a sixteenth of the timeout, so a timeout can fire
// up to 6 % late, never early.
func (fc *frontConn) setReadBy(t time.Time, slack time.Duration) {
	if laterBy(fc.rdl, t, slack) {
		return
	}
	fc.setRead(t.Add(slack))
}

// laterBy reports whether the deadline set is t or later, by at most slack.
// A zero (no) deadline is not.
func laterBy(set, t time.Time, slack time.Duration) bool {
	return !set.IsZero() && !set.Before(t) && set.Sub(t) <= slack
}

func (fc *frontConn) serve() {
	f := fc.f
	rw := socketIO(fc.nc)
	fc.br = frontReaders.Get().(*bufio.Reader)
	fc.br.Reset(rw)
	fc.bw = frontWriters.Get().(*bufio.Writer)
	fc.bw.Reset(rw)
	fc.timer = time.AfterFunc(time.Hour, fc.watchFire)
	fc.timer.Stop()
	defer fc.finish()

	now := time.Now()
	if f.readHeaderTimeout > 0 {
		fc.setRead(now.Add(f.readHeaderTimeout))
	}
	for first := true; ; first = false {
		// Wait for the first byte of the request; only then do the
		// header and request timeouts start (as in net/http).
		if !first && fc.br.Buffered() == 0 {
			fc.state.Store(connIdle)
			if f.inShutdown.Load() {
				return
			}
			if f.idleTimeout > 0 {
				fc.setReadBy(time.Now().Add(f.idleTimeout), f.idleTimeout/16)
			} else {
				fc.setRead(time.Time{})
			}
			if _, err := fc.br.Peek(1); err != nil {
				return
			}
		} else if first {
			if _, err := fc.br.Peek(1); err != nil {
				return
			}
		}
		if !fc.state.CompareAndSwap(connIdle, connActive) && !fc.state.CompareAndSwap(connNew, connActive) &&
			fc.state.Load() != connActive {
			return // closed by Shutdown
		}
		t0 := time.Now()
		fc.hdrDL, fc.reqDL = time.Time{}, time.Time{}
		if f.readTimeout > 0 {
			fc.reqDL = t0.Add(f.readTimeout)
		}
		if first {
			if f.readHeaderTimeout > 0 {
				fc.hdrDL = now.Add(f.readHeaderTimeout)
			}
		} else if f.readHeaderTimeout > 0 {
			fc.hdrDL = t0.Add(f.readHeaderTimeout)
			if !bytes.Contains(fc.peekAll(), crlfcrlf) {
				fc.setRead(fc.hdrDL)
			}
		}
		n, ok := fc.readHead()
		if n == 0 {
			if ok {
				fc.handoff()
			}
			return
		}
		fc.headBuf = append(fc.headBuf[:0], fc.peekAll()[:n]...)
		if !parseFrontHead(fc.headBuf, &fc.req) {
			fc.handoff()
			return
		}
		path := fc.req.path
		if fc.p.staticPrefix != "" && hasSegmentPrefix(bytesView(path), fc.p.staticPrefix) {
			fc.handoff()
			return
		}
		fc.br.Discard(n)
		if !fc.serveRequest(t0) {
			return
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

func (fc *frontConn) peekAll() []byte {
	b, _ := fc.br.Peek(fc.br.Buffered())
	return b
}

// readHead waits until the buffer holds a whole request head and returns
// its length. Otherwise n is 0 and ok says whether to hand the connection
// to net/http (too large for us, or cut short: net/http answers those)
// rather than close it (timeout, or closed before a byte of the request).
func (fc *frontConn) readHead() (n int, ok bool) {
	from := 0
	for {
		buf := fc.peekAll()
		if i := bytes.Index(buf[from:], crlfcrlf); i >= 0 {
			n = from + i + 4
			if n > fc.f.maxHead {
				return 0, true
			}
			return n, true
		}
		if len(buf) >= fc.f.maxHead || len(buf) == fc.br.Size() {
			return 0, true
		}
		from = max(0, len(buf)-3)
		if _, err := fc.br.Peek(len(buf) + 1); err != nil {
			if isTimeout(err) || len(buf) == 0 {
				return 0, false
			}
			return 0, true
		}
	}
}

// serveRequest serves the parsed request and reports whether the
// connection can carry another.
func (fc *frontConn) serveRequest(t0 time.Time) bool {
	f, p, r := fc.f, fc.p, &fc.req
	fc.now = time.Now()
	if f.writeTimeout > 0 {
		// Like setReadBy: up to a sixteenth late, one timer update per
		// sixteenth of the timeout on a busy keep-alive connection.
		if t, slack := fc.now.Add(f.writeTimeout), f.writeTimeout/16; !laterBy(fc.wdl, t, slack) {
			fc.wdl = t.Add(slack)
			fc.nc.SetWriteDeadline(fc.wdl)
		}
	}
	fc.closing = r.close || f.inShutdown.Load()
	fc.broken = false
	fc.clientGone.Store(false)
	hasBody := r.length != 0
	fc.reqBody = frontBody{fc: fc, remaining: r.length}
	fc.reqBody.eof.Store(!hasBody)
	fc.interrupted.Store(false)
	if hasBody {
		// Body reads run against the whole-request deadline.
		fc.setRead(fc.reqDL)
		if r.length < 0 {
			fc.reqBody.chunked = httputil.NewChunkedReader(fc.br)
		}
	}
	path := bytesView(r.path)
	rt, b, res := p.acquire(path)
	if res != acquired {
		if hasBody {
			fc.closing = true // its body stays unread
		}
		fc.writeUnrouted(rt, res)
		return fc.bw.Flush() == nil && !fc.closing
	}
	fc.st = reqState{path: path, worker: rt.Worker, backend: b, canRetry: !hasBody, fast: true}
	fr := fastReq{
		hasBody:    hasBody,
		isHead:     r.method == http.MethodHead,
		replayable: !hasBody && (r.method == http.MethodGet || r.method == http.MethodHead || r.method == http.MethodOptions),
		length:     r.length,
	}
	fc.forward(fr)
	if fc.st.retry {
		fc.st.retry, fc.st.canRetry, fc.st.dialErr = false, false, false
		rt, b, res = p.acquire(path)
		if res != acquired {
			fc.writeUnrouted(rt, res)
		} else {
			fc.st.worker, fc.st.backend = rt.Worker, b
			fc.forward(fr)
		}
	}
	if fc.broken || fc.clientGone.Load() {
		return false
	}
	if fc.bw.Flush() != nil {
		return false
	}
	return !fc.closing && fc.reqBody.eof.Load() && !f.inShutdown.Load()
}

func (fc *frontConn) forward(fr fastReq) {
	defer fc.p.release(&fc.st)
	fc.p.forwardFast(fc, &fc.st, context.Background(), fr)
}

func (fc *frontConn) writeUnrouted(rt Route, res acquireResult) {
	if res == noRoute {
		fc.writeError(http.StatusNotFound, "404 not found", false)
		return
	}
	fc.writeError(http.StatusServiceUnavailable, "503 service unavailable: worker "+rt.Worker+" has no serving instance", true)
}

// writeError answers as http.Error would.
func (fc *frontConn) writeError(code int, msg string, retryAfter bool) {
	bw := fc.bw
	bw.WriteString(statusLine(code))
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	bw.Write(dateLine(fc.now))
	bw.WriteString("Content-Length: ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(msg)+1), 10))
	bw.WriteString("\r\n")
	if retryAfter {
		bw.WriteString("Retry-After: 1\r\n")
	}
	if fc.closing {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if fc.req.method != http.MethodHead {
		bw.WriteString(msg)
		bw.WriteByte('\n')
	}
}

// handoff gives the connection, with whatever is buffered, to net/http.
func (fc *frontConn) handoff() {
	fc.handed = true
	fc.f.hl.deliver(&handoffConn{Conn: fc.nc, br: fc.br, clamp: [2]time.Time{fc.hdrDL, fc.reqDL}})
}

func (fc *frontConn) finish() {
	fc.timer.Stop()
	f := fc.f
	f.mu.Lock()
	delete(f.conns, fc)
	f.mu.Unlock()
	if !fc.handed {
		fc.nc.Close()
		fc.br.Reset(nil)
		frontReaders.Put(fc.br)
	}
	fc.bw.Reset(nil)
	frontWriters.Put(fc.bw)
}

// The sink side (see fast.go).

func (fc *frontConn) writeRequestHead(bw *bufio.Writer, hasBody bool) {
	writeFrontRequestHead(bw, &fc.req, fc.xff, hasBody)
}

func (fc *frontConn) body() io.Reader { return &fc.reqBody }
func (fc *frontConn) gone() bool      { return fc.clientGone.Load() }
func (fc *frontConn) viewHeaders() bool {
	return true
}
func (fc *frontConn) join() bool { return true }
func (fc *frontConn) abort()     { fc.broken = true }
func (fc *frontConn) flush()     { fc.bw.Flush() }

// interruptBody stops a body sender that still reads the client; the
// connection is not reused after that.
func (fc *frontConn) interruptBody() {
	if fc.reqBody.eof.Load() {
		return
	}
	fc.interrupted.Store(true)
	fc.nc.SetReadDeadline(aLongTimeAgo)
	fc.rdl = aLongTimeAgo
	fc.closing = true
}

var aLongTimeAgo = time.Unix(1, 0)

// watch and unwatch stand for net/http's background read, which cancels a
// request whose client hung up. Most requests are answered before a
// watcher would be worth its cost, so it starts only once a request has
// waited watchDelay (after its body is read): it then reads the client
// connection, and EOF or an error there closes the worker connection.
func (fc *frontConn) watch(c *workerConn) {
	fc.cur = c
	fc.watchAbort.Store(false)
	if !fc.reqBody.eof.Load() {
		fc.watchState.Store(watchPending)
		return
	}
	fc.watchState.Store(watchArmed)
	fc.timer.Reset(watchDelay)
}

// armWatch runs when the request body has been read in full.
func (fc *frontConn) armWatch() {
	if fc.watchState.CompareAndSwap(watchPending, watchArmed) {
		fc.timer.Reset(watchDelay)
	}
}

func (fc *frontConn) watchFire() {
	if !fc.watchState.CompareAndSwap(watchArmed, watchRunning) {
		return
	}
	// Like net/http's background read: no deadline. unwatch sets abort
	// before it sets a past deadline, so checking abort after clearing
	// the deadline cannot miss it.
	fc.nc.SetReadDeadline(time.Time{})
	if !fc.watchAbort.Load() {
		_, err := fc.br.Peek(1)
		if err != nil && !fc.watchAbort.Load() && !isTimeout(err) {
			fc.lost()
		}
	}
	fc.watchState.Store(watchDone)
	fc.watchDone <- struct{}{}
}

// lost records that the client went away and closes the worker
// connection, which ends the exchange.
func (fc *frontConn) lost() {
	fc.clientGone.Store(true)
	if c := fc.cur; c != nil {
		c.abort()
	}
}

func (fc *frontConn) unwatch() bool {
	fc.timer.Stop()
	for {
		switch s := fc.watchState.Load(); s {
		case watchPending, watchArmed:
			if !fc.watchState.CompareAndSwap(s, watchOff) {
				continue
			}
		case watchRunning, watchDone:
			fc.watchAbort.Store(true)
			if s == watchRunning {
				fc.nc.SetReadDeadline(aLongTimeAgo)
			}
			<-fc.watchDone
			fc.rdl = aLongTimeAgo // unknown now: set it afresh next time
			fc.watchState.Store(watchOff)
		}
		return !fc.clientGone.Load()
	}
}

func (fc *frontConn) informational(resp *respHead) {
	bw := fc.bw
	bw.WriteString(statusLine(resp.code))
	for _, h := range resp.fields {
		if resp.dropped(h.k) {
			continue
		}
		writeField(bw, h.k, h.v)
	}
	bw.WriteString("\r\n")
	bw.Flush()
}

func (fc *frontConn) head(resp *respHead, mode bodyMode) {
	bw := fc.bw
	bw.WriteString(statusLine(resp.code))
	// net/http drops these for statuses that cannot have a body.
	bodiless := resp.code == http.StatusNoContent || resp.code == http.StatusNotModified
	for _, h := range resp.fields {
		if resp.dropped(h.k) {
			continue
		}
		if (bodiless || mode == chunkedBody) && len(h.k) == 14 && hopKind(h.k) == hopContentLength ||
			bodiless && len(h.k) == 12 && foldEq([]byte(h.k), "content-type") {
			continue
		}
		writeField(bw, h.k, h.v)
	}
	if !resp.hasDate {
		bw.Write(dateLine(fc.now))
	}
	fc.chunkOut = mode == chunkedBody || mode == closeBody
	if fc.chunkOut {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(resp.trailer) > 0 {
			bw.WriteString("Trailer: ")
			for i, t := range resp.trailer {
				if i > 0 {
					bw.WriteString(", ")
				}
				bw.WriteString(t)
			}
			bw.WriteString("\r\n")
		}
	}
	if !fc.closing && fc.f.inShutdown.Load() {
		fc.closing = true
	}
	if fc.closing {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

func (fc *frontConn) write(p []byte) error {
	bw := fc.bw
	if !fc.chunkOut {
		_, err := bw.Write(p)
		return err
	}
	if len(p) == 0 {
		return nil
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	_, err := bw.WriteString("\r\n")
	return err
}

func (fc *frontConn) trailer(k, v string) {
	fc.trailers = append(append(append(append(fc.trailers, k...), ": "...), v...), "\r\n"...)
}

func (fc *frontConn) end() {
	if fc.chunkOut {
		fc.bw.WriteString("0\r\n")
		fc.bw.Write(fc.trailers)
		fc.bw.WriteString("\r\n")
	}
	fc.trailers = fc.trailers[:0]
}

func (fc *frontConn) fail(code int, msg string) {
	if code == statusClientClosedRequest {
		fc.broken = true
		return
	}
	fc.writeError(code, msg, false)
}

// frontBody is the request body as the worker's sender reads it.
type frontBody struct {
	fc        *frontConn
	remaining int64       // Content-Length left
	chunked   io.Reader   // de-chunks fc.br when the body is chunked
	eof       atomic.Bool // read in full (set by the sender, read by the connection)
	err       error
}

func (b *frontBody) Read(p []byte) (int, error) {
	if b.eof.Load() {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	var n int
	var err error
	if b.chunked != nil {
		n, err = b.chunked.Read(p)
		if err == io.EOF {
			if err = b.skipTrailers(); err == nil {
				err = io.EOF
			}
		}
	} else {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.fc.br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			err = io.EOF
		} else if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	switch {
	case err == io.EOF:
		b.eof.Store(true)
		b.fc.armWatch()
	case err != nil:
		// As in net/http, a failed body read cancels the request (unless
		// the exchange is over and interrupted the read itself).
		b.err = err
		if !b.fc.interrupted.Load() {
			b.fc.lost()
		}
	}
	return n, err
}

// skipTrailers reads the trailer section after the last chunk; the fast
// path forwards no request trailers (neither does the net/http one).
func (b *frontBody) skipTrailers() error {
	total := 0
	for {
		line, err := b.fc.br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				err = errors.New("request trailer too long")
			}
			return noEOF(err)
		}
		if total += len(line); total > 64<<10 {
			return errors.New("request trailers too long")
		}
		if len(line) <= 2 && len(trimEOL(line)) == 0 {
			return nil
		}
	}
}

// bytesView is b as a string without a copy; b must not change while the
// string is in use (request heads are copied once and left alone).
func bytesView(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Status lines and the Date header, formatted once.

var statusLines = func() (t [600]string) {
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			t[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return t
}()

func statusLine(code int) string {
	if code >= 100 && code < 600 && statusLines[code] != "" {
		return statusLines[code]
	}
	c := strconv.Itoa(code)
	return "HTTP/1.1 " + c + " status code " + c + "\r\n"
}

type cachedDate struct {
	sec  int64
	line []byte
}

var dateCache atomic.Pointer[cachedDate]

// dateLine returns "Date: ...\r\n" for now, formatted once a second.
func dateLine(now time.Time) []byte {
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.line
	}
	d := &cachedDate{sec: sec}
	d.line = append(now.UTC().AppendFormat([]byte("Date: "), http.TimeFormat), "\r\n"...)
	dateCache.Store(d)
	return d.line
}

// handoffListener is the fallback server's listener: connections the
// front gives up arrive on it.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

func (l *handoffListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// handoffConn is a client connection handed to net/http: reads drain what
// the front had buffered first, and net/http's first two read deadlines
// (header, then whole request) are held to those the front had already
// started, so a slow client gains no time by the handoff.
type handoffConn struct {
	net.Conn
	br     *bufio.Reader
	clamp  [2]time.Time
	clamps int
}

func (c *handoffConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

func (c *handoffConn) SetReadDeadline(t time.Time) error {
	if c.clamps < len(c.clamp) {
		if cl := c.clamp[c.clamps]; !cl.IsZero() && (t.IsZero() || cl.Before(t)) {
			t = cl
		}
		c.clamps++
	}
	return c.Conn.SetReadDeadline(t)
}

// CloseWrite lets net/http close a connection gracefully.
func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
