package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
)

func TestForwarding(t *testing.T) {
	type seen struct {
		Worker, Method, Host, URI, XFF, XFH, XFP, Forwarded string
	}
	echo := func(worker string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(seen{
				Worker: worker, Method: r.Method, Host: r.Host, URI: r.RequestURI,
				XFF: r.Header.Get("X-Forwarded-For"), XFH: r.Header.Get("X-Forwarded-Host"),
				XFP: r.Header.Get("X-Forwarded-Proto"), Forwarded: r.Header.Get("Forwarded"),
			})
		}
	}
	_, indexAddr := startBackend(t, echo("index"))
	_, usersAddr := startBackend(t, echo("api_users"))
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	p.Swap(table(
		Route{Prefix: layout.Route("index"), Worker: "index", Backend: NewBackend("index", "index-1", indexAddr, 0)},
		Route{Prefix: layout.Route("api_users"), Worker: "api_users", Backend: NewBackend("api_users", "api_users-2", usersAddr, 0)},
	))
	srv := startProxy(t, p)
	c := newClient(t)

	cases := []struct{ target, worker string }{
		{"/", "index"},
		{"/api/users", "api_users"},
		{"/api/users?x=1&y=%20z", "api_users"},
		{"/api/users/7/posts?sort=desc#frag", "api_users"},
		{"/api/users/a%2Fb%20c?q=%2F", "api_users"},
		{"/api/usersx", "index"},
		{"/api", "index"},
	}
	for _, tc := range cases {
		req, err := http.NewRequest(http.MethodPut, srv.URL+tc.target, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "public.example:8443"
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Host", "spoofed")
		req.Header.Set("Forwarded", "for=6.6.6.6")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got seen
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, decode error %v", tc.target, resp.StatusCode, err)
		}
		wantURI, _, _ := strings.Cut(tc.target, "#")
		want := seen{
			Worker: tc.worker, Method: http.MethodPut, Host: "public.example:8443", URI: wantURI,
			XFF: "127.0.0.1", XFH: "public.example:8443", XFP: "http",
		}
		if got != want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.target, got, want)
		}
	}
}

func TestNoRouteIs404(t *testing.T) {
	var hits atomic.Int64
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	srv := startProxy(t, p)
	c := newClient(t)
	if resp, _ := get(t, c, srv.URL+"/api"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("empty table: status %d, want 404", resp.StatusCode)
	}
	p.Swap(table(Route{Prefix: "/api", Worker: "api", Backend: NewBackend("api", "api-1", addr, 0)}))
	for _, target := range []string{"/", "/apix", "/other/api"} {
		if resp, _ := get(t, c, srv.URL+target); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", target, resp.StatusCode)
		}
	}
	if resp, _ := get(t, c, srv.URL+"/api/x"); resp.StatusCode != http.StatusOK {
		t.Errorf("/api/x: status %d, want 200", resp.StatusCode)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1", n)
	}
}

func TestUnreachableWorkerIs502(t *testing.T) {
	log, logs := testLogger(t)
	p := New(Options{Logger: log})
	b := NewBackend("index", "index-1", deadAddr(t), 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	srv := startProxy(t, p)

	resp, body := get(t, newClient(t), srv.URL+"/x")
	if resp.StatusCode != http.StatusBadGateway || body != "502 bad gateway: worker index unavailable\n" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	waitFor(t, "in-flight count to return to 0", func() bool { return b.Inflight() == 0 })
	if b.Served() != 0 {
		t.Errorf("a request that never reached the worker counted as served")
	}
	out := logs.String()
	if !strings.Contains(out, `"level":"warn"`) || !strings.Contains(out, `"instance":"index-1"`) ||
		!strings.Contains(out, "connection refused") {
		t.Errorf("missing warn log with instance and cause:\n%s", out)
	}
	if strings.Contains(out, "stack") || strings.Contains(out, `"level":"error"`) {
		t.Errorf("502 logged with a stack or at error level:\n%s", out)
	}
}

func TestNoBackendIs503(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	srv := startProxy(t, p)
	c := newClient(t)

	p.Swap(table(Route{Prefix: "/", Worker: "index"}))
	resp, body := get(t, c, srv.URL+"/")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "worker index") || len(body) > 100 {
		t.Errorf("no backend: got %d %q", resp.StatusCode, body)
	}

	// A closed backend still in the table (the supervisor forgot to swap)
	// must not receive traffic: bounded re-routing ends in 503.
	b := NewBackend("index", "index-1", addr, 0)
	b.Close()
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	if resp, _ := get(t, c, srv.URL+"/"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("closed backend: status %d, want 503", resp.StatusCode)
	}
	if b.Inflight() != 0 || b.Served() != 0 {
		t.Errorf("closed backend: inflight %d served %d, want 0 0", b.Inflight(), b.Served())
	}
}

