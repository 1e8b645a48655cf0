package config

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// This file is the schema: which keys each section has, their types and
// ranges. docs/configuration.md and config/*.yaml describe the same keys; keep
// the three in step.

func decodeServerFile(d *fileDecoder, c *Config, body ast.Node) error {
	err := d.top(body, "server, workers and logs", map[string]fieldFunc{
		"server": func(d *fileDecoder, p string, e entry) error {
			return d.section(p, e, serverFields(&c.Server))
		},
		"workers": func(d *fileDecoder, p string, e entry) error {
			return d.section(p, e, workersFields(&c.Workers))
		},
		"logs": func(d *fileDecoder, p string, e entry) error {
			return d.section(p, e, logsFields(&c.Logs))
		},
	})
	if err != nil {
		return err
	}
	w := c.Workers
	if w.PortRangeStart > w.PortRangeEnd {
		return d.errf(d.lineOf("workers.port_range_end", "workers.port_range_start"),
			"workers.port_range_end (%d) must be >= workers.port_range_start (%d)", w.PortRangeEnd, w.PortRangeStart)
	}
	if p := c.Server.Port; p >= w.PortRangeStart && p <= w.PortRangeEnd {
		return d.errf(d.lineOf("server.port", "workers.port_range_start", "workers.port_range_end"),
			"server.port %d lies inside the worker port range %d..%d", p, w.PortRangeStart, w.PortRangeEnd)
	}
	return d.checkInstanceRanges(c)
}

const maxInstances = 64

// checkInstanceKeys rejects a mapping that gives a fixed count and a range.
func (d *fileDecoder) checkInstanceKeys(p string, o WorkerOverride) error {
	if o.Instances == nil || (o.MinInstances == nil && o.MaxInstances == nil) {
		return nil
	}
	key := "min_instances"
	if o.MinInstances == nil {
		key = "max_instances"
	}
	return d.errf(d.lineOf(p+"."+key), "%s: instances (a fixed count) and %s (autoscaling) cannot both be set; use one or the other",
		p, key)
}

// checkInstanceRanges checks min_instances <= max_instances in the settings
// of every route a worker can have. Routes matched by the same set of
// workers.paths keys share their settings, so it is enough to check
// workers.default and each key taken as a route. A wrong range is reported
// at the mapping that made it wrong (one that sets min_instances or
// max_instances), naming where each end came from; of several, the one
// first in the file.
func (d *fileDecoder) checkInstanceRanges(c *Config) error {
	type source struct{ min, max string } // key path each end came from; "" = built-in
	from := func(p string, o WorkerOverride, src *source) {
		if o.Instances != nil {
			src.min, src.max = p+".instances", p+".instances"
		}
		if o.MinInstances != nil {
			src.min = p + ".min_instances"
		}
		if o.MaxInstances != nil {
			src.max = p + ".max_instances"
		}
	}
	var bad error
	badLine := 0
	check := func(p string, o WorkerOverride, s WorkerSettings, src source) {
		if (o.MinInstances == nil && o.MaxInstances == nil) || s.MinInstances <= s.MaxInstances {
			return // a mapping without either key inherits a range checked where it was set
		}
		l := d.lineOf(p+".min_instances", p+".max_instances")
		if bad != nil && l >= badLine {
			return
		}
		note := func(at string) string {
			switch {
			case at == "":
				return ", the default"
			case strings.HasPrefix(at, p+"."):
				return ""
			}
			return ", from " + at
		}
		bad, badLine = d.errf(l, "%s: min_instances (%d%s) must be <= max_instances (%d%s)",
			p, s.MinInstances, note(src.min), s.MaxInstances, note(src.max)), l
	}
	var def source
	from("workers.default", d.defaults, &def)
	check("workers.default", d.defaults, c.Workers.Default, def)
	for k, o := range c.Workers.Paths {
		var keys []string
		for pk := range c.Workers.Paths {
			if RouteHasPrefix(k, pk) {
				keys = append(keys, pk)
			}
		}
		slices.SortFunc(keys, func(a, b string) int { return len(a) - len(b) })
		src := def
		for _, pk := range keys {
			from(fmt.Sprintf("workers.paths[%q]", pk), c.Workers.Paths[pk], &src)
		}
		check(fmt.Sprintf("workers.paths[%q]", k), o, c.ForWorker(k), src)
	}
	return bad
}

