package config

import (
	"slices"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
)

// Names of the two configuration files, relative to the app root (layout
// owns them). Error messages and Config.Files use exactly these spellings.
const (
	ServerFile     = layout.ServerConfigFile
	DeploymentFile = layout.DeploymentConfigFile
)

// Deployment modes.
const (
	ModeDev  = "dev"
	ModeProd = "prod"
)

// Config is the merged, validated content of both configuration files.
type Config struct {
	Server     Server
	Workers    Workers
	Deployment Deployment
	Binaries   Binaries
	Logs       Logs
	Proxy      Proxy
	// Files lists the files actually read, relative to the root
	// (ServerFile, DeploymentFile); missing files are not listed.
	Files []string
}

// Server is the "server" section of server.yaml.
type Server struct {
	Port                int
	ReadTimeoutSeconds  int
	WriteTimeoutSeconds int
	IdleTimeoutSeconds  int
	// The proxy engine's limits (docs/configuration.md says what each bounds).
	HeaderTimeoutSeconds     int
	UpstreamTimeoutSeconds   int
	MaxHeaderBytes           int
	WorkerIdleTimeoutSeconds int
	WorkerIdleConns          int
	// DeploymentMode is "", "dev" or "prod"; "" means unset (see ResolveMode).
	DeploymentMode string
	Static         Static
	// AdminListen is the admin listener's address (CONTRACT.md §9); ""
	// turns it off. AdminListenSet is true when the file gave it (even
	// with the default's value): only then is an address that cannot be
	// bound an error rather than a warning.
	AdminListen    string
	AdminListenSet bool
	// AdminToken is the admin listener's bearer token ("" = none); the
	// environment variable TQ_ADMIN_TOKEN wins over it (see AdminToken).
	AdminToken string
}

// DefaultAdminListen is server.admin_listen when the file does not set it.
const DefaultAdminListen = "127.0.0.1:8081"

// Static is server.static: serving workers/{name}/public/ under URLPrefix.
type Static struct {
	Enabled            bool
	URLPrefix          string
	CacheMaxAgeSeconds int
	DevRoot            string
}

// Workers is the "workers" section of server.yaml.
type Workers struct {
	WorkersDir            string
	PortRangeStart        int
	PortRangeEnd          int
	StartupDelayMs        int
	RestartDelayMs        int
	ShutdownGracePeriodMs int
	// RestartBackoffMaxMs caps the exponential backoff between crash restarts.
	RestartBackoffMaxMs int
	// RestartBackoffResetMs: an instance healthy this long resets the backoff.
	RestartBackoffResetMs int
	// DrainTimeoutMs is the longest a draining instance may take to finish
	// its in-flight requests before it gets SIGTERM.
	DrainTimeoutMs int
	TimestampCheck TimestampCheck
	Discovery      Discovery
	Default        WorkerSettings
	// Paths maps a route prefix ("/api") to the settings it overrides.
	// Never nil in a Config from Load or Default.
	Paths map[string]WorkerOverride
}

// TimestampCheck says whether and when binary mtimes are compared.
type TimestampCheck struct {
	Enabled bool
	Trigger string // only "sighup"
}

// Discovery is workers.discovery.
type Discovery struct {
	Mode            string // only "filesystem"
	WorkersDir      string
	IncludePatterns []string
}

// WorkerSettings are the effective settings of one worker.
type WorkerSettings struct {
	// Instances is how many copies of the worker serve at once, balanced by
	// fewest requests in flight; each is replaced one at a time. With
	// autoscaling (MaxInstances > MinInstances) it is the count a worker
	// starts with, which is always MinInstances.
	Instances int
	// MinInstances..MaxInstances is the autoscaling range; both equal
	// Instances for a fixed count ("instances: N").
	MinInstances int
	MaxInstances int
	// ScaleTargetInflight: a mean of this many requests in flight per
	// serving instance (or more) makes an autoscaled worker grow.
	ScaleTargetInflight int
	// ScaleDownAfterMs: how long the mean must stay below half the target
	// before one instance is removed.
	ScaleDownAfterMs     int
	GoMaxProcs           int
	MaxRequests          int64
	ReadTimeoutSeconds   int
	WriteTimeoutSeconds  int
	IdleTimeoutSeconds   int
	GoMemLimit           string
	Env                  map[string]string
	HealthTimeoutMs      int
	HealthIntervalMs     int
	HealthProbeTimeoutMs int
	// HealthFailureThreshold is how many probes in a row must fail before an
	// instance counts as unhealthy.
	HealthFailureThreshold int
	// RollbackWindowMs: a new binary whose instance crashes within this long
	// of becoming healthy is rolled back to the previous one (0: never).
	RollbackWindowMs int
	// MinHealthyMs: a new instance must keep answering /health for this
	// long before it takes traffic (Nomad's min_healthy_time; 0: at once).
	MinHealthyMs int
	// WarmupURLs are requested (GET, each must answer 2xx or 3xx) on the
	// warm-up connections before a new instance takes traffic.
	WarmupURLs []string
	// Canary: a new binary first serves a share of the requests beside the
	// old instances, and is promoted or rolled back by its figures.
	Canary Canary
}

