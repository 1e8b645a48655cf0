package supervisor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

func buildVersion(t *testing.T, root, name, version string) string {
	t.Helper()
	out := testrig.WorkerBinPath(root, name) + "." + version
	testrig.BuildTestWorker(t, out, version, "")
	return out
}

// install makes bin the worker's binary by a rename, as a deploy does (the
// running instances keep their file).
func install(t *testing.T, root, name, bin string) {
	t.Helper()
	if err := os.Rename(bin, filepath.Join(root, "workers", name, "bin", name)); err != nil {
		t.Fatal(err)
	}
}

// scaleHarness runs a supervisor in-process behind a real proxy on loopback.
type scaleHarness struct {
	*rig
	px     *proxy.Proxy
	front  *testFront
	client *http.Client
}

func startScaleHarness(t *testing.T, ws config.WorkerSettings) *scaleHarness {
	t.Helper()
	root := t.TempDir()
	install(t, root, "index", buildVersion(t, root, "index", "v1"))
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 24000, 24999
	cfg.Workers.StartupDelayMs = 5
	cfg.Workers.RestartDelayMs = 10
	cfg.Workers.Default = ws
	px := proxy.New(proxy.Options{})
	h := &scaleHarness{px: px, front: newFront(t, px),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	// Registered before the rig's: runs after the supervisor stopped, so
	// that goleak (TestMain) sees no goroutine of this test.
	t.Cleanup(func() {
		h.front.Close()
		h.client.CloseIdleConnections()
		h.px.CloseIdleConnections()
	})
	h.rig = startRig(t, root, "prod", cfg, px, nil)
	return h
}

func (h *scaleHarness) waitUntil(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	if err := testrig.Poll(timeout, 5*time.Millisecond, what, func() (bool, string) { return cond(), "" }); err != nil {
		h.t.Fatalf("%v\nstatus: %+v\nlog:\n%s", err, h.sup.Status(), h.logs.String())
	}
}

// instances counts the worker's instances per state.
func (h *scaleHarness) instances() map[string]int {
	n := map[string]int{}
	for _, w := range h.sup.Status().Workers {
		for _, in := range w.Instances {
			n[in.State]++
		}
	}
	return n
}

func (h *scaleHarness) healthyPorts() []int {
	var out []int
	for _, w := range h.sup.Status().Workers {
		for _, in := range w.Instances {
			if in.State == "healthy" {
				out = append(out, in.Port)
			}
		}
	}
	return out
}

func (h *scaleHarness) records() []store.Record {
	h.t.Helper()
	recs, err := h.st.Records(store.Filter{})
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}

func autoscaleRecord(r store.Record) bool {
	return r.Reason == sm.ReasonConfigChanged && strings.HasPrefix(r.Detail, "autoscale: ")
}

// load keeps conc slow requests in flight through the proxy until stopped.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	fails      []string
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func startLoad(h *scaleHarness, conc int, path string) *load {
	l := &load{}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for range conc {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				// Each request runs to its end even after stop: stopping
				// must not turn into failed requests.
				resp, err := h.client.Get(h.front.URL + path)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.fails = append(l.fails, err.Error())
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

// finish stops the load, waits for the requests in flight, and returns the
// failures.
func (l *load) finish() []string {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fails
}

// Many slow requests held open grow a worker from min 1 to max 3 and not
// beyond; once they end it shrinks back to 1, one instance per
// scale_down_after_ms, each draining its requests. The history tells why,
// and no request fails.
func TestAutoscaleUpAndDown(t *testing.T) {
	ws := config.DefaultWorkerSettings()
	ws.MinInstances, ws.MaxInstances, ws.Instances = 1, 3, 1
	ws.ScaleTargetInflight = 2
	ws.ScaleDownAfterMs = 300
	h := startScaleHarness(t, ws)
	h.waitUntil("one healthy instance", 20*time.Second, func() bool { return h.instances()["healthy"] == 1 })

	// Watch the instance count while the load runs: never more than max.
	var most atomic.Int64
	watchCtx, stopWatch := context.WithCancel(context.Background())
	var watchWG sync.WaitGroup
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		for watchCtx.Err() == nil {
			n := h.instances()
			if live := int64(n["healthy"] + n["starting"]); live > most.Load() {
				most.Store(live)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() { stopWatch(); watchWG.Wait() }()

	l := startLoad(h, 12, "/slow?ms=200")
	h.waitUntil("3 healthy instances", 30*time.Second, func() bool { return h.instances()["healthy"] == 3 })
	// Keep the load on for a while longer (each of the 12 clients completes
	// four more requests: several samples at a mean of 4 ≥ 2) — the worker
	// must stay at its max.
	base := l.ok.Load()
	h.waitUntil("more load at max", 30*time.Second, func() bool { return l.ok.Load() >= base+48 })
	if fails := l.finish(); len(fails) > 0 {
		t.Fatalf("%d of %d requests failed while scaling up: %v", len(fails), l.ok.Load()+int64(len(fails)), fails)
	}
	if l.ok.Load() == 0 {
		t.Fatal("no request succeeded")
	}
	h.waitUntil("back to one instance", 30*time.Second, func() bool {
		n := h.instances()
		return n["healthy"] == 1 && n["draining"] == 0 && n["starting"] == 0
	})
	stopWatch()
	watchWG.Wait()
	if m := most.Load(); m > 3 {
		t.Fatalf("saw %d live instances; max_instances is 3", m)
	}
	// A request after shrinking still works.
	resp, err := h.client.Get(h.front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after scaling down: %s", resp.Status)
	}

	var ups, downs, exits []string
	for _, r := range h.records() {
		if !autoscaleRecord(r) {
			if r.Reason == sm.ReasonConfigChanged && r.To == "stopped" && r.Event == "exited" {
				exits = append(exits, r.Instance)
			}
			continue
		}
		switch {
		case r.Event == "start" && r.To == "starting":
			ups = append(ups, r.Detail)
		case r.Event == "drain" && r.To == "draining":
			downs = append(downs, r.Detail)
		default:
			t.Errorf("unexpected autoscale record %+v", r)
		}
	}
	if len(ups) != 2 || !strings.HasSuffix(ups[0], "over 1 instances, 1 → 2 (max 3)") || !strings.HasSuffix(ups[1], "over 2 instances, 2 → 3 (max 3)") {
		t.Errorf("scale-up records: %q", ups)
	}
	if len(downs) != 2 || !strings.HasSuffix(downs[0], "for 300ms over 3 instances, 3 → 2 (min 1)") || !strings.HasSuffix(downs[1], "for 300ms over 2 instances, 2 → 1 (min 1)") {
		t.Errorf("scale-down records: %q", downs)
	}
	for _, d := range ups {
		if !strings.Contains(d, "mean in-flight ") || !strings.Contains(d, " ≥ 2 over ") {
			t.Errorf("scale-up detail lacks the numbers: %q", d)
		}
	}
	if len(exits) != 2 {
		t.Errorf("want the 2 removed instances to exit with reason config_changed, got %v", exits)
	}
	logs := h.logs.String()
	if n, m := strings.Count(logs, `"message":"autoscale: scaling up"`), strings.Count(logs, `"message":"autoscale: scaling down"`); n != 2 || m != 2 {
		t.Errorf("want 2 + 2 autoscale log lines, got %d up, %d down", n, m)
	}
}

// A new binary while the worker is scaling replaces every slot it has at
// that moment, one at a time; scaling waits for the roll, then goes on with
// the new version.
func TestAutoscaleRollReplacesAllSlots(t *testing.T) {
	ws := config.DefaultWorkerSettings()
	ws.MinInstances, ws.MaxInstances, ws.Instances = 1, 3, 1
	ws.ScaleTargetInflight = 2
	ws.ScaleDownAfterMs = 60000
	h := startScaleHarness(t, ws)
	v2 := buildVersion(t, h.root, "index", "v2")
	h.waitUntil("one healthy instance", 20*time.Second, func() bool { return h.instances()["healthy"] == 1 })

	l := startLoad(h, 12, "/slow?ms=200")
	defer l.finish()
	// The first scale-up has been decided (its instance is likely still
	// starting): now deploy v2.
	h.waitUntil("a scale-up", 30*time.Second, func() bool {
		for _, r := range h.records() {
			if autoscaleRecord(r) && r.Event == "start" {
				return true
			}
		}
		return false
	})
	install(t, h.root, "index", v2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := h.sup.Reload(ctx, "test")
	if res.Error != "" || len(res.Failures) > 0 {
		t.Fatalf("reload: %+v", res)
	}

	// Then scaling resumes up to max, all on v2: three slots, each serving
	// (a successor being warmed is healthy too, so count slots, not states).
	h.waitUntil("3 serving slots", 30*time.Second, func() bool {
		for _, w := range h.sup.Status().Workers {
			n := 0
			for _, sl := range w.Slots {
				if sl == "serving" {
					n++
				}
			}
			return n == 3 && len(w.Slots) == 3 && h.instances()["healthy"] == 3
		}
		return false
	})
	if fails := l.finish(); len(fails) > 0 {
		t.Fatalf("%d requests failed: %v", len(fails), fails)
	}
	for _, port := range h.healthyPorts() {
		resp, err := h.client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "v2 ") {
			t.Errorf("instance on port %d answers %q, want v2", port, body)
		}
	}

	// The roll: every slot that existed when it began got a binary_changed
	// successor, and no autoscale step happened between its first start
	// and its last healthy instance.
	recs := h.records()
	rollStart, rollEnd := -1, -1
	slotsAtRoll := 0
	healthy := 0
	for i, r := range recs {
		if r.Reason == sm.ReasonBinaryChanged && r.Event == "start" {
			if rollStart < 0 {
				rollStart = i
			}
		}
		if r.Reason == sm.ReasonBinaryChanged && r.To == "healthy" {
			healthy++
			rollEnd = i
		}
	}
	if rollStart < 0 {
		t.Fatalf("no binary_changed start in %+v", recs)
	}
	// The slots at the roll's start: 1 plus the scale-ups recorded before it.
	slotsAtRoll = 1
	for _, r := range recs[:rollStart] {
		if autoscaleRecord(r) && r.Event == "start" {
			slotsAtRoll++
		}
	}
	if healthy != slotsAtRoll {
		t.Fatalf("the roll made %d instances healthy; %d slots existed when it began\n%s", healthy, slotsAtRoll, dump(recs))
	}
	for _, r := range recs[rollStart : rollEnd+1] {
		if autoscaleRecord(r) {
			t.Fatalf("autoscale step during the roll: %+v\n%s", r, dump(recs))
		}
	}
	after := 0
	for _, r := range recs[rollEnd+1:] {
		if autoscaleRecord(r) && r.Event == "start" {
			after++
		}
	}
	if slotsAtRoll+after != 3 {
		t.Fatalf("%d slots at the roll + %d scale-ups after it, want 3 in all\n%s", slotsAtRoll, after, dump(recs))
	}
}

func dump(recs []store.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%d %s %s %s→%s %s %s %q\n", r.Seq, r.Worker, r.Instance, r.From, r.To, r.Event, r.Reason, firstLine(r.Detail))
	}
	return b.String()
}

// A reload that changes the range clamps the current count into it without
// restarting the instances that stay.
func TestAutoscaleReloadClamps(t *testing.T) {
	ws := config.DefaultWorkerSettings()
	ws.MinInstances, ws.MaxInstances, ws.Instances = 1, 3, 1
	ws.ScaleTargetInflight = 2
	ws.ScaleDownAfterMs = 60000
	h := startScaleHarness(t, ws)
	h.waitUntil("one healthy instance", 20*time.Second, func() bool { return h.instances()["healthy"] == 1 })
	l := startLoad(h, 12, "/slow?ms=200")
	h.waitUntil("3 healthy instances", 30*time.Second, func() bool { return h.instances()["healthy"] == 3 })
	if fails := l.finish(); len(fails) > 0 {
		t.Fatalf("%d requests failed: %v", len(fails), fails)
	}
	before := map[int]bool{}
	for _, p := range h.healthyPorts() {
		before[p] = true
	}

	reload := func(yaml string) events.ReloadResult {
		t.Helper()
		writeServerYAML(t, h.root, yaml)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res := h.sup.Reload(ctx, "test")
		if res.Error != "" || len(res.Failures) > 0 {
			t.Fatalf("reload: %+v", res)
		}
		return res
	}
	// The reload reads the whole file, so it repeats the test's settings.
	base := "workers:\n  port_range_start: 24000\n  port_range_end: 24999\n  startup_delay_ms: 5\n  default:\n    scale_down_after_ms: 60000\n    scale_target_inflight: 2\n"
	res := reload(base + "    min_instances: 1\n    max_instances: 2\n")
	if !strings.Contains(strings.Join(res.Changes, "\n"), "index: instances 3 → 2") {
		t.Fatalf("reload changes: %q", res.Changes)
	}
	h.waitUntil("2 instances", 20*time.Second, func() bool {
		n := h.instances()
		return n["healthy"] == 2 && n["draining"] == 0
	})
	for _, p := range h.healthyPorts() {
		if !before[p] {
			t.Fatalf("an instance was restarted by a range change: port %d new", p)
		}
	}
	// A minimum above the count starts the missing instances.
	res = reload(base + "    min_instances: 4\n    max_instances: 5\n")
	if !strings.Contains(strings.Join(res.Changes, "\n"), "index: instances 2 → 4") {
		t.Fatalf("reload changes: %q", res.Changes)
	}
	h.waitUntil("4 instances", 20*time.Second, func() bool { return h.instances()["healthy"] == 4 })
}
