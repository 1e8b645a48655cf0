package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Held requests (hold.go) against real loopback sockets: the engine, real
// backends, tables swapped as the supervisor swaps them.

// held is how many requests wait for an instance of worker now, and how
// many ever did.
func held(p *Proxy, worker string) (now, total int64) {
	for _, ws := range p.Stats() {
		if ws.Worker == worker {
			return ws.Held, ws.HeldTotal
		}
	}
	return 0, 0
}

type answer struct {
	code       int
	body       string
	retryAfter string
	took       time.Duration
	err        error
}

// goGet sends GET url on its own connection and delivers the answer.
func goGet(url string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		t0 := time.Now()
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			ch <- answer{err: err, took: time.Since(t0)}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- answer{code: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After"), took: time.Since(t0), err: err}
	}()
	return ch
}

func TestHeldRequestProceedsOnSwap(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") })
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second})
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))

	var answers []<-chan answer
	for range 5 {
		answers = append(answers, goGet(srv.URL+"/x"))
	}
	waitFor(t, "5 requests held", func() bool { n, _ := held(p, "index"); return n == 5 })
	// A swap that gives the route nothing keeps them waiting.
	p.Swap(table(Route{Prefix: "/", Worker: "index"}, Route{Prefix: "/other", Worker: "other"}))
	p.Swap(table(Route{Prefix: "/", Worker: "index"}, Route{Prefix: "/other", Worker: "other"}))
	if n, _ := held(p, "index"); n != 5 {
		t.Fatalf("after swaps without an instance: %d held, want 5", n)
	}
	t0 := time.Now()
	b := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	for i, ch := range answers {
		a := recv(t, "held answer", ch)
		if a.err != nil || a.code != http.StatusOK || a.body != "up" {
			t.Errorf("request %d: %d %q %v", i, a.code, a.body, a.err)
		}
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("held requests took %v after the swap: woken late", d)
	}
	if n, total := held(p, "index"); n != 0 || total != 5 {
		t.Errorf("held now %d (want 0), in total %d (want 5)", n, total)
	}
	waitFor(t, "served 5", func() bool { return b.Served() == 5 && b.Inflight() == 0 })
}

func TestHoldTimesOutWith503(t *testing.T) {
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 300 * time.Millisecond})
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	a := recv(t, "answer", goGet(srv.URL+"/"))
	if a.err != nil || a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || !strings.Contains(a.body, "no serving instance") {
		t.Fatalf("got %d %q Retry-After %q %v", a.code, a.body, a.retryAfter, a.err)
	}
	if a.took < 300*time.Millisecond || a.took > 3*time.Second {
		t.Errorf("answered after %v, want about 300ms", a.took)
	}
	if n, _ := held(p, "index"); n != 0 {
		t.Errorf("%d still held", n)
	}
}

func TestHoldOffAnswers503AtOnce(t *testing.T) {
	log, _ := testLogger(t)
	p := New(Options{Logger: log}) // Hold 0
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	a := recv(t, "answer", goGet(srv.URL+"/"))
	if a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || a.took > time.Second {
		t.Fatalf("got %d Retry-After %q after %v", a.code, a.retryAfter, a.took)
	}
	if _, total := held(p, "index"); total != 0 {
		t.Errorf("%d held with holding off", total)
	}
}

func TestHoldQueueBound(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") })
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second, HoldQueue: 2})
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}, Route{Prefix: "/api", Worker: "api"}))
	first, second := goGet(srv.URL+"/"), goGet(srv.URL+"/")
	waitFor(t, "2 requests held", func() bool { n, _ := held(p, "index"); return n == 2 })
	a := recv(t, "third answer", goGet(srv.URL+"/"))
	if a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || a.took > time.Second {
		t.Fatalf("beyond the queue: %d Retry-After %q after %v, want 503 at once", a.code, a.retryAfter, a.took)
	}
	// The bound is per route: another route still holds.
	api := goGet(srv.URL + "/api")
	waitFor(t, "api request held", func() bool { n, _ := held(p, "api"); return n == 1 })
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)},
		Route{Prefix: "/api", Worker: "api", Backend: NewBackend("api", "api-1", addr, 0)}))
	for _, ch := range []<-chan answer{first, second, api} {
		if a := recv(t, "held answer", ch); a.code != http.StatusOK {
			t.Errorf("held request: %d %q %v", a.code, a.body, a.err)
		}
	}
}

