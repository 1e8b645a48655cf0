package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

// slowStartConfig keeps a worker that is not yet healthy in its first start
// (no health_failed restarts while the test watches), and turns holding off
// (proxy.hold_ms 0): the test looks at what a request finds in the route
// table while no instance serves, which a held request would only see
// after hold_ms.
const slowStartConfig = `
proxy:
  hold_ms: 0
workers:
  port_range_start: 21000
  port_range_end: 21999
  shutdown_grace_period_ms: 500
  restart_delay_ms: 100
  default:
    health_timeout_ms: 30000
    health_interval_ms: 200
    health_probe_timeout_ms: 500
`

// prober requests paths of one server in a loop and sorts the answers.
type prober struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	codes    map[string]map[int]int // path → status → count
	bad      []string               // 404s, and 503s without Retry-After
	unrouted atomic.Int64
}

func startProber(base string, paths ...string) *prober {
	p := &prober{stop: make(chan struct{}), codes: map[string]map[int]int{}}
	for _, path := range paths {
		p.codes[path] = map[int]int{}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			defer c.CloseIdleConnections()
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-p.stop:
					return
				default:
				}
				resp, err := c.Get(base + path)
				if err != nil {
					continue // the server is not up (yet): not an answer
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				p.mu.Lock()
				p.codes[path][resp.StatusCode]++
				switch {
				case resp.StatusCode == 404,
					resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "":
					if len(p.bad) < 10 {
						p.bad = append(p.bad, fmt.Sprintf("%s: %d Retry-After=%q %q", path, resp.StatusCode, resp.Header.Get("Retry-After"), b))
					}
					p.unrouted.Add(1)
				}
				p.mu.Unlock()
			}
		}()
	}
	return p
}

func (p *prober) count(path string, code int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.codes[path][code]
}

func (p *prober) finish() (map[string]map[int]int, []string) {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.codes, p.bad
}

// TestNo404WhileStarting (fault 8): from the moment the server answers, the
// route of every worker it found is in the table. While the first instance
// is not yet healthy — at the first start and after a kill -9 and restart —
// requests get 503 with Retry-After, never 404; then 200.
func TestNo404WhileStarting(t *testing.T) {
	root := newRoot(t, slowStartConfig)
	workers := map[string]string{"index": "/", "api_users": "/api/users/7"}
	for name := range workers {
		install(t, root, name, "v1", "normal")
	}
	hold := func(on bool) {
		for name := range workers {
			f := filepath.Join(root, "workers", name, "unhealthy") // testworker answers /health 503 while it exists
			if on {
				writeFile(t, f, "starting slowly\n")
			} else if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}

	for round := 1; round <= 2; round++ {
		hold(true)
		s := startServer(t, root)
		p := startProber("http://"+s.Addr(), "/", "/api/users/7")
		testrig.WaitFor(t, 20*time.Second, "20 answers to each path while no instance is healthy", func() bool {
			return (p.count("/", 503)+p.count("/", 404) >= 20 && p.count("/api/users/7", 503)+p.count("/api/users/7", 404) >= 20) ||
				p.unrouted.Load() > 100
		})
		for name := range workers {
			if pid, _ := healthyInstance(s, name); pid != 0 {
				t.Fatalf("round %d: %s is healthy while its health check fails", round, name)
			}
		}
		hold(false)
		for name, path := range workers {
			waitBody(t, s.URL(path), "v1 "+name, 20*time.Second)
		}
		codes, bad := p.finish()
		t.Logf("round %d: %v", round, codes)
		if len(bad) > 0 {
			t.Fatalf("round %d: %d answers were 404 (or 503 without Retry-After) while the workers started, e.g.:\n%v", round, p.unrouted.Load(), bad)
		}
		if round == 1 {
			// A crash of the server: the next start replays the log and
			// reaps before anything starts; routes must not 404 meanwhile.
			if err := syscall.Kill(s.PID(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := s.wait(10 * time.Second); err == nil {
				t.Fatal("server killed with SIGKILL exited cleanly")
			}
		}
	}
}
