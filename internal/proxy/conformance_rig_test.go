package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The rig of the conformance suite (conformance_test.go): how the engine is
// started (startEngine, the one function that knows), the misbehaving
// worker the engine forwards to, and a client that speaks raw bytes and
// reads answers with a reader that fails on anything ambiguous.

// engineTimeouts are the limits of the engine under test. Read and Write
// bound the time between progress (a read of request body bytes, a write
// of response bytes), not a request's total time: a stream that keeps
// moving lives as long as it likes, one that stops for longer is cut. A
// worker that stops sending mid-response is cut by the upstream timeout,
// which the rig sets to Write.
type engineTimeouts struct {
	Header time.Duration // a request head, from its first byte
	Idle   time.Duration // between requests on a keep-alive connection
	Read   time.Duration // between reads of a request body
	Write  time.Duration // between writes of a response
}

// cfRelaxed is for probes that are not about timing: no limit trips by
// accident, and a hang still shows as a hang (the probes wait less).
var cfRelaxed = engineTimeouts{Header: 5 * time.Second, Idle: 10 * time.Second, Read: 10 * time.Second, Write: 10 * time.Second}

// cfTight is for the streaming and stall probes.
var cfTight = engineTimeouts{Header: time.Second, Idle: time.Second, Read: time.Second, Write: time.Second}

// startEngine serves the proxy on 127.0.0.1 with every path routed to the worker at workerAddr, and returns the
// address clients dial. It is the only code in the suite that knows how
// the engine is built and served; the engine is stopped when t ends.
func startEngine(t *testing.T, workerAddr string, tm engineTimeouts) (proxyAddr string) {
	t.Helper()
	log, _ := testLogger(t)
	opts := Options{Logger: log, WorkerTimeout: tm.Write}
	if cfDev {
		// Dev mode's engine: the same one, with local handlers and a body
		// rewriter on every response.
		opts.Local = map[string]http.Handler{"/__local": http.NotFoundHandler()}
		opts.Rewrite = func(string, int, func(string) string) BodyRewriter { return passRewriter{} }
	}
	p := New(opts)
	b := NewBackend("index", "index-1", workerAddr, 0)
	p.Swap(NewTable([]Route{{Prefix: "/", Worker: "index", Backend: b}}))
	srv := startProxyWith(t, p, func(s *ServerOptions) {
		s.HeaderTimeout = tm.Header
		s.IdleTimeout = tm.Idle
		s.ReadTimeout = tm.Read
		s.WriteTimeout = tm.Write
	})
	return srv.Listener.Addr().String()
}

// cfDev makes startEngine configure the engine as dev mode does.
var cfDev bool

// passRewriter rewrites nothing, but makes the engine take its rewriting
// path (no Content-Length, chunked out) for every response.
type passRewriter struct{}

func (passRewriter) Write(dst, p []byte) []byte { return append(dst, p...) }
func (passRewriter) Close(dst []byte) []byte    { return dst }

// cfSetup starts a worker answering with script and the engine in front of
// it. When the test ends (passed or not), a fresh client sends an innocent
// request and must get its own answer and nothing else.
func cfSetup(t *testing.T, script cfScript, tm engineTimeouts) (string, *cfWorker) {
	t.Helper()
	w := startCfWorker(t, script)
	addr := startEngine(t, w.addr(), tm)
	t.Cleanup(func() { cfInnocent(t, addr) })
	return addr, w
}

// cfInnocent sends GET /probe with a fresh marker in the query and the
// cookie on a new connection and checks that the answer is the worker's
// echo of exactly those markers, followed by nothing but the close.
func cfInnocent(t *testing.T, addr string) {
	t.Helper()
	id, sid := rand.Text(), rand.Text()
	c := cfDial(t, addr)
	c.send("GET /probe?id=" + id + " HTTP/1.1\r\nHost: test.local\r\nCookie: session=" + sid + "\r\nConnection: close\r\n\r\n")
	resp, err := c.final("GET", 5*time.Second)
	if err != nil {
		t.Fatalf("innocent client after the probe: %v", err)
	}
	if want := cfProbeAnswer(id, sid); resp.Code != 200 || string(resp.Body) != want {
		t.Fatalf("innocent client after the probe got someone else's answer:\n%s\nwant 200 %q", cfShow(resp.Raw), want)
	}
	if extra, err := c.closedWithin(2 * time.Second); err != nil || len(extra) > 0 {
		t.Fatalf("innocent client after the probe: after its answer: %s (%v), want the close", cfShow(extra), err)
	}
}

