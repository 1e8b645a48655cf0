package config

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
)

// WorkerSettings: how overrides apply, comparisons, and derived values.

func (o WorkerOverride) apply(s *WorkerSettings) {
	// "instances: N" is the fixed range N..N; min_instances and
	// max_instances each move one end of the inherited range.
	if o.Instances != nil {
		s.Instances, s.MinInstances, s.MaxInstances = *o.Instances, *o.Instances, *o.Instances
	}
	setIf(&s.MinInstances, o.MinInstances)
	setIf(&s.MaxInstances, o.MaxInstances)
	s.Instances = s.MinInstances
	setIf(&s.ScaleTargetInflight, o.ScaleTargetInflight)
	setIf(&s.ScaleDownAfterMs, o.ScaleDownAfterMs)
	setIf(&s.GoMaxProcs, o.GoMaxProcs)
	setIf(&s.MaxRequests, o.MaxRequests)
	setIf(&s.ReadTimeoutSeconds, o.ReadTimeoutSeconds)
	setIf(&s.WriteTimeoutSeconds, o.WriteTimeoutSeconds)
	setIf(&s.IdleTimeoutSeconds, o.IdleTimeoutSeconds)
	setIf(&s.GoMemLimit, o.GoMemLimit)
	setIf(&s.HealthTimeoutMs, o.HealthTimeoutMs)
	setIf(&s.HealthIntervalMs, o.HealthIntervalMs)
	setIf(&s.HealthProbeTimeoutMs, o.HealthProbeTimeoutMs)
	setIf(&s.HealthFailureThreshold, o.HealthFailureThreshold)
	setIf(&s.RollbackWindowMs, o.RollbackWindowMs)
	setIf(&s.MinHealthyMs, o.MinHealthyMs)
	if o.WarmupURLs != nil {
		s.WarmupURLs = slices.Clone(*o.WarmupURLs)
	}
	setIf(&s.Canary, o.Canary)
	if len(o.Env) > 0 && s.Env == nil {
		s.Env = map[string]string{}
	}
	maps.Copy(s.Env, o.Env)
}

func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func (s WorkerSettings) clone() WorkerSettings {
	s.Env = maps.Clone(s.Env)
	if s.Env == nil {
		s.Env = map[string]string{}
	}
	return s
}

// Equal reports whether a and b are the same settings. A nil Env equals an
// empty one.
func (a WorkerSettings) Equal(b WorkerSettings) bool {
	return a.Instances == b.Instances &&
		a.MinInstances == b.MinInstances &&
		a.MaxInstances == b.MaxInstances &&
		a.ScaleTargetInflight == b.ScaleTargetInflight &&
		a.ScaleDownAfterMs == b.ScaleDownAfterMs &&
		a.GoMaxProcs == b.GoMaxProcs &&
		a.MaxRequests == b.MaxRequests &&
		a.ReadTimeoutSeconds == b.ReadTimeoutSeconds &&
		a.WriteTimeoutSeconds == b.WriteTimeoutSeconds &&
		a.IdleTimeoutSeconds == b.IdleTimeoutSeconds &&
		a.GoMemLimit == b.GoMemLimit &&
		a.HealthTimeoutMs == b.HealthTimeoutMs &&
		a.HealthIntervalMs == b.HealthIntervalMs &&
		a.HealthProbeTimeoutMs == b.HealthProbeTimeoutMs &&
		a.HealthFailureThreshold == b.HealthFailureThreshold &&
		a.RollbackWindowMs == b.RollbackWindowMs &&
		a.MinHealthyMs == b.MinHealthyMs &&
		slices.Equal(a.WarmupURLs, b.WarmupURLs) &&
		a.Canary == b.Canary &&
		maps.Equal(a.Env, b.Env)
}

