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

// peekAfter is how long a connection must have been idle before getConn
// peeks at its socket (a system call) to see whether the worker closed it.
// Workers close idle connections only after seconds (their IdleTimeout) or
// when stopping, which happens after their backend was closed and so its
// pool emptied; a connection used within the last second is as good as
// certain to be open, and an idempotent request retries if it was not.
const peekAfter = time.Second

// idlePerBackend bounds the keep-alive connections kept open to one worker
// instance (the stock transport's MaxIdleConnsPerHost).
const idlePerBackend = 1024

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
	hdr    []byte          // scratch for the response header block
	resp   respHead        // the response being read (its fields slice is reused)
	idleAt time.Time       // when it went back to the pool
	// rdl is the read deadline exchange set (zero: none). The body sender
	// sets deadlines of its own, so a request with a body clears it.
	rdl time.Time
	// headState tells the body sender whether the response head has
	// arrived, so it starts the header timeout only while one is awaited.
	headState atomic.Int32
	bodySent  atomic.Bool // the body sender wrote the whole request body
}

func newWorkerConn(c net.Conn) *workerConn {
	rw := socketIO(c)
	wc := &workerConn{
		conn: c,
		br:   bufio.NewReaderSize(rw, 8<<10),
		bw:   bufio.NewWriterSize(rw, 8<<10),
	}
	if sc, ok := c.(syscall.Conn); ok {
		wc.raw, _ = sc.SyscallConn()
	}
	wc.abort = func() { wc.conn.Close() }
	return wc
}

func (c *workerConn) close() { c.conn.Close() }

// usable reports whether an idle connection can carry another request: the
// worker has neither closed it nor sent anything unasked.
func (c *workerConn) usable() bool {
	return c.br.Buffered() == 0 && (c.raw == nil || time.Since(c.idleAt) < peekAfter || sockIdle(c.raw))
}

func (b *Backend) pool() *connPool {
	if p := b.conns.Load(); p != nil {
		return p
	}
	p := &connPool{idle: make(chan *workerConn, idlePerBackend)}
	if b.conns.CompareAndSwap(nil, p) {
		return p
	}
	return b.conns.Load()
}

// getConn returns a usable idle connection to b, or nil.
func (b *Backend) getConn() *workerConn {
	p := b.pool()
	for {
		select {
		case c := <-p.idle:
			if c.usable() {
				c.reused = true
				return c
			}
			c.close()
		default:
			return nil
		}
	}
}

// putConn returns a connection whose last exchange completed cleanly. It
// queues first and checks closed second, while Close sets closed first and
// empties the queue second: whichever runs last closes the connection, so a
// closed backend keeps no connection open.
func (b *Backend) putConn(c *workerConn) {
	c.idleAt = time.Now()
	p := b.pool()
	select {
	case p.idle <- c:
	default:
		c.close()
		return
	}
	if b.closed.Load() {
		b.closeIdle()
	}
}

// closeIdle closes b's idle keep-alive connections.
func (b *Backend) closeIdle() {
	p := b.conns.Load()
	if p == nil {
		return
	}
	for {
		select {
		case c := <-p.idle:
			c.close()
		default:
			return
		}
	}
}

// IdleConns is how many keep-alive connections to b are parked in its pool.
func (b *Backend) IdleConns() int {
	if p := b.conns.Load(); p != nil {
		return len(p.idle)
	}
	return 0
}

// Warm opens up to n keep-alive connections to b, sends one GET path over
// each (all sent before any answer is read), and parks those that answered
// in its pool, so the first requests after a swap neither pay for a dial nor
// find a fresh process whose connections have never served (a burst of
// dials and first requests is what makes p99 jump when traffic moves to a
// new instance). It gives up at timeout and returns how many connections it
// parked. The error says the worker refused a connection or dropped one
// without answering — not a slow answer, which only parks fewer.
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
			b.putConn(wc)
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

// warmAnswer reads the answer to Warm's request on wc and reports whether
// the connection can be kept; the error is why no answer came.
func warmAnswer(wc *workerConn) (bool, error) {
	resp, err := http.ReadResponse(wc.br, nil)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return err == nil && !resp.Close && wc.br.Buffered() == 0, nil
}