// WorkerOverride is one workers.paths entry: only the non-nil fields (the
// keys present in the file) override; Env entries override key by key.
type WorkerOverride struct {
	Instances              *int
	MinInstances           *int
	MaxInstances           *int
	ScaleTargetInflight    *int
	ScaleDownAfterMs       *int
	GoMaxProcs             *int
	MaxRequests            *int64
	ReadTimeoutSeconds     *int
	WriteTimeoutSeconds    *int
	IdleTimeoutSeconds     *int
	GoMemLimit             *string
	Env                    map[string]string
	HealthTimeoutMs        *int
	HealthIntervalMs       *int
	HealthProbeTimeoutMs   *int
	HealthFailureThreshold *int
	RollbackWindowMs       *int
	MinHealthyMs           *int
	WarmupURLs             *[]string
	Canary                 *Canary
}

// Deployment is the "deployment" section of deployment.yaml.
type Deployment struct {
	Mode string // "dev" or "prod"
	Dev  DevSettings
	Prod ProdSettings
	// CheckOnSighup is deployment.check_on_sighup (deployment
	// specification): false turns off the stamp comparison of SIGHUP and
	// `reload`, in both modes, like timestamp_check.enabled.
	CheckOnSighup bool
	// OnFileChange is deployment.on_file_change: what a change found on
	// SIGHUP does. tqserver always does both actions, so the list must name
	// both (see checkOnFileChange).
	OnFileChange []string
	// Switch is deployment.switch: "one_by_one" (default) replaces the
	// workers a reload changed each on its own; "together" starts every
	// new instance beside the old set and moves all routes at once, or none
	// if any fails (an atomic release).
	Switch string
}

// The actions of deployment.on_file_change.
const (
	OnChangeRestartServer = "restart_server"
	OnChangeRestartWorker = "restart_affected_worker"
)

// DevSettings is deployment.dev.
type DevSettings struct {
	FileWatcher FileWatcher
	Build       Build
	Resources   Resources
}

// ProdSettings is deployment.prod.
type ProdSettings struct {
	FileWatcher    FileWatcher
	TimestampCheck TimestampCheck
	Build          Build
	Resources      Resources
}

// FileWatcher configures the fsnotify watcher.
type FileWatcher struct {
	Enabled       bool
	DebounceMs    int
	WatchPatterns []string
}

// Build configures `go build` of workers.
type Build struct {
	OutputDir      string
	ParallelBuilds int
	LDFlags        string
}

// Resources configures where worker resources are loaded from.
type Resources struct {
	BasePath             string
	WatchResourceChanges bool
}

// Binaries is the "binaries" section of deployment.yaml. Both strings may use
// the placeholder {worker_name}.
type Binaries struct {
	Format string
	Path   string
}

// DefaultWorkerSettings returns the built-in workers.default.
func DefaultWorkerSettings() WorkerSettings {
	return WorkerSettings{
		Instances:              1,
		MinInstances:           1,
		MaxInstances:           1,
		ScaleTargetInflight:    8,
		ScaleDownAfterMs:       30000,
		GoMaxProcs:             1,
		MaxRequests:            0,
		ReadTimeoutSeconds:     30,
		WriteTimeoutSeconds:    30,
		IdleTimeoutSeconds:     120,
		GoMemLimit:             "",
		Env:                    map[string]string{},
		HealthTimeoutMs:        10000,
		HealthIntervalMs:       10000,
		HealthProbeTimeoutMs:   1000,
		HealthFailureThreshold: 3,
		RollbackWindowMs:       30000,
		WarmupURLs:             []string{},
		Canary:                 Canary{DurationMs: 60000, MaxErrorRate: 0.01, MaxP99Ratio: 2}, // off: weight 0
	}
}