// EqualExceptScaling reports whether a and b differ at most in how many
// instances run (instances, min_instances, max_instances and the autoscaling
// keys): such a change resizes a worker without restarting it.
func (a WorkerSettings) EqualExceptScaling(b WorkerSettings) bool {
	a.Instances, a.MinInstances, a.MaxInstances = b.Instances, b.MinInstances, b.MaxInstances
	a.ScaleTargetInflight, a.ScaleDownAfterMs = b.ScaleTargetInflight, b.ScaleDownAfterMs
	// How the supervisor deploys and judges an instance is no reason to
	// restart one.
	a.RollbackWindowMs, a.MinHealthyMs, a.WarmupURLs, a.Canary = b.RollbackWindowMs, b.MinHealthyMs, b.WarmupURLs, b.Canary
	return a.Equal(b)
}

// Autoscaled reports whether the instance count follows the load
// (max_instances above min_instances).
func (s WorkerSettings) Autoscaled() bool { return s.MaxInstances > s.MinInstances }

// InstanceRange is the range the instance count stays in: min_instances..
// max_instances when autoscaled, else instances..instances (never below 1).
func (s WorkerSettings) InstanceRange() (lo, hi int) {
	if !s.Autoscaled() {
		n := max(s.Instances, 1)
		return n, n
	}
	return max(s.MinInstances, 1), s.MaxInstances
}

// ClampInstances returns n moved into InstanceRange.
func (s WorkerSettings) ClampInstances(n int) int {
	lo, hi := s.InstanceRange()
	return max(min(n, hi), lo)
}

// ScaleDownAfter is scale_down_after_ms as a duration.
func (s WorkerSettings) ScaleDownAfter() time.Duration { return ms(s.ScaleDownAfterMs) }

// ExpandedEnv returns s.Env with the per-worker variables (${WORKER_BASE},
// ${WORKER_NAME}, ${WORKER_ROUTE}, ${WORKER_PORT}) expanded from vars.
func (s WorkerSettings) ExpandedEnv(vars map[string]string) map[string]string {
	out := make(map[string]string, len(s.Env))
	for k, v := range s.Env {
		out[k] = ExpandWorkerVars(v, vars)
	}
	return out
}

func ms(n int) time.Duration      { return time.Duration(n) * time.Millisecond }
func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

// ReadTimeout is read_timeout_seconds as a duration (0 = no timeout).
func (s WorkerSettings) ReadTimeout() time.Duration { return seconds(s.ReadTimeoutSeconds) }

// WriteTimeout is write_timeout_seconds as a duration (0 = no timeout).
func (s WorkerSettings) WriteTimeout() time.Duration { return seconds(s.WriteTimeoutSeconds) }

// IdleTimeout is idle_timeout_seconds as a duration (0 = no timeout).
func (s WorkerSettings) IdleTimeout() time.Duration { return seconds(s.IdleTimeoutSeconds) }

// HealthTimeout is how long a new instance may take to become healthy.
func (s WorkerSettings) HealthTimeout() time.Duration { return ms(s.HealthTimeoutMs) }

// HealthInterval is the period of the health probe of a running instance.
func (s WorkerSettings) HealthInterval() time.Duration { return ms(s.HealthIntervalMs) }

// HealthProbeTimeout bounds one GET /health.
func (s WorkerSettings) HealthProbeTimeout() time.Duration { return ms(s.HealthProbeTimeoutMs) }

// ChangedKeys names the workers.default / workers.paths keys whose values
// differ between a and b, in field order (env entries as env.NAME), for the
// record that says why a worker restarted.
func (a WorkerSettings) ChangedKeys(b WorkerSettings) []string {
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		f := va.Type().Field(i)
		if f.Name == "Env" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, snakeCase(f.Name))
		}
	}
	keys := map[string]bool{}
	for k := range a.Env {
		keys[k] = true
	}
	for k := range b.Env {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		av, aok := a.Env[k]
		bv, bok := b.Env[k]
		if av != bv || aok != bok {
			out = append(out, "env."+k)
		}
	}
	return out
}

// snakeCase turns a field name into its key: MaxRequests → max_requests,
// WarmupURLs → warmup_urls (a run of capitals is one word).
func snakeCase(s string) string {
	var b strings.Builder
	prevLower := false
	for _, r := range s {
		if unicode.IsUpper(r) {
			if prevLower {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
			prevLower = false
		} else {
			prevLower = true
		}
		b.WriteRune(r)
	}
	return b.String()
}
