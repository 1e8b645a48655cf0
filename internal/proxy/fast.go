package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// The fast path forwards the common request (HTTP/1.1, no Upgrade, no
// Expect, no declared request trailers) itself, over a per-backend pool of
// keep-alive connections: it writes the request head and streams the body,
// parses only the response's status line, headers and framing, and streams
// the body to the client through the ResponseWriter. Everything it does not
// handle goes through httputil.ReverseProxy (the stock path), and both give
// the worker and the client the same view: hop-by-hop headers removed both
// ways, Host kept, X-Forwarded-* set fresh, every read from the worker
// forwarded before the next one could block.

const (
	// maxResponseHeaderBytes bounds a worker's response head.
	maxResponseHeaderBytes = 1 << 20
	// maxInformational bounds the 1xx responses before the final one
	// (http.Transport allows 5 too).
	maxInformational = 5
)

var (
	errHeaderTooLarge = errors.New("worker response header too large")
	errMalformed      = errors.New("malformed response from worker")
	errBodyLength     = errors.New("request body length differs from Content-Length")
)

// reencodeQueries is set when GODEBUG changes how ReverseProxy cleans
// queries; the fast path then leaves queries to it.
var reencodeQueries = strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams")

// fastEligible reports whether r can take the fast path.
func (p *Proxy) fastEligible(r *http.Request) bool {
	if !p.fast || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.URL.Opaque != "" || r.Trailer != nil {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodDelete, http.MethodPatch, http.MethodOptions:
	default:
		return false
	}
	if _, ok := r.Header["Upgrade"]; ok {
		return false
	}
	if _, ok := r.Header["Expect"]; ok {
		return false
	}
	return r.URL.RawQuery == "" || (!reencodeQueries && queryIsClean(r.URL.RawQuery))
}

