package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests pin the fast path's own machinery (pooled worker connections,
// HTTP/1.1 framing both ways); the rest of the suite runs against whichever
// path serves the request.

// countingBackend counts the TCP connections a test backend accepts.
func countingBackend(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

// rawBackend serves each accepted connection with serve, for workers that
// misbehave in ways net/http would not.
func rawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRawRequest reads one request head and its body from a raw worker
// connection.
func readRawRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

func fastProxy(t *testing.T, addr string, opts Options) (*Backend, string) {
	t.Helper()
	log, _ := testLogger(t)
	opts.Logger = log
	p := New(opts)
	b := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	return b, startProxy(t, p).URL
}

func idleConns(b *Backend) int {
	if p := b.conns.Load(); p != nil {
		return len(p.idle)
	}
	return 0
}

func TestFastPoolReusesConnections(t *testing.T) {
	addr, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	})
	b, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	for i := range 20 {
		resp, body := get(t, c, fmt.Sprintf("%s/n/%d", url, i))
		if resp.StatusCode != 200 || body != fmt.Sprintf("GET /n/%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential requests used %d worker connections, want 1", n)
	}
	if n := idleConns(b); n != 1 {
		t.Errorf("%d idle connections, want 1", n)
	}
	waitFor(t, "counters", func() bool { return b.Inflight() == 0 && b.Served() == 20 })
	b.Close()
	if n := idleConns(b); n != 0 {
		t.Errorf("closed backend keeps %d idle connections", n)
	}
}

func TestFastWorkerClosesConnection(t *testing.T) {
	addr, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	b, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	for i := range 3 {
		resp, body := get(t, c, url+"/")
		if resp.StatusCode != 200 || body != "bye" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if resp.Close {
			t.Errorf("the worker's Connection: close reached the client")
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("worker saw %d connections, want 3 (one per request)", n)
	}
	if n := idleConns(b); n != 0 {
		t.Errorf("%d connections the worker closed are pooled", n)
	}
}

// A worker that closes an idle connection without saying so: the next
// idempotent request retries on a fresh connection.
func TestFastStaleConnectionRetried(t *testing.T) {
	var served atomic.Int64
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readRawRequest(br); err != nil {
			return
		}
		n := served.Add(1)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", n%10)
		// ...and hang up, as a worker past its idle timeout would.
	})
	b, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	for i := range 5 {
		resp, body := get(t, c, url+"/")
		if resp.StatusCode != 200 || body != strconv.Itoa((i+1)%10) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	waitFor(t, "counters", func() bool { return b.Inflight() == 0 && b.Served() == 5 })
}

// Bytes the worker sends beyond the response must never be taken as the
// answer to the next request.
func TestFastUnaskedBytesDropConnection(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := readRawRequest(br)
			if err != nil {
				return
			}
			body := "ok " + req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged", len(body), body)
		}
	})
	_, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	for i := range 3 {
		path := fmt.Sprintf("/r%d", i)
		if resp, body := get(t, c, url+path); resp.StatusCode != 200 || body != "ok "+path {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
}

func TestFastChunkedBothWaysWithTrailers(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != -1 || len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
			http.Error(w, fmt.Sprintf("framing: length %d, encoding %v", r.ContentLength, r.TransferEncoding), 400)
			return
		}
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Trailer", "X-Sum")
		h := sha256.New()
		n, _ := io.Copy(io.MultiWriter(h, w), r.Body) // echo, chunk by chunk
		w.Header().Set("X-Sum", fmt.Sprintf("%d %x", n, h.Sum(nil)))
	})
	_, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	for _, size := range []int{1, 4096, 3<<20 + 7} {
		data := make([]byte, size)
		pattern(0, data)
		// A reader without a known length makes the client send chunked.
		req, _ := http.NewRequest(http.MethodPost, url+"/echo", io.MultiReader(bytes.NewReader(data)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("size %d: %d %v %q", size, resp.StatusCode, err, truncate(got))
		}
		if resp.ContentLength != -1 || !bytes.Equal(got, data) {
			t.Fatalf("size %d: length %d, body differs (%d bytes)", size, resp.ContentLength, len(got))
		}
		want := fmt.Sprintf("%d %x", size, sha256.Sum256(data))
		if tr := resp.Trailer.Get("X-Sum"); tr != want {
			t.Errorf("size %d: trailer %q, want %q", size, tr, want)
		}
	}
}

func TestFastLargeBodiesBothWays(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		io.Copy(w, r.Body)
	})
	b, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	const size = 16 << 20
	data := make([]byte, size)
	pattern(0, data)
	for range 2 {
		resp, err := c.Post(url+"/echo", "application/octet-stream", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.ContentLength != size || !bytes.Equal(got, data) {
			t.Fatalf("echo: %d %v length %d, %d bytes back", resp.StatusCode, err, resp.ContentLength, len(got))
		}
	}
	waitFor(t, "counters", func() bool { return b.Inflight() == 0 && b.Served() == 2 })
}

