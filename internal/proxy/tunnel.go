package proxy

import (
	"io"
	"net"
	"time"
)

// tunnel completes an upgrade the worker accepted (101): the 101 head goes
// to the client, then bytes pass both ways untouched until both sides have
// finished; either side's half-close is passed on. The request stays in
// flight (and its instance undrained) until the tunnel ends. A tunnel has
// no timeout of its own: the protocol it carries keeps itself alive; the
// server's Close ends it.
func (c *conn) tunnel(wc *workerConn, resp *respHead, st *reqState, sent chan error) {
	bw := c.bw
	c.code = resp.code
	bw.WriteString(statusLine(resp.code))
	for _, f := range resp.fields {
		if resp.named(f.k) || headerKind(f.k) == hdrContentLength {
			continue
		}
		writeField(bw, f.k, f.v)
	}
	bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
	bw.Write(resp.upgrade)
	bw.WriteString("\r\n\r\n")
	c.broken = true // the connection is the tunnel's now; never another request
	if sent != nil {
		// An upgrade request's body (rare) was the last of HTTP here.
		if err := <-sent; err != nil {
			c.p.log.Debug().Str("worker", st.worker).Err(err).Msg("upgrade request body failed")
			return
		}
	}
	c.writeProgress()
	if err := bw.Flush(); err != nil {
		return
	}
	if !c.unwatch() {
		return
	}
	c.watchState.Store(watchOff)
	c.nc.SetDeadline(time.Time{})
	wc.conn.SetDeadline(time.Time{})
	c.rdl, c.wdl = time.Time{}, time.Time{}
	if c.rio != nil {
		c.rio.progress = nil
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(wc.conn, wc.bw, c.br) // client → worker
	}()
	pipe(c.nc, c.bw, wc.br) // worker → client
	<-done
	c.p.log.Debug().Str("worker", st.worker).Str("instance", st.backend.Instance).Msg("tunnel closed")
}

// pipe copies from src (a buffered reader over one socket, whatever it
// already holds included) to dst through w until src ends, then half-closes
// dst (or closes it when it cannot half-close).
func pipe(dst net.Conn, w interface {
	Write([]byte) (int, error)
	Flush() error
}, src io.Reader) {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				dst.Close()
				return
			}
			if werr := w.Flush(); werr != nil {
				dst.Close()
				return
			}
		}
		if err != nil {
			break
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}
