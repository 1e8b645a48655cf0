package devreload

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func newHubServer(t *testing.T, h *Hub) *devServer {
	t.Helper()
	srv := newDevServer(t, http.NotFoundHandler(), h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return srv
}

func expectHello(t *testing.T, c *sseConn, h *Hub, reload uint64, failing ...string) {
	t.Helper()
	ev := c.next(t, false)
	if ev.name != eventHello {
		t.Fatalf("first event %q (%s), want hello", ev.name, ev.data)
	}
	got := decode[helloData](t, ev)
	if failing == nil {
		failing = []string{}
	}
	want := helloData{Instance: h.instance, Reload: reload, Failing: failing}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hello = %+v, want %+v", got, want)
	}
}

func TestHubEventsInOrder(t *testing.T) {
	h := NewHub()
	srv := newHubServer(t, h)
	a := openSSE(t, srv.Client(), srv.URL+EventsPath)
	b := openSSE(t, srv.Client(), srv.URL+EventsPath)
	for _, c := range []*sseConn{a, b} {
		if ct := c.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("Content-Type = %q", ct)
		}
		if cc := c.resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q", cc)
		}
		expectHello(t, c, h, 0) // registered from here on
	}

	const rounds = streamQueue/3 - 1 // a burst that fits a stream's queue (larger ones drop the stream)
	for i := range rounds {
		w := "w" + strconv.Itoa(i)
		h.BuildFailed(w, "./main.go:1:2: bad "+w+"\n")
		h.BuildFixed(w)
		h.Reloaded(w)
	}
	for _, c := range []*sseConn{a, b} {
		for i := range rounds {
			w := "w" + strconv.Itoa(i)
			ev := c.next(t, false)
			f := decode[failedData](t, ev)
			wantF := failedData{Worker: w, Output: "./main.go:1:2: bad " + w + "\n",
				Errors: []BuildError{{File: "./main.go", Line: 1, Col: 2, Message: "bad " + w}}}
			if ev.name != eventBuildFailed || !reflect.DeepEqual(f, wantF) {
				t.Fatalf("event %d.1 = %s %s, want build_failed %+v", i, ev.name, ev.data, wantF)
			}
			ev = c.next(t, false)
			if ev.name != eventBuildFixed || decode[fixedData](t, ev).Worker != w {
				t.Fatalf("event %d.2 = %s %s, want build_fixed %s", i, ev.name, ev.data, w)
			}
			ev = c.next(t, false)
			if r := decode[reloadData](t, ev); ev.name != eventReload || r != (reloadData{Worker: w, Reload: uint64(i + 1)}) {
				t.Fatalf("event %d.3 = %s %s, want reload %s #%d", i, ev.name, ev.data, w, i+1)
			}
		}
	}
}

func TestHubStateOnConnect(t *testing.T) {
	h := NewHub()
	srv := newHubServer(t, h)
	out := "# example\n./main.go:12:5: undefined: foo\n"
	h.BuildFailed("index", out)
	h.BuildFailed("api", "./x.go:1:1: gone\n")
	h.BuildFailed("admin", "./y.go:2:2: broken\n")
	h.BuildFixed("api")

	c := openSSE(t, srv.Client(), srv.URL+EventsPath)
	expectHello(t, c, h, 0, "admin", "index")
	ev := c.next(t, false)
	if ev.name != eventBuildFailed || decode[failedData](t, ev).Worker != "admin" {
		t.Fatalf("second event = %s %s, want build_failed admin", ev.name, ev.data)
	}
	ev = c.next(t, false)
	want := failedData{Worker: "index", Output: out,
		Errors: []BuildError{{File: "./main.go", Line: 12, Col: 5, Message: "undefined: foo"}}}
	if got := decode[failedData](t, ev); ev.name != eventBuildFailed || !reflect.DeepEqual(got, want) {
		t.Fatalf("third event = %s %+v, want build_failed %+v", ev.name, got, want)
	}

	// A successful swap clears the worker's failure for later pages.
	h.Reloaded("index")
	h.BuildFixed("admin")
	c2 := openSSE(t, srv.Client(), srv.URL+EventsPath)
	expectHello(t, c2, h, 1)
}

