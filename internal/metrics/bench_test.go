package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// BenchmarkProxyScraped measures what a Prometheus scrape every second
// costs the proxy: sequential keep-alive GETs of a hello-world worker
// through the engine (as proxy.BenchmarkEngine), in a table of 200 workers
// so a scrape has 200 workers' series to read and write, with no scrape
// ("none") and with a GET /metrics every second ("every1s") running beside
// it. Run it long enough for several scrapes, interleaved:
//
//	go test -run '^$' -bench ProxyScraped -benchtime 5s -count 5 ./internal/metrics/
func BenchmarkProxyScraped(b *testing.B) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer worker.Close()
	px := proxy.New(proxy.Options{})
	routes := []proxy.Route{{Prefix: "/", Worker: "index", Backend: proxy.NewBackend("index", "index-1", worker.Listener.Addr().String(), 0)}}
	status := &supervisor.Status{Workers: []supervisor.WorkerStatus{{Name: "index", Instances: []supervisor.InstanceStatus{{Instance: "index-1", State: sm.Healthy}}}}}
	for i := range 199 {
		name := fmt.Sprintf("w%03d", i)
		// Backends that are never picked: their counters are read at every scrape.
		routes = append(routes, proxy.Route{Prefix: "/" + name, Worker: name, Backend: proxy.NewBackend(name, name+"-1", "127.0.0.1:1", 0)})
		status.Workers = append(status.Workers, supervisor.WorkerStatus{Name: name, Instances: []supervisor.InstanceStatus{{Instance: name + "-1", State: sm.Healthy}}})
	}
	px.Swap(proxy.NewTable(routes))
	addr := serveProxy(b, px)
	st, err := store.Open(filepath.Join(b.TempDir(), "var", "tqserver.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := New(Options{Proxy: px, Store: st, Status: func() *supervisor.Status { return status }})
	defer c.Close()
	msrv := httptest.NewServer(Handler(c))
	defer msrv.Close()

	url := "http://" + addr + "/hello"
	run := func(b *testing.B, scrape bool) {
		tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		stop, done := make(chan struct{}), make(chan int)
		go func() {
			n := 0
			defer func() { done <- n }()
			if !scrape {
				return
			}
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				resp, err := http.Get(msrv.URL)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				n++
			}
		}()
		b.ReportAllocs()
		cpu0 := cpuTime(b)
		for b.Loop() {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatal(resp.Status)
			}
		}
		// CPU time of the whole process (client, engine, worker and the
		// scrapes) per request: less sensitive than ns/op to other load
		// on the machine.
		b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		close(stop)
		b.ReportMetric(float64(<-done), "scrapes")
	}
	b.Run("none", func(b *testing.B) { run(b, false) })
	b.Run("every1s", func(b *testing.B) { run(b, true) })
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScrape is the cost of one scrape of 200 workers.
func BenchmarkScrape(b *testing.B) {
	px := proxy.New(proxy.Options{})
	var routes []proxy.Route
	status := &supervisor.Status{}
	for i := range 200 {
		name := fmt.Sprintf("w%03d", i)
		routes = append(routes, proxy.Route{Prefix: "/" + name, Worker: name, Backend: proxy.NewBackend(name, name+"-1", "127.0.0.1:1", 0)})
		status.Workers = append(status.Workers, supervisor.WorkerStatus{Name: name, Instances: []supervisor.InstanceStatus{{Instance: name + "-1", State: sm.Healthy}}})
	}
	px.Swap(proxy.NewTable(routes))
	c := New(Options{Proxy: px, Status: func() *supervisor.Status { return status }})
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
