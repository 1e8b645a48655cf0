package proxy

import (
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"time"
)

// The forwarding side of the engine: one request, one worker connection
// from the backend's pool (or a fresh one), the request head written by
// the engine, the body streamed by a sender goroutine while the response is
// read, the response head checked (response.go) and passed on, the body
// streamed with its framing checked. A worker connection goes back to the
// pool only when the exchange ended exactly at a message boundary.

const (
	// maxInformational bounds the 1xx responses before the final one.
	maxInformational = 5
)

type bodyMode int

const (
	noBody bodyMode = iota
	lengthBody
	chunkedBody
	closeBody // delimited by the worker closing the connection
)

// Header-timeout states shared by the exchange and the body sender.
const (
	awaitingHead int32 = iota
	gotHead
)

// forwardTo sends the request on c to st.backend over a pooled connection.
// A request that is safe to replay is retried once on a fresh connection
// when a reused one turns out to have been closed by the worker before it
// answered anything.
func (p *Proxy) forwardTo(c *conn, st *reqState) {
	b := st.backend
	r := &c.req
	replayable := r.replayable()
	for fresh := false; ; fresh = true {
		var wc *workerConn
		if !fresh {
			wc = p.getConn(b)
		}
		if wc == nil {
			nc, err := p.dialWorker(b.Addr)
			if err != nil {
				st.dialErr = isDialError(err)
				p.fail(c, st, err)
				return
			}
			wc = newWorkerConn(nc)
		}
		if !p.exchange(c, st, wc, replayable && wc.reused) {
			return
		}
		p.log.Debug().Str("worker", st.worker).Str("instance", b.Instance).
			Msg("idle connection closed by worker, retrying on a new one")
	}
}

// exchange runs one request/response on wc and reports whether the request
// should be retried on a fresh connection (only when retryStale is set and
// the worker closed wc before answering anything).
func (p *Proxy) exchange(c *conn, st *reqState, wc *workerConn, retryStale bool) (retry bool) {
	b := st.backend
	r := &c.req
	reusable := false
	var sent chan error // the body sender's result, when there is a body
	c.watch(wc)
	defer func() {
		if !c.unwatch() { // the client left and wc was closed under us
			reusable = false
		}
		if sent != nil {
			// A sender that wrote the whole body has nothing left that
			// can block; one that has not (the worker answered without
			// reading it all) must not leave wc half-written: drop wc.
			if reusable && wc.bodySent.Load() {
				reusable = <-sent == nil
				sent = nil
			} else {
				reusable = false
			}
		}
		if reusable && wc.br.Buffered() > 0 {
			p.log.Warn().Str("worker", st.worker).Str("instance", b.Instance).Int("bytes", wc.br.Buffered()).
				Msg("worker sent bytes after its response: connection closed")
			reusable = false
		}
		if reusable {
			b.putConn(wc, p.workerIdleConns)
		} else {
			wc.close()
		}
		if sent != nil {
			// The sender may still be reading the client: stop it before
			// the client connection is touched again.
			c.interruptBody()
			<-sent
		}
	}()

	bodyLen := r.length
	writeRequestHead(wc.bw, r, c.xff, bodyLen)
	wt := p.workerTimeout
	wc.headState.Store(awaitingHead)
	wc.bodySent.Store(false)
	if bodyLen != 0 {
		sent = make(chan error, 1)
		go wc.sendBody(&c.body, bodyLen < 0, sent, wt)
	} else {
		wc.writeProgress(wt)
		if err := wc.bw.Flush(); err != nil {
			if retryStale && !c.gone() {
				return true
			}
			if !c.gone() && !isTimeout(err) {
				st.unanswered = true
			}
			p.fail(c, st, err)
			return false
		}
	}

	if sent != nil && !wc.rdl.IsZero() {
		// No deadline while the body goes out: the sender starts the
		// worker timeout when it has sent it all.
		wc.conn.SetReadDeadline(time.Time{})
		wc.rdl = time.Time{}
	}
	resp := &wc.resp
	for informational := 0; ; informational++ {
		if informational > maxInformational {
			p.fail(c, st, fmt.Errorf("%w: too many 1xx responses", errMalformed))
			return false
		}
		if sent == nil || wc.bodySent.Load() {
			wc.readProgress(wt)
		}
		var err error
		wc.hdr, err = readResponseHead(wc.br, wc.hdr, resp)
		if err != nil {
			// Never again once a byte came back: not even a 1xx passed on.
			if !resp.gotBytes && informational == 0 && !c.gone() && !isTimeout(err) {
				if retryStale {
					return true
				}
				st.unanswered = true
			}
			p.fail(c, st, err)
			return false
		}
		if resp.code >= 200 {
			break
		}
		switch resp.code {
		case http.StatusSwitchingProtocols:
			if r.upgrade == nil || resp.upgrade == nil {
				p.fail(c, st, fmt.Errorf("%w: 101 Switching Protocols to a request without Upgrade", errMalformed))
				return false
			}
			wc.headState.Store(gotHead)
			c.tunnel(wc, resp, st, sent)
			sent = nil // tunnel waited for it
			return false
		case http.StatusContinue:
			// The engine answered the client's expectation itself.
		default:
			// 102, 103: pass on to HTTP/1.1 clients.
			if !r.http10 {
				c.informational(resp)
			}
		}
	}
	wc.headState.Store(gotHead)

	var mode bodyMode
	switch {
	case r.method == http.MethodHead || bodiless(resp.code):
		mode = noBody
	case resp.chunked:
		mode = chunkedBody
	case resp.length > 0:
		mode = lengthBody
	case resp.length == 0:
		mode = noBody
	default:
		mode = closeBody
	}
	c.head(resp, mode)
	if mode == noBody {
		reusable = resp.keepAlive
		return false
	}
	err := wc.copyBody(c, mode, resp.length, wt)
	if err != nil {
		// The head is out: the only honest thing left is a cut response.
		wc.close()
		switch {
		case c.gone():
			p.log.Debug().Str("worker", st.worker).Str("instance", b.Instance).
				Str("path", st.path).Err(err).Msg("client went away")
		case isFraming(err):
			p.log.Warn().Str("worker", st.worker).Str("instance", b.Instance).
				Str("path", st.path).Err(err).Msg("worker response body broke its framing: response cut")
		default:
			p.log.Debug().Str("worker", st.worker).Str("instance", b.Instance).
				Str("path", st.path).Err(err).Msg("response body copy failed")
		}
		c.broken = true
		return false
	}
	c.end(wc.cr.trailer, mode == chunkedBody)
	reusable = resp.keepAlive && mode != closeBody
	return false
}

