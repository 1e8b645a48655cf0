package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// writeRoot makes an app root holding the given files (relative path -> content).
func writeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func mustLoad(t *testing.T, files map[string]string) *Config {
	t.Helper()
	c, err := Load(writeRoot(t, files))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func TestMissingFilesGiveDefaults(t *testing.T) {
	c, err := Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("Load of an empty root:\n got %+v\nwant %+v", c, Default())
	}
	if c.Files != nil {
		t.Fatalf("Files = %v, want none", c.Files)
	}
	// A root that does not exist at all is the same: nothing to read.
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultIsFreshEachCall(t *testing.T) {
	a := Default()
	a.Workers.Default.Env["X"] = "1"
	a.Workers.Discovery.IncludePatterns[0] = "changed"
	a.Workers.Paths["/x"] = WorkerOverride{}
	b := Default()
	if len(b.Workers.Default.Env) != 0 || b.Workers.Discovery.IncludePatterns[0] != "*/src/main.go" || len(b.Workers.Paths) != 0 {
		t.Fatal("Default() shares maps or slices between calls")
	}
}

func TestEmptyAndCommentOnlyFiles(t *testing.T) {
	for _, tc := range [][2]string{
		{"", ""}, {"\n\n", "\n"}, {"# nothing here\n", "# nor here"}, {"---\n", "---\n...\n"},
		{"server:\nworkers:\n", "deployment:\nbinaries:\n"}, {"~\n", "null\n"},
		{"server: {}\nworkers: {paths: {}}\n", "deployment: {dev: {}, prod: {}}\nbinaries: {}\n"},
	} {
		content := tc[0]
		c := mustLoad(t, map[string]string{ServerFile: tc[0], DeploymentFile: tc[1]})
		want := Default()
		want.Files = []string{ServerFile, DeploymentFile}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("content %q: got %+v", content, c)
		}
	}
}

// The shipped examples document every key with its default value; they must
// load to exactly Default() plus the /api override they show.
func TestExampleFilesLoadToDefault(t *testing.T) {
	c, err := Load(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Workers.Paths["/api"] = WorkerOverride{GoMaxProcs: ptr(2), MaxRequests: ptr[int64](5000)}
	want.Files = []string{ServerFile, DeploymentFile}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("examples:\n got %+v\nwant %+v", c, want)
	}
}

const fullServer = `server:
  port: 8081
  read_timeout_seconds: 31
  write_timeout_seconds: 32
  idle_timeout_seconds: 121
  header_timeout_seconds: 11
  upstream_timeout_seconds: 61
  max_header_bytes: 4096
  worker_idle_timeout_seconds: 62
  worker_idle_conns: 17
  deployment_mode: prod
  admin_listen: 0.0.0.0:18081
  admin_token: s3cret
  static:
    enabled: false
    url_prefix: /assets
    cache_max_age_seconds: 60
    dev_root: apps
workers:
  workers_dir: apps
  port_range_start: 10000
  port_range_end: 10100
  startup_delay_ms: 1
  restart_delay_ms: 2
  shutdown_grace_period_ms: 3
  restart_backoff_max_ms: 4
  restart_backoff_reset_ms: 5
  drain_timeout_ms: 6
  timestamp_check:
    enabled: false
    trigger: sighup
  discovery:
    mode: filesystem
    workers_dir: apps
    include_patterns: ["*/src/main.go", "*/cmd/main.go"]
  default:
    instances: 3
    go_max_procs: 4
    max_requests: 100
    read_timeout_seconds: 7
    write_timeout_seconds: 8
    idle_timeout_seconds: 9
    go_mem_limit: 512MiB
    env:
      A: "1"
      B: ${WORKER_BASE}/x
    health_timeout_ms: 11
    health_interval_ms: 12
    health_probe_timeout_ms: 13
    health_failure_threshold: 14
    rollback_window_ms: 15000
    min_healthy_ms: 250
    warmup_urls: ["/", "/api/ping?x=1"]
    canary: {weight_percent: 25, duration_ms: 30000, max_error_rate: 0.05, max_p99_ratio: 1.5}
    scale_target_inflight: 15
    scale_down_after_ms: 16
  paths:
    "/api":
      min_instances: 2
      max_instances: 6
      scale_target_inflight: 28
      scale_down_after_ms: 29
      go_max_procs: 2
      max_requests: 5000
      read_timeout_seconds: 21
      write_timeout_seconds: 22
      idle_timeout_seconds: 23
      go_mem_limit: 1GiB
      env: {C: "3"}
      health_timeout_ms: 24
      health_interval_ms: 25
      health_probe_timeout_ms: 26
      health_failure_threshold: 27
      rollback_window_ms: 0
      min_healthy_ms: 500
      warmup_urls: []
logs:
  dir: var/log
  max_size_mb: 10
  max_files: 3
  worker_lines_per_second: 50
  worker_burst: 60
`