func TestFastHeadAndBodilessStatuses(t *testing.T) {
	addr, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "1234")
			if r.Method != http.MethodHead {
				w.Write(bytes.Repeat([]byte("x"), 1234))
			}
		}
	})
	_, url := fastProxy(t, addr, Options{})
	c := newClient(t)
	resp, err := c.Head(url + "/file")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 1234 {
		t.Errorf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	for _, tc := range []struct {
		path string
		code int
	}{{"/204", 204}, {"/304", 304}, {"/file", 200}, {"/204", 204}} {
		resp, body := get(t, c, url+tc.path)
		if resp.StatusCode != tc.code || (tc.code != 200 && body != "") || (tc.code == 200 && len(body) != 1234) {
			t.Errorf("%s: %d %q", tc.path, resp.StatusCode, truncate([]byte(body)))
		}
		if tc.code == 304 && resp.Header.Get("Etag") != `"v1"` {
			t.Errorf("304 lost its Etag")
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("worker saw %d connections, want 1: a bodiless answer desynchronised the pool", n)
	}
}

func TestFastHopByHopHeaders(t *testing.T) {
	type seen struct{ Foo, KeepAlive, Te, Conn, UA string }
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		got := seen{r.Header.Get("X-Foo"), r.Header.Get("Keep-Alive"), r.Header.Get("Te"),
			r.Header.Get("Connection"), strings.Join(r.Header["User-Agent"], ",")}
		w.Header().Set("Connection", "X-Bar")
		w.Header().Set("X-Bar", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
		fmt.Fprintf(w, "%+v", got)
	})
	_, url := fastProxy(t, addr, Options{})
	resp, body := rawRequest(t, strings.TrimPrefix(url, "http://"), "GET", "/h",
		"Connection: X-Foo, keep-alive", "X-Foo: 1", "Keep-Alive: 300", "Te: trailers, deflate")
	if want := fmt.Sprintf("%+v", seen{Te: "trailers"}); body != want {
		t.Errorf("worker saw %s, want %s", body, want)
	}
	if resp.Header.Get("X-Bar") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Kept") != "yes" {
		t.Errorf("response headers %v", resp.Header)
	}
}

// A worker that dies mid-response: the client must see a broken response,
// not a complete one and not a hang.
func TestFastWorkerDiesMidResponse(t *testing.T) {
	for _, tc := range []struct{ name, head string }{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := readRawRequest(br); err != nil {
					return
				}
				io.WriteString(c, tc.head+strings.Repeat("y", 100))
			})
			b, url := fastProxy(t, addr, Options{})
			resp, err := newClient(t).Get(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("truncated response read without error")
			}
			waitFor(t, "in-flight count to return to 0", func() bool { return b.Inflight() == 0 })
		})
	}
}

func TestFastMalformedResponseIs502(t *testing.T) {
	for _, answer := range []string{
		"garbage\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"",
	} {
		addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := readRawRequest(br); err != nil {
				return
			}
			io.WriteString(c, answer)
		})
		_, url := fastProxy(t, addr, Options{})
		resp, body := get(t, newClient(t), url+"/")
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("worker answering %q: %d %q", answer, resp.StatusCode, body)
		}
	}
}

// Early hints pass through before the final answer.
func TestFastInformationalResponse(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	_, url := fastProxy(t, addr, Options{})
	var hints []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		if h.Get("Link") != "" {
			hints = append(hints, code)
		}
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url+"/", nil)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if body := string(b); resp.StatusCode != 200 || body != "final" || resp.Header.Get("Link") != "" || len(hints) != 1 || hints[0] != 103 {
		t.Errorf("got %d %q %v, hints %v", resp.StatusCode, body, resp.Header, hints)
	}
}

// The response-header timeout starts once the request is sent in full: a
// slow upload is not a slow worker.
// bodyLength answers with the length of the request body it read, except
// on /hang, which never answers.
func bodyLength(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/hang" {
		<-r.Context().Done()
		return
	}
	fmt.Fprint(w, n)
}

// slowBody is a request body of 60 bytes sent over 300 ms, as a slow
// client would (the sleeps pace the client; they synchronise nothing).
func slowBody() io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for range 6 {
			time.Sleep(50 * time.Millisecond)
			pw.Write([]byte("0123456789"))
		}
		pw.Close()
	}()
	return pr
}

func TestFastHeaderTimeoutAfterBody(t *testing.T) {
	_, addr := startBackend(t, bodyLength)
	_, url := fastProxy(t, addr, Options{WorkerTimeout: 100 * time.Millisecond})
	c := newClient(t)
	resp, err := c.Post(url+"/slow", "text/plain", slowBody())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "60" {
		t.Errorf("slow upload: %d %q", resp.StatusCode, body)
	}
	resp, err = c.Post(url+"/hang", "text/plain", slowBody())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("worker that never answers after the body: %d", resp.StatusCode)
	}
}