// sendBody streams the request body to the worker, flushing after every
// read so a slow upload reaches the worker as it arrives. Once the body is
// complete it starts the worker timeout for the answer (unless the head
// already came). On failure it closes the connection, which also ends the
// response read.
func (wc *workerConn) sendBody(body *reqBody, chunked bool, done chan<- error, timeout time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			wc.close()
			body.c.p.log.Error().Interface("panic", r).Str("stack", string(debug.Stack())).Msg("request body sender panicked: closed")
			body.c.nc.Close()
			done <- fmt.Errorf("body sender panicked: %v", r)
		}
	}()
	bufp := copyBuffers.Get().(*[]byte)
	buf := *bufp
	var err error
	for {
		m, rerr := body.Read(buf)
		if m > 0 {
			wc.writeProgress(timeout)
			if chunked {
				writeChunk(wc.bw, buf[:m])
			} else {
				wc.bw.Write(buf[:m])
			}
			if err = wc.bw.Flush(); err != nil {
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if err == nil && chunked {
		wc.writeProgress(timeout)
		writeLastChunk(wc.bw, body.trailer())
		err = wc.bw.Flush()
	}
	copyBuffers.Put(bufp)
	if err == nil {
		wc.bodySent.Store(true)
	}
	if err != nil {
		wc.close()
	} else if timeout > 0 && wc.headState.Load() == awaitingHead {
		wc.conn.SetReadDeadline(time.Now().Add(timeout))
		if wc.headState.Load() == gotHead {
			wc.conn.SetReadDeadline(time.Time{})
		}
	}
	done <- err
}

// copyBody streams the response body to the client. Before any read from
// the worker that could block, whatever has been written is flushed to the
// client, so streamed responses (server-sent events) pass without delay
// while a body that arrived in one piece goes out in one write.
func (wc *workerConn) copyBody(c *conn, mode bodyMode, length int64, timeout time.Duration) error {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	wc.client, wc.timeout, wc.pending = c, timeout, true // the head has not been flushed yet
	var src io.Reader = wc.br
	if mode == chunkedBody {
		wc.cr.reset(wc.br)
		wc.cr.block = wc.blockFn
		src = &wc.cr
	}
	for {
		p := buf
		if mode == lengthBody {
			if length == 0 {
				return nil
			}
			p = p[:min(int64(len(p)), length)]
		}
		if mode != chunkedBody && wc.br.Buffered() == 0 {
			wc.block()
		}
		n, err := src.Read(p)
		if n > 0 {
			if werr := c.write(p[:n]); werr != nil {
				return werr
			}
			wc.pending = true
			length -= int64(n)
		}
		if err == io.EOF {
			if mode == lengthBody && length > 0 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// block runs before a read from the worker that may wait: what was written
// to the client goes out first, and the worker timeout restarts.
func (wc *workerConn) block() {
	if wc.pending {
		wc.client.flush()
		wc.pending = false
	}
	wc.readProgress(wc.timeout)
}