func TestServerSentEventsAreNotBuffered(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Error(err)
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	srv := startProxy(t, p)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	// The worker is blocked until we read this, so it can only arrive if the
	// proxy forwards it as written.
	if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	releaseOnce.Do(func() { close(release) })
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: two\n\n" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
}

func TestWebSocketUpgradePassesThrough(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") ||
			!strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		if err := brw.Flush(); err != nil {
			return
		}
		io.Copy(conn, brw.Reader) // echo until the client hangs up
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	b := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	srv := startProxy(t, p)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("upgrade answered %d %v", resp.StatusCode, resp.Header)
	}
	for i := range 5 {
		msg := fmt.Sprintf("frame %d: %s", i, strings.Repeat("x", i*1000))
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatal(err)
		}
		if string(buf) != msg {
			t.Fatalf("echo %d: got %q", i, buf)
		}
	}
	if n := b.Inflight(); n != 1 {
		t.Errorf("open WebSocket: inflight %d, want 1", n)
	}
	conn.Close()
	waitFor(t, "WebSocket to stop counting as in flight", func() bool { return b.Inflight() == 0 })
}

// pattern is deterministic test data: byte i of a stream.
func pattern(off int64, buf []byte) {
	for i := range buf {
		n := off + int64(i)
		buf[i] = byte(n*31 + n>>11)
	}
}

func TestRequestBodyStreams(t *testing.T) {
	const total = 10 << 20
	const head = 256 << 10 // sent before the client waits for the response
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Error(err)
		}
		h := sha256.New()
		first := make([]byte, 64<<10)
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.Write(first)
		io.WriteString(w, "started\n")
		http.NewResponseController(w).Flush()
		n, err := io.CopyBuffer(h, r.Body, make([]byte, 8<<10))
		if err != nil {
			fmt.Fprintf(w, "error %v\n", err)
			return
		}
		fmt.Fprintf(w, "%d %x\n", n+int64(len(first)), h.Sum(nil))
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	srv := startProxy(t, p)
	c := newClient(t)

	for _, withLength := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length=%v", withLength), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/upload", pr)
			if withLength {
				req.ContentLength = total
			}
			type result struct {
				resp *http.Response
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := c.Do(req)
				done <- result{resp, err}
			}()
			h := sha256.New()
			buf := make([]byte, 32<<10)
			var off int64
			send := func(upto int64) {
				for off < upto {
					chunk := buf[:min(int64(len(buf)), upto-off)]
					pattern(off, chunk)
					h.Write(chunk)
					if _, err := pw.Write(chunk); err != nil {
						t.Fatalf("writing body at %d: %v", off, err)
					}
					off += int64(len(chunk))
				}
			}
			send(head)
			// The rest of the body is held back until the worker has
			// answered, which it can only do if the proxy streams.
			res := recv(t, "response headers before the body is complete", done)
			if res.err != nil {
				t.Fatal(res.err)
			}
			defer res.resp.Body.Close()
			br := bufio.NewReader(res.resp.Body)
			if line, err := br.ReadString('\n'); err != nil || line != "started\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			send(total)
			pw.Close()
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%d %x\n", total, h.Sum(nil)); line != want {
				t.Fatalf("worker received %q, want %q", line, want)
			}
		})
	}
}