func decodeDeploymentFile(d *fileDecoder, c *Config, body ast.Node) error {
	return d.top(body, "deployment and binaries", map[string]fieldFunc{
		"deployment": func(d *fileDecoder, p string, e entry) error {
			return d.section(p, e, deploymentFields(&c.Deployment))
		},
		"binaries": func(d *fileDecoder, p string, e entry) error {
			b := &c.Binaries
			return d.section(p, e, map[string]fieldFunc{
				"format": stringField(&b.Format, checkBinaryFormat),
				"path":   stringField(&b.Path, checkBinaryPath),
			})
		},
	})
}

// top decodes the document body, which must be a mapping (or empty).
func (d *fileDecoder) top(body ast.Node, keys string, fields map[string]fieldFunc) error {
	v, err := d.resolve(body)
	if err != nil {
		return err
	}
	if isNull(v) {
		return nil
	}
	if _, err := d.mapping(v, 0); err != nil {
		if _, ok := err.(*Error); ok {
			return err
		}
		return d.errf(line(v), "expected a mapping with the keys %s, got %s", keys, describe(v))
	}
	return d.section("", entry{line: line(v), value: v}, fields)
}

// lineOf returns the line of the first of the dotted key paths present in
// the file, so that a cross-key error points at a key the user wrote.
func (d *fileDecoder) lineOf(paths ...string) int {
	for _, p := range paths {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return 0
}

func nonNegative(dst *int) fieldFunc { return intField(dst, 0, maxInt32) }
func positive(dst *int) fieldFunc    { return intField(dst, 1, maxInt32) }
func port(dst *int) fieldFunc        { return intField(dst, 1, 65535) }

func serverFields(s *Server) map[string]fieldFunc {
	return map[string]fieldFunc{
		"port":                        port(&s.Port),
		"read_timeout_seconds":        nonNegative(&s.ReadTimeoutSeconds),
		"write_timeout_seconds":       nonNegative(&s.WriteTimeoutSeconds),
		"idle_timeout_seconds":        nonNegative(&s.IdleTimeoutSeconds),
		"header_timeout_seconds":      nonNegative(&s.HeaderTimeoutSeconds),
		"upstream_timeout_seconds":    nonNegative(&s.UpstreamTimeoutSeconds),
		"max_header_bytes":            intField(&s.MaxHeaderBytes, 1024, 1<<20),
		"worker_idle_timeout_seconds": positive(&s.WorkerIdleTimeoutSeconds),
		"worker_idle_conns":           intField(&s.WorkerIdleConns, 1, 1024),
		"deployment_mode":             stringField(&s.DeploymentMode, checkMode),
		"admin_listen": func(d *fileDecoder, p string, e entry) error {
			if err := stringField(&s.AdminListen, checkAdminListen)(d, p, e); err != nil {
				return err
			}
			s.AdminListenSet = !isNull(e.value)
			return nil
		},
		"admin_token": stringField(&s.AdminToken, nil),
		"static": func(d *fileDecoder, p string, e entry) error {
			st := &s.Static
			return d.section(p, e, map[string]fieldFunc{
				"enabled":               boolField(&st.Enabled),
				"url_prefix":            stringField(&st.URLPrefix, checkURLPrefix),
				"cache_max_age_seconds": nonNegative(&st.CacheMaxAgeSeconds),
				"dev_root":              stringField(&st.DevRoot, nonEmpty),
			})
		},
	}
}

func workersFields(w *Workers) map[string]fieldFunc {
	return map[string]fieldFunc{
		"workers_dir":              stringField(&w.WorkersDir, nonEmpty),
		"port_range_start":         port(&w.PortRangeStart),
		"port_range_end":           port(&w.PortRangeEnd),
		"startup_delay_ms":         nonNegative(&w.StartupDelayMs),
		"restart_delay_ms":         nonNegative(&w.RestartDelayMs),
		"shutdown_grace_period_ms": nonNegative(&w.ShutdownGracePeriodMs),
		"restart_backoff_max_ms":   nonNegative(&w.RestartBackoffMaxMs),
		"restart_backoff_reset_ms": nonNegative(&w.RestartBackoffResetMs),
		"drain_timeout_ms":         nonNegative(&w.DrainTimeoutMs),
		"timestamp_check":          timestampCheckField(&w.TimestampCheck),
		"discovery": func(d *fileDecoder, p string, e entry) error {
			ds := &w.Discovery
			return d.section(p, e, map[string]fieldFunc{
				"mode":             stringField(&ds.Mode, oneOf("filesystem")),
				"workers_dir":      stringField(&ds.WorkersDir, nonEmpty),
				"include_patterns": stringsField(&ds.IncludePatterns, checkPattern),
			})
		},
		"default": func(d *fileDecoder, p string, e entry) error {
			var o WorkerOverride
			if err := d.section(p, e, overrideFields(&o)); err != nil {
				return err
			}
			if err := d.checkInstanceKeys(p, o); err != nil {
				return err
			}
			d.defaults = o
			o.apply(&w.Default)
			return nil
		},
		"paths": func(d *fileDecoder, p string, e entry) error {
			if isNull(e.value) {
				return nil
			}
			entries, err := d.mapping(e.value, 0)
			if err != nil {
				if _, ok := err.(*Error); ok {
					return err
				}
				return d.typeErr(p, e, "a mapping of route prefix to settings")
			}
			for _, sub := range entries {
				if msg := checkPathsKey(sub.key); msg != "" {
					return d.errf(sub.line, "%s: %s", p, msg)
				}
				var o WorkerOverride
				sp := fmt.Sprintf("%s[%q]", p, sub.key)
				d.lines[sp] = sub.line
				if err := d.section(sp, sub, overrideFields(&o)); err != nil {
					return err
				}
				if err := d.checkInstanceKeys(sp, o); err != nil {
					return err
				}
				if w.Paths == nil {
					w.Paths = map[string]WorkerOverride{}
				}
				w.Paths[sub.key] = o
			}
			return nil
		},
	}
}

func overrideFields(o *WorkerOverride) map[string]fieldFunc {
	return map[string]fieldFunc{
		"instances":                optIntField(&o.Instances, 1, maxInstances),
		"min_instances":            optIntField(&o.MinInstances, 1, maxInstances),
		"max_instances":            optIntField(&o.MaxInstances, 1, maxInstances),
		"scale_target_inflight":    optIntField(&o.ScaleTargetInflight, 1, maxInt32),
		"scale_down_after_ms":      optIntField(&o.ScaleDownAfterMs, 0, maxInt32),
		"go_max_procs":             optIntField(&o.GoMaxProcs, 0, maxInt32),
		"max_requests":             optInt64Field(&o.MaxRequests, 0, math.MaxInt64),
		"read_timeout_seconds":     optIntField(&o.ReadTimeoutSeconds, 0, maxInt32),
		"write_timeout_seconds":    optIntField(&o.WriteTimeoutSeconds, 0, maxInt32),
		"idle_timeout_seconds":     optIntField(&o.IdleTimeoutSeconds, 0, maxInt32),
		"go_mem_limit":             optStringField(&o.GoMemLimit, checkGoMemLimit),
		"env":                      envField(&o.Env),
		"health_timeout_ms":        optIntField(&o.HealthTimeoutMs, 1, maxInt32),
		"health_interval_ms":       optIntField(&o.HealthIntervalMs, 1, maxInt32),
		"health_probe_timeout_ms":  optIntField(&o.HealthProbeTimeoutMs, 1, maxInt32),
		"health_failure_threshold": optIntField(&o.HealthFailureThreshold, 1, maxInt32),
		"rollback_window_ms":       optIntField(&o.RollbackWindowMs, 0, maxInt32),
		"min_healthy_ms":           optIntField(&o.MinHealthyMs, 0, maxInt32),
		"warmup_urls":              optStringsField(&o.WarmupURLs, checkWarmupURL),
		"canary":                   canaryField(&o.Canary),
	}
}

func timestampCheckField(t *TimestampCheck) fieldFunc {
	return func(d *fileDecoder, p string, e entry) error {
		return d.section(p, e, map[string]fieldFunc{
			"enabled": boolField(&t.Enabled),
			"trigger": stringField(&t.Trigger, oneOf("sighup")),
		})
	}
}

func deploymentFields(dep *Deployment) map[string]fieldFunc {
	return map[string]fieldFunc{
		"mode": func(d *fileDecoder, p string, e entry) error {
			// Empty (e.g. "${DEPLOYMENT_MODE}" with the variable unset) means
			// unset: the default "dev" stays.
			var s string
			if err := stringField(&s, checkMode)(d, p, e); err != nil || s == "" {
				return err
			}
			dep.Mode = s
			return nil
		},
		"dev": func(d *fileDecoder, p string, e entry) error {
			m := &dep.Dev
			return d.section(p, e, map[string]fieldFunc{
				"file_watcher": fileWatcherField(&m.FileWatcher),
				"build":        buildField(&m.Build),
				"resources":    resourcesField(&m.Resources),
			})
		},
		"prod": func(d *fileDecoder, p string, e entry) error {
			m := &dep.Prod
			return d.section(p, e, map[string]fieldFunc{
				"file_watcher":    prodFileWatcherField(&m.FileWatcher),
				"timestamp_check": timestampCheckField(&m.TimestampCheck),
				"build":           buildField(&m.Build),
				"resources":       prodResourcesField(&m.Resources),
			})
		},
		"check_on_sighup": boolField(&dep.CheckOnSighup),
		"on_file_change":  stringsField(&dep.OnFileChange, oneOf(OnChangeRestartServer, OnChangeRestartWorker)),
		"switch":          stringField(&dep.Switch, oneOf(SwitchOneByOne, SwitchTogether)),
	}
}

// prodNoWatch says why a prod key that would watch files is refused.
const prodNoWatch = "prod mode watches no files: a deploy is picked up by SIGHUP or `tqserver reload`, which compare the stamps of binaries, public/, private/ and config; run in dev mode to watch files"

// prodFileWatcherField takes deployment.prod.file_watcher.enabled, which
// must be false; debounce_ms and watch_patterns have no meaning there.
func prodFileWatcherField(f *FileWatcher) fieldFunc {
	return func(d *fileDecoder, p string, e entry) error {
		refuse := func(d *fileDecoder, p string, e entry) error {
			return d.errf(e.line, "%s: not supported: %s; remove the key", p, prodNoWatch)
		}
		return d.section(p, e, map[string]fieldFunc{
			"enabled": func(d *fileDecoder, p string, e entry) error {
				if err := boolField(&f.Enabled)(d, p, e); err != nil {
					return err
				}
				if f.Enabled {
					return d.errf(e.line, "%s: must be false: %s", p, prodNoWatch)
				}
				return nil
			},
			"debounce_ms":    refuse,
			"watch_patterns": refuse,
		})
	}
}

// prodResourcesField is resourcesField where watch_resource_changes must be
// false (nothing watches in prod).
func prodResourcesField(r *Resources) fieldFunc {
	return func(d *fileDecoder, p string, e entry) error {
		return d.section(p, e, map[string]fieldFunc{
			"base_path": stringField(&r.BasePath, nonEmpty),
			"watch_resource_changes": func(d *fileDecoder, p string, e entry) error {
				if err := boolField(&r.WatchResourceChanges)(d, p, e); err != nil {
					return err
				}
				if r.WatchResourceChanges {
					return d.errf(e.line, "%s: must be false: %s (a reload signals the worker when only its public/ or private/ changed)", p, prodNoWatch)
				}
				return nil
			},
		})
	}
}

func fileWatcherField(f *FileWatcher) fieldFunc {
	return func(d *fileDecoder, p string, e entry) error {
		return d.section(p, e, map[string]fieldFunc{
			"enabled":        boolField(&f.Enabled),
			"debounce_ms":    nonNegative(&f.DebounceMs),
			"watch_patterns": stringsField(&f.WatchPatterns, checkPattern),
		})
	}
}

func buildField(b *Build) fieldFunc {
	return func(d *fileDecoder, p string, e entry) error {
		return d.section(p, e, map[string]fieldFunc{
			"output_dir":      stringField(&b.OutputDir, nonEmpty),
			"parallel_builds": positive(&b.ParallelBuilds),
			"ldflags":         stringField(&b.LDFlags, nil),
		})
	}
}

func resourcesField(r *Resources) fieldFunc {
	return func(d *fileDecoder, p string, e entry) error {
		return d.section(p, e, map[string]fieldFunc{
			"base_path":              stringField(&r.BasePath, nonEmpty),
			"watch_resource_changes": boolField(&r.WatchResourceChanges),
		})
	}
}
