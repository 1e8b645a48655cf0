package supervisor

import (
	"os"
	"slices"
	"strings"

	"github.com/mevdschee/tqserver/internal/core"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// prepublishRoutes puts the route of every worker found on disk into the
// proxy's table, without backends, before anything else happens: requests
// that arrive while the log is replayed, orphans are reaped and the first
// instances start get 503 with Retry-After, never 404 (CONTRACT.md §1).
// Run discovers again and its first step publishes the table it works with.
// A discovery error is left for Run to report.
func (s *Supervisor) prepublishRoutes() {
	if s.px == nil {
		return
	}
	found, _, err := discover(s.layout())
	if err != nil {
		return
	}
	names := map[string]bool{}
	for name := range found {
		names[name] = true
	}
	if s.mode == "dev" {
		// Sources that have not built yet: 503 as well (dev, item 6).
		srcs, _, _ := s.layout().Discover(layout.Sources)
		for _, f := range srcs {
			names[f.Name] = true
		}
	}
	routes := make([]proxy.Route, 0, len(names))
	for _, name := range sortedKeys(names) {
		routes = append(routes, proxy.Route{Prefix: layout.Route(name), Worker: name})
	}
	s.px.Swap(proxy.NewTable(routes))
}

// publish stores a fresh status snapshot for readers.
func (s *Supervisor) publish() {
	views := s.core.Workers()
	st := &Status{Running: !s.core.Done(), PID: os.Getpid(), Mode: s.mode, Listen: s.listen, Workers: []WorkerStatus{}}
	backends := map[string]*proxy.Backend{}
	inCore := map[string]bool{}
	for _, w := range views {
		inCore[w.Name] = true
	}
	// A worker on disk whose start could not be recorded yet: known, no instance.
	for _, name := range sortedKeys(s.known) {
		if !inCore[name] {
			views = append(views, core.WorkerView{Name: name, Route: layout.Route(name)})
		}
	}
	slices.SortFunc(views, func(a, b core.WorkerView) int { return strings.Compare(a.Name, b.Name) })
	for _, w := range views {
		ws := WorkerStatus{Name: w.Name, Route: w.Route, Binary: w.Bin, Previous: w.Previous, Instances: []InstanceStatus{}}
		for _, sl := range w.Slots {
			ws.Slots = append(ws.Slots, string(sl))
		}
		for _, in := range w.Instances {
			if in.State == sm.Stopped {
				continue // stopped, its exit not seen yet
			}
			is := InstanceStatus{Instance: in.Instance, State: in.State, PID: in.PID, Port: in.Port, Since: in.Since, Reason: in.Reason}
			if b := s.x.backends[in.Instance]; b != nil {
				backends[in.Instance] = b
			}
			ws.Instances = append(ws.Instances, is)
		}
		if w.Removed && len(ws.Instances) == 0 {
			continue
		}
		st.Workers = append(st.Workers, ws)
	}
	s.status.Store(&snapshot{st: st, backends: backends})
}
