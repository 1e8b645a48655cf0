package metrics

import (
	"net/http"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/stats"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// Options are the sources a Collector reads. A nil source leaves its
// metrics out.
type Options struct {
	Proxy  interface{ Stats() []proxy.WorkerStats }
	Status func() *supervisor.Status
	Store  *store.Store
}

// BuildBounds are the buckets of tqserver_build_duration_seconds, in seconds.
var BuildBounds = []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300}

// States are the instance states tqserver_instances always reports for a
// worker (0 when none), so an alert on a missing healthy instance has a
// series to fire on.
var States = []string{sm.Starting, sm.Healthy, sm.Draining}

var (
	descRequests = prometheus.NewDesc("tqserver_requests_total",
		"Requests answered, by worker and status class (static files under their worker, no route under worker=\"\").",
		[]string{"worker", "code"}, nil)
	descDuration = prometheus.NewDesc("tqserver_request_duration_seconds",
		"Time from a request's head read to its last byte handed to the client connection.",
		[]string{"worker"}, nil)
	descInflight = prometheus.NewDesc("tqserver_requests_in_flight",
		"Requests in flight on a worker's instances.",
		[]string{"worker"}, nil)
	descHeld = prometheus.NewDesc("tqserver_requests_held",
		"Requests waiting for an instance of a worker now (proxy.hold_ms).",
		[]string{"worker"}, nil)
	descHeldTotal = prometheus.NewDesc("tqserver_requests_held_total",
		"Waits of requests for an instance of a worker (proxy.hold_ms), whatever their outcome; a request held twice counts twice.",
		[]string{"worker"}, nil)
	descInstances = prometheus.NewDesc("tqserver_instances",
		"Live instances by worker and state.",
		[]string{"worker", "state"}, nil)
	descRestarts = prometheus.NewDesc("tqserver_restarts_total",
		"Instances started after the server's own start, by worker and reason (start records whose reason is not startup).",
		[]string{"worker", "reason"}, nil)
	descBuilds = prometheus.NewDesc("tqserver_build_duration_seconds",
		"Dev-mode builds by worker (\"\" is the server) and result (ok, failed), from build_ok/build_failed records.",
		[]string{"worker", "result"}, nil)
	descAppend = prometheus.NewDesc("tqserver_log_append_duration_seconds",
		"Time of each history log append (one fsync'd bbolt transaction).",
		nil, nil)
)

// Collector is a prometheus.Collector over tqserver's own counters.
type Collector struct {
	o      Options
	cancel func()

	mu       sync.Mutex
	restarts map[[2]string]uint64          // {worker, reason}
	builds   map[[2]string]*buildHistogram // {worker, result}
}

// buildHistogram is a plain histogram over BuildBounds (guarded by mu).
type buildHistogram struct {
	counts []uint64 // per bucket of BuildBounds, not cumulative; the last is +Inf
	count  uint64
	sum    float64
}

// New returns a Collector reading o. With a Store it counts restarts and
// builds from the records appended from now on; Close stops that.
func New(o Options) *Collector {
	c := &Collector{o: o, restarts: map[[2]string]uint64{}, builds: map[[2]string]*buildHistogram{}}
	c.cancel = func() {}
	if o.Store != nil {
		c.cancel = o.Store.Observe(c.observe)
	}
	return c
}

// Close stops observing the store. Collect keeps answering with the counts so far.
func (c *Collector) Close() { c.cancel() }

// observe runs on the appending goroutine after each committed record.
func (c *Collector) observe(r store.Record) {
	switch {
	case r.Event == sm.Start && r.Reason != sm.ReasonStartup:
		c.mu.Lock()
		c.restarts[[2]string{r.Worker, r.Reason}]++
		c.mu.Unlock()
	case r.Event == sm.EventBuildOK || r.Event == sm.EventBuildFailed:
		result := "ok"
		if r.Event == sm.EventBuildFailed {
			result = "failed"
		}
		if r.TookMs <= 0 {
			return // an install failure after a good build: no build of its own
		}
		secs := float64(r.TookMs) / 1000
		c.mu.Lock()
		defer c.mu.Unlock()
		k := [2]string{r.Worker, result}
		h := c.builds[k]
		if h == nil {
			h = &buildHistogram{counts: make([]uint64, len(BuildBounds)+1)}
			c.builds[k] = h
		}
		i := sort.SearchFloat64s(BuildBounds, secs) // first bound ≥ secs
		h.counts[i]++
		h.count++
		h.sum += secs
	}
}

// Describe sends the descriptions of every metric Collect sends.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descDuration, descInflight, descHeld, descHeldTotal, descInstances, descRestarts, descBuilds, descAppend} {
		ch <- d
	}
}

// Collect reads every source now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.o.Proxy != nil {
		for _, ws := range c.o.Proxy.Stats() {
			for i, class := range stats.Classes {
				ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(ws.Requests.ByClass[i]), ws.Worker, class)
			}
			h := ws.Requests.Latency
			ch <- prometheus.MustNewConstHistogram(descDuration, h.Count(), h.Sum(), h.Cumulative(), ws.Worker)
			ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(ws.Inflight), ws.Worker)
			ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(ws.Held), ws.Worker)
			ch <- prometheus.MustNewConstMetric(descHeldTotal, prometheus.CounterValue, float64(ws.HeldTotal), ws.Worker)
		}
	}
	if c.o.Status != nil {
		for _, w := range c.o.Status().Workers {
			n := map[string]int{}
			for _, s := range States {
				n[s] = 0
			}
			for _, in := range w.Instances {
				n[in.State]++
			}
			for state, v := range n {
				ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(v), w.Name, state)
			}
		}
	}
	if c.o.Store != nil {
		h := c.o.Store.AppendDurations()
		ch <- prometheus.MustNewConstHistogram(descAppend, h.Count(), h.Sum(), h.Cumulative())
	}
	c.mu.Lock()
	restarts := make(map[[2]string]uint64, len(c.restarts))
	for k, v := range c.restarts {
		restarts[k] = v
	}
	builds := make(map[[2]string]buildHistogram, len(c.builds))
	for k, h := range c.builds {
		builds[k] = buildHistogram{counts: append([]uint64(nil), h.counts...), count: h.count, sum: h.sum}
	}
	c.mu.Unlock()
	for k, v := range restarts {
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(v), k[0], k[1])
	}
	for k, h := range builds {
		cum := make(map[float64]uint64, len(BuildBounds))
		var n uint64
		for i, b := range BuildBounds {
			n += h.counts[i]
			cum[b] = n
		}
		ch <- prometheus.MustNewConstHistogram(descBuilds, h.count, h.sum, cum, k[0], k[1])
	}
}

// Handler serves c with the standard go_* and process_* metrics in the
// Prometheus text format (or what the scraper negotiates).
func Handler(c *Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
