package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the pool of idle keep-alive connections to each instance.
const (
	defaultWorkerIdleConns   = 256
	maxWorkerIdleConns       = 1024 // the pool's capacity, the highest cap
	defaultWorkerIdleTimeout = 60 * time.Second
	dialTimeout              = 2 * time.Second
)

// connPool is a backend's free list of idle keep-alive connections. A
// buffered channel is the free list: no mutex of ours on the request path,
// and a full list just closes the surplus connection.
type connPool struct{ idle chan *workerConn }

// workerConn is one HTTP/1.1 connection to a worker, used by one request at
// a time. Its buffers live as long as the connection.
type workerConn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	raw    syscall.RawConn // nil when conn is not a socket (tests)
	reused bool            // served a request before this one
	abort  func()          // closes conn; made once so cancelling costs no allocation
	hdr    []byte          // the response head buffer
	resp   respHead        // the response being read
	cr     chunkedReader   // its chunked body
	idleAt time.Time       // when it went back to the pool
	rdl    time.Time       // the read deadline set (zero: none)
	wdl    time.Time       // the write deadline set
	// headState tells the body sender whether the response head has
	// arrived, so it starts the worker timeout only while one is awaited.
	headState atomic.Int32
	bodySent  atomic.Bool // the body sender wrote the whole request body
	// The response body copy (copyBody): its client, the worker timeout,
	// whether written bytes wait for a flush, and block, made once.
	client  *conn
	timeout time.Duration
	pending bool
	blockFn func()
	peekFn  func(fd uintptr) bool // wc.peekFD, made once
	peeked  int
}

func newWorkerConn(c net.Conn) *workerConn {
	var rw io.ReadWriter = c
	if r := socketIO(c); r != nil {
		rw = r
	}
	wc := &workerConn{
		conn: c,
		br:   bufio.NewReaderSize(rw, 8<<10),
		bw:   bufio.NewWriterSize(rw, 8<<10),
	}
	if sc, ok := c.(syscall.Conn); ok {
		wc.raw, _ = sc.SyscallConn()
	}
	wc.abort = func() { wc.conn.Close() }
	wc.blockFn = wc.block
	wc.peekFn = wc.peekFD
	return wc
}

func (wc *workerConn) close() { wc.conn.Close() }

// readProgress gives the worker timeout from now for its next bytes.
func (wc *workerConn) readProgress(timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	t, slack := time.Now().Add(timeout), timeout/16
	if !laterBy(wc.rdl, t, slack) {
		wc.rdl = t.Add(slack)
		wc.conn.SetReadDeadline(wc.rdl)
	}
}

// writeProgress gives a write to the worker the worker timeout from now.
func (wc *workerConn) writeProgress(timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	t, slack := time.Now().Add(timeout), timeout/16
	if !laterBy(wc.wdl, t, slack) {
		wc.wdl = t.Add(slack)
		wc.conn.SetWriteDeadline(wc.wdl)
	}
}

// check reports whether an idle connection can carry another request: it
// is younger than the idle timeout, nothing is buffered, and the socket
// holds neither unsolicited bytes nor the worker's close. It runs at every
// checkout, whatever the connection's idle age: a byte the worker sent
// after its last response must never be read as the next one's.
func (p *Proxy) check(b *Backend, wc *workerConn, now time.Time) bool {
	if now.Sub(wc.idleAt) > p.workerIdleTimeout {
		return false
	}
	if wc.br.Buffered() > 0 {
		p.unsolicited(b, wc.br.Buffered())
		return false
	}
	if wc.raw == nil {
		return true
	}
	switch wc.sockState() {
	case sockIdle:
		return true
	case sockData:
		p.unsolicited(b, -1)
	}
	return false
}

func (p *Proxy) unsolicited(b *Backend, n int) {
	p.log.Warn().Str("worker", b.Worker).Str("instance", b.Instance).Int("bytes", n).
		Msg("worker sent unsolicited bytes on an idle connection: closed")
}

func (b *Backend) pool() *connPool {
	if cp := b.conns.Load(); cp != nil {
		return cp
	}
	cp := &connPool{idle: make(chan *workerConn, maxWorkerIdleConns)}
	if b.conns.CompareAndSwap(nil, cp) {
		return cp
	}
	return b.conns.Load()
}

// getConn returns a checked idle connection to b, or nil.
func (p *Proxy) getConn(b *Backend) *workerConn {
	cp := b.pool()
	var now time.Time
	for {
		select {
		case wc := <-cp.idle:
			if now.IsZero() {
				now = time.Now()
			}
			if p.check(b, wc, now) {
				wc.reused = true
				return wc
			}
			wc.close()
		default:
			return nil
		}
	}
}