// Default returns the configuration used when neither file exists. Each call
// returns a new value that shares nothing with earlier ones.
func Default() *Config {
	return &Config{
		Server: Server{
			Port:                     8080,
			ReadTimeoutSeconds:       30,
			WriteTimeoutSeconds:      30,
			IdleTimeoutSeconds:       120,
			HeaderTimeoutSeconds:     10,
			UpstreamTimeoutSeconds:   60,
			MaxHeaderBytes:           64 << 10,
			WorkerIdleTimeoutSeconds: 60,
			WorkerIdleConns:          256,
			DeploymentMode:           "",
			AdminListen:              DefaultAdminListen,
			Static: Static{
				Enabled:            true,
				URLPrefix:          "/static",
				CacheMaxAgeSeconds: 3600,
				DevRoot:            layout.DefaultWorkersDir,
			},
		},
		Workers: Workers{
			WorkersDir:            layout.DefaultWorkersDir,
			PortRangeStart:        9000,
			PortRangeEnd:          9999,
			StartupDelayMs:        100,
			RestartDelayMs:        100,
			ShutdownGracePeriodMs: 500,
			RestartBackoffMaxMs:   30000,
			RestartBackoffResetMs: 10000,
			DrainTimeoutMs:        30000,
			TimestampCheck:        TimestampCheck{Enabled: true, Trigger: "sighup"},
			Discovery: Discovery{
				Mode:            "filesystem",
				WorkersDir:      layout.DefaultWorkersDir,
				IncludePatterns: []string{layout.DefaultIncludePattern},
			},
			Default: DefaultWorkerSettings(),
			Paths:   map[string]WorkerOverride{},
		},
		Deployment: Deployment{
			Mode:          ModeDev,
			CheckOnSighup: true,
			OnFileChange:  []string{OnChangeRestartServer, OnChangeRestartWorker},
			Switch:        SwitchOneByOne,
			Dev: DevSettings{
				FileWatcher: FileWatcher{
					Enabled:       true,
					DebounceMs:    100,
					WatchPatterns: DefaultWatchPatterns(layout.DefaultWorkersDir),
				},
				Build:     Build{OutputDir: layout.BinDir, ParallelBuilds: 4, LDFlags: ""},
				Resources: Resources{BasePath: layout.DefaultWorkersDir, WatchResourceChanges: true},
			},
			Prod: ProdSettings{
				FileWatcher:    FileWatcher{Enabled: false, DebounceMs: 100, WatchPatterns: []string{}},
				TimestampCheck: TimestampCheck{Enabled: true, Trigger: "sighup"},
				Build:          Build{OutputDir: layout.DefaultWorkersDir, ParallelBuilds: 8, LDFlags: "-s -w"},
				Resources:      Resources{BasePath: layout.DefaultWorkersDir, WatchResourceChanges: false},
			},
		},
		Logs:  defaultLogs(),
		Proxy: defaultProxy(),
		Binaries: Binaries{
			Format: workerNamePlaceholder,
			Path:   layout.DefaultWorkersDir + "/" + workerNamePlaceholder + "/" + layout.BinDir + "/" + workerNamePlaceholder,
		},
	}
}

// ForWorker returns the settings of the worker serving route: workers.default
// merged with every workers.paths entry whose key is a prefix of route on a
// segment boundary ("/api" matches "/api" and "/api/users", not "/apix"; "/"
// matches every route), applied shortest key first so the longest wins.
// The result shares no map with c.
func (c *Config) ForWorker(route string) WorkerSettings {
	s := c.Workers.Default.clone()
	keys := make([]string, 0, len(c.Workers.Paths))
	for k := range c.Workers.Paths {
		if RouteHasPrefix(route, k) {
			keys = append(keys, k)
		}
	}
	// Two distinct keys that both prefix one route differ in length, so this
	// order is total.
	slices.SortFunc(keys, func(a, b string) int { return len(a) - len(b) })
	for _, k := range keys {
		c.Workers.Paths[k].apply(&s)
	}
	return s
}

// RouteHasPrefix reports whether prefix is route itself or a leading run of
// whole path segments of it. "/" is a prefix of every route.
func RouteHasPrefix(route, prefix string) bool {
	if prefix == "/" {
		return true
	}
	if !strings.HasPrefix(route, prefix) {
		return false
	}
	return len(route) == len(prefix) || route[len(prefix)] == '/'
}

// ReadTimeout is server.read_timeout_seconds as a duration.
func (s Server) ReadTimeout() time.Duration { return seconds(s.ReadTimeoutSeconds) }

// WriteTimeout is server.write_timeout_seconds as a duration.
func (s Server) WriteTimeout() time.Duration { return seconds(s.WriteTimeoutSeconds) }