func TestLargeResponseStreams(t *testing.T) {
	const total = 10 << 20
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(total))
		buf := make([]byte, 32<<10)
		for off := int64(0); off < total; off += int64(len(buf)) {
			pattern(off, buf)
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	srv := startProxy(t, p)

	resp, err := newClient(t).Get(srv.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != total {
		t.Errorf("Content-Length %d, want %d", resp.ContentLength, total)
	}
	want := make([]byte, 64<<10)
	got := make([]byte, len(want))
	var off int64
	for off < total {
		n := min(int64(len(got)), total-off)
		if _, err := io.ReadFull(resp.Body, got[:n]); err != nil {
			t.Fatalf("at %d: %v", off, err)
		}
		pattern(off, want[:n])
		if !bytes.Equal(got[:n], want[:n]) {
			t.Fatalf("content differs in block at %d", off)
		}
		off += n
	}
	if n, _ := io.Copy(io.Discard, resp.Body); n != 0 {
		t.Errorf("%d extra bytes", n)
	}
}

func TestClientCancelReachesWorker(t *testing.T) {
	started := make(chan struct{})
	canceled := make(chan struct{})
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(15 * time.Second):
		}
	})
	log, logs := testLogger(t)
	p := New(Options{Logger: log})
	b := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	srv := startProxy(t, p)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := newClient(t).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	recv(t, "worker to receive the request", started)
	cancel()
	recv(t, "worker to see its request context cancelled", canceled)
	if err := recv(t, "client to return", errc); !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v, want context.Canceled", err)
	}
	waitFor(t, "in-flight count to return to 0", func() bool { return b.Inflight() == 0 })
	if out := logs.String(); strings.Contains(out, `"level":"warn"`) || strings.Contains(out, `"level":"error"`) {
		t.Errorf("a client going away was logged as a problem:\n%s", out)
	}
}

// TestDrainProtocol hammers the proxy while a supervisor-like loop replaces
// the backend generation after generation, and checks that no request ever
// reaches a backend once the loop has seen it closed with nothing in flight.
func TestDrainProtocol(t *testing.T) {
	const (
		generations  = 40
		clients      = 8
		perGenMin    = 10     // requests each generation serves before it is replaced
		maxPerClient = 200000 // bound on client loops
	)
	type gen struct {
		b       *Backend
		drained atomic.Bool
		hits    atomic.Int64
		final   int64 // b.Served() when drained
	}
	var violations atomic.Int64
	newGen := func(i int) *gen {
		g := &gen{}
		_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
			g.hits.Add(1)
			if g.drained.Load() {
				violations.Add(1)
			}
			io.WriteString(w, "ok")
		})
		g.b = NewBackend("index", fmt.Sprintf("index-%d", i), addr, 0)
		return g
	}
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	cur := newGen(0)
	gens := []*gen{cur}
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: cur.b}))
	srv := startProxy(t, p)
	c := newClient(t)

	var stop atomic.Bool
	var ok, bad atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := 0; i < maxPerClient && !stop.Load(); i++ {
				resp, err := c.Get(srv.URL + "/")
				if err != nil {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, resp.Status)
					continue
				}
				ok.Add(1)
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()

	for i := 1; i <= generations; i++ {
		waitFor(t, "traffic on the current generation", func() bool { return cur.b.Served() >= perGenMin })
		next := newGen(i)
		gens = append(gens, next)
		p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: next.b}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cur.b.Drain(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		cur.drained.Store(true)
		cur.final = cur.b.Served()
		cur = next
	}
	waitFor(t, "traffic on the last generation", func() bool { return cur.b.Served() >= perGenMin })
	stop.Store(true)
	wg.Wait()
	// Served counts after the response is sent; let the last one settle.
	if err := cur.b.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}

	if n := violations.Load(); n != 0 {
		t.Errorf("%d requests reached a backend after it was drained", n)
	}
	if n := bad.Load(); n != 0 {
		t.Errorf("%d failed requests, first: %v", n, firstBad.Load())
	}
	var hits int64
	for i, g := range gens {
		h := g.hits.Load()
		hits += h
		if s := g.b.Served(); s != h {
			t.Errorf("generation %d: served %d, backend saw %d", i, s, h)
		}
		if g.drained.Load() && g.b.Served() != g.final {
			t.Errorf("generation %d: served grew from %d to %d after drain", i, g.final, g.b.Served())
		}
	}
	if hits != ok.Load() {
		t.Errorf("backends saw %d requests, clients got %d OK", hits, ok.Load())
	}
	t.Logf("%d requests over %d generations", ok.Load(), len(gens))
}

