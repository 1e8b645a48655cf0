package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	for _, us := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456, 9999999} {
		i := bucketOf(us)
		hi := bucketValue(i)
		if hi < us || (i > 0 && bucketValue(i-1) >= us) {
			t.Errorf("%d µs: bucket %d ends at %d, previous at %d", us, i, hi, bucketValue(i-1))
		}
		if us >= 64 && float64(hi-us) > float64(us)/60 {
			t.Errorf("%d µs: bucket end %d too coarse", us, hi)
		}
	}
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	if p50 := h.quantileMs(0.5); p50 < 495 || p50 > 510 {
		t.Errorf("p50 = %v, want about 500", p50)
	}
	if p99 := h.quantileMs(0.99); p99 < 985 || p99 > 1005 {
		t.Errorf("p99 = %v, want about 990", p99)
	}
}

// TestSmoke runs the whole harness in a tiny configuration and checks the
// JSON report.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tqserver and runs servers")
	}
	o := options{
		rounds:         1,
		duration:       time.Second,
		warmup:         200 * time.Millisecond,
		conns:          8,
		restarts:       1,
		rssSmall:       20,
		rssLarge:       3,
		sighupWorkers:  5,
		historyRecords: 10000,
		instances:      2,
		workN:          100,
		scaleTarget:    2,
		json:           true,
	}
	var logs bytes.Buffer
	o.verbose = true
	rep, err := run(o, &logs)
	t.Log(logs.String())
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", out)
	printTable(io.Discard, rep)

	nginx := m["nginx_version"] != ""
	positive := []string{"proxy_rps", "direct_rps", "proxy_p50_ms", "proxy_p99_ms", "direct_p50_ms", "direct_p99_ms",
		"proxy_over_direct", "restart_requests", "steady_p99_ms", "restart_p99_ms", "restart_p99_over_steady_p99",
		"rss_mib_20", "rss_mib_200", "sighup_ms_1000", "history_ms_1m", "history_db_mib", "rounds", "conns",
		"work_rps_1", "work_rps_n", "work_rps_auto", "work_n_over_1", "work_auto_over_1", "work_p99_ms_1", "auto_scale_up_ms"}
	nginxKeys := []string{"nginx_rps", "nginx_p50_ms", "nginx_p99_ms", "proxy_over_nginx"}
	for _, k := range append(append(positive, nginxKeys...), "restart_failed_requests", "go_version", "nginx_version") {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
	for _, k := range positive {
		if v, ok := m[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, m[k])
		}
	}
	for _, k := range nginxKeys {
		v, ok := m[k].(float64)
		if nginx && (!ok || v <= 0) {
			t.Errorf("%s = %v, want a positive number (nginx %v)", k, m[k], m["nginx_version"])
		}
		if !nginx && m[k] != nil {
			t.Errorf("%s = %v without nginx, want null", k, m[k])
		}
	}
	if !nginx && !strings.Contains(strings.Join(rep.Notes, "\n"), "nginx") {
		t.Errorf("no note says nginx was skipped: %v", rep.Notes)
	}
	if v, ok := m["restart_failed_requests"].(float64); !ok || v < 0 {
		t.Errorf("restart_failed_requests = %v", m["restart_failed_requests"])
	}
	// The restart window splits where the new binary first answers: both
	// halves have requests, and together they are the restart window.
	before, _ := m["restart_before_swap_requests"].(float64)
	after, _ := m["restart_after_swap_requests"].(float64)
	if before <= 0 || after <= 0 || before+after != m["restart_requests"].(float64) {
		t.Errorf("restart requests before/after the swap %v + %v, want both > 0 and summing to %v", before, after, m["restart_requests"])
	}
	for _, k := range []string{"restart_before_swap_p99_ms", "restart_after_swap_p99_ms"} {
		if v, ok := m[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, m[k])
		}
	}
	for _, p := range [][2]string{{"proxy_p50_ms", "proxy_p99_ms"}, {"direct_p50_ms", "direct_p99_ms"}} {
		if m[p[0]].(float64) > m[p[1]].(float64) {
			t.Errorf("%s %v > %s %v", p[0], m[p[0]], p[1], m[p[1]])
		}
	}
	if v := m["rss_mib_20"].(float64); v < 1 || v > 1024 {
		t.Errorf("rss_mib_20 = %v MiB, not plausible", v)
	}
	if v := m["history_ms_1m"].(float64); v > 60000 {
		t.Errorf("history_ms_1m = %v over 10k records", v)
	}
	if m["instances"] != 2.0 || m["auto_instances"] != 2.0 || m["work_failed_requests"] != 0.0 {
		t.Errorf("instances %v, autoscaled to %v, %v failed; want 2, 2, 0", m["instances"], m["auto_instances"], m["work_failed_requests"])
	}
	if !strings.HasPrefix(m["go_version"].(string), "go1.") {
		t.Errorf("go_version = %v", m["go_version"])
	}
	if len(rep.Targets) != 6 {
		t.Errorf("%d targets, want 6", len(rep.Targets))
	}
}
