package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// scrape GETs url and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

// series finds the metric of family name with exactly labels (name=value pairs).
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no %s in the scrape", name)
	}
	want := strings.Join(labels, ",")
	var seen []string
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(got)
		if strings.Join(got, ",") == want {
			return m
		}
		seen = append(seen, strings.Join(got, ","))
	}
	t.Fatalf("no %s{%s}; there are %v", name, want, seen)
	return nil
}

func counter(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := series(t, fams, name, labels...)
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.GetGauge().GetValue()
}

// A scrape reports what the proxy counted, the status, the records
// appended since New and the store's append timings, with go_* and
// process_* beside them.
func TestCollectorScrape(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "var", "tqserver.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A record before New is not counted: the counters start with the collector.
	if err := st.Append(&store.Record{Worker: "api", Instance: "api-0", Event: sm.Start, Reason: sm.ReasonCrashed}); err != nil {
		t.Fatal(err)
	}

	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/fail" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer worker.Close()
	px := proxy.New(proxy.Options{})
	b := proxy.NewBackend("api", "api-1", worker.Listener.Addr().String(), 0)
	px.Swap(proxy.NewTable([]proxy.Route{{Prefix: "/api", Worker: "api", Backend: b}}))
	addr := serveProxy(t, px)

	status := &supervisor.Status{Workers: []supervisor.WorkerStatus{{Name: "api", Instances: []supervisor.InstanceStatus{
		{Instance: "api-1", State: sm.Healthy}, {Instance: "api-2", State: sm.Healthy}, {Instance: "api-0", State: sm.Draining},
	}}}}
	c := New(Options{Proxy: px, Status: func() *supervisor.Status { return status }, Store: st})
	defer c.Close()
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()

	base := "http://" + addr
	for i := range 7 {
		path := "/api/ok"
		if i%3 == 0 {
			path = "/api/fail"
		}
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := http.Get(base + "/none")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	recs := []store.Record{
		{Worker: "api", Instance: "api-1", Event: sm.Start, Reason: sm.ReasonStartup},
		{Worker: "api", Instance: "api-2", Event: sm.Start, Reason: sm.ReasonCrashed},
		{Worker: "api", Instance: "api-3", Event: sm.Start, Reason: sm.ReasonCrashed},
		{Worker: "api", Instance: "api-4", Event: sm.Start, Reason: sm.ReasonBinaryChanged},
		{Worker: "api", Event: sm.EventBuildOK, TookMs: 1500},
		{Worker: "api", Event: sm.EventBuildOK, TookMs: 700},
		{Worker: "api", Event: sm.EventBuildFailed, TookMs: 300},
		{Worker: "api", Event: sm.EventBuildFailed, Detail: "install: disk full"}, // no build of its own
	}
	for i := range recs {
		if err := st.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}

	fams := scrape(t, srv.URL)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tqserver_requests_total", []string{"code=2xx", "worker=api"}, 4},
		{"tqserver_requests_total", []string{"code=5xx", "worker=api"}, 3},
		{"tqserver_requests_total", []string{"code=4xx", "worker=api"}, 0},
		{"tqserver_requests_total", []string{"code=4xx", "worker="}, 1},
		{"tqserver_requests_in_flight", []string{"worker=api"}, 0},
		{"tqserver_instances", []string{"state=healthy", "worker=api"}, 2},
		{"tqserver_instances", []string{"state=draining", "worker=api"}, 1},
		{"tqserver_instances", []string{"state=starting", "worker=api"}, 0},
		{"tqserver_restarts_total", []string{"reason=crashed", "worker=api"}, 2},
		{"tqserver_restarts_total", []string{"reason=binary_changed", "worker=api"}, 1},
	} {
		if got := counter(t, fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, m := range fams["tqserver_restarts_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == sm.ReasonStartup {
				t.Errorf("a startup start counted as a restart: %v", m)
			}
		}
	}
	h := series(t, fams, "tqserver_request_duration_seconds", "worker=api").GetHistogram()
	if h.GetSampleCount() != 7 || h.GetSampleSum() <= 0 {
		t.Errorf("api latency histogram: count %d, sum %v; want 7 and > 0", h.GetSampleCount(), h.GetSampleSum())
	}
	ok := series(t, fams, "tqserver_build_duration_seconds", "result=ok", "worker=api").GetHistogram()
	if ok.GetSampleCount() != 2 || ok.GetSampleSum() != 2.2 {
		t.Errorf("ok builds: count %d, sum %v; want 2 and 2.2", ok.GetSampleCount(), ok.GetSampleSum())
	}
	for _, bk := range ok.GetBucket() {
		want := map[float64]uint64{0.5: 0, 1: 1, 2: 2, 300: 2}
		if w, found := want[bk.GetUpperBound()]; found && bk.GetCumulativeCount() != w {
			t.Errorf("ok builds le=%v: %d, want %d", bk.GetUpperBound(), bk.GetCumulativeCount(), w)
		}
	}
	failed := series(t, fams, "tqserver_build_duration_seconds", "result=failed", "worker=api").GetHistogram()
	if failed.GetSampleCount() != 1 || failed.GetSampleSum() != 0.3 {
		t.Errorf("failed builds: count %d, sum %v; want 1 and 0.3", failed.GetSampleCount(), failed.GetSampleSum())
	}
	// Every append of the store, the one before New included, is timed.
	ap := series(t, fams, "tqserver_log_append_duration_seconds").GetHistogram()
	if ap.GetSampleCount() != uint64(len(recs)+1) {
		t.Errorf("log append histogram counts %d, want %d", ap.GetSampleCount(), len(recs)+1)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	// After Close, appends count no more; the counts so far stay.
	c.Close()
	if err := st.Append(&store.Record{Worker: "api", Instance: "api-5", Event: sm.Start, Reason: sm.ReasonCrashed}); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, scrape(t, srv.URL), "tqserver_restarts_total", "reason=crashed", "worker=api"); got != 2 {
		t.Errorf("after Close: %v crashed restarts, want 2", got)
	}
}

// Concurrent scrapes while records are appended and requests counted
// (run with -race).
func TestCollectorConcurrent(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "var", "tqserver.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	px := proxy.New(proxy.Options{})
	c := New(Options{Proxy: px, Store: st, Status: func() *supervisor.Status { return &supervisor.Status{} }})
	defer c.Close()
	srv := httptest.NewServer(Handler(c))
	defer srv.Close()
	done := make(chan error, 1)
	go func() {
		for i := range 20 {
			r := store.Record{Worker: "w", Instance: fmt.Sprintf("w-%d", i), Event: sm.Start, Reason: sm.ReasonCrashed}
			if err := st.Append(&r); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 5 {
		scrape(t, srv.URL)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := counter(t, scrape(t, srv.URL), "tqserver_restarts_total", "reason=crashed", "worker=w"); got != 20 {
		t.Fatalf("%v restarts, want 20", got)
	}
}

// serveProxy serves px on a loopback listener until the test ends and
// returns its address.
func serveProxy(tb testing.TB, px *proxy.Proxy) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	front := proxy.NewServer(px, proxy.ServerOptions{})
	go front.Serve(ln)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		front.Shutdown(ctx)
		px.CloseIdleConnections()
	})
	return ln.Addr().String()
}