func TestMaxRequestsCallbackFiresOnce(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var mu sync.Mutex
	calls := map[string]int{}
	count := func(inst string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[inst]
	}
	log, _ := testLogger(t)
	p := New(Options{Logger: log, OnMaxRequests: func(inst string) {
		mu.Lock()
		calls[inst]++
		mu.Unlock()
	}})
	srv := startProxy(t, p)
	c := newClient(t)

	t.Run("sequential", func(t *testing.T) {
		b := NewBackend("index", "index-1", addr, 5)
		p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
		for range 4 {
			get(t, c, srv.URL+"/")
		}
		waitFor(t, "4 served", func() bool { return b.Served() == 4 })
		if n := count("index-1"); n != 0 {
			t.Fatalf("callback fired %d times after 4 of 5 requests", n)
		}
		get(t, c, srv.URL+"/")
		waitFor(t, "callback at the 5th request", func() bool { return count("index-1") == 1 })
		for range 7 {
			get(t, c, srv.URL+"/")
		}
		waitFor(t, "12 served", func() bool { return b.Served() == 12 })
		if n := count("index-1"); n != 1 {
			t.Fatalf("callback fired %d times, want 1", n)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		b := NewBackend("index", "index-2", addr, 10)
		p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 5 {
					resp, err := c.Get(srv.URL + "/")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		waitFor(t, "40 served", func() bool { return b.Served() == 40 })
		if n := count("index-2"); n != 1 {
			t.Fatalf("callback fired %d times, want 1", n)
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		b := NewBackend("index", "index-3", addr, 0)
		p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
		for range 3 {
			get(t, c, srv.URL+"/")
		}
		waitFor(t, "3 served", func() bool { return b.Served() == 3 })
		if n := count("index-3"); n != 0 {
			t.Fatalf("callback fired %d times without a limit", n)
		}
	})
}

func TestRetryOnRefusedWhenTableChanged(t *testing.T) {
	var hits atomic.Int64
	_, liveAddr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "live")
	})
	dead := deadAddr(t)
	log, _ := testLogger(t)
	p := New(Options{Logger: log})
	// The swap has to land between routing and the failed dial; doing it
	// from inside the dial makes that ordering deterministic.
	var swapOnDial atomic.Pointer[Table]
	realDial := p.dial
	p.dial = func(network, addr string) (net.Conn, error) {
		if addr == dead {
			if next := swapOnDial.Swap(nil); next != nil {
				p.Swap(next)
			}
		}
		return realDial(network, addr)
	}
	srv := startProxy(t, p)
	c := newClient(t)

	setup := func(t *testing.T, swap bool) (old, next *Backend) {
		old = NewBackend("index", "index-1", dead, 0)
		next = NewBackend("index", "index-2", liveAddr, 0)
		p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: old}))
		if swap {
			swapOnDial.Store(table(Route{Prefix: "/", Worker: "index", Backend: next}))
		}
		t.Cleanup(func() { swapOnDial.Store(nil) })
		return old, next
	}

	t.Run("bodiless request retried on the new backend", func(t *testing.T) {
		old, next := setup(t, true)
		before := hits.Load()
		resp, body := get(t, c, srv.URL+"/")
		if resp.StatusCode != http.StatusOK || body != "live" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if hits.Load() != before+1 {
			t.Errorf("live backend hit %d times, want 1", hits.Load()-before)
		}
		waitFor(t, "counters to settle", func() bool { return old.Inflight() == 0 && next.Inflight() == 0 && next.Served() == 1 })
		if old.Served() != 0 {
			t.Errorf("dead backend served %d", old.Served())
		}
	})
	t.Run("request with body not retried", func(t *testing.T) {
		setup(t, true)
		before := hits.Load()
		resp, err := c.Post(srv.URL+"/", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502", resp.StatusCode)
		}
		if hits.Load() != before {
			t.Errorf("request with a body was replayed")
		}
	})
	t.Run("unchanged table not retried", func(t *testing.T) {
		old, _ := setup(t, false)
		if resp, _ := get(t, c, srv.URL+"/"); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d, want 502", resp.StatusCode)
		}
		waitFor(t, "in-flight count to return to 0", func() bool { return old.Inflight() == 0 })
	})
}

