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
func (s *Supervisor) workerEnv(name, route, dir string, ws config.WorkerSettings, port int) []string {
	vars := map[string]string{
		"WORKER_BASE": dir, "WORKER_NAME": name, "WORKER_ROUTE": route,
		"WORKER_PORT": fmt.Sprint(port), "DEPLOYMENT_MODE": s.mode,
	}
	set := map[string]string{}
	for k, v := range ws.Env {
		set[k] = config.ExpandWorkerVars(v, vars)
	}
	set[tqworker.EnvPort] = fmt.Sprint(port)
	set[tqworker.EnvWorkerPort] = fmt.Sprint(port)
	set[tqworker.EnvName] = name
	set[tqworker.EnvRoute] = route
	set[tqworker.EnvBase] = dir
	set[tqworker.EnvMode] = s.mode
	set[tqworker.EnvReadTimeout] = fmt.Sprint(ws.ReadTimeoutSeconds)
	set[tqworker.EnvWriteTimeout] = fmt.Sprint(ws.WriteTimeoutSeconds)
	set[tqworker.EnvIdleTimeout] = fmt.Sprint(ws.IdleTimeoutSeconds)
	if ws.GoMaxProcs > 0 {
		set["GOMAXPROCS"] = fmt.Sprint(ws.GoMaxProcs)
	}
	if ws.GoMemLimit != "" {
		set["GOMEMLIMIT"] = ws.GoMemLimit
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