// A client that hangs up while held frees its place in the queue at once.
func TestHeldClientLeavingFreesItsPlace(t *testing.T) {
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 30 * time.Second, HoldQueue: 1})
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "request held", func() bool { n, _ := held(p, "index"); return n == 1 })
	nc.Close()
	waitFor(t, "place freed", func() bool { n, _ := held(p, "index"); return n == 0 })
	// The place is free: the next request is held again, not refused.
	ch := goGet(srv.URL + "/")
	waitFor(t, "next request held", func() bool { n, _ := held(p, "index"); return n == 1 })
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", deadAddr(t), 0)}))
	p.Swap(table())
	if a := recv(t, "answer", ch); a.code != http.StatusNotFound {
		t.Errorf("route removed while held: %d, want 404", a.code)
	}
	s := p.Stats()
	var c499 int64
	for _, ws := range s {
		if ws.Worker == "index" {
			c499 = int64(ws.Requests.ByClass[3]) // 4xx: the 499 of the client that left
		}
	}
	if c499 != 1 {
		t.Errorf("4xx counted under index: %d, want 1 (the 499)", c499)
	}
}

// A held request's body is not read, and no 100 Continue goes out, until an
// instance takes it; then the whole body reaches the worker.
func TestHeldRequestBodyIsNotRead(t *testing.T) {
	got := make(chan string, 1)
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
		io.WriteString(w, "stored")
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second})
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	waitFor(t, "request held", func() bool { n, _ := held(p, "index"); return n == 1 })
	nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var one [1]byte
	if n, err := nc.Read(one[:]); n != 0 || !isTimeout(err) {
		t.Fatalf("held request answered %q %v before an instance took it", one[:n], err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	br := bufio.NewReader(nc)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("after the swap: %q %v, want 100 Continue", line, err)
	}
	br.ReadString('\n')
	io.WriteString(nc, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "stored" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if body := recv(t, "body at the worker", got); body != "hello" {
		t.Errorf("worker got %q", body)
	}
}

// dyingWorker accepts connections, reads a request head, writes partial
// (maybe nothing) and closes the connection. With die set it closes its
// listener first, as the kernel does for a process killed mid-request;
// without, it is a worker that drops one request and lives on (a Go
// handler that panicked). It counts the requests it received.
func dyingWorker(t *testing.T, partial string, die bool) (addr string, hits *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			head := false
			for !head {
				l, err := br.ReadString('\n')
				if err != nil {
					break
				}
				head = l == "\r\n"
			}
			if !head { // a connection that sent nothing: not a request
				c.Close()
				continue
			}
			hits.Add(1)
			io.WriteString(c, partial)
			if die {
				ln.Close()
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), hits
}

// The worker connection dies before any response byte: an idempotent
// request without a body waits for the next instance and gets its answer;
// a POST, or a request that already saw a response byte, gets 502.
func TestRequestRetriedAfterWorkerDied(t *testing.T) {
	_, liveAddr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "live "+r.Method) })
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second})
	srv := startProxy(t, p)
	c := newClient(t)

	for _, method := range []string{"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			dying, hits := dyingWorker(t, "", true)
			dead := NewBackend("index", "index-1", dying, 0)
			p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: dead}))
			ch := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequest(method, srv.URL+"/", nil)
				resp, err := c.Do(req)
				if err != nil {
					ch <- answer{err: err}
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				ch <- answer{code: resp.StatusCode, body: string(b)}
			}()
			waitFor(t, "request held after the worker died", func() bool { n, _ := held(p, "index"); return n == 1 })
			p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-2", liveAddr, 0)}))
			a := recv(t, "answer", ch)
			want := "live " + method
			if method == "HEAD" {
				want = ""
			}
			if a.err != nil || a.code != http.StatusOK || a.body != want {
				t.Errorf("got %d %q %v", a.code, a.body, a.err)
			}
			if hits.Load() != 1 {
				t.Errorf("the dying worker got %d requests, want 1", hits.Load())
			}
		})
	}
	for _, tc := range []struct{ name, method, body, partial string }{
		{"POST", "POST", "", ""},
		{"PATCH", "PATCH", "", ""},
		{"PUT with a body", "PUT", "data", ""},
		{"GET after a response byte", "GET", "", "H"},
		{"GET after a 103", "GET", "", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dying, hits := dyingWorker(t, tc.partial, true)
			p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", dying, 0)}))
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, srv.URL+"/", body)
			cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
			if _, total := held(p, "index"); hits.Load() != 1 {
				t.Errorf("the worker got %d requests (held in total %d), want 1", hits.Load(), total)
			}
		})
	}
}

