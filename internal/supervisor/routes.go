package supervisor

import "github.com/mevdschee/tqserver/internal/proxy"

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
	found, _, err := discover(s.workersDir())
	if err != nil {
		return
	}
	routes := make([]proxy.Route, 0, len(found))
	for _, name := range sortedKeys(found) {
		routes = append(routes, proxy.Route{Prefix: proxy.WorkerRoute(name), Worker: name})
	}
	s.px.Swap(proxy.NewTable(routes))
}
