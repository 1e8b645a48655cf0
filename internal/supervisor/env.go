package supervisor

import (
	"fmt"
	"os"
	"strings"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/pkg/tqworker"
)

// workerEnv is the server's environment, then the configured env entries,
// then the contract variables, which always win.
func (s *Supervisor) workerEnv(w *worker, port int) []string {
	vars := map[string]string{
		"WORKER_BASE": w.f.dir, "WORKER_NAME": w.f.name, "WORKER_ROUTE": w.route,
		"WORKER_PORT": fmt.Sprint(port), "DEPLOYMENT_MODE": s.mode,
	}
	set := map[string]string{}
	for k, v := range w.settings.Env {
		set[k] = config.ExpandWorkerVars(v, vars)
	}
	set[tqworker.EnvPort] = fmt.Sprint(port)
	set[tqworker.EnvWorkerPort] = fmt.Sprint(port)
	set[tqworker.EnvName] = w.f.name
	set[tqworker.EnvRoute] = w.route
	set[tqworker.EnvBase] = w.f.dir
	set[tqworker.EnvMode] = s.mode
	set[tqworker.EnvReadTimeout] = fmt.Sprint(w.settings.ReadTimeoutSeconds)
	set[tqworker.EnvWriteTimeout] = fmt.Sprint(w.settings.WriteTimeoutSeconds)
	set[tqworker.EnvIdleTimeout] = fmt.Sprint(w.settings.IdleTimeoutSeconds)
	if w.settings.GoMaxProcs > 0 {
		set["GOMAXPROCS"] = fmt.Sprint(w.settings.GoMaxProcs)
	}
	if w.settings.GoMemLimit != "" {
		set["GOMEMLIMIT"] = w.settings.GoMemLimit
	}
	env := make([]string, 0, len(os.Environ())+len(set))
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok {
			continue
		}
		env = append(env, kv)
	}
	for _, k := range sortedKeys(set) {
		env = append(env, k+"="+set[k])
	}
	return env
}