func TestHubHeartbeat(t *testing.T) {
	h := NewHub()
	h.heartbeat = 10 * time.Millisecond
	srv := newHubServer(t, h)
	c := openSSE(t, srv.Client(), srv.URL+EventsPath)
	expectHello(t, c, h, 0)
	for range 3 {
		if ev := c.next(t, true); ev.comment != "ping" {
			t.Fatalf("got %+v, want a ping comment", ev)
		}
	}
}

func TestHubCloseEndsStreams(t *testing.T) {
	defer goleak.VerifyNone(t)
	h := NewHub()
	srv := newDevServer(t, http.NotFoundHandler(), h)
	defer srv.Close()
	a := openSSE(t, srv.Client(), srv.URL+EventsPath)
	b := openSSE(t, srv.Client(), srv.URL+EventsPath)
	expectHello(t, a, h, 0)
	expectHello(t, b, h, 0)

	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(testWait):
		t.Fatal("Close did not return")
	}
	a.expectEnd(t)
	b.expectEnd(t)
	h.Close() // idempotent
	h.Reloaded("index")

	resp, err := srv.Client().Get(srv.URL + EventsPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("events after Close: status %d, want 503", resp.StatusCode)
	}
	a.cancel()
	b.cancel()
	a.resp.Body.Close()
	b.resp.Body.Close()
	srv.Close()
	// the stream goroutines of openSSE end with their bodies
	for _, c := range []*sseConn{a, b} {
		for range c.events {
		}
	}
}

// stuckWriter is a ResponseWriter whose writes after the first block until
// released, like a browser that stopped reading.
type stuckWriter struct {
	header  http.Header
	mu      sync.Mutex
	writes  int
	first   chan struct{}
	release chan struct{}
}

func (s *stuckWriter) Header() http.Header { return s.header }
func (s *stuckWriter) WriteHeader(int)     {}
func (s *stuckWriter) Flush()              {}
func (s *stuckWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.writes++
	n := s.writes
	s.mu.Unlock()
	if n == 1 {
		close(s.first)
		return len(p), nil
	}
	<-s.release
	return 0, errors.New("client gone")
}

func TestHubStuckStreamNeverBlocksPublishers(t *testing.T) {
	h := NewHub()
	sw := &stuckWriter{header: http.Header{}, first: make(chan struct{}), release: make(chan struct{})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		h.ServeEvents(sw, httptest.NewRequest(http.MethodGet, EventsPath, nil))
	}()
	select {
	case <-sw.first:
	case <-time.After(testWait):
		t.Fatal("ServeEvents did not send the initial state")
	}

	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range 3 * streamQueue {
			h.BuildFailed("index", "./main.go:1:1: e"+strconv.Itoa(i))
		}
	}()
	select {
	case <-published:
	case <-time.After(testWait):
		close(sw.release)
		t.Fatal("publishing blocked on a stuck stream")
	}
	h.mu.Lock()
	n := len(h.streams)
	h.mu.Unlock()
	if n != 0 {
		t.Errorf("stuck stream still registered (%d streams)", n)
	}
	close(sw.release)
	select {
	case <-served:
	case <-time.After(testWait):
		t.Fatal("ServeEvents did not return after the write failed")
	}
	h.Close()
}

func TestServeScriptAndMethods(t *testing.T) {
	h := NewHub()
	srv := newHubServer(t, h)
	resp, err := srv.Client().Get(srv.URL + ScriptPath)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || string(body) != string(clientJS) || len(body) == 0 {
		t.Fatalf("script: status %d, %d bytes", resp.StatusCode, len(body))
	}
	for k, want := range map[string]string{
		"Content-Type":  "text/javascript; charset=utf-8",
		"Cache-Control": "no-store",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	for _, p := range []string{ScriptPath, EventsPath} {
		resp, err := srv.Client().Post(srv.URL+p, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", p, resp.StatusCode)
		}
	}
}
