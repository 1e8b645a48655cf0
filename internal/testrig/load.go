package testrig

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxSamples bounds the memory of one Load's samples.
const maxSamples = 5_000_000

// Sample is one request of a Load: when it was sent and how long it took.
type Sample struct {
	At  time.Time
	Dur time.Duration
}

// Load is clients keep-alive HTTP clients, each sending GET url in a loop
// (net/http's client: it retries an idempotent request on a reused
// connection the server closed before answering, as browsers do) until
// Finish, bounded by maxRequests attempts in total and by maxDur. A request
// fails on a transport error or a status other than 200.
type Load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	samples    []Sample
	stop       chan struct{}
	wg         sync.WaitGroup
	last       atomic.Value // string: the last 200 body seen
	watch      atomic.Pointer[bodyWatch]
	finished   sync.Once
}

// bodyWatch is closed by the first 200 whose body starts with prefix.
type bodyWatch struct {
	prefix string
	seen   chan struct{}
	once   sync.Once
}

// StartLoad starts the clients and returns at once.
func StartLoad(url string, clients int, maxRequests int64, maxDur time.Duration) *Load {
	l := &Load{stop: make(chan struct{})}
	end := time.Now().Add(maxDur)
	var total atomic.Int64
	for range clients {
		l.wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			for total.Add(1) <= maxRequests && time.Now().Before(end) {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(c, url)
			}
		})
	}
	return l
}

func (l *Load) one(c *http.Client, url string) {
	t0 := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		l.fail(err.Error())
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	l.mu.Lock()
	if len(l.samples) < maxSamples {
		l.samples = append(l.samples, Sample{t0, time.Since(t0)})
	}
	l.mu.Unlock()
	if err != nil || resp.StatusCode != http.StatusOK {
		l.fail(fmt.Sprintf("%d %v %q", resp.StatusCode, err, b))
		return
	}
	l.ok.Add(1)
	l.last.Store(string(b))
	if w := l.watch.Load(); w != nil && strings.HasPrefix(string(b), w.prefix) {
		w.once.Do(func() { close(w.seen) })
	}
}

func (l *Load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, msg)
	}
	l.mu.Unlock()
}

// Await returns a channel closed as soon as a client gets a 200 whose body
// starts with prefix: waiting for it costs no requests of its own. It
// replaces any earlier watch.
func (l *Load) Await(prefix string) <-chan struct{} {
	w := &bodyWatch{prefix: prefix, seen: make(chan struct{})}
	l.watch.Store(w)
	return w.seen
}

// Last is the body of the latest 200 ("" before the first).
func (l *Load) Last() string {
	b, _ := l.last.Load().(string)
	return b
}

// Failed is how many requests failed so far.
func (l *Load) Failed() int64 { return l.failed.Load() }

// Finish stops the clients, waits for them, and returns the successful and
// failed requests and the first ten failures. It may be called again.
func (l *Load) Finish() (ok, failed int64, errs []string) {
	l.finished.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), slices.Clone(l.errs)
}

// Samples is a copy of every request's start and duration so far (up to
// five million).
func (l *Load) Samples() []Sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.samples)
}

// P99 is the 99th percentile duration of the samples sent at a time for
// which in reports true, and how many those were.
func P99(samples []Sample, in func(time.Time) bool) (time.Duration, int) {
	var d []time.Duration
	for _, s := range samples {
		if in(s.At) {
			d = append(d, s.Dur)
		}
	}
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*99/100], len(d)
}
