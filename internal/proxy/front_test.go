package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// frontSetup runs a backend with h and a proxy to it in the current mode,
// the server configured by configure; it returns the proxy's address.
func frontSetup(t *testing.T, h http.HandlerFunc, configure func(*ServerOptions)) (*proxyServer, *Backend) {
	t.Helper()
	_, addr := startBackend(t, h)
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	b := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	return startProxyWith(t, p, configure), b
}

func dialProxy(t *testing.T, srv *proxyServer) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// waitClosed reads c until the server closes it and returns how long that
// took; anything but EOF or a reset fails the test.
func waitClosed(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("server did not close the connection")
		}
		return time.Since(start)
	}
}

func TestFrontPipelined(t *testing.T) {
	srv, b := frontSetup(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.Path, body)
	}, nil)
	c, br := dialProxy(t, srv)
	// Three requests in one write: answered in order.
	io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"HEAD /four HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{`GET /one ""`, `POST /two "hello"`, `POST /three "abc"`} {
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
		}
	}
	if resp, body := readResp(t, br, "HEAD"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	waitFor(t, "counters", func() bool { return b.Inflight() == 0 && b.Served() == 4 })
}

// Plain requests and then an upgrade on the same connection: the engine
// serves them in turn, the upgrade becoming a tunnel.
func TestFrontUpgradeMidConnection(t *testing.T) {
	srv, b := frontSetup(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			io.WriteString(w, "plain "+r.URL.Path)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw.Reader)
	}, nil)
	c, br := dialProxy(t, srv)
	for i := range 3 {
		io.WriteString(c, fmt.Sprintf("GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != fmt.Sprintf("plain /p%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()
	waitFor(t, "in-flight to return to 0", func() bool { return b.Inflight() == 0 })
}

// A client that sends its head a byte at a time is cut off after
// ReadHeaderTimeout, also when its head is too big for the front and
// goes to net/http half-way.
func TestFrontSlowloris(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv, _ := frontSetup(t, func(w http.ResponseWriter, r *http.Request) {}, func(s *ServerOptions) {
		s.HeaderTimeout = timeout
		s.MaxHeaderBytes = 1 << 20
	})
	for _, prefix := range []string{"", "X-Big: " + strings.Repeat("b", 10<<10) + "\r\n"} {
		c, _ := dialProxy(t, srv)
		start := time.Now()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"+prefix)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
					return
				}
			}
		}()
		waitClosed(t, c)
		close(stop)
		if d := time.Since(start); d < timeout || d > timeout+2*time.Second {
			t.Errorf("head of %d bytes: closed after %v, want about %v", len(prefix), d, timeout)
		}
	}
}

func TestFrontHeaderTooLarge(t *testing.T) {
	srv, _ := frontSetup(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		func(s *ServerOptions) { s.MaxHeaderBytes = 1 << 20 })
	c, br := dialProxy(t, srv)
	// A few front requests first, then one the front must give up.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	go io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: "+strings.Repeat("h", 1<<20+8192)+"\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

// Malformed requests get net/http's own answers.
func TestFrontBadRequests(t *testing.T) {
	srv, b := frontSetup(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, nil)
	for _, tc := range []struct {
		head string
		code int
	}{
		{"GET / HTTP/1.1\r\n\r\n", 400}, // no Host
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
	} {
		c, br := dialProxy(t, srv)
		io.WriteString(c, tc.head)
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != tc.code {
			t.Errorf("%q: status %d, want %d", tc.head, resp.StatusCode, tc.code)
		}
	}
	if n := b.Served(); n != 0 {
		t.Errorf("%d malformed requests reached the worker", n)
	}
}

func TestFrontIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	srv, _ := frontSetup(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		func(s *ServerOptions) { s.IdleTimeout = idle; s.ReadTimeout = 10 * time.Second })
	c, br := dialProxy(t, srv)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if d := waitClosed(t, c); d < idle-50*time.Millisecond || d > idle+2*time.Second {
		t.Errorf("idle connection closed after %v, want about %v", d, idle)
	}
}

// Shutdown closes idle connections, refuses new ones, and waits for the
// request in flight, which completes.
func TestFrontGracefulShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	srv, b := frontSetup(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}, nil)
	idle, idleBR := dialProxy(t, srv)
	io.WriteString(idle, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := readResp(t, idleBR, "GET"); body != "done /quick" {
		t.Fatalf("quick: %q", body)
	}
	busy, busyBR := dialProxy(t, srv)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, "the slow request to reach the worker", started)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	waitClosed(t, idle)
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	resp, body := readResp(t, busyBR, "GET")
	if resp.StatusCode != 200 || body != "done /slow" {
		t.Fatalf("in-flight request: %d %q", resp.StatusCode, body)
	}
	if err := recv(t, "Shutdown to return", shut); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitFor(t, "counters", func() bool { return b.Inflight() == 0 })
}

// A worker answer delimited by closing the connection reaches the client
// complete (the front re-frames it as chunked).
func TestFrontCloseDelimitedResponse(t *testing.T) {
	want := strings.Repeat("0123456789", 5000)
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := readRawRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"+want)
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	srv := startProxy(t, p)
	c, br := dialProxy(t, srv)
	for range 2 { // the client connection survives
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("%d, %d bytes", resp.StatusCode, len(body))
		}
		if resp.Header.Get("Date") == "" {
			t.Errorf("no Date header added")
		}
	}
}
