package proxy

import (
	"io"
	"sync/atomic"
)

// reqBody is a client's request body as the body sender reads it: exactly
// Content-Length bytes, or a chunked body checked by chunkedReader. A body
// that breaks its framing is the client's fault: the exchange answers 400
// (or cuts a response already begun) and the connection closes.
type reqBody struct {
	c         *conn
	remaining int64 // Content-Length left
	chunked   bool
	cr        chunkedReader
	eof       atomic.Bool // read in full (set by the sender, read by the connection)
	bad       atomic.Bool // broke its framing
	timedOut  atomic.Bool // the client sent nothing for ReadTimeout
	err       error
}

func (b *reqBody) reset(c *conn, length int64) {
	b.c, b.err = c, nil
	b.chunked = length < 0
	b.remaining = max(length, 0)
	if b.chunked {
		b.cr.reset(c.br)
		b.cr.block = c.readProgress
	}
	b.bad.Store(false)
	b.timedOut.Store(false)
	b.eof.Store(length == 0)
}

// done reports whether the body was read in full.
func (b *reqBody) done() bool { return b.eof.Load() }

// trailer is the chunked body's trailer fields to pass on.
func (b *reqBody) trailer() []byte {
	if b.chunked {
		return b.cr.trailer
	}
	return nil
}

func (b *reqBody) Read(p []byte) (int, error) {
	if b.eof.Load() {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	var n int
	var err error
	if b.chunked {
		n, err = b.cr.Read(p)
	} else {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		if b.c.br.Buffered() == 0 {
			b.c.readProgress()
		}
		n, err = b.c.br.Read(p)
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
		b.c.armWatch()
	case err != nil:
		b.err = err
		switch {
		case b.c.interrupted.Load():
			// The exchange ended and stopped this read itself.
		case isFraming(err):
			b.bad.Store(true)
			b.c.abortWorker()
		case isTimeout(err):
			b.timedOut.Store(true)
			b.c.abortWorker()
		default:
			// As in net/http, a client that fails mid-body cancels the
			// request.
			b.c.lost()
		}
	}
	return n, err
}

// abortWorker ends the exchange from the body sender's side: the worker
// connection closes, and the exchange answers for the body's fault.
func (c *conn) abortWorker() {
	if wc := c.cur; wc != nil {
		wc.abort()
	}
}
