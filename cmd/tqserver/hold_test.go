package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// Held requests (proxy.hold_ms, docs/deploying.md "Held requests") against
// the real server and real worker binaries. A worker is kept from becoming
// healthy by the test worker's "unhealthy" file (its /health answers 503
// while workers/{name}/unhealthy exists), so "no instance yet" lasts
// exactly as long as the test wants; the admin listener's
// tqserver_requests_held gauge tells when requests are waiting.

// holdConfig is a server.yaml with the admin listener on adminPort, the
// given proxy section, and quick worker timings.
func holdConfig(adminPort int, proxy string) string {
	return fmt.Sprintf(`server:
  admin_listen: "127.0.0.1:%d"
proxy:
%s
workers:
  port_range_start: 21000
  port_range_end: 21999
  startup_delay_ms: 10
  shutdown_grace_period_ms: 2000
  restart_delay_ms: 20
  restart_backoff_max_ms: 100
  default:
    health_timeout_ms: 30000
    health_interval_ms: 200
    health_probe_timeout_ms: 500
    health_failure_threshold: 3
`, adminPort, proxy)
}

type holdRig struct {
	s          *server
	root       string
	metricsURL string
}

// startHoldRig starts a server with one worker, index, that has an
// instance starting but not healthy (unhealthy file present).
func startHoldRig(t *testing.T, proxy string) *holdRig {
	t.Helper()
	adminPort, err := testrig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot(t, holdConfig(adminPort, proxy))
	install(t, root, "index", "v1", "normal")
	writeFile(t, filepath.Join(root, "workers", "index", "unhealthy"), "")
	s := startServer(t, root)
	r := &holdRig{s: s, root: root, metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort)}
	// The route is in the table (its worker is known) with no serving instance.
	testrig.WaitFor(t, 15*time.Second, "index starting", func() bool {
		var st supervisor.Status
		if testrig.SocketStatus(root, &st) != nil {
			return false
		}
		for _, w := range st.Workers {
			for _, in := range w.Instances {
				if w.Name == "index" && in.State == "starting" && in.PID != 0 {
					return true
				}
			}
		}
		return false
	})
	return r
}

// healthy lets index become healthy.
func (r *holdRig) healthy(t *testing.T) {
	t.Helper()
	if err := os.Remove(filepath.Join(r.root, "workers", "index", "unhealthy")); err != nil {
		t.Fatal(err)
	}
}

// held is the tqserver_requests_held gauge and its _total of index.
func (r *holdRig) held(t *testing.T) (now, total float64) {
	t.Helper()
	m := scrapeMetrics(t, r.metricsURL)
	return m[`tqserver_requests_held{worker="index"}`], m[`tqserver_requests_held_total{worker="index"}`]
}

type holdAnswer struct {
	code       int
	body       string
	retryAfter string
	took       time.Duration
	err        error
}

// send GETs url on a connection of its own and delivers the answer.
func send(url string) <-chan holdAnswer {
	ch := make(chan holdAnswer, 1)
	go func() {
		t0 := time.Now()
		c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			ch <- holdAnswer{err: err, took: time.Since(t0)}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- holdAnswer{code: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After"), took: time.Since(t0), err: err}
	}()
	return ch
}

// awaitHeld waits until n requests are held, or fails with the first
// answer that came back instead (without holding: a 503 at once).
func (r *holdRig) awaitHeld(t *testing.T, n int, answers []<-chan holdAnswer) {
	t.Helper()
	var early string
	testrig.WaitFor(t, 15*time.Second, fmt.Sprintf("%d requests held", n), func() bool {
		for i, ch := range answers {
			select {
			case a := <-ch:
				early = fmt.Sprintf("request %d answered while no instance was healthy: %d %q %v", i, a.code, a.body, a.err)
				return true
			default:
			}
		}
		now, _ := r.held(t)
		return int(now) == n
	})
	if early != "" {
		t.Fatal(early)
	}
}

func recvAnswer(t *testing.T, ch <-chan holdAnswer) holdAnswer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(60 * time.Second):
		t.Fatal("no answer within 60s")
		panic("unreachable")
	}
}