func cfProbeAnswer(id, sid string) string { return "probe id=" + id + " session=" + sid }

// cfEchoAnswer is the body the worker's echo answers a non-probe request with.
func cfEchoAnswer(method, target string, body []byte) string {
	return fmt.Sprintf("echo %s %s len=%d sha256=%x", method, target, len(body), sha256.Sum256(body))
}

// The misbehaving worker.

// cfScript answers one request on a worker connection (its body unread)
// and reports whether the connection may serve another. GET /probe is
// always answered by cfEcho.
type cfScript func(c *cfWorkerConn, r *http.Request) bool

// cfWorker is a raw TCP worker: it parses requests with http.ReadRequest,
// records every request head and every byte it received (to prove nothing
// smuggled reached it), and answers with its script.
type cfWorker struct {
	ln     net.Listener
	script cfScript
	done   chan struct{} // closed when the test ends: pauses end early
	wg     sync.WaitGroup

	mu    sync.Mutex
	seen  []cfSeen
	raw   bytes.Buffer
	conns map[net.Conn]struct{}
}

// cfSeen is a request head the worker received.
type cfSeen struct {
	Method, Target, Proto, Host string
	Header                      http.Header
}

// cfWorkerConn is one connection of the worker, for scripts.
type cfWorkerConn struct {
	net.Conn
	br *bufio.Reader
	w  *cfWorker
}

// cfWorkerConnLife bounds every worker connection: nothing in the suite
// lasts longer.
const cfWorkerConnLife = 30 * time.Second

func startCfWorker(t *testing.T, script cfScript) *cfWorker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("worker listen: %v", err)
	}
	w := &cfWorker{ln: ln, script: script, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	w.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.conns[nc] = struct{}{}
			w.mu.Unlock()
			w.wg.Go(func() { w.serve(nc) })
		}
	})
	t.Cleanup(func() {
		close(w.done)
		ln.Close()
		w.mu.Lock()
		for nc := range w.conns {
			nc.Close()
		}
		w.mu.Unlock()
		w.wg.Wait()
	})
	return w
}

func (w *cfWorker) addr() string { return w.ln.Addr().String() }

func (w *cfWorker) serve(nc net.Conn) {
	defer func() {
		nc.Close()
		w.mu.Lock()
		delete(w.conns, nc)
		w.mu.Unlock()
	}()
	nc.SetDeadline(time.Now().Add(cfWorkerConnLife))
	c := &cfWorkerConn{Conn: nc, br: bufio.NewReader(cfTee{nc, w}), w: w}
	for {
		r, err := http.ReadRequest(c.br)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.seen = append(w.seen, cfSeen{r.Method, r.RequestURI, r.Proto, r.Host, r.Header.Clone()})
		w.mu.Unlock()
		answer := w.script
		if answer == nil || r.URL.Path == "/probe" {
			answer = cfEcho
		}
		if !answer(c, r) {
			return
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil || r.Close {
			return
		}
	}
}

// cfTee records what the worker reads.
type cfTee struct {
	r io.Reader
	w *cfWorker
}

func (t cfTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.w.mu.Lock()
	t.w.raw.Write(p[:n])
	t.w.mu.Unlock()
	return n, err
}

// requests returns the request heads the worker received so far.
func (w *cfWorker) requests() []cfSeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

// sawTarget reports whether a request whose target contains s reached the worker.
func (w *cfWorker) sawTarget(s string) bool {
	for _, r := range w.requests() {
		if strings.Contains(r.Target, s) {
			return true
		}
	}
	return false
}

// received reports whether the bytes s reached the worker at all.
func (w *cfWorker) received(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.raw.Bytes(), []byte(s))
}

// send writes s; false means the engine hung up, which scripts shrug off.
func (c *cfWorkerConn) send(s string) bool {
	_, err := io.WriteString(c, s)
	return err == nil
}

// pause waits d (the pacing of a scenario, not synchronisation) and
// reports false when the test ended meanwhile.
func (c *cfWorkerConn) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.w.done:
		return false
	}
}