const fullDeployment = `deployment:
  mode: prod
  check_on_sighup: false
  on_file_change: [restart_affected_worker, restart_server]
  switch: together
  dev:
    file_watcher:
      enabled: false
      debounce_ms: 50
      watch_patterns: [a/*.go]
    build:
      output_dir: out
      parallel_builds: 2
      ldflags: -X main.v=1
    resources:
      base_path: ./apps/
      watch_resource_changes: false
  prod:
    file_watcher:
      enabled: false
    timestamp_check:
      enabled: false
      trigger: sighup
    build:
      parallel_builds: 3
      ldflags: ""
    resources:
      base_path: apps
      watch_resource_changes: false
binaries:
  format: "{worker_name}.bin"
  path: "apps/{worker_name}/out/{worker_name}.bin"
`

func fullWant() *Config {
	return &Config{
		Server: Server{Port: 8081, ReadTimeoutSeconds: 31, WriteTimeoutSeconds: 32, IdleTimeoutSeconds: 121,
			HeaderTimeoutSeconds: 11, UpstreamTimeoutSeconds: 61, MaxHeaderBytes: 4096, WorkerIdleTimeoutSeconds: 62, WorkerIdleConns: 17,
			DeploymentMode: "prod", AdminListen: "0.0.0.0:18081", AdminListenSet: true, AdminToken: "s3cret",
			Static: Static{Enabled: false, URLPrefix: "/assets", CacheMaxAgeSeconds: 60, DevRoot: "apps"}},
		Workers: Workers{WorkersDir: "apps", PortRangeStart: 10000, PortRangeEnd: 10100,
			StartupDelayMs: 1, RestartDelayMs: 2, ShutdownGracePeriodMs: 3,
			RestartBackoffMaxMs: 4, RestartBackoffResetMs: 5, DrainTimeoutMs: 6,
			TimestampCheck: TimestampCheck{Enabled: false, Trigger: "sighup"},
			Discovery:      Discovery{Mode: "filesystem", WorkersDir: "apps", IncludePatterns: []string{"*/src/main.go", "*/cmd/main.go"}},
			Default: WorkerSettings{Instances: 3, MinInstances: 3, MaxInstances: 3, ScaleTargetInflight: 15, ScaleDownAfterMs: 16, GoMaxProcs: 4, MaxRequests: 100, ReadTimeoutSeconds: 7, WriteTimeoutSeconds: 8,
				IdleTimeoutSeconds: 9, GoMemLimit: "512MiB", Env: map[string]string{"A": "1", "B": "${WORKER_BASE}/x"},
				HealthTimeoutMs: 11, HealthIntervalMs: 12, HealthProbeTimeoutMs: 13, HealthFailureThreshold: 14,
				RollbackWindowMs: 15000, MinHealthyMs: 250, WarmupURLs: []string{"/", "/api/ping?x=1"},
				Canary: Canary{WeightPercent: 25, DurationMs: 30000, MaxErrorRate: 0.05, MaxP99Ratio: 1.5}},
			Paths: map[string]WorkerOverride{"/api": {
				MinInstances: ptr(2), MaxInstances: ptr(6), ScaleTargetInflight: ptr(28), ScaleDownAfterMs: ptr(29),
				GoMaxProcs: ptr(2), MaxRequests: ptr[int64](5000), ReadTimeoutSeconds: ptr(21), WriteTimeoutSeconds: ptr(22),
				IdleTimeoutSeconds: ptr(23), GoMemLimit: ptr("1GiB"), Env: map[string]string{"C": "3"},
				HealthTimeoutMs: ptr(24), HealthIntervalMs: ptr(25), HealthProbeTimeoutMs: ptr(26), HealthFailureThreshold: ptr(27),
				RollbackWindowMs: ptr(0), MinHealthyMs: ptr(500), WarmupURLs: &[]string{}}},
		},
		Deployment: Deployment{Mode: "prod", CheckOnSighup: false,
			OnFileChange: []string{OnChangeRestartWorker, OnChangeRestartServer},
			Switch:       SwitchTogether,
			Dev: DevSettings{
				FileWatcher: FileWatcher{Enabled: false, DebounceMs: 50, WatchPatterns: []string{"a/*.go"}},
				Build:       Build{OutputDir: "out", ParallelBuilds: 2, LDFlags: "-X main.v=1"},
				Resources:   Resources{BasePath: "./apps/", WatchResourceChanges: false}},
			Prod: ProdSettings{
				FileWatcher:    FileWatcher{Enabled: false, DebounceMs: 100, WatchPatterns: []string{}},
				TimestampCheck: TimestampCheck{Enabled: false, Trigger: "sighup"},
				Build:          Build{OutputDir: "workers", ParallelBuilds: 3, LDFlags: ""},
				Resources:      Resources{BasePath: "apps", WatchResourceChanges: false}},
		},
		Binaries: Binaries{Format: "{worker_name}.bin", Path: "apps/{worker_name}/out/{worker_name}.bin"},
		Logs:     Logs{Dir: "var/log", MaxSizeMB: 10, MaxFiles: 3, WorkerLinesPerSecond: 50, WorkerBurst: 60},
		Files:    []string{ServerFile, DeploymentFile},
	}
}

