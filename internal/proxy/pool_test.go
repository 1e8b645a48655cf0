package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Pooled worker connections are closed by the proxy once idle longer than
// WorkerIdleTimeout, whether or not a request comes to check them.
func TestPoolIdleTimeout(t *testing.T) {
	var closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Config.IdleTimeout = time.Hour // the worker never closes them itself
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	log, _ := testLogger(t)
	p := New(Options{Logger: log, WorkerIdleTimeout: 200 * time.Millisecond})
	b := NewBackend("index", "index-1", srv.Listener.Addr().String(), 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	ps := startProxy(t, p)
	c := newClient(t)
	if resp, body := get(t, c, ps.URL+"/"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if b.IdleConns() != 1 {
		t.Fatalf("%d idle connections after one request, want 1", b.IdleConns())
	}
	start := time.Now()
	waitFor(t, "the idle worker connection to be closed by the proxy", func() bool {
		return b.IdleConns() == 0 && closed.Load() == 1
	})
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %v, before its idle timeout", d)
	}
}

// At most WorkerIdleConns connections per instance stay in the pool.
func TestPoolCap(t *testing.T) {
	release := make(chan struct{})
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log, WorkerIdleConns: 2})
	b := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: b}))
	ps := startProxy(t, p)
	c := newClient(t)
	done := make(chan struct{}, 5)
	for range 5 {
		go func() {
			resp, err := c.Get(ps.URL + "/")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- struct{}{}
		}()
	}
	waitFor(t, "five requests in flight", func() bool { return b.Inflight() == 5 })
	close(release)
	for range 5 {
		recv(t, "a request to finish", done)
	}
	if n := b.IdleConns(); n > 2 || n == 0 {
		t.Fatalf("%d idle connections kept, want 1 or 2 (the cap is 2)", n)
	}
}