// IdleTimeout is server.idle_timeout_seconds as a duration.
func (s Server) IdleTimeout() time.Duration { return seconds(s.IdleTimeoutSeconds) }

// HeaderTimeout is server.header_timeout_seconds as a duration.
func (s Server) HeaderTimeout() time.Duration { return seconds(s.HeaderTimeoutSeconds) }

// UpstreamTimeout is server.upstream_timeout_seconds as a duration.
func (s Server) UpstreamTimeout() time.Duration { return seconds(s.UpstreamTimeoutSeconds) }

// WorkerIdleTimeout is server.worker_idle_timeout_seconds as a duration.
func (s Server) WorkerIdleTimeout() time.Duration { return seconds(s.WorkerIdleTimeoutSeconds) }

// CacheMaxAge is static.cache_max_age_seconds as a duration.
func (s Static) CacheMaxAge() time.Duration { return seconds(s.CacheMaxAgeSeconds) }

// StartupDelay is workers.startup_delay_ms as a duration.
func (w Workers) StartupDelay() time.Duration { return ms(w.StartupDelayMs) }

// RestartDelay is workers.restart_delay_ms: the first crash-restart delay.
func (w Workers) RestartDelay() time.Duration { return ms(w.RestartDelayMs) }

// ShutdownGracePeriod is the wait between SIGTERM and SIGKILL.
func (w Workers) ShutdownGracePeriod() time.Duration { return ms(w.ShutdownGracePeriodMs) }

// RestartBackoffMax caps the crash-restart backoff.
func (w Workers) RestartBackoffMax() time.Duration { return ms(w.RestartBackoffMaxMs) }

// RestartBackoffReset is how long an instance must stay healthy to reset the backoff.
func (w Workers) RestartBackoffReset() time.Duration { return ms(w.RestartBackoffResetMs) }

// DrainTimeout bounds the wait for a draining instance's in-flight requests.
func (w Workers) DrainTimeout() time.Duration { return ms(w.DrainTimeoutMs) }

// Debounce is file_watcher.debounce_ms as a duration.
func (f FileWatcher) Debounce() time.Duration { return ms(f.DebounceMs) }

// FileWatcher returns the file watcher settings of mode ("dev" or "prod").
func (d Deployment) FileWatcher(mode string) FileWatcher {
	if mode == ModeProd {
		return d.Prod.FileWatcher
	}
	return d.Dev.FileWatcher
}

// Build returns the build settings of mode ("dev" or "prod").
func (d Deployment) Build(mode string) Build {
	if mode == ModeProd {
		return d.Prod.Build
	}
	return d.Dev.Build
}

// Resources returns the resource settings of mode ("dev" or "prod").
func (d Deployment) Resources(mode string) Resources {
	if mode == ModeProd {
		return d.Prod.Resources
	}
	return d.Dev.Resources
}

// TimestampCheckEnabled reports whether SIGHUP / `reload` compares mtimes in
// mode: deployment.check_on_sighup and workers.timestamp_check.enabled,
// and in prod also deployment.prod.timestamp_check.enabled.
func (c *Config) TimestampCheckEnabled(mode string) bool {
	if !c.Deployment.CheckOnSighup {
		return false
	}
	if mode == ModeProd {
		return c.Workers.TimestampCheck.Enabled && c.Deployment.Prod.TimestampCheck.Enabled
	}
	return c.Workers.TimestampCheck.Enabled
}

// BinaryPath returns binaries.path for worker name, relative to the root.
func (b Binaries) BinaryPath(name string) string {
	return strings.ReplaceAll(b.Path, workerNamePlaceholder, name)
}

// BinaryName returns binaries.format for worker name.
func (b Binaries) BinaryName(name string) string {
	return strings.ReplaceAll(b.Format, workerNamePlaceholder, name)
}

const workerNamePlaceholder = "{worker_name}"

// Layout is the layout of the app root root under this configuration:
// workers.workers_dir, server.static.dev_root,
// workers.discovery.include_patterns and binaries.path. The defaults are layout's (Default
// uses them); an include_patterns set to [] stays empty.
func (c *Config) Layout(root string) layout.Root {
	return layout.New(root, layout.Options{
		WorkersDir:      c.Workers.WorkersDir,
		StaticDir:       c.Server.Static.DevRoot,
		IncludePatterns: append([]string{}, c.Workers.Discovery.IncludePatterns...),
		BinaryPath:      c.Binaries.Path,
	})
}
