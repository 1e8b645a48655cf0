package supervisor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/process"
)

// healthClient never keeps connections: probes must not hold idle sockets to
// instances that are about to be stopped.
var healthClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

func checkHealth(ctx context.Context, port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/health", port), nil)
	if err != nil {
		return err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /health: %s", resp.Status)
	}
	return nil
}

// healthGate polls a starting instance until /health answers 200 (HealthOK)
// or health_timeout_ms passes (HealthTimeout). Polling starts fast (5 ms)
// and slows down after half a second, so a quick worker is serving within
// milliseconds.
func (s *Supervisor) healthGate(ctx context.Context, name string, port int, ws config.WorkerSettings, delay time.Duration, proc *process.Process) {
	s.gates.Add(1)
	defer s.gates.Add(-1)
	timeout := time.Duration(ws.HealthTimeoutMs) * time.Millisecond
	deadline := time.Now().Add(timeout)
	probeTimeout := time.Duration(ws.HealthProbeTimeoutMs) * time.Millisecond
	if probeTimeout <= 0 {
		probeTimeout = time.Second
	}
	wait := s.fastPoll()
	if delay > 0 && delay < timeout {
		wait = delay
	}
	var lastErr error
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		lastErr = checkHealth(ctx, port, min(probeTimeout, left))
		if lastErr == nil {
			if err := s.minHealthy(ctx, port, ws, probeTimeout); err != nil {
				if ctx.Err() == nil {
					s.Send(events.HealthTimeout{Instance: name, Detail: err.Error()})
				}
				return
			}
			s.Send(events.HealthOK{Instance: name})
			return
		}
		if ctx.Err() != nil {
			return
		}
		// Every 5 ms for the first half second (a Go worker is usually up
		// within tens of ms, and each ms here is a ms of hot-swap latency),
		// then slowing down to 100 ms for slow starters.
		fast := s.fastPoll()
		if time.Until(deadline) < timeout-500*time.Millisecond {
			wait = max(min(max(wait*3/2, fast), 100*time.Millisecond), fast)
		} else {
			wait = fast
		}
	}
	detail := fmt.Sprintf("not healthy within %s", timeout)
	if lastErr != nil {
		detail += ": " + lastErr.Error()
	}
	if proc != nil {
		if t := strings.TrimSpace(proc.Tail()); t != "" {
			detail += "\n" + t
		}
	}
	s.Send(events.HealthTimeout{Instance: name, Detail: detail})
}

// minHealthyEvery is how often a new instance is probed during min_healthy_ms.
const minHealthyEvery = 20 * time.Millisecond

// minHealthy keeps probing an instance that answered its first 200 until
// min_healthy_ms have passed; the first failed probe is the error
// (Nomad's min_healthy_time).
func (s *Supervisor) minHealthy(ctx context.Context, port int, ws config.WorkerSettings, probeTimeout time.Duration) error {
	span := time.Duration(ws.MinHealthyMs) * time.Millisecond
	if span <= 0 {
		return nil
	}
	first := time.Now()
	t := time.NewTicker(minHealthyEvery)
	defer t.Stop()
	for time.Since(first) < span {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := checkHealth(ctx, port, probeTimeout); err != nil {
			return fmt.Errorf("healthy, then failed /health %s after its first 200, within min_healthy_ms %d: %v",
				time.Since(first).Round(time.Millisecond), ws.MinHealthyMs, err)
		}
	}
	return nil
}

// warmupURLs requests each of ws.WarmupURLs from a new instance before it
// takes traffic; each must answer 2xx or 3xx within the probe timeout, all
// within health_timeout_ms.
func warmupURLs(port int, ws config.WorkerSettings) error {
	if len(ws.WarmupURLs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ws.HealthTimeoutMs)*time.Millisecond)
	defer cancel()
	per := time.Duration(ws.HealthProbeTimeoutMs) * time.Millisecond
	for _, u := range ws.WarmupURLs {
		if err := getOK(ctx, port, u, per); err != nil {
			return fmt.Errorf("warm-up %w", err)
		}
	}
	return nil
}

func getOK(ctx context.Context, port int, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "tqserver-warm")
	resp, err := healthClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// fastPoll is the health gate's polling interval while an instance is new:
// 5 ms, stretched by 0.5 ms per gate running at once (up to 500 ms), so a
// thousand instances starting together make about 2,000 probes a second,
// not 200,000 — which would slow the very starts they wait for.
func (s *Supervisor) fastPoll() time.Duration {
	n := time.Duration(s.gates.Load())
	return min(max(5*time.Millisecond, n*500*time.Microsecond), 500*time.Millisecond)
}

// probe checks a healthy instance every health_interval_ms and reports
// ProbeFailed after every health_failure_threshold failures in a row.
// Successful probes are not logged.
func (s *Supervisor) probe(ctx context.Context, name string, port int, ws config.WorkerSettings) {
	interval := time.Duration(ws.HealthIntervalMs) * time.Millisecond
	if interval <= 0 {
		return
	}
	timeout := time.Duration(ws.HealthProbeTimeoutMs) * time.Millisecond
	threshold := max(ws.HealthFailureThreshold, 1)
	fails := 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := checkHealth(ctx, port, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			fails = 0
			continue
		}
		fails++
		s.log.Warn().Str("instance", name).Int("failures", fails).Err(err).Msg("health probe failed")
		// Report again every threshold failures: a replacement that rolled
		// back leaves this instance serving, and it may be retried.
		if fails%threshold == 0 {
			s.Send(events.ProbeFailed{Instance: name, Detail: fmt.Sprintf("%d health probes failed in a row: %v", fails, err)})
		}
	}
}