// putConn returns a connection whose last exchange ended exactly at a
// message boundary, keeping at most limit idle. It queues first and checks
// closed second, while Close sets closed first and empties the queue
// second: whichever runs last closes the connection, so a closed backend
// keeps no connection open.
func (b *Backend) putConn(wc *workerConn, limit int) {
	wc.idleAt = time.Now()
	cp := b.pool()
	select {
	case cp.idle <- wc:
	default:
		wc.close()
		return
	}
	// Concurrent returns may overshoot limit for a moment; each one that
	// finds the pool over it closes the surplus, so the pool settles at
	// limit or below.
	for len(cp.idle) > limit {
		select {
		case x := <-cp.idle:
			x.close()
		default:
		}
	}
	if b.closed.Load() {
		b.closeIdle()
	}
}

// closeIdle closes b's idle keep-alive connections.
func (b *Backend) closeIdle() {
	cp := b.conns.Load()
	if cp == nil {
		return
	}
	for {
		select {
		case wc := <-cp.idle:
			wc.close()
		default:
			return
		}
	}
}

// IdleConns is how many keep-alive connections to b are parked in its pool.
func (b *Backend) IdleConns() int {
	if cp := b.conns.Load(); cp != nil {
		return len(cp.idle)
	}
	return 0
}

// sweepIdle closes, every half idle timeout, the pooled connections that
// are too old or no longer clean, until stop closes.
func (p *Proxy) sweepIdle(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(max(p.workerIdleTimeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		for _, rt := range p.table.Load().sorted {
			for _, b := range rt.Backends {
				cp := b.conns.Load()
				if cp == nil {
					continue
				}
				for range len(cp.idle) {
					var wc *workerConn
					select {
					case wc = <-cp.idle:
					default:
					}
					if wc == nil {
						break
					}
					if !p.check(b, wc, now) {
						wc.close()
						continue
					}
					select {
					case cp.idle <- wc:
					default:
						wc.close()
					}
				}
			}
		}
	}
}

func (p *Proxy) dialWorker(addr string) (net.Conn, error) {
	return p.dial("tcp", addr)
}

// Warm opens up to n keep-alive connections to b, sends one GET path over
// each (all sent before any answer is read), and parks those that answered
// in its pool, so the first requests after a swap neither pay for a dial nor
// find a fresh process whose connections have never served. It gives up at
// timeout and returns how many connections it parked. The error says the
// worker refused a connection or dropped one without answering — not a
// slow answer, which only parks fewer.
func (b *Backend) Warm(n int, path string, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline, KeepAlive: 30 * time.Second}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + b.Addr + "\r\nUser-Agent: tqserver-warm\r\n\r\n")
	conns := make([]*workerConn, 0, n)
	var failed error
	for len(conns) < n && time.Now().Before(deadline) {
		c, err := d.Dial("tcp", b.Addr)
		if err != nil {
			if !isTimeout(err) {
				failed = err
			}
			break
		}
		c.SetDeadline(deadline)
		if _, err := c.Write(req); err != nil {
			c.Close()
			if !isTimeout(err) {
				failed = err
			}
			break
		}
		conns = append(conns, newWorkerConn(c))
	}
	parked := 0
	for _, wc := range conns {
		keep, err := warmAnswer(wc)
		if err != nil && failed == nil && !isTimeout(err) {
			failed = err
		}
		if keep {
			wc.conn.SetDeadline(time.Time{})
			b.putConn(wc, maxWorkerIdleConns)
			parked++
		} else {
			wc.close()
		}
	}
	if failed != nil {
		failed = fmt.Errorf("warming %s: %w", b.Instance, failed)
	}
	return parked, failed
}

// warmAnswer reads the answer to Warm's request on wc with the engine's
// own parser and reports whether the connection can be kept; the error is
// why no answer came.
func warmAnswer(wc *workerConn) (bool, error) {
	var err error
	wc.hdr, err = readResponseHead(wc.br, wc.hdr, &wc.resp)
	if err != nil {
		return false, err
	}
	resp := &wc.resp
	switch {
	case resp.code < 200:
		return false, nil
	case resp.chunked:
		wc.cr.reset(wc.br)
		if _, err := io.Copy(io.Discard, io.LimitReader(&wc.cr, 64<<10)); err != nil {
			return false, err
		}
		if wc.cr.state != chunkDone {
			return false, nil
		}
	case resp.code == http.StatusNoContent || resp.code == http.StatusNotModified || resp.length == 0:
	case resp.length > 0 && resp.length <= 64<<10:
		if _, err := wc.br.Discard(int(resp.length)); err != nil {
			return false, err
		}
	default:
		return false, nil
	}
	return resp.keepAlive && wc.br.Buffered() == 0, nil
}