// The header deadline a small answer leaves on a pooled worker connection
// (headerDeadline) neither cuts a later slow upload short nor fires early
// or never for a later request the worker does not answer.
func TestFastHeaderDeadlineCarriesOver(t *testing.T) {
	addr, conns := countingBackend(t, bodyLength)
	const timeout = 150 * time.Millisecond
	_, url := fastProxy(t, addr, Options{WorkerTimeout: timeout})
	c := newClient(t)
	get := func(path string) (int, string, time.Duration) {
		t0 := time.Now()
		resp, err := c.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body), time.Since(t0)
	}
	for range 20 {
		if code, body, _ := get("/fast"); code != 200 || body != "0" {
			t.Fatalf("fast: %d %q", code, body)
		}
	}
	// An upload slower than the header timeout, on the same worker
	// connection: the timeout starts only when the body is sent.
	resp, err := c.Post(url+"/slow", "text/plain", slowBody())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "60" {
		t.Fatalf("slow upload after fast requests: %d %q", resp.StatusCode, body)
	}
	for range 20 {
		get("/fast")
	}
	code, _, took := get("/hang")
	if code != http.StatusGatewayTimeout {
		t.Fatalf("worker that never answers, after fast requests: %d", code)
	}
	if took < timeout || took > timeout*17/16+2*time.Second {
		t.Fatalf("header timeout %v fired after %v", timeout, took)
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("%d worker connections for sequential requests; the test wants one reused", n)
	}
}

func TestLaterBy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		set   time.Time
		slack time.Duration
		want  bool
	}{
		{time.Time{}, time.Second, false},               // no deadline
		{t0.Add(-time.Millisecond), time.Second, false}, // earlier: would fire early
		{t0, time.Second, true},                         // exactly
		{t0.Add(time.Second), time.Second, true},        // late by the slack
		{t0.Add(time.Second + 1), time.Second, false},   // later than the slack
		{aLongTimeAgo, time.Second, false},              // not known
	} {
		if got := laterBy(c.set, t0, c.slack); got != c.want {
			t.Errorf("laterBy(%v, %v, %v) = %v", c.set, t0, c.slack, got)
		}
	}
}

// A client that goes away mid-response closes the worker connection, so
// the worker sees its request end.
func TestFastClientCancelMidBody(t *testing.T) {
	ended := make(chan struct{})
	addr, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "ok")
			return
		}
		defer close(ended)
		rc := http.NewResponseController(w)
		for {
			if _, err := io.WriteString(w, strings.Repeat("z", 1024)); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	b, url := fastProxy(t, addr, Options{})
	resp, err := newClient(t).Get(url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	recv(t, "worker to see the client go", ended)
	waitFor(t, "in-flight count to return to 0", func() bool { return b.Inflight() == 0 })
	if n := idleConns(b); n != 0 {
		t.Errorf("an abandoned connection was pooled")
	}
	if resp, body := get(t, newClient(t), url+"/after"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("after a cancel: %d %q", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("worker saw %d connections, want 2", n)
	}
}

// Requests the fast path leaves to ReverseProxy still work next to it.
func TestWarmFillsThePool(t *testing.T) {
	var conns, health, other atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && r.Method == http.MethodGet {
			health.Add(1)
		} else {
			other.Add(1)
		}
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	b := NewBackend("w", "w-1", srv.Listener.Addr().String(), 0)
	if got, err := b.Warm(8, "/health", time.Second); got != 8 || err != nil {
		t.Fatalf("warmed %d: %v", got, err)
	}
	for i := 0; i < 8; i++ {
		if New(Options{}).getConn(b) == nil {
			t.Fatalf("pool has only %d warm connections", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for conns.Load() != 8 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if conns.Load() != 8 {
		t.Fatalf("server saw %d connections", conns.Load())
	}
	if health.Load() != 8 || other.Load() != 0 {
		t.Fatalf("worker served %d GET /health and %d other requests, want 8 and 0", health.Load(), other.Load())
	}
	b.Close()
	// A worker that closes the connection after answering gets nothing parked.
	closing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
	}))
	defer closing.Close()
	cb := NewBackend("w", "w-3", closing.Listener.Addr().String(), 0)
	if got, err := cb.Warm(4, "/health", time.Second); got != 0 || cb.IdleConns() != 0 || err != nil {
		t.Fatalf("parked %d (%d idle) connections the worker closes after answering (error %v)", got, cb.IdleConns(), err)
	}
	// A worker that answers slower than the warm-up waits is not an error;
	// one that drops connections unanswered is.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer slow.Close()
	defer close(release)
	sb := NewBackend("w", "w-4", slow.Listener.Addr().String(), 0)
	if got, err := sb.Warm(2, "/health", 50*time.Millisecond); got != 0 || err != nil {
		t.Fatalf("slow worker: parked %d, error %v; want 0 and none", got, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	db := NewBackend("w", "w-5", ln.Addr().String(), 0)
	if got, err := db.Warm(2, "/health", time.Second); got != 0 || err == nil {
		t.Fatalf("worker dropping connections: parked %d, error %v; want 0 and an error", got, err)
	}
	dead := NewBackend("w", "w-2", "127.0.0.1:1", 0)
	if got, err := dead.Warm(4, "/health", 200*time.Millisecond); got != 0 || err == nil {
		t.Fatalf("warmed %d connections to a closed port (error %v)", got, err)
	}
}
