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