// (1) Requests sent before the worker's first instance is healthy all get
// 200 once it is, none 503, when that is quicker than hold_ms.
func TestHeldRequestsAtStartAllSucceed(t *testing.T) {
	r := startHoldRig(t, "  hold_ms: 20000")
	const n = 16
	var answers []<-chan holdAnswer
	for i := range n {
		answers = append(answers, send(r.s.URL(fmt.Sprintf("/held/%d", i))))
	}
	r.awaitHeld(t, n, answers)
	t0 := time.Now()
	r.healthy(t)
	for i, ch := range answers {
		a := recvAnswer(t, ch)
		if a.err != nil || a.code != http.StatusOK || !strings.Contains(a.body, "v1 index") || !strings.Contains(a.body, fmt.Sprintf("path=/held/%d ", i)) {
			t.Errorf("request %d: %d %q %v", i, a.code, a.body, a.err)
		}
	}
	t.Logf("%d held requests answered %v after the worker could become healthy", n, time.Since(t0).Round(time.Millisecond))
	if now, total := r.held(t); now != 0 || total != n {
		t.Errorf("held now %v (want 0), in total %v (want %d)", now, total, n)
	}
}

// (2) No instance within hold_ms: 503 with Retry-After after about hold_ms.
func TestHoldTimesOutWith503AfterHoldMs(t *testing.T) {
	r := startHoldRig(t, "  hold_ms: 600")
	a := recvAnswer(t, send(r.s.URL("/")))
	if a.err != nil || a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || !strings.Contains(a.body, "no serving instance") {
		t.Fatalf("got %d %q Retry-After %q %v", a.code, a.body, a.retryAfter, a.err)
	}
	if a.took < 600*time.Millisecond || a.took > 3*time.Second {
		t.Fatalf("503 after %v, want about hold_ms (600ms)", a.took)
	}
	if now, total := r.held(t); now != 0 || total != 1 {
		t.Errorf("held now %v (want 0), in total %v (want 1)", now, total)
	}
}

// (3) hold_queue requests wait; the one beyond gets 503 at once.
func TestHoldQueueFullAnswers503AtOnce(t *testing.T) {
	r := startHoldRig(t, "  hold_ms: 20000\n  hold_queue: 3")
	var answers []<-chan holdAnswer
	for range 3 {
		answers = append(answers, send(r.s.URL("/")))
	}
	r.awaitHeld(t, 3, answers)
	a := recvAnswer(t, send(r.s.URL("/")))
	if a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || a.took > time.Second {
		t.Fatalf("request beyond hold_queue: %d Retry-After %q after %v, want 503 at once", a.code, a.retryAfter, a.took)
	}
	t.Logf("request beyond the queue answered 503 in %v", a.took.Round(time.Microsecond))
	r.healthy(t)
	for i, ch := range answers {
		if a := recvAnswer(t, ch); a.code != http.StatusOK {
			t.Errorf("held request %d: %d %q %v", i, a.code, a.body, a.err)
		}
	}
}

// (5) hold_ms 0: 503 with Retry-After at once, as before holds existed.
func TestHoldOffAnswers503AtOnceE2E(t *testing.T) {
	r := startHoldRig(t, "  hold_ms: 0")
	for range 3 {
		a := recvAnswer(t, send(r.s.URL("/")))
		if a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || a.took > time.Second {
			t.Fatalf("hold_ms 0: %d Retry-After %q after %v, want 503 at once", a.code, a.retryAfter, a.took)
		}
	}
	if _, total := r.held(t); total != 0 {
		t.Errorf("%v requests held with hold_ms 0", total)
	}
}

// crashRounds is how many times TestWorkerCrashUnderLoadZeroFailures kills
// the worker.
const crashRounds = 5