// A refused connection (the instance's process is gone, the supervisor has
// not seen it yet) holds the request until the restarted instance is in
// the table.
func TestRefusedRequestHeldForTheNextInstance(t *testing.T) {
	_, liveAddr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "live") })
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second})
	srv := startProxy(t, p)
	dead := NewBackend("index", "index-1", deadAddr(t), 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: dead}))
	ch := goGet(srv.URL + "/")
	waitFor(t, "request held", func() bool { n, _ := held(p, "index"); return n == 1 })
	p.Swap(table(Route{Prefix: "/", Worker: "index"})) // the exit seen: no instance
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-2", liveAddr, 0)}))
	if a := recv(t, "answer", ch); a.code != http.StatusOK || a.body != "live" {
		t.Errorf("got %d %q %v", a.code, a.body, a.err)
	}
	if dead.Served() != 0 || dead.Inflight() != 0 {
		t.Errorf("dead backend: served %d inflight %d", dead.Served(), dead.Inflight())
	}
}

// A worker that drops a request's connection but still accepts others
// (a handler that panicked) is not waited for: 502 at once with one
// instance, the other instance's answer with two.
func TestDroppedRequestOfALiveWorker(t *testing.T) {
	_, liveAddr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "live") })
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second})
	srv := startProxy(t, p)

	dropping, hits := dyingWorker(t, "", false)
	dropper := NewBackend("index", "index-1", dropping, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: dropper}))
	a := recv(t, "answer", goGet(srv.URL+"/"))
	if a.code != http.StatusBadGateway || a.took > 2*time.Second {
		t.Fatalf("one instance that dropped the request: %d after %v, want 502 at once", a.code, a.took)
	}
	if _, total := held(p, "index"); total != 0 || hits.Load() != 1 {
		t.Errorf("held %d, worker hit %d times; want 0 and 1", total, hits.Load())
	}

	other := NewBackend("index", "index-2", liveAddr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backends: []*Backend{dropper, other}}))
	// Fewest in flight, ties round-robin: until the dropper has had one.
	for hits.Load() < 2 {
		if a := recv(t, "answer", goGet(srv.URL+"/")); a.code != http.StatusOK || a.body != "live" {
			t.Fatalf("two instances, one dropping: %d %q %v", a.code, a.body, a.err)
		}
	}
}

// A server that shuts down answers its held requests 503 at once rather
// than keep its shutdown waiting for an instance that is not coming.
func TestShutdownEndsHolds(t *testing.T) {
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 30 * time.Second})
	srv := startProxy(t, p)
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	ch := goGet(srv.URL + "/")
	waitFor(t, "request held", func() bool { n, _ := held(p, "index"); return n == 1 })
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v after %v", err, time.Since(t0))
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("shutdown took %v with a request held", d)
	}
	if a := recv(t, "answer", ch); a.code != http.StatusServiceUnavailable || a.retryAfter != "1" {
		t.Errorf("held request at shutdown: %d Retry-After %q %v", a.code, a.retryAfter, a.err)
	}
}

// The client's timeouts are those of any request: a hold longer than the
// header and read timeouts does not trip them (the head was read before
// the hold; the body is read when forwarded), and a body that stalls after
// the hold still gets 408 after read_timeout.
func TestHeldRequestKeepsClientTimeouts(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		io.WriteString(w, r.Method+" "+string(b))
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log, Hold: 10 * time.Second})
	srv := startProxyWith(t, p, func(o *ServerOptions) {
		o.HeaderTimeout = 100 * time.Millisecond
		o.ReadTimeout = 100 * time.Millisecond
	})
	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	dial := func() net.Conn {
		nc, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		return nc
	}
	get, post, stalled := dial(), dial(), dial()
	io.WriteString(get, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.WriteString(post, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	io.WriteString(stalled, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
	waitFor(t, "3 requests held", func() bool { n, _ := held(p, "index"); return n == 3 })
	held0 := time.Now()
	// Held for longer than both timeouts, measured by the clock.
	waitFor(t, "the hold to outlast the timeouts", func() bool { return time.Since(held0) > 400*time.Millisecond })
	if n, _ := held(p, "index"); n != 3 {
		t.Fatalf("%d held after 400ms, want 3: a client timeout ended a hold", n)
	}
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	for _, tc := range []struct {
		nc   net.Conn
		code int
		body string
	}{{get, 200, "GET "}, {post, 200, "POST hello"}, {stalled, 408, ""}} {
		resp, err := http.ReadResponse(bufio.NewReader(tc.nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || tc.body != "" && string(b) != tc.body {
			t.Errorf("got %d %q, want %d %q", resp.StatusCode, b, tc.code, tc.body)
		}
	}
}
