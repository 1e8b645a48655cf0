package main

import (
	"fmt"
	"path/filepath"
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// The several-instances part: the same CPU-bound load (GET /work?n=…, each
// request spinning the CPU) through three servers whose index worker runs
// with go_max_procs 1 as one instance, as a fixed -instances N, and
// autoscaled from 1 to N. Rounds interleave the three, like the throughput
// rounds, in an order that rotates, so background noise hits each alike.
// Before the rounds the autoscaled server is loaded from cold and the time
// until it serves with N instances is measured; the rounds follow closer
// together than its scale_down_after_ms, so it stays scaled up for them.

// instancesConfig is the server.yaml of the i-th server: its own port range
// (the three start at once and must not pick the same free port) and the
// index worker's instance settings.
func instancesConfig(i int, instances string) string {
	return fmt.Sprintf("workers:\n  port_range_start: %d\n  port_range_end: %d\n  default:\n    go_max_procs: 1\n%s",
		21000+1000*i, 21999+1000*i, instances)
}

type instTarget struct {
	name string
	cfg  string
	srv  *server
	res  *result
}

func (b *bench) instances(rep *report) error {
	o := b.o
	n := o.instances
	path := fmt.Sprintf("/work?n=%d", o.workN)
	ts := []*instTarget{
		{name: "1", cfg: "    instances: 1\n"},
		{name: fmt.Sprint(n), cfg: fmt.Sprintf("    instances: %d\n", n)},
		{name: "auto", cfg: fmt.Sprintf("    min_instances: 1\n    max_instances: %d\n    scale_target_inflight: %d\n    scale_down_after_ms: 600000\n",
			n, o.scaleTarget)},
	}
	for i, t := range ts {
		root, err := newAppRootConfig(filepath.Join(b.dir, "instances", fmt.Sprint(i)), []string{"index"}, b.helloV1, instancesConfig(i, t.cfg))
		if err != nil {
			return err
		}
		srv, err := startServer(b.tqBin, root)
		if err != nil {
			return err
		}
		b.servers = append(b.servers, srv)
		t.srv, t.res = srv, &result{}
	}
	want := []int{1, n, 1}
	for i, t := range ts {
		if _, err := t.srv.waitInstances("index", want[i], 60*time.Second); err != nil {
			return fmt.Errorf("instances %s: %w", t.name, err)
		}
	}

	// Cold start of the autoscaled server under the load.
	auto := ts[2]
	stop := make(chan struct{})
	done := make(chan *result, 1)
	t0 := time.Now()
	go func() { done <- load(auto.srv.Addr(), path, o.conns, 5*time.Minute, stop) }()
	_, werr := auto.srv.waitInstances("index", n, 60*time.Second)
	scaleUp := time.Since(t0)
	close(stop)
	<-done
	if werr != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("autoscaled worker did not reach %d instances under load within 60s: %s", n, firstLine(werr.Error())))
	} else {
		v := ms(scaleUp)
		rep.AutoScaleUpMs = &v
		b.logf("autoscaled worker: %d instances %s after the load began", n, scaleUp.Round(time.Millisecond))
	}

	for _, t := range ts[:2] {
		if o.warmup > 0 {
			load(t.srv.Addr(), path, o.conns, o.warmup, nil)
		}
	}
	for r := range o.rounds {
		// The order rotates, so no server always runs right after another.
		for i := range ts {
			t := ts[(r+i)%len(ts)]
			res := load(t.srv.Addr(), path, o.conns, o.duration, nil)
			b.logf("round %d instances %-4s %8.0f req/s p50 %.3f ms p99 %.3f ms failed %d", r+1, t.name, res.rps(), res.h.quantileMs(0.5), res.h.quantileMs(0.99), res.failed)
			t.res.add(res)
		}
	}
	for _, t := range ts[1:] {
		st, err := t.srv.status()
		if err != nil {
			continue
		}
		if t == auto {
			h, _ := st.instancesOf("index")
			rep.AutoInstances = &h
		}
		b.logf("instances %s: requests served per instance: %v", t.name, st.served("index"))
	}
	rps := func(t *instTarget) float64 { return t.res.rps() }
	rep.Instances = n
	rep.WorkN = o.workN
	rep.WorkRPS1, rep.WorkRPSN, rep.WorkRPSAuto = rps(ts[0]), rps(ts[1]), rps(ts[2])
	if rep.WorkRPS1 > 0 {
		a, c := rep.WorkRPSN/rep.WorkRPS1, rep.WorkRPSAuto/rep.WorkRPS1
		rep.WorkNOver1, rep.WorkAutoOver1 = &a, &c
	}
	rep.WorkP99Ms1, rep.WorkP99MsN, rep.WorkP99MsAuto = ts[0].res.h.quantileMs(0.99), ts[1].res.h.quantileMs(0.99), ts[2].res.h.quantileMs(0.99)
	for _, t := range ts {
		rep.WorkFailed += t.res.failed
		if t.res.firstErr != "" {
			rep.Notes = append(rep.Notes, fmt.Sprintf("instances %s: %d requests failed (first: %s)", t.name, t.res.failed, t.res.firstErr))
		}
		t.srv.Stop(30 * time.Second)
	}
	return nil
}

// instancesOf counts the named worker's healthy instances and the others
// (starting, draining).
func (st *statusJSON) instancesOf(name string) (healthy, other int) {
	for _, w := range st.Workers {
		if w.Name != name {
			continue
		}
		for _, in := range w.Instances {
			if in.State == sm.Healthy {
				healthy++
			} else {
				other++
			}
		}
	}
	return healthy, other
}

// served lists how many requests each live instance of the worker served.
func (st *statusJSON) served(name string) map[string]int64 {
	out := map[string]int64{}
	for _, w := range st.Workers {
		if w.Name == name {
			for _, in := range w.Instances {
				out[in.Instance] = in.Served
			}
		}
	}
	return out
}

// waitInstances polls status until the worker serves with exactly want
// healthy instances and nothing starting or draining.
func (s *server) waitInstances(name string, want int, timeout time.Duration) (*statusJSON, error) {
	return s.pollStatus(s.status, 50*time.Millisecond, timeout, func(st *statusJSON) (bool, string) {
		h, other := st.instancesOf(name)
		return st.Running && h == want && other == 0, fmt.Sprintf("%d healthy, %d other instances of %s", h, other, name)
	})
}