func TestDrainTimesOut(t *testing.T) {
	b := NewBackend("index", "index-1", "127.0.0.1:1", 0)
	b.inflight.Add(1) // a request that never finishes
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := b.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "index-1") {
		t.Errorf("Drain = %v", err)
	}
	if !b.Closed() {
		t.Error("Drain did not close the backend")
	}
	b.inflight.Add(-1)
	if err := b.Drain(context.Background()); err != nil {
		t.Errorf("Drain of an idle backend = %v", err)
	}
}

// TestDrainProtocolCore runs the acquire/release protocol without the
// network, so swaps and requests interleave millions of times faster than in
// TestDrainProtocol and a misordered check is caught.
func TestDrainProtocolCore(t *testing.T) {
	const (
		generations = 5000
		workers     = 3
	)
	type gen struct {
		drained atomic.Bool
		uses    atomic.Int64
	}
	backends := make([]*Backend, generations+1)
	gens := make(map[*Backend]*gen, len(backends))
	for i := range backends {
		backends[i] = NewBackend("index", fmt.Sprintf("index-%d", i), "127.0.0.1:1", 0)
		gens[backends[i]] = &gen{}
	}
	p := New(Options{})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: backends[0]}))

	var stop atomic.Bool
	var violations, unavailable, requests atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := 0; i < 50_000_000 && !stop.Load(); i++ {
				_, b, res := p.acquire("/x")
				if res != acquired {
					unavailable.Add(1)
					continue
				}
				g := gens[b]
				g.uses.Add(1)
				if g.drained.Load() {
					violations.Add(1)
				}
				b.inflight.Add(-1)
				requests.Add(1)
				runtime.Gosched() // with few CPUs, let the swapping loop run
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; i <= generations; i++ {
		old := backends[i-1]
		// Swap only while traffic is flowing to the current generation.
		for gens[old].uses.Load() < 2*workers {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("generation %d got no traffic", i-1)
			}
			runtime.Gosched()
		}
		p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: backends[i]}))
		old.Close()
		for old.Inflight() != 0 {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("generation %d never drained", i-1)
			}
			runtime.Gosched()
		}
		gens[old].drained.Store(true)
	}
	stop.Store(true)
	wg.Wait()
	if n := violations.Load(); n != 0 {
		t.Errorf("%d uses of a backend after it was observed drained", n)
	}
	if n := unavailable.Load(); n != 0 {
		t.Errorf("%d acquisitions gave up", n)
	}
	var used int
	for _, b := range backends {
		if gens[b].uses.Load() > 0 {
			used++
		}
	}
	t.Logf("%d acquisitions; %d of %d generations were used", requests.Load(), used, len(backends))
}