// (4) kill -9 of the worker's process group under a load of GETs, its
// restart (restart_delay_ms 20) quicker than hold_ms: zero failed
// requests. It logs what the held requests cost (docs/performance.md
// "Held requests").
func TestWorkerCrashUnderLoadZeroFailures(t *testing.T) {
	adminPort, err := testrig.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot(t, holdConfig(adminPort, "  hold_ms: 5000"))
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 15*time.Second)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort)

	healthyPID := func(not int) int {
		var st supervisor.Status
		if testrig.SocketStatus(root, &st) != nil {
			return 0
		}
		for _, w := range st.Workers {
			for _, in := range w.Instances {
				if w.Name == "index" && in.State == "healthy" && in.PID != 0 && in.PID != not {
					return in.PID
				}
			}
		}
		return 0
	}
	l := testrig.StartLoad(s.URL("/"), 4, 10_000_000, 3*time.Minute)
	var mu sync.Mutex
	type window struct{ from, to time.Time }
	var outages []window
	pid := 0
	testrig.WaitFor(t, 15*time.Second, "a healthy index", func() bool { pid = healthyPID(0); return pid != 0 })
	for round := range crashRounds {
		// Some traffic on the instance before it dies.
		before := l.Samples()
		testrig.WaitFor(t, 15*time.Second, "load on the instance", func() bool { return len(l.Samples()) >= len(before)+200 })
		from := time.Now()
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
			t.Fatalf("round %d: kill -9 of process group %d: %v", round, pid, err)
		}
		old := pid
		testrig.WaitFor(t, 15*time.Second, "the next instance healthy", func() bool { pid = healthyPID(old); return pid != 0 })
		mu.Lock()
		outages = append(outages, window{from, time.Now()})
		mu.Unlock()
		testrig.WaitFor(t, 10*time.Second, "old instance gone", func() bool { return !testrig.PIDAlive(old) })
	}
	// Traffic on the last instance too, then stop.
	before := l.Samples()
	testrig.WaitFor(t, 15*time.Second, "load after the last restart", func() bool { return len(l.Samples()) >= len(before)+200 })
	ok, failed, errs := l.Finish()
	if failed != 0 {
		t.Errorf("%d of %d requests failed across %d worker crashes: %v", failed, ok+failed, crashRounds, errs)
	}
	m := scrapeMetrics(t, metricsURL)
	heldTotal := m[`tqserver_requests_held_total{worker="index"}`]
	if heldTotal == 0 {
		t.Errorf("no request was held across %d crashes: the test did not exercise holding", crashRounds)
	}
	samples := l.Samples()
	inOutage := func(at time.Time) bool {
		for _, w := range outages {
			if !at.Before(w.from) && at.Before(w.to) {
				return true
			}
		}
		return false
	}
	heldP99, heldN := testrig.P99(samples, inOutage)
	baseP99, baseN := testrig.P99(samples, func(at time.Time) bool { return !inOutage(at) })
	var heldMax time.Duration
	var outage time.Duration
	for _, smp := range samples {
		if inOutage(smp.At) {
			heldMax = max(heldMax, smp.Dur)
		}
	}
	for _, w := range outages {
		outage += w.to.Sub(w.from)
	}
	t.Logf("%d crashes: %d requests, %d failed; %v requests held (tqserver_requests_held_total); "+
		"requests sent while no instance served: %d, p99 %v, max %v; other requests: %d, p99 %v; mean outage (kill to next healthy seen) %v",
		crashRounds, ok+failed, failed, heldTotal, heldN, heldP99.Round(time.Microsecond), heldMax.Round(time.Microsecond),
		baseN, baseP99.Round(time.Microsecond), (outage / crashRounds).Round(time.Millisecond))
	crashed := count(history(t, root, "--worker", "index"), func(r store.Record) bool {
		return r.Reason == "crashed" && r.To == "stopped" && r.Signal == "SIGKILL"
	})
	if crashed != crashRounds {
		t.Errorf("%d kills, %d crashed records with SIGKILL", crashRounds, crashed)
	}
}