func TestFullFilesRoundTrip(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: fullServer, DeploymentFile: fullDeployment})
	if want := fullWant(); !reflect.DeepEqual(c, want) {
		t.Fatalf("full files:\n got %+v\nwant %+v", c, want)
	}
}

// TestFullFilesSetEveryField guards the round-trip test itself: every leaf
// field of Config must differ from its default there, so a key that the
// schema forgot (or a field added without a key) fails here.
func TestFullFilesSetEveryField(t *testing.T) {
	var same []string
	diffLeaves(reflect.ValueOf(*fullWant()), reflect.ValueOf(*Default()), "", &same)
	// Defaults that the full files deliberately repeat: only these values exist.
	allowed := []string{
		"Workers.TimestampCheck.Trigger", "Workers.Discovery.Mode",
		"Deployment.Prod.TimestampCheck.Trigger", "Deployment.Prod.Build.LDFlags",
		// Prod watches nothing: these keys are refused or must stay false.
		"Deployment.Prod.FileWatcher.Enabled", "Deployment.Prod.FileWatcher.DebounceMs",
		"Deployment.Prod.FileWatcher.WatchPatterns", "Deployment.Prod.Resources.WatchResourceChanges",
		// Only {output_dir}/{name}/bin can be written; the full files move
		// binaries to apps/{name}/out instead.
		"Deployment.Prod.Build.OutputDir",
	}
	for _, s := range same {
		if !slices.Contains(allowed, s) && s != "Deployment.Prod.Build.LDFlags" {
			t.Errorf("%s equals its default in the full test files", s)
		}
	}
}

func diffLeaves(a, b reflect.Value, path string, same *[]string) {
	if a.Kind() == reflect.Struct {
		for i := 0; i < a.NumField(); i++ {
			name := a.Type().Field(i).Name
			if name == "Files" {
				continue
			}
			diffLeaves(a.Field(i), b.Field(i), strings.TrimPrefix(path+"."+name, "."), same)
		}
		return
	}
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		*same = append(*same, path)
	}
}

// keyPaths lists the dotted key paths of a YAML file, with workers.paths
// entries written as "*".
func keyPaths(t *testing.T, src string) []string {
	t.Helper()
	f, err := parser.ParseBytes([]byte(src), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n ast.Node, path string)
	walk = func(n ast.Node, path string) {
		m, ok := n.(*ast.MappingNode)
		if !ok {
			return
		}
		for _, mv := range m.Values {
			k := mv.Key.GetToken().Value
			if strings.HasSuffix(path, "workers.paths") || strings.HasSuffix(path, ".env") {
				k = "*"
			}
			p := strings.TrimPrefix(path+"."+k, ".")
			out = append(out, p)
			walk(mv.Value, p)
		}
	}
	for _, d := range f.Docs {
		walk(d.Body, "")
	}
	sort.Strings(out)
	return out
}

