package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"
)

// Local handlers (static files, dev mode's reload endpoints) run on the
// engine's connection through a small http.ResponseWriter: the handler
// sees an ordinary *http.Request and writes an ordinary response, and the
// engine frames it (Content-Length when the handler set one, chunked
// otherwise, close-delimited for HTTP/1.0). Nothing of net/http's server
// is involved. The request's context ends when the client hangs up.

type staticHandler struct{ p *Proxy }

func (h staticHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.p.serveStatic(w, r, r.URL.Path[len(h.p.staticPrefix):])
}

// serveLocal runs h for the current request.
func (c *conn) serveLocal(h http.Handler) {
	r := &c.req
	if r.length != 0 || r.upgrade != nil {
		// Local handlers take no body and no upgrade: answer, then close
		// rather than read a body nobody wants.
		c.closing = true
	}
	u, err := url.ParseRequestURI(string(r.target))
	if err != nil {
		c.closing = true
		c.writeError(http.StatusBadRequest, "400 bad request: "+err.Error(), false)
		return
	}
	hdr := make(http.Header, len(r.fields))
	for _, f := range r.fields {
		k := textproto.CanonicalMIMEHeaderKey(string(f.k))
		hdr[k] = append(hdr[k], string(f.v))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := (&http.Request{
		Method:     r.method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     hdr,
		Body:       http.NoBody,
		Host:       string(r.host),
		RemoteAddr: c.nc.RemoteAddr().String(),
		RequestURI: string(r.target),
	}).WithContext(ctx)
	if r.http10 {
		req.Proto, req.ProtoMinor = "HTTP/1.0", 0
	}
	lw := &localWriter{c: c, h: http.Header{}, length: -1}
	if !c.closing {
		// Notice a client that hangs up (an event stream lasts until then).
		c.localCancel = cancel
		c.body.eof.Store(true)
		c.watch(nil)
	}
	defer func() {
		if !c.closing {
			c.unwatch()
			c.localCancel = nil
		}
	}()
	h.ServeHTTP(lw, req)
	lw.finish()
}

// localWriter is the http.ResponseWriter of a local handler.
type localWriter struct {
	c       *conn
	h       http.Header
	code    int
	started bool
	noBody  bool  // HEAD, 204, 304: nothing after the head
	length  int64 // declared Content-Length, -1 none
	written int64
	failed  error
}

func (w *localWriter) Header() http.Header { return w.h }

func (w *localWriter) WriteHeader(code int) {
	if w.started || code < 200 || code > 999 {
		return // informational answers are not needed by local handlers
	}
	w.started, w.code = true, code
	c, bw := w.c, w.c.bw
	c.code = code
	w.noBody = c.req.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if cl := w.h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.length = n
		}
		if w.length < 0 || code == http.StatusNoContent {
			w.h.Del("Content-Length")
		}
	}
	bw.WriteString(statusLine(code))
	for k, vv := range w.h {
		if !isToken([]byte(k)) || headerKind([]byte(k)) != hdrPlain && k != "Content-Length" {
			continue
		}
		for _, v := range vv {
			if !validValue(v) {
				continue
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.Write(dateLine(time.Now()))
	c.chunkOut = false
	if !w.noBody && w.length < 0 {
		if c.req.http10 {
			c.closing = true
		} else {
			c.chunkOut = true
			bw.WriteString("Transfer-Encoding: chunked\r\n")
		}
	}
	if c.s.inShutdown.Load() {
		c.closing = true
	}
	switch {
	case c.closing:
		bw.WriteString("Connection: close\r\n")
	case c.req.http10:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if byteClass[v[i]]&clsValue == 0 {
			return false
		}
	}
	return true
}

var errLocalLength = errors.New("local handler wrote more than its Content-Length")

func (w *localWriter) Write(p []byte) (int, error) {
	if w.failed != nil {
		return 0, w.failed
	}
	if !w.started {
		if w.h.Get("Content-Type") == "" && len(p) > 0 {
			w.h.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		return len(p), nil
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		w.failed = errLocalLength
		w.c.broken = true
		return 0, w.failed
	}
	if err := w.c.writeOut(p); err != nil {
		w.failed = err
		w.c.broken = true
		return 0, err
	}
	w.written += int64(len(p))
	return len(p), nil
}

// FlushError sends the head (if not yet sent) and what was written.
func (w *localWriter) FlushError() error {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed != nil {
		return w.failed
	}
	w.c.writeProgress()
	if err := w.c.bw.Flush(); err != nil {
		w.failed = err
		w.c.broken = true
		return err
	}
	return nil
}

func (w *localWriter) Flush() { _ = w.FlushError() }

// SetWriteDeadline serves http.ResponseController.
func (w *localWriter) SetWriteDeadline(t time.Time) error {
	w.c.wdl = time.Time{} // unknown to the engine's own bookkeeping now
	return w.c.nc.SetWriteDeadline(t)
}

// finish completes the response after the handler returned.
func (w *localWriter) finish() {
	if !w.started {
		if w.h.Get("Content-Length") == "" {
			w.h.Set("Content-Length", "0")
		}
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	if w.failed != nil {
		c.broken = true
		return
	}
	if !w.noBody && w.length >= 0 && w.written < w.length {
		c.broken = true // the handler promised more than it wrote
		return
	}
	if c.chunkOut {
		c.writeProgress()
		writeLastChunk(c.bw, nil)
	}
}