// queryIsClean reports whether ReverseProxy would forward q unchanged
// (httputil's cleanQueryParams re-encodes anything else).
func queryIsClean(q string) bool {
	if strings.Count(q, "&") >= 10000 {
		return false
	}
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// fastReq is what the exchange needs to know about the request beyond
// what its sink writes.
type fastReq struct {
	hasBody    bool  // a body follows the head
	isHead     bool  // HEAD: the answer has no body whatever its framing says
	replayable bool  // safe to send again on a fresh connection
	length     int64 // body length; -1 chunked
}

// sink is the client side of an exchange: it writes the request head, hands
// out the body, and passes the worker's answer on. rwSink does that through
// net/http's ResponseWriter; the front (front.go) on the client connection
// itself.
type sink interface {
	writeRequestHead(bw *bufio.Writer, hasBody bool)
	body() io.Reader
	// gone reports whether the client went away (the request is cancelled).
	gone() bool
	// watch closes c if the client goes away, until unwatch, which reports
	// whether c was left alone.
	watch(c *workerConn)
	unwatch() bool
	// viewHeaders reports whether the response head may stay a view of the
	// connection's buffer (it is written out before the next read).
	viewHeaders() bool
	informational(resp *respHead)
	head(resp *respHead, mode bodyMode)
	write(p []byte) error
	flush()
	trailer(k, v string)
	// end completes a body that copyBody read in full.
	end()
	// abort breaks a response whose head is out (the body failed).
	abort()
	// fail answers with code and msg before anything was sent; 499 means
	// the client is gone and nothing is written.
	fail(code int, msg string)
	// join reports whether exchange must wait for the body sender before
	// returning; interruptBody then unblocks a sender reading the client.
	join() bool
	interruptBody()
}

// forwardFast sends one routed request to st.backend over a pooled
// connection. A request that is safe to replay is retried once on a fresh
// connection when a reused one turns out to have been closed by the worker.
func (p *Proxy) forwardFast(s sink, st *reqState, ctx context.Context, fr fastReq) {
	b := st.backend
	for fresh := false; ; fresh = true {
		var c *workerConn
		if !fresh {
			c = b.getConn()
		}
		if c == nil {
			nc, err := p.dial(ctx, "tcp", b.Addr)
			if err != nil {
				st.dialErr = isDialError(err)
				p.fail(s, st, err)
				return
			}
			c = newWorkerConn(nc)
		}
		if !p.exchange(s, st, c, fr, fr.replayable && c.reused) {
			return
		}
		p.log.Debug().Str("worker", st.worker).Str("instance", b.Instance).
			Msg("idle connection closed by worker, retrying on a new one")
	}
}

// Header-timeout states shared by exchange and the body sender.
const (
	awaitingHead int32 = iota
	gotHead
)

// exchange runs one request/response on c and reports whether the request
// should be retried on a fresh connection (only when retryStale is set and
// the worker closed c before answering anything).
func (p *Proxy) exchange(s sink, st *reqState, c *workerConn, fr fastReq, retryStale bool) (retry bool) {
	b := st.backend
	reusable := false
	var sent chan error // the body sender's result, when there is a body
	s.watch(c)
	defer func() {
		if !s.unwatch() { // the client left and c was closed under us
			reusable = false
		}
		if sent != nil {
			// A sender that wrote the whole body has nothing left that
			// can block; one that has not (the worker answered without
			// reading it all) must not leave c half-written: drop c.
			if reusable && c.bodySent.Load() {
				reusable = <-sent == nil
				sent = nil
			} else {
				reusable = false
			}
		}
		if reusable {
			b.putConn(c)
		} else {
			c.close()
		}
		if sent != nil && s.join() {
			// The sender may still be reading the client: stop it before
			// the client connection is touched again.
			s.interruptBody()
			<-sent
		}
	}()

	s.writeRequestHead(c.bw, fr.hasBody)
	timeout := p.headerTimeout
	c.headState.Store(awaitingHead)
	c.bodySent.Store(false)
	if fr.hasBody {
		if !c.rdl.IsZero() {
			// No deadline while the body goes out: the sender starts the
			// header timeout when it has sent it all.
			c.conn.SetReadDeadline(time.Time{})
			c.rdl = time.Time{}
		}
		sent = make(chan error, 1)
		go c.sendBody(s.body(), fr.length, sent, timeout)
	} else {
		if err := c.bw.Flush(); err != nil {
			if retryStale && !s.gone() {
				return true
			}
			p.fail(s, st, err)
			return false
		}
		if timeout > 0 {
			c.headerDeadline(timeout)
		}
	}

	resp := &c.resp
	view := s.viewHeaders()
	for informational := 0; ; informational++ {
		if informational > maxInformational {
			p.fail(s, st, fmt.Errorf("%w: too many 1xx responses", errMalformed))
			return false
		}
		err := c.readHead(resp, view)
		if err != nil {
			if retryStale && !resp.gotBytes && !s.gone() && !isTimeout(err) {
				return true
			}
			p.fail(s, st, err)
			return false
		}
		if resp.code >= 200 {
			break
		}
		if resp.code == http.StatusSwitchingProtocols {
			p.fail(s, st, fmt.Errorf("%w: 101 Switching Protocols to a request without Upgrade", errMalformed))
			return false
		}
		// Informational (103 Early Hints): pass on, then read the real answer.
		s.informational(resp)
	}
	if timeout > 0 {
		c.headState.Store(gotHead)
		// The body has no deadline (it may stream for as long as it
		// likes) — unless it is already in the buffer, as a small
		// answer's is: then no read reaches the socket and the header
		// deadline may stay for the next request (headerDeadline).
		if fr.hasBody || !c.bodyBuffered(fr, resp) {
			c.conn.SetReadDeadline(time.Time{})
			c.rdl = time.Time{}
		}
	}

	var mode bodyMode
	switch {
	case fr.isHead || resp.code == http.StatusNoContent || resp.code == http.StatusNotModified:
		mode = noBody
	case resp.chunked:
		mode = chunkedBody
	case resp.length >= 0:
		mode = lengthBody
	default:
		mode = closeBody
	}
	if mode == lengthBody && resp.length == 0 {
		mode = noBody
	}
	s.head(resp, mode)
	if mode == noBody {
		reusable = resp.keepAlive
		return false
	}
	err := c.copyBody(s, mode, resp.length)
	if err != nil {
		// Headers are out: the only honest thing left is a broken
		// response, as ReverseProxy does.
		c.close()
		if s.gone() {
			p.log.Debug().Str("worker", st.worker).Str("instance", b.Instance).
				Str("path", st.path).Err(err).Msg("client went away")
		} else {
			p.log.Debug().Str("worker", st.worker).Str("instance", b.Instance).
				Str("path", st.path).Err(err).Msg("response body copy failed")
		}
		s.abort()
		return false
	}
	s.end()
	reusable = resp.keepAlive && mode != closeBody
	return false
}

// rwSink is the sink of a request served by net/http.
type rwSink struct {
	w    http.ResponseWriter
	r    *http.Request
	out  flusher
	stop func() bool
}

func (s *rwSink) writeRequestHead(bw *bufio.Writer, hasBody bool) { writeRequestHead(bw, s.r, hasBody) }
func (s *rwSink) body() io.Reader                                 { return s.r.Body }
func (s *rwSink) gone() bool                                      { return s.r.Context().Err() != nil }
func (s *rwSink) watch(c *workerConn)                             { s.stop = context.AfterFunc(s.r.Context(), c.abort) }
func (s *rwSink) unwatch() bool                                   { return s.stop() }
func (s *rwSink) viewHeaders() bool                               { return false }
func (s *rwSink) join() bool                                      { return false }
func (s *rwSink) interruptBody()                                  {}
func (s *rwSink) end()                                            {}
func (s *rwSink) abort()                                          { panic(http.ErrAbortHandler) }
func (s *rwSink) flush()                                          { s.out.flush() }

func (s *rwSink) informational(resp *respHead) {
	h := s.w.Header()
	resp.fill(h)
	s.w.WriteHeader(resp.code)
	clear(h)
}

func (s *rwSink) head(resp *respHead, mode bodyMode) {
	h := s.w.Header()
	resp.fill(h)
	if mode == chunkedBody {
		delete(h, "Content-Length")
		if len(resp.trailer) > 0 {
			h["Trailer"] = resp.trailer
		}
	}
	s.w.WriteHeader(resp.code)
	if mode != noBody {
		s.out = flusherOf(s.w)
	}
}

func (s *rwSink) write(p []byte) error {
	_, err := s.w.Write(p)
	return err
}

func (s *rwSink) trailer(k, v string) {
	s.w.Header().Add(http.TrailerPrefix+textproto.CanonicalMIMEHeaderKey(k), v)
}

func (s *rwSink) fail(code int, msg string) {
	if code == statusClientClosedRequest {
		s.w.WriteHeader(code)
		return
	}
	http.Error(s.w, msg, code)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeRequestHead writes the request line and headers as ReverseProxy
// (with Rewrite and SetXForwarded) and http.Transport would.
func writeRequestHead(bw *bufio.Writer, r *http.Request, hasBody bool) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	if p := r.URL.EscapedPath(); p != "" {
		bw.WriteString(p)
	} else {
		bw.WriteByte('/')
	}
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	connTokens := r.Header["Connection"]
	for k, vv := range r.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Te",
			"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Upgrade",
			"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
			continue
		}
		if len(connTokens) > 0 && tokensContain(connTokens, k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if te := r.Header["Te"]; len(te) > 0 && tokensContain(te, "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		bw.WriteString(ip)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Host: ")
	bw.WriteString(r.Host)
	if r.TLS != nil {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	}
	writeFraming(bw, hasBody, r.ContentLength, r.Method)
	bw.WriteString("\r\n")
}

// tokensContain reports whether a comma-separated header value list names
// token (case-insensitively).
func tokensContain(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// sendBody streams the request body to the worker, flushing after every
// read so a slow upload reaches the worker as it arrives. Once the body is
// complete it starts the response-header timeout (unless the head already
// came). On failure it closes the connection, which also ends the response
// read.
func (c *workerConn) sendBody(body io.Reader, length int64, done chan<- error, timeout time.Duration) {
	bufp := copyBuffers.Get().(*[]byte)
	buf := *bufp
	chunked := length < 0
	var n int64
	var err error
	for {
		m, rerr := body.Read(buf)
		if m > 0 {
			if chunked {
				c.bw.Write(strconv.AppendInt(c.bw.AvailableBuffer(), int64(m), 16))
				c.bw.WriteString("\r\n")
			} else if n+int64(m) > length {
				err = errBodyLength
				break
			}
			c.bw.Write(buf[:m])
			if chunked {
				c.bw.WriteString("\r\n")
			}
			n += int64(m)
			if err = c.bw.Flush(); err != nil {
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
	if err == nil {
		if chunked {
			c.bw.WriteString("0\r\n\r\n")
		} else if n != length {
			err = errBodyLength
		}
	}
	if err == nil {
		err = c.bw.Flush()
	}
	copyBuffers.Put(bufp)
	if err == nil {
		c.bodySent.Store(true)
	}
	if err != nil {
		c.close()
	} else if timeout > 0 && c.headState.Load() == awaitingHead {
		c.conn.SetReadDeadline(time.Now().Add(timeout))
		if c.headState.Load() == gotHead {
			c.conn.SetReadDeadline(time.Time{})
		}
	}
	done <- err
}

// headerDeadline gives the worker until timeout from now to answer a
// request without a body. A deadline left from an earlier request that is
// at most timeout/16 later stays: a busy keep-alive connection updates its
// timer once per sixteenth of the timeout, not per request.
func (c *workerConn) headerDeadline(timeout time.Duration) {
	t, slack := time.Now().Add(timeout), timeout/16
	if laterBy(c.rdl, t, slack) {
		return
	}
	c.rdl = t.Add(slack)
	c.conn.SetReadDeadline(c.rdl)
}

// bodyBuffered reports whether the whole body of resp (the answer to fr)
// is already in c's buffer, so reading it makes no system call.
func (c *workerConn) bodyBuffered(fr fastReq, resp *respHead) bool {
	switch {
	case fr.isHead || resp.code == http.StatusNoContent || resp.code == http.StatusNotModified:
		return true
	case resp.chunked || resp.length < 0:
		return false
	default:
		return int64(c.br.Buffered()) >= resp.length
	}
}

// respHead is what exchange needs from a response head. fields keeps the
// end-to-end headers in order (hop-by-hop ones, Transfer-Encoding, Trailer
// and a repeated Content-Length already left out).
type respHead struct {
	code       int
	length     int64 // -1 unknown
	chunked    bool
	keepAlive  bool
	hasDate    bool
	gotBytes   bool     // anything at all was read for this response
	trailer    []string // declared trailer names (Trailer header values)
	connTokens []string // Connection header values: more headers to drop
	fields     []hfield
}

type hfield struct{ k, v string }

// dropped reports whether Connection named header k.
func (resp *respHead) dropped(k string) bool {
	return len(resp.connTokens) > 0 && tokensContain(resp.connTokens, k)
}

// fill adds the response's headers to h, keys canonical.
func (resp *respHead) fill(h http.Header) {
	vals := make([]string, 0, len(resp.fields))
	for _, f := range resp.fields {
		k := f.k
		if !isCanonical(k) {
			k = textproto.CanonicalMIMEHeaderKey(k)
		}
		if old, ok := h[k]; ok {
			h[k] = append(old, f.v)
			continue
		}
		vals = append(vals, f.v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for _, v := range resp.connTokens {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if t = textproto.TrimString(t); t != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(t))
			}
		}
	}
}

// readHead reads one response head from the worker into resp, dropping
// hop-by-hop headers. With view set, the strings in resp alias c's header
// scratch and are valid until the next readHead; otherwise they are copies.
func (c *workerConn) readHead(resp *respHead, view bool) error {
	*resp = respHead{length: -1, fields: resp.fields[:0]}
	line, err := c.readLine()
	if len(line) > 0 || c.br.Buffered() > 0 {
		resp.gotBytes = true
	}
	if err != nil {
		return err
	}
	// Status line: HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	code := 0
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
		}
		code = code*10 + int(d-'0')
	}
	if code < 100 {
		return fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	resp.code = code
	http10 := line[7] == '0' // line aliases the read buffer: take what we need now
	keepAlive := !http10

	// Collect the header block, then take one string that every key and
	// value slices into: one allocation for all of them (none with view).
	block := c.hdr[:0]
	for {
		start := len(block)
		block, err = c.appendLine(block)
		if err != nil {
			return err
		}
		if len(block) == start {
			break
		}
		if len(block) > maxResponseHeaderBytes {
			return errHeaderTooLarge
		}
		block = append(block, '\n')
	}
	if cap(block) <= 64<<10 {
		c.hdr = block
	}
	var s string
	if view && len(block) > 0 {
		s = unsafe.String(&block[0], len(block))
	} else {
		s = string(block)
	}
	for s != "" {
		var l string
		l, s, _ = strings.Cut(s, "\n")
		i := strings.IndexByte(l, ':')
		if i <= 0 {
			return fmt.Errorf("%w: header line %q", errMalformed, truncate([]byte(l)))
		}
		k, v := l[:i], textproto.TrimString(l[i+1:])
		if !validHeaderName(k) || !validHeaderValue(v) {
			return fmt.Errorf("%w: header line %q", errMalformed, truncate([]byte(l)))
		}
		switch hopKind(k) {
		case hopContentLength:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || v[0] == '+' || (resp.length >= 0 && resp.length != n) {
				return fmt.Errorf("%w: Content-Length %q", errMalformed, v)
			}
			if resp.length >= 0 {
				continue // repeated with the same value: pass on once
			}
			resp.length = n
		case hopTransferEncoding:
			if resp.chunked || !strings.EqualFold(v, "chunked") {
				return fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, v)
			}
			resp.chunked = true
			continue
		case hopConnection:
			resp.connTokens = append(resp.connTokens, v)
			if tokensContain([]string{v}, "close") {
				keepAlive = false
			} else if http10 && tokensContain([]string{v}, "keep-alive") {
				keepAlive = true
			}
			continue
		case hopTrailer:
			resp.trailer = append(resp.trailer, v)
			continue
		case hopOther:
			continue
		case hopDate:
			resp.hasDate = true
		}
		resp.fields = append(resp.fields, hfield{k, v})
	}
	if resp.chunked {
		resp.length = -1
	}
	if len(resp.connTokens) > 0 && resp.hasDate && resp.dropped("Date") {
		resp.hasDate = false
	}
	resp.keepAlive = keepAlive
	return nil
}

// Header names the response reader treats specially.
const (
	hopNone = iota
	hopContentLength
	hopTransferEncoding
	hopConnection
	hopTrailer
	hopDate
	hopOther // other hop-by-hop headers, dropped
)

// hopKind classifies a response header name, case-insensitively and
// without allocating.
func hopKind(k string) int {
	switch len(k) {
	case 2:
		if strings.EqualFold(k, "Te") {
			return hopOther
		}
	case 4:
		if strings.EqualFold(k, "Date") {
			return hopDate
		}
	case 7:
		if strings.EqualFold(k, "Trailer") {
			return hopTrailer
		}
		if strings.EqualFold(k, "Upgrade") {
			return hopOther
		}
	case 10:
		if strings.EqualFold(k, "Connection") {
			return hopConnection
		}
		if strings.EqualFold(k, "Keep-Alive") {
			return hopOther
		}
	case 14:
		if strings.EqualFold(k, "Content-Length") {
			return hopContentLength
		}
	case 16:
		if strings.EqualFold(k, "Proxy-Connection") {
			return hopOther
		}
	case 17:
		if strings.EqualFold(k, "Transfer-Encoding") {
			return hopTransferEncoding
		}
	case 18:
		if strings.EqualFold(k, "Proxy-Authenticate") {
			return hopOther
		}
	case 19:
		if strings.EqualFold(k, "Proxy-Authorization") {
			return hopOther
		}
	}
	return hopNone
}

// readLine returns the next line without its CRLF (or LF). The result may
// alias the reader's buffer: it is valid until the next read.
func (c *workerConn) readLine() ([]byte, error) {
	frag, err := c.br.ReadSlice('\n')
	if err == nil {
		return trimEOL(frag), nil
	}
	if err != bufio.ErrBufferFull {
		return frag, err
	}
	line, err := c.appendLine(append([]byte(nil), frag...))
	return line, err
}

func trimEOL(frag []byte) []byte {
	frag = frag[:len(frag)-1]
	if n := len(frag); n > 0 && frag[n-1] == '\r' {
		frag = frag[:n-1]
	}
	return frag
}

// appendLine appends the next line without its CRLF (or LF) to dst.
func (c *workerConn) appendLine(dst []byte) ([]byte, error) {
	for {
		frag, err := c.br.ReadSlice('\n')
		if err == nil {
			return append(dst, trimEOL(frag)...), nil
		}
		if err != bufio.ErrBufferFull {
			return append(dst, frag...), err
		}
		dst = append(dst, frag...)
		if len(dst) > maxResponseHeaderBytes {
			return dst, errHeaderTooLarge
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// isCanonical reports whether k is already in canonical MIME form, so the
// common case needs no new string.
func isCanonical(k string) bool {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// validHeaderName reports whether k is an RFC 9110 token.
func validHeaderName(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

type bodyMode int

const (
	noBody bodyMode = iota
	lengthBody
	chunkedBody
	closeBody // delimited by the worker closing the connection
)

// flusher flushes the client response; nil-safe wrapper over the
// ResponseWriter's Flusher (or ResponseController for wrapped writers).
type flusher struct {
	f  http.Flusher
	rc *http.ResponseController
}

func flusherOf(w http.ResponseWriter) flusher {
	if f, ok := w.(http.Flusher); ok {
		return flusher{f: f}
	}
	return flusher{rc: http.NewResponseController(w)}
}

func (f flusher) flush() {
	if f.f != nil {
		f.f.Flush()
	} else {
		_ = f.rc.Flush()
	}
}

// copyBody streams the response body to w. Before any read from the worker
// that could block, whatever has been written is flushed to the client, so
// streamed responses (server-sent events) pass without delay while a body
// that arrived in one piece goes out in one write.
func (c *workerConn) copyBody(s sink, mode bodyMode, length int64) error {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	pending := true // the head has not been flushed yet
	read := func(p []byte) (int, error) {
		if pending && c.br.Buffered() == 0 {
			s.flush()
			pending = false
		}
		return c.br.Read(p)
	}
	write := func(p []byte) error {
		if err := s.write(p); err != nil {
			return err
		}
		pending = true
		return nil
	}
	switch mode {
	case lengthBody:
		for length > 0 {
			n, err := read(buf[:min(int64(len(buf)), length)])
			if n > 0 {
				length -= int64(n)
				if werr := write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err != nil && length > 0 {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		return nil
	case closeBody:
		for {
			n, err := read(buf)
			if n > 0 {
				if werr := write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	// Chunked.
	for {
		if pending && c.br.Buffered() == 0 {
			s.flush()
			pending = false
		}
		line, err := c.readLine()
		if err != nil {
			return noEOF(err)
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err
		}
		if size == 0 {
			break
		}
		for size > 0 {
			n, err := read(buf[:min(int64(len(buf)), size)])
			if n > 0 {
				size -= int64(n)
				if werr := write(buf[:n]); werr != nil {
					return werr
				}
			}
			if err != nil && size > 0 {
				return noEOF(err)
			}
		}
		if pending && c.br.Buffered() < 2 {
			s.flush()
			pending = false
		}
		line, err = c.readLine()
		if err != nil {
			return noEOF(err)
		}
		if len(line) != 0 {
			return fmt.Errorf("%w: chunk not followed by CRLF", errMalformed)
		}
	}
	// Trailers, passed on to the sink.
	for {
		line, err := c.readLine()
		if err != nil {
			return noEOF(err)
		}
		if len(line) == 0 {
			return nil
		}
		k, v, ok := strings.Cut(string(line), ":")
		if !ok || !validHeaderName(k) {
			return fmt.Errorf("%w: trailer line %q", errMalformed, truncate(line))
		}
		s.trailer(k, textproto.TrimString(v))
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseChunkSize parses a chunk-size line, ignoring chunk extensions.
func parseChunkSize(line []byte) (int64, error) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, fmt.Errorf("%w: chunk size %q", errMalformed, truncate(line))
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%w: chunk size %q", errMalformed, truncate(line))
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}

// writeFraming writes the request body's framing header: its length when
// known, chunked when not, and an explicit zero length for a bodyless POST,
// PUT or PATCH (as net/http's client does). Both request writers use it.
func writeFraming(bw *bufio.Writer, hasBody bool, length int64, method string) {
	switch {
	case hasBody && length > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), length, 10))
		bw.WriteString("\r\n")
	case hasBody:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
}
