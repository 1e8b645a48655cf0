package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

// scrapeMetrics GETs the admin listener's /metrics and returns each sample
// by its series as the text format writes it, e.g.
// `tqserver_requests_total{code="2xx",worker="shop"}`.
func scrapeMetrics(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := plainClient.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s\n%s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scrape %s: Content-Type %q, want the text format", url, ct)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("scrape %s: line %q", url, line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: line %q: %v", url, line, err)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func reqs(worker, class string) string {
	return fmt.Sprintf(`tqserver_requests_total{code=%q,worker=%q}`, class, worker)
}

// A real server scraped after known traffic: exact counts per worker and
// status class (a 404 without a route under worker="", static files under
// their worker), each worker's latency histogram counting every request,
// instances by state, restarts after a reload (and the replaced
// instance's requests still counted), the log's append timings, go_* and
// process_*; and status --json shows the proxy's counters per instance.
func TestMetricsScrape(t *testing.T) {
	adminPort, err := testrig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot(t, fmt.Sprintf("server:\n  admin_listen: \"127.0.0.1:%d\"\n", adminPort)+fastConfig)
	install(t, root, "shop", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	writeFile(t, filepath.Join(root, "workers", "shop", "public", "site.css"), "body{}\n")
	s := startServer(t, root)
	waitBody(t, s.URL("/shop"), "v1 shop", 10*time.Second)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort)

	before := scrapeMetrics(t, metricsURL)
	traffic := []struct {
		path string
		code int
	}{
		{"/shop", 200}, {"/shop/cart/7", 200}, {"/shop?q=1", 200},
		{"/api/users/1", 200}, {"/api/users/2", 200},
		{"/static/shop/site.css", 200}, {"/static/shop/site.css", 200},
		{"/static/shop/none.css", 404},
		{"/nowhere", 404}, {"/also/nowhere", 404}, {"/static/ghost/x.css", 404},
	}
	for _, tr := range traffic {
		if code, body := get(t, s.URL(tr.path)); code != tr.code {
			t.Fatalf("GET %s: %d %q, want %d", tr.path, code, body, tr.code)
		}
	}
	after := scrapeMetrics(t, metricsURL)
	for series, want := range map[string]float64{
		reqs("shop", "2xx"):      5, // three forwarded, two static
		reqs("shop", "4xx"):      1, // the static file that is not there
		reqs("api_users", "2xx"): 2,
		reqs("api_users", "4xx"): 0,
		reqs("", "4xx"):          3, // no route, and a static path of no worker
		reqs("shop", "5xx"):      0,
	} {
		if got := after[series] - before[series]; got != want {
			t.Errorf("%s went up by %v, want %v", series, got, want)
		}
	}
	for _, w := range []string{"shop", "api_users", ""} {
		var total float64
		for _, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
			v, ok := after[reqs(w, c)]
			if !ok {
				t.Errorf("no %s", reqs(w, c))
			}
			total += v
		}
		hc := after[fmt.Sprintf(`tqserver_request_duration_seconds_count{worker=%q}`, w)]
		inf := after[fmt.Sprintf(`tqserver_request_duration_seconds_bucket{worker=%q,le="+Inf"}`, w)]
		if hc != total || inf != total || total == 0 {
			t.Errorf("worker %q: %v requests, histogram count %v, +Inf bucket %v", w, total, hc, inf)
		}
	}
	for series, want := range map[string]float64{
		`tqserver_instances{state="healthy",worker="shop"}`:  1,
		`tqserver_instances{state="starting",worker="shop"}`: 0,
		`tqserver_instances{state="draining",worker="shop"}`: 0,
		`tqserver_requests_in_flight{worker="shop"}`:         0,
	} {
		if got, ok := after[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, name := range []string{"tqserver_log_append_duration_seconds_count", "go_goroutines", "process_start_time_seconds", "process_resident_memory_bytes"} {
		if after[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, after[name])
		}
	}

	// status --json: the proxy's counters per instance.
	st := s.status()
	for _, w := range st.Workers {
		if w.Name != "shop" {
			continue
		}
		in := w.Instances[0]
		if in.Requests["2xx"] < 3 || in.P99Ms == nil || *in.P99Ms <= 0 {
			t.Errorf("shop's instance in status: requests %v, p99_ms %v", in.Requests, in.P99Ms)
		}
	}

	// A reload that replaces shop: one restart, binary_changed; the old
	// instance's requests stay in the totals once it is gone.
	shop2xx := after[reqs("shop", "2xx")]
	install(t, root, "shop", "v2", "normal")
	if out, errOut, err := runCLI(t, "reload", "--root", root); err != nil {
		t.Fatalf("reload: %v\n%s%s", err, out, errOut)
	}
	testrig.WaitFor(t, 20*time.Second, "the replaced shop instance gone", func() bool {
		m := scrapeMetrics(t, metricsURL)
		return m[`tqserver_instances{state="healthy",worker="shop"}`] == 1 && m[`tqserver_instances{state="draining",worker="shop"}`] == 0
	})
	m := scrapeMetrics(t, metricsURL)
	if got := m[`tqserver_restarts_total{reason="binary_changed",worker="shop"}`]; got != 1 {
		t.Errorf("restarts of shop for binary_changed = %v, want 1", got)
	}
	if _, ok := m[`tqserver_restarts_total{reason="startup",worker="shop"}`]; ok {
		t.Error("the first start counted as a restart")
	}
	if got := m[reqs("shop", "2xx")]; got != shop2xx {
		t.Errorf("shop 2xx after its instance was replaced: %v, want %v (no request since)", got, shop2xx)
	}
	waitBody(t, s.URL("/shop"), "v2 shop", 10*time.Second)
	if got := scrapeMetrics(t, metricsURL)[reqs("shop", "2xx")]; got <= shop2xx {
		t.Errorf("shop 2xx after a request to the new instance: %v, want more than %v", got, shop2xx)
	}
}

// Dev mode: the build at start and a failed build after an edit are in
// tqserver_build_duration_seconds by result, with the took_ms of their
// records as the observed durations.
func TestMetricsDevBuilds(t *testing.T) {
	adminPort, err := testrig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot(t, fmt.Sprintf("server:\n  admin_listen: \"127.0.0.1:%d\"\n", adminPort)+fastConfig)
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	writeFile(t, src, devSource(t, "d1"))
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/"), "d1 index", 60*time.Second)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort)

	tookMs := func(event string) (n int, sum int64) {
		for _, r := range history(t, root, "--worker", "index") {
			if r.Event == event {
				if r.TookMs <= 0 {
					t.Errorf("%s record without took_ms: %+v", event, r)
				}
				n++
				sum += r.TookMs
			}
		}
		return n, sum
	}
	check := func(result, event string) {
		t.Helper()
		n, sum := tookMs(event)
		m := scrapeMetrics(t, metricsURL)
		count := m[fmt.Sprintf(`tqserver_build_duration_seconds_count{result=%q,worker="index"}`, result)]
		secs := m[fmt.Sprintf(`tqserver_build_duration_seconds_sum{result=%q,worker="index"}`, result)]
		if n != 1 || count != 1 || secs != float64(sum)/1000 {
			t.Errorf("%s: %d records (took_ms %d); histogram count %v, sum %v s", result, n, sum, count, secs)
		}
	}
	check("ok", "build_ok")

	writeFile(t, src, devSource(t, "d2")+"\nfunc broken( {\n")
	testrig.WaitFor(t, 60*time.Second, "build_failed record", func() bool {
		n, _ := tookMs("build_failed")
		return n > 0
	})
	check("failed", "build_failed")
	check("ok", "build_ok")
}