// cfEcho is the well-behaved answer: for /probe the markers of the query
// and cookie, for anything else the method, target and body digest. It
// honours Expect: 100-continue.
func cfEcho(c *cfWorkerConn, r *http.Request) bool {
	if strings.EqualFold(r.Header.Get("Expect"), "100-continue") && !c.send("HTTP/1.1 100 Continue\r\n\r\n") {
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return false
	}
	msg := cfEchoAnswer(r.Method, r.RequestURI, body)
	if r.URL.Path == "/probe" {
		msg = "probe " + r.URL.RawQuery + " " + r.Header.Get("Cookie")
	}
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(msg)) + "\r\n\r\n"
	if r.Method == http.MethodHead {
		msg = ""
	}
	return c.send(head + msg)
}

// The raw client.

// cfConn is a client connection that writes raw bytes.
type cfConn struct {
	t  *testing.T
	nc *net.TCPConn
	br *bufio.Reader
}

func cfDial(t *testing.T, addr string) *cfConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing the engine at %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &cfConn{t: t, nc: nc.(*net.TCPConn), br: bufio.NewReaderSize(nc, 64<<10)}
}

// send writes s and fails the test if that fails.
func (c *cfConn) send(s string) {
	c.t.Helper()
	if err := c.write(s); err != nil {
		c.t.Fatalf("writing %s: %v", cfShow([]byte(s)), err)
	}
}

// write writes s, for probes where the engine may rightly hang up first.
func (c *cfConn) write(s string) error {
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c.nc, s)
	return err
}

// read reads one response (a 1xx included) within d.
func (c *cfConn) read(method string, d time.Duration) (*cfResp, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return cfReadResponse(c.br, method)
}

// final reads responses within d until one that is not a 1xx other
// than 101.
func (c *cfConn) final(method string, d time.Duration) (*cfResp, error) {
	deadline := time.Now().Add(d)
	for range 8 {
		c.nc.SetReadDeadline(deadline)
		resp, err := cfReadResponse(c.br, method)
		if err != nil || resp.Code >= 200 || resp.Code == 101 {
			return resp, err
		}
	}
	return nil, fmt.Errorf("%w: more than 8 informational responses", errCfProtocol)
}

// closedWithin reads until the engine closes the connection (EOF or
// reset) and returns what arrived before; the error is a timeout when it
// stays open for d.
func (c *cfConn) closedWithin(d time.Duration) ([]byte, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	var got []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := c.br.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if cfIsTimeout(err) {
				return got, fmt.Errorf("connection still open after %v: %w", d, err)
			}
			return got, nil
		}
		if len(got) > 1<<20 {
			return got, errors.New("more than 1 MiB after the answer")
		}
	}
}

// expectRejected checks the answer to a request the engine must refuse
// itself: one response with a status in codes, then the close and nothing
// else. silentOK also accepts a close without any response.
func (c *cfConn) expectRejected(method string, silentOK bool, codes ...int) {
	t := c.t
	t.Helper()
	resp, err := c.read(method, 2*time.Second)
	switch {
	case err == nil:
		if !slices.Contains(codes, resp.Code) {
			t.Errorf("answered %d, want %v:\n%s", resp.Code, codes, cfShow(resp.Raw))
		}
	case errors.Is(err, errCfClosed) && silentOK:
		return
	case cfIsTimeout(err):
		t.Errorf("no answer within 2s (a hang): %v", err)
		return
	default:
		t.Errorf("reading the answer: %v", err)
		return
	}
	if extra, err := c.closedWithin(time.Second); err != nil || len(extra) > 0 {
		t.Errorf("after the answer: %s (%v), want the close and nothing else", cfShow(extra), err)
	}
}

func cfIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// cfShow quotes b for a failure message, cut to a readable length.
func cfShow(b []byte) string {
	if len(b) > 600 {
		return strconv.Quote(string(b[:600])) + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

// The strict response reader.

var (
	// errCfClosed: the connection closed before any byte of a response.
	errCfClosed = errors.New("connection closed without a response")
	// errCfCut: the connection closed (or was reset) mid-response.
	errCfCut = errors.New("response cut short")
	// errCfProtocol: bytes that are not an unambiguous HTTP/1.1 response.
	errCfProtocol = errors.New("not a well-formed HTTP/1.1 response")
)

// cfResp is one response as the client received it.
type cfResp struct {
	Code    int
	Header  http.Header
	Trailer http.Header
	Body    []byte
	Chunked bool
	Raw     []byte // every byte of it, as received
}

// cfReader reads one response and keeps its raw bytes.
type cfReader struct {
	br   *bufio.Reader
	resp *cfResp
}

// cfReadResponse reads one response strictly: CRLF line ends only, no
// bare CR, NUL or other control bytes in fields, no obs-fold, exactly one
// framing (a single chunked coding, or one Content-Length, or the close).
func cfReadResponse(br *bufio.Reader, method string) (*cfResp, error) {
	r := &cfReader{br: br, resp: &cfResp{Header: http.Header{}}}
	err := r.read(method)
	return r.resp, err
}

func (r *cfReader) read(method string) error {
	resp := r.resp
	status, err := r.line()
	if err != nil {
		return err
	}
	line := string(status) // the reader's buffer moves on
	// status-line = HTTP-version SP status-code SP [ reason-phrase ]
	// HTTP/1.0 is what net/http answers an HTTP/1.0 client with.
	if len(line) < 13 || line[:8] != "HTTP/1.1" && line[:8] != "HTTP/1.0" || line[8] != ' ' || line[12] != ' ' {
		return fmt.Errorf("%w: status line %q", errCfProtocol, line)
	}
	code, err := strconv.Atoi(line[9:12])
	if err != nil || code < 100 {
		return fmt.Errorf("%w: status line %q", errCfProtocol, line)
	}
	resp.Code = code
	if err := r.fields(resp.Header); err != nil {
		return err
	}
	if code < 200 || code == 204 || code == 304 || method == http.MethodHead {
		return nil
	}
	te, cl := resp.Header.Values("Transfer-Encoding"), resp.Header.Values("Content-Length")
	switch {
	case len(te) > 0:
		if len(cl) > 0 || len(te) != 1 || te[0] != "chunked" || line[7] == '0' {
			return fmt.Errorf("%w: framing Transfer-Encoding %q, Content-Length %q", errCfProtocol, te, cl)
		}
		resp.Chunked = true
		return r.chunked()
	case len(cl) > 0:
		n, err := strconv.ParseUint(cl[0], 10, 40)
		if len(cl) != 1 || err != nil || cl[0][0] == '+' {
			return fmt.Errorf("%w: Content-Length %q", errCfProtocol, cl)
		}
		return r.body(int64(n))
	default:
		// Delimited by the close.
		return r.body(-1)
	}
}

// line reads one CRLF-terminated line without its CRLF.
func (r *cfReader) line() ([]byte, error) {
	start := len(r.resp.Raw)
	for {
		frag, err := r.br.ReadSlice('\n')
		r.resp.Raw = append(r.resp.Raw, frag...)
		if err == bufio.ErrBufferFull && len(r.resp.Raw)-start < 64<<10 {
			continue
		}
		if err != nil {
			return nil, r.cut(err)
		}
		break
	}
	l := r.resp.Raw[start:]
	if len(l) < 2 || l[len(l)-2] != '\r' {
		return nil, fmt.Errorf("%w: line %q not ended by CRLF", errCfProtocol, l)
	}
	l = l[:len(l)-2]
	if i := bytes.IndexAny(l, "\r\x00"); i >= 0 {
		return nil, fmt.Errorf("%w: line %q holds a bare CR or NUL", errCfProtocol, l)
	}
	return l, nil
}

// cut classifies a read error: closed before the response, cut within
// it, or (a timeout) silence.
func (r *cfReader) cut(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		if len(r.resp.Raw) == 0 {
			return fmt.Errorf("%w (%v)", errCfClosed, err)
		}
		return fmt.Errorf("%w (%v) after %d bytes", errCfCut, err, len(r.resp.Raw))
	}
	return fmt.Errorf("after %d bytes of a response: %w", len(r.resp.Raw), err)
}

// fields reads header (or trailer) lines up to the empty line.
func (r *cfReader) fields(h http.Header) error {
	for n := 0; ; n++ {
		l, err := r.line()
		if err != nil {
			return err
		}
		if len(l) == 0 {
			return nil
		}
		if n > 500 {
			return fmt.Errorf("%w: more than 500 fields", errCfProtocol)
		}
		if l[0] == ' ' || l[0] == '\t' {
			return fmt.Errorf("%w: obs-fold line %q", errCfProtocol, l)
		}
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok || !cfToken(k) {
			return fmt.Errorf("%w: field line %q", errCfProtocol, l)
		}
		v = bytes.Trim(v, " \t")
		for _, b := range v {
			if b < ' ' && b != '\t' || b == 0x7f {
				return fmt.Errorf("%w: control byte in field line %q", errCfProtocol, l)
			}
		}
		h.Add(string(k), string(v))
	}
}

func cfToken(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c < 0x80 && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// body reads n bytes of body, or up to the close when n < 0.
func (r *cfReader) body(n int64) error {
	const limit = 256 << 20
	buf := make([]byte, 32<<10)
	for n != 0 {
		want := int64(len(buf))
		if n > 0 {
			want = min(want, n)
		}
		m, err := r.br.Read(buf[:want])
		r.resp.Raw = append(r.resp.Raw, buf[:m]...)
		r.resp.Body = append(r.resp.Body, buf[:m]...)
		if n > 0 {
			n -= int64(m)
		}
		if len(r.resp.Body) > limit {
			return fmt.Errorf("%w: body over %d bytes", errCfProtocol, limit)
		}
		if err != nil {
			if n < 0 && errors.Is(err, io.EOF) {
				return nil
			}
			if n == 0 {
				return nil
			}
			return r.cut(err)
		}
	}
	return nil
}

// chunked reads a chunked body and its trailers.
func (r *cfReader) chunked() error {
	for {
		l, err := r.line()
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(l, []byte(";"))
		size = bytes.TrimRight(size, " \t")
		n, err := strconv.ParseUint(string(size), 16, 40)
		if err != nil || len(size) == 0 || size[0] == '+' {
			return fmt.Errorf("%w: chunk size line %q", errCfProtocol, l)
		}
		if n == 0 {
			r.resp.Trailer = http.Header{}
			return r.fields(r.resp.Trailer)
		}
		if err := r.body(int64(n)); err != nil {
			return err
		}
		if l, err := r.line(); err != nil {
			return err
		} else if len(l) != 0 {
			return fmt.Errorf("%w: chunk data not followed by CRLF", errCfProtocol)
		}
	}
}

// cfPattern fills buf with the bytes at offset off of a long, checkable
// stream.
func cfPattern(off int64, buf []byte) {
	for i := range buf {
		x := off + int64(i)
		buf[i] = byte(x ^ x>>8 ^ x>>16)
	}
}

// The strict reader is what makes a pass mean something: it must refuse
// every ambiguity the suite probes the engine for.
func TestConformanceReader(t *testing.T) {
	cases := []struct {
		name, in, method string
		want             error // nil: read in full
		body             string
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", "GET", nil, "ok"},
		{"chunked-with-trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n1\r\n!\r\n0\r\nX-T: v\r\n\r\n", "GET", nil, "ok!"},
		{"close-delimited", "HTTP/1.1 200 OK\r\n\r\nuntil the close", "GET", nil, "until the close"},
		{"head-ignores-length", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD", nil, ""},
		{"http10-length", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", nil, "ok"},
		{"nothing", "", "GET", errCfClosed, ""},
		{"cut-in-head", "HTTP/1.1 200 OK\r\nContent-Le", "GET", errCfCut, ""},
		{"cut-in-body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", "GET", errCfCut, ""},
		{"cut-before-last-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", "GET", errCfCut, ""},
		{"bare-lf", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"bare-cr", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"nul", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"control", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"space-before-colon", "HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"length-and-chunked", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", errCfProtocol, ""},
		{"two-lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"plus-length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "GET", errCfProtocol, ""},
		{"gzip-coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "GET", errCfProtocol, ""},
		{"chunked-to-http10", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "GET", errCfProtocol, ""},
		{"chunk-without-crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX0\r\n\r\n", "GET", errCfProtocol, ""},
		{"bad-chunk-size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n", "GET", errCfProtocol, ""},
		{"trailer-nul", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\x00\r\n\r\n", "GET", errCfProtocol, ""},
		{"bad-status-line", "HTTP/1.1 20 OK\r\n\r\n", "GET", errCfProtocol, ""},
		{"http2-version", "HTTP/2 200 OK\r\n\r\n", "GET", errCfProtocol, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := cfReadResponse(bufio.NewReader(strings.NewReader(tc.in)), tc.method)
			if tc.want == nil {
				if err != nil || string(resp.Body) != tc.body {
					t.Fatalf("got %v, body %q; want body %q", err, resp.Body, tc.body)
				}
				// What it accepts, net/http's reader reads the same way.
				std, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.in)), &http.Request{Method: tc.method})
				if err != nil {
					t.Fatalf("net/http: %v", err)
				}
				body, err := io.ReadAll(std.Body)
				if err != nil || std.StatusCode != resp.Code || string(body) != tc.body {
					t.Fatalf("net/http reads %d %q (%v), the strict reader %d %q", std.StatusCode, body, err, resp.Code, resp.Body)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