// The examples show every key the full test files use, and the reference
// documents every key.
func TestExamplesAndDocsCoverEveryKey(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ example, full string }{
		{ServerFile, fullServer},
		{DeploymentFile, fullDeployment},
	} {
		ex, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(tc.example)))
		if err != nil {
			t.Fatal(err)
		}
		// Keys that cannot be set next to a key the example sets
		// (min_instances next to instances) are shown commented out, in place.
		exKeys := keyPaths(t, uncommentKeys(string(ex)))
		fullKeys := keyPaths(t, tc.full)
		// The example shows env as {} and the /api override with two keys only;
		// every key of default may be used there.
		for _, k := range fullKeys {
			probe := k
			if strings.HasPrefix(k, "workers.paths.*.") {
				probe = "workers.default." + strings.TrimPrefix(k, "workers.paths.*.")
			}
			if strings.HasSuffix(probe, "env.*") || probe == "workers.paths.*" {
				continue
			}
			if !slices.Contains(exKeys, probe) {
				t.Errorf("%s does not show key %s", tc.example, probe)
			}
			if !strings.Contains(string(docs), "`"+probe+"`") {
				t.Errorf("docs/configuration.md does not document `%s`", probe)
			}
		}
	}
}

// uncommentKeys turns lines like "    # min_instances: 1" into keys.
func uncommentKeys(src string) string {
	return commentedKey.ReplaceAllString(src, "$1$2")
}

var commentedKey = regexp.MustCompile(`(?m)^( *)# ([a-z][a-z0-9_]*: [^ #]+)$`)

func TestNullValueMeansDefault(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: `server:
  port:
  deployment_mode:
  static:
workers:
  discovery:
    include_patterns:
  default:
    env:
    go_mem_limit: ~
  paths:
    /api:
`})
	want := Default()
	want.Workers.Paths["/api"] = WorkerOverride{}
	want.Files = []string{ServerFile}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v", c)
	}
}

func TestEnvValues(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: `workers:
  default:
    env:
      S: text
      N: 42
      F: 1.5
      B: true
      E:
      Q: ""
`})
	want := map[string]string{"S": "text", "N": "42", "F": "1.5", "B": "true", "E": "", "Q": ""}
	if !reflect.DeepEqual(c.Workers.Default.Env, want) {
		t.Fatalf("env = %v", c.Workers.Default.Env)
	}
}

func TestStringFieldsTakeScalarText(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: "workers:\n  default:\n    go_mem_limit: 1073741824\n"})
	if got := c.Workers.Default.GoMemLimit; got != "1073741824" {
		t.Fatalf("go_mem_limit = %q", got)
	}
}

func TestListsReplaceDefaults(t *testing.T) {
	c := mustLoad(t, map[string]string{DeploymentFile: "deployment:\n  dev:\n    file_watcher:\n      watch_patterns: []\n"})
	if got := c.Deployment.Dev.FileWatcher.WatchPatterns; got == nil || len(got) != 0 {
		t.Fatalf("watch_patterns = %#v, want empty list", got)
	}
}

func TestAnchorsAliasesAndMergeKeys(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: `workers:
  default: &base
    go_max_procs: 3
    env: {A: "1"}
  paths:
    /api:
      <<: *base
      max_requests: 10
    /admin:
      <<: [*base]
      go_max_procs: 5
`})
	api, admin := c.Workers.Paths["/api"], c.Workers.Paths["/admin"]
	if *api.GoMaxProcs != 3 || *api.MaxRequests != 10 || api.Env["A"] != "1" {
		t.Errorf("/api = %+v", api)
	}
	if *admin.GoMaxProcs != 5 {
		t.Errorf("/admin go_max_procs = %d, want the explicit 5", *admin.GoMaxProcs)
	}
}

