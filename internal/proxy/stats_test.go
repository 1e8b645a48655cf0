package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/stats"
)

// statsOf returns the counters Stats reports for worker (zero when absent).
func statsOf(p *Proxy, worker string) WorkerStats {
	for _, ws := range p.Stats() {
		if ws.Worker == worker {
			return ws
		}
	}
	return WorkerStats{Worker: worker}
}

// classes is a snapshot's counts as "2xx=3 4xx=1", classes with 0 left out.
func classes(s stats.RequestsSnapshot) string {
	var parts []string
	for i, c := range s.ByClass {
		if c != 0 {
			parts = append(parts, stats.Classes[i]+"="+itoa(c))
		}
	}
	return strings.Join(parts, " ")
}

func itoa(n uint64) string { return string(appendInt(nil, int64(n))) }

// Every answered request counts once, under the worker it belongs to and
// its status class: forwarded answers on the instance, static files under
// the worker whose public/ they come from, 503 under the route's worker,
// 404 without a route and refused heads under "", a dead instance's 502 on
// that instance; the latency histogram counts each of them too.
func TestStatsCountEveryAnswer(t *testing.T) {
	workers := t.TempDir()
	if err := os.MkdirAll(filepath.Join(workers, "api", "public"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(workers, "api", "public", "a.css"), []byte("a{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/err":
			w.WriteHeader(http.StatusInternalServerError)
		case "/api/missing":
			w.WriteHeader(http.StatusNotFound)
		case "/api/moved":
			http.Redirect(w, r, "/api/ok", http.StatusMovedPermanently)
		default:
			io.WriteString(w, "ok")
		}
	})
	p := New(Options{WorkersDir: workers, StaticEnabled: true})
	api := NewBackend("api", "api-1", addr, 0)
	dead := NewBackend("dead", "dead-1", deadAddr(t), 0)
	p.Swap(table(
		Route{Prefix: "/api", Worker: "api", Backend: api},
		Route{Prefix: "/dead", Worker: "dead", Backend: dead},
		Route{Prefix: "/idle", Worker: "idle"},
	))
	srv := startProxy(t, p)
	c := newClient(t)
	for path, code := range map[string]int{
		"/api/ok": 200, "/api/err": 500, "/api/missing": 404, "/api/moved": 301,
		"/static/api/a.css": 200, "/static/api/none.css": 404, "/static/ghost/a.css": 404,
		"/idle": 503, "/nowhere": 404, "/dead": 502,
	} {
		if resp, _ := get(t, c, srv.URL+path); resp.StatusCode != code {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	get(t, c, srv.URL+"/api/ok")
	// A request head the engine refuses (400) counts under "".
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET /api/ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	io.ReadAll(conn)
	conn.Close()

	want := map[string]string{
		"":     "4xx=3", // /nowhere, /static/ghost/…, the refused head
		"api":  "2xx=3 3xx=1 4xx=2 5xx=1",
		"dead": "5xx=1",
		"idle": "5xx=1",
	}
	waitFor(t, "every answer counted", func() bool {
		for w, c := range want {
			if classes(statsOf(p, w).Requests) != c {
				return false
			}
		}
		return true
	})
	for _, ws := range p.Stats() {
		if want[ws.Worker] == "" && ws.Requests.Total() != 0 {
			t.Errorf("worker %q counted %s", ws.Worker, classes(ws.Requests))
		}
		if n, h := ws.Requests.Total(), ws.Requests.Latency.Count(); n != h {
			t.Errorf("worker %q: %d requests, %d in the latency histogram", ws.Worker, n, h)
		}
		if ws.Inflight != 0 {
			t.Errorf("worker %q: %d in flight", ws.Worker, ws.Inflight)
		}
	}
	if got := classes(api.Requests()); got != "2xx=2 3xx=1 4xx=1 5xx=1" {
		t.Errorf("the api instance counted %s (static files are the proxy's)", got)
	}
}

// An instance drained and closed keeps counting in its worker's totals
// after it left the table, so the counters never go back.
func TestStatsKeepRetiredInstances(t *testing.T) {
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := New(Options{})
	one := NewBackend("index", "index-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: one}))
	srv := startProxy(t, p)
	c := newClient(t)
	for range 3 {
		get(t, c, srv.URL+"/")
	}
	two := NewBackend("index", "index-2", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: two}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := one.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		get(t, c, srv.URL+"/")
	}
	for range 2 { // the second Stats reads the retired totals, not the backend
		if got := classes(statsOf(p, "index").Requests); got != "2xx=5" {
			t.Fatalf("index counted %s, want 2xx=5", got)
		}
	}
	p.statsMu.Lock()
	_, kept := p.seen[one]
	p.statsMu.Unlock()
	if kept {
		t.Error("a closed, idle backend is still read at every scrape")
	}
}

// A client that leaves before the worker answered counts as 499 (4xx) on
// the instance, and stops counting in flight.
func TestStatsClientGone(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	p := New(Options{})
	b := NewBackend("slow", "slow-1", addr, 0)
	p.Swap(table(Route{Prefix: "/", Worker: "slow", Backend: b}))
	srv := startProxy(t, p)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	waitFor(t, "the request in flight", func() bool { return statsOf(p, "slow").Inflight == 1 })
	conn.Close()
	waitFor(t, "the 499 counted", func() bool { return classes(b.Requests()) == "4xx=1" })
	if ws := statsOf(p, "slow"); ws.Inflight != 0 || ws.Requests.Latency.Count() != 1 {
		t.Fatalf("after the client left: %+v", ws)
	}
}

// Counting an answer the proxy gave itself allocates nothing.
func TestCountWorkerAllocatesNothing(t *testing.T) {
	p := New(Options{StaticEnabled: true})
	p.Swap(table(Route{Prefix: "/api", Worker: "api"}))
	start := time.Now()
	if n := testing.AllocsPerRun(1000, func() {
		p.countWorker("api", 503, start)
		p.countWorker("", 404, start)
		p.countStatic("/static/api/x.css", 200, start)
		p.countStatic("/static/ghost/x.css", 404, start)
	}); n != 0 {
		t.Fatalf("counting allocates %v times", n)
	}
	if got := classes(statsOf(p, "api").Requests); got != "2xx=1001 5xx=1001" {
		t.Fatalf("api counted %s", got)
	}
}
