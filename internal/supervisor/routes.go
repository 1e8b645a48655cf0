package supervisor

import (
	"os"

	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/proxy"
)

// prepublishRoutes puts the route of every worker found on disk into the
// proxy's table, without backends, before anything else happens: requests
// that arrive while the log is replayed, orphans are reaped and the first
// instances start get 503 with Retry-After, never 404 (CONTRACT.md §1).
// Run discovers again and publishes the table it works with. A discovery
// error is left for Run to report.
func (s *Supervisor) prepublishRoutes() {
	if s.px == nil {
		return
	}
	found, _, err := discover(s.layout())
	if err != nil {
		return
	}
	routes := make([]proxy.Route, 0, len(found))
	for _, name := range sortedKeys(found) {
		routes = append(routes, proxy.Route{Prefix: layout.Route(name), Worker: name})
	}
	s.px.Swap(proxy.NewTable(routes))
}

func (s *Supervisor) publishRoutes() {
	s.routesStale = false
	routes := make([]proxy.Route, 0, len(s.workers))
	for _, w := range s.workers {
		if w.removed {
			continue
		}
		r := proxy.Route{Prefix: w.route, Worker: w.f.name}
		for _, in := range w.serving() {
			r.Backends = append(r.Backends, in.backend)
		}
		routes = append(routes, r)
	}
	s.px.Swap(proxy.NewTable(routes))
}

// publish stores a fresh status snapshot for readers.
func (s *Supervisor) publish() {
	st := &Status{Running: !s.shutting || len(s.insts) > 0, PID: os.Getpid(), Mode: s.mode, Listen: s.listen, Workers: []WorkerStatus{}}
	byWorker := map[string][]InstanceStatus{}
	backends := map[string]*proxy.Backend{}
	for _, name := range sortedKeys(s.insts) {
		in := s.insts[name]
		is := InstanceStatus{Instance: in.name, State: in.m.State(), Port: in.port, Since: in.since, Reason: in.startReason}
		if in.proc != nil {
			is.PID = in.proc.PID
		}
		if in.backend != nil {
			backends[in.name] = in.backend
		}
		byWorker[in.w.f.name] = append(byWorker[in.w.f.name], is)
	}
	for _, name := range sortedKeys(s.workers) {
		w := s.workers[name]
		ins := byWorker[name]
		if ins == nil {
			ins = []InstanceStatus{}
		}
		st.Workers = append(st.Workers, WorkerStatus{Name: name, Route: w.route, Instances: ins})
	}
	s.status.Store(&snapshot{st: st, backends: backends})
}