func TestDeploymentModeEmptyMeansUnset(t *testing.T) {
	t.Setenv("DEPLOYMENT_MODE", "")
	c := mustLoad(t, map[string]string{
		ServerFile:     "server:\n  deployment_mode: \"${DEPLOYMENT_MODE}\"\n",
		DeploymentFile: "deployment:\n  mode: \"${DEPLOYMENT_MODE}\"\n",
	})
	if c.Server.DeploymentMode != "" || c.Deployment.Mode != "dev" {
		t.Fatalf("modes = %q, %q", c.Server.DeploymentMode, c.Deployment.Mode)
	}
	t.Setenv("DEPLOYMENT_MODE", "prod")
	c = mustLoad(t, map[string]string{
		ServerFile:     "server:\n  deployment_mode: ${DEPLOYMENT_MODE}\n",
		DeploymentFile: "deployment:\n  mode: ${DEPLOYMENT_MODE:-dev}\n",
	})
	if c.Server.DeploymentMode != "prod" || c.Deployment.Mode != "prod" {
		t.Fatalf("modes = %q, %q", c.Server.DeploymentMode, c.Deployment.Mode)
	}
}

func TestGoMemLimitSyntax(t *testing.T) {
	for _, ok := range []string{"", "off", "0", "1024", "1024B", "1KiB", "512MiB", "2GiB", "1TiB", "8388607TiB"} {
		if msg := checkGoMemLimit(ok); msg != "" {
			t.Errorf("%q rejected: %s", ok, msg)
		}
	}
	for _, bad := range []string{"1MB", "1mib", "-1", "1.5GiB", "GiB", "1 GiB", "1KB", "8388608TiB", "0x10", "1iB", "B"} {
		if msg := checkGoMemLimit(bad); msg == "" {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestUnreadableFile(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "config", "server.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Load(root)
	if err == nil || !strings.HasPrefix(err.Error(), "config/server.yaml: cannot read: ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v", err)
	}
}

func TestDurationHelpers(t *testing.T) {
	c := Default()
	s := c.ForWorker("/")
	if s.HealthTimeout().Milliseconds() != 10000 || s.HealthInterval().Seconds() != 10 ||
		s.HealthProbeTimeout().Milliseconds() != 1000 || s.ReadTimeout().Seconds() != 30 ||
		s.WriteTimeout().Seconds() != 30 || s.IdleTimeout().Seconds() != 120 {
		t.Error("worker durations")
	}
	w := c.Workers
	if w.StartupDelay().Milliseconds() != 100 || w.RestartDelay().Milliseconds() != 100 ||
		w.ShutdownGracePeriod().Milliseconds() != 500 || w.RestartBackoffMax().Milliseconds() != 30000 ||
		w.RestartBackoffReset().Milliseconds() != 10000 || w.DrainTimeout().Milliseconds() != 30000 {
		t.Error("workers durations")
	}
	if c.Server.ReadTimeout().Seconds() != 30 || c.Server.IdleTimeout().Seconds() != 120 ||
		c.Server.WriteTimeout().Seconds() != 30 || c.Server.Static.CacheMaxAge().Seconds() != 3600 {
		t.Error("server durations")
	}
	if c.Deployment.FileWatcher("dev").Debounce().Milliseconds() != 100 || c.Deployment.FileWatcher("prod").Enabled {
		t.Error("file watcher")
	}
	if c.Deployment.Build("prod").LDFlags != "-s -w" || c.Deployment.Build("dev").OutputDir != "bin" ||
		c.Deployment.Resources("dev").WatchResourceChanges != true || c.Deployment.Resources("prod").WatchResourceChanges {
		t.Error("per-mode settings")
	}
	if got := c.Binaries.BinaryPath("index"); got != "workers/index/bin/index" {
		t.Errorf("BinaryPath = %q", got)
	}
	if got := c.Binaries.BinaryName("index"); got != "index" {
		t.Errorf("BinaryName = %q", got)
	}
	if !c.TimestampCheckEnabled("prod") || !c.TimestampCheckEnabled("dev") {
		t.Error("timestamp check")
	}
	c.Deployment.Prod.TimestampCheck.Enabled = false
	if c.TimestampCheckEnabled("prod") || !c.TimestampCheckEnabled("dev") {
		t.Error("prod timestamp check needs both switches")
	}
}
