package proxy

import (
	"bufio"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"
)

// The client side of an exchange: what the engine writes to the client for
// a worker's answer. The engine writes its own framing: a Content-Length
// passed on when the body is exactly that long, chunked otherwise (or
// close-delimited for an HTTP/1.0 client), and never the worker's
// Transfer-Encoding or hop-by-hop fields.

// BodyRewriter rewrites one response body on its way to the client: Write
// appends what to send for p to dst, Close what to send at the end.
type BodyRewriter interface {
	Write(dst, p []byte) []byte
	Close(dst []byte) []byte
}

// Rewriter chooses, per final response from a worker, whether its body is
// rewritten (dev mode injects its reload script into HTML pages). get looks
// a response field up by lower-case name. A rewritten body loses its
// Content-Length and is sent chunked.
type Rewriter func(method string, code int, get func(name string) string) BodyRewriter

func (c *conn) gone() bool { return c.clientGone.Load() }

func (c *conn) flush() {
	c.writeProgress()
	c.bw.Flush()
}

func (c *conn) informational(resp *respHead) {
	bw := c.bw
	bw.WriteString(statusLine(resp.code))
	for _, f := range resp.fields {
		if resp.named(f.k) || headerKind(f.k) == hdrContentLength {
			continue
		}
		writeField(bw, f.k, f.v)
	}
	bw.WriteString("\r\n")
	c.flush()
}

func (c *conn) head(resp *respHead, mode bodyMode) {
	bw, r := c.bw, &c.req
	if mode != noBody && c.p.rewriter != nil && r.upgrade == nil {
		c.rewrite = c.p.rewriter(r.method, resp.code, resp.get)
	}
	c.code = resp.code
	bw.WriteString(statusLine(resp.code))
	noLength := resp.code == http.StatusNoContent || mode == chunkedBody || mode == closeBody || c.rewrite != nil
	for _, f := range resp.fields {
		if resp.named(f.k) {
			continue
		}
		if noLength && len(f.k) == 14 && headerKind(f.k) == hdrContentLength {
			continue
		}
		writeField(bw, f.k, f.v)
	}
	if !resp.hasDate {
		bw.Write(dateLine(c.now))
	}
	c.chunkOut = false
	if mode != noBody && (mode != lengthBody || c.rewrite != nil) {
		if r.http10 {
			c.closing = true // the end of the body is the end of the connection
		} else {
			c.chunkOut = true
			bw.WriteString("Transfer-Encoding: chunked\r\n")
			if mode == chunkedBody && resp.trailer != nil {
				bw.WriteString("Trailer: ")
				bw.Write(resp.trailer)
				bw.WriteString("\r\n")
			}
		}
	}
	if c.s.inShutdown.Load() {
		c.closing = true
	}
	switch {
	case c.closing:
		bw.WriteString("Connection: close\r\n")
	case r.http10:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

func writeField(bw *bufio.Writer, k, v []byte) {
	bw.Write(k)
	bw.WriteString(": ")
	bw.Write(v)
	bw.WriteString("\r\n")
}

func (c *conn) write(p []byte) error {
	if c.rewrite != nil {
		c.scratch = c.rewrite.Write(c.scratch[:0], p)
		p = c.scratch
	}
	return c.writeOut(p)
}

func (c *conn) writeOut(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	c.writeProgress()
	if c.chunkOut {
		return writeChunk(c.bw, p)
	}
	_, err := c.bw.Write(p)
	return err
}

// end completes a body that was read in full; trailer is what to pass on
// of the worker's trailer section.
func (c *conn) end(trailer []byte, chunked bool) {
	if c.rewrite != nil {
		c.scratch = c.rewrite.Close(c.scratch[:0])
		c.writeOut(c.scratch)
		c.rewrite = nil
	}
	if c.chunkOut {
		if !chunked {
			trailer = nil
		}
		c.writeProgress()
		writeLastChunk(c.bw, trailer)
	}
}

// fail answers a request whose attempt failed before any response went out.
func (c *conn) fail(code int, msg string) {
	if code == statusClientClosedRequest {
		c.broken = true
		return
	}
	c.closing = c.closing || code >= 400 && code != http.StatusServiceUnavailable && code != http.StatusBadGateway &&
		code != http.StatusGatewayTimeout
	c.writeError(code, msg, false)
}

// bytesView is b as a string without a copy; b must not change while the
// string is in use (request heads are left alone until the request ends).
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

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }
