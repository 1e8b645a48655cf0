package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/admin"
	"github.com/mevdschee/tqserver/internal/builder"
	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/dashboard"
	"github.com/mevdschee/tqserver/internal/devreload"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/proxy"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
	"github.com/mevdschee/tqserver/internal/watcher"
)

type serveCmd struct {
	rootFlag
	Mode   string `help:"dev or prod (default: TQ_MODE, else DEPLOYMENT_MODE, else the config's mode, else dev)." enum:"dev,prod," default:""`
	Listen string `help:"Listen address (default: :PORT, server.port of config/server.yaml)."`
}

func newLogger(mode string) zerolog.Logger {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	if mode == "dev" {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).With().Timestamp().Logger()
	}
	return zerolog.New(os.Stderr).With().Timestamp().Logger()
}

func (c *serveCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	cfg, err := config.Load(root)
	if err != nil {
		return err
	}
	mode, err := config.ResolveMode(c.Mode, os.Getenv, cfg)
	if err != nil {
		return err
	}
	listen := c.Listen
	if listen == "" {
		listen = ":" + strconv.Itoa(cfg.Server.Port)
	}
	log := newLogger(mode)
	notify := newNotifier(log) // systemd Type=notify (notify.go)
	lay := cfg.Layout(root)

	if err := os.MkdirAll(lay.VarDir(), 0o755); err != nil {
		return fmt.Errorf("create %s/: %w", layout.VarDir, err)
	}
	st, err := store.Open(lay.DB(), store.Options{Timeout: time.Second,
		// A log deleted under the running server is recreated by the next
		// append; say so loudly, once.
		Recreated: func(detail string) { log.Error().Str("log", lay.DB()).Msg(detail) },
	})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("another tqserver is running on %s (%s is locked)", root, layout.DBFile)
		}
		return err
	}
	defer st.Close()
	// With the log's lock held: no other server uses this root's cgroups.
	defer contain(root, log)()

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	// The admin listener is bound now, so a bad address stops the server
	// before anything starts; it serves only after server_start, like the
	// socket (a connection meanwhile waits).
	adminOpts := adminTCPOptions(cfg)
	adminLn, warning, err := admin.ListenTCP(adminOpts)
	if err != nil {
		ln.Close()
		return err
	}
	if warning != "" {
		log.Warn().Msg(warning)
	}
	closeAdminLn := func() {
		if adminLn != nil {
			adminLn.Close()
		}
	}

	var builds []events.BuildFinished
	if mode == "dev" {
		builds = buildAll(lay, cfg, log)
	}

	var sup *supervisor.Supervisor
	popts := proxy.Options{
		WorkersDir:        lay.StaticDir(),
		StaticEnabled:     cfg.Server.Static.Enabled,
		StaticPrefix:      cfg.Server.Static.URLPrefix,
		CacheMaxAge:       cfg.Server.Static.CacheMaxAgeSeconds,
		OnMaxRequests:     func(instance string) { go sup.Send(events.MaxRequests{Instance: instance}) },
		Logger:            log,
		WorkerTimeout:     cfg.Server.UpstreamTimeout(),
		WorkerIdleTimeout: cfg.Server.WorkerIdleTimeout(),
		WorkerIdleConns:   cfg.Server.WorkerIdleConns,
	}
	var hub *devreload.Hub
	if mode == "dev" {
		// Browsers reload after a swap and show build errors; prod responses
		// are never touched. The engine is the same in both modes.
		hub = devreload.NewHub()
		popts.Local = devreload.Local(hub)
		popts.Rewrite = devreload.Rewrite
	}
	px := proxy.New(popts)
	opts := supervisor.Options{
		Root: root, Mode: mode, Listen: ln.Addr().String(), Config: cfg, Store: st, Proxy: px,
		Logger: log, Version: versionString(), Builds: builds,
	}
	if hub != nil {
		opts.Dev = hub
	}
	sup = supervisor.New(opts)

	// The admin socket (and with it `status`, and the test rigs' "up")
	// answers only once this server's server_start is in the log.
	runErr := make(chan error, 1)
	go func() { runErr <- sup.Run() }()
	select {
	case <-sup.Started():
	case err := <-runErr:
		ln.Close()
		closeAdminLn()
		if err == nil {
			err = errors.New("supervisor stopped before it started")
		}
		return err
	}
	// One handler for the socket and the TCP listener; its reloads
	// notify systemd (notify.go).
	nsup := notifyingSupervisor{sup, notify}
	api := admin.Handler(st, nsup)
	stopAdmin, err := admin.Serve(root, api)
	if err != nil {
		ln.Close()
		closeAdminLn()
		sup.Send(events.Shutdown{})
		<-runErr
		return err
	}
	defer stopAdmin()
	if adminLn != nil {
		defer admin.ServeTCP(adminLn, admin.TCPHandler(api, adminOpts))()
		ev := log.Info().Str("admin_listen", adminLn.Addr().String())
		if adminOpts.Token != "" {
			ev = ev.Str("token_from", adminOpts.TokenSource)
		}
		ev.Msg("admin listener: dashboard, /healthz, /metrics and the API at http://" + adminLn.Addr().String() + "/")
	}
	pidFile := lay.PID()
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	defer os.Remove(pidFile)

	front := proxy.NewServer(px, proxy.ServerOptions{
		HeaderTimeout:  cfg.Server.HeaderTimeout(),
		IdleTimeout:    cfg.Server.IdleTimeout(),
		ReadTimeout:    cfg.Server.ReadTimeout(),
		WriteTimeout:   cfg.Server.WriteTimeout(),
		MaxHeaderBytes: cfg.Server.MaxHeaderBytes,
	})

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	stopWatch := startWatcher(lay, mode, cfg, sup, log)
	defer stopWatch()
	serveErr := make(chan error, 1)
	go func() { serveErr <- front.Serve(ln) }()
	log.Info().Str("root", root).Str("mode", mode).Str("listen", ln.Addr().String()).Int("pid", os.Getpid()).Msg("tqserver serving")
	notify.Ready()

	shutdown := func() error {
		// Before waiting for in-flight requests: a reload meanwhile must
		// not start instances that would only be stopped again.
		sup.BeginShutdown()
		drain := time.Duration(cfg.Workers.DrainTimeoutMs) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if hub != nil {
			hub.Close() // open event streams would hold Shutdown open
		}
		if err := front.Shutdown(ctx); err != nil {
			log.Warn().Err(err).Msg("in-flight requests did not finish in time")
			front.Close()
		}
		sup.Send(events.Shutdown{})
		select {
		case err := <-runErr:
			return err
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				log.Warn().Msg("second signal: exiting now; workers get SIGKILL through their parent-death signal")
				return fmt.Errorf("interrupted during shutdown")
			}
			return <-runErr
		}
	}
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				go func() {
					res := nsup.Reload(context.Background(), "sighup")
					if res.Error != "" {
						log.Error().Str("error", res.Error).Msg("reload")
					}
				}()
				continue
			}
			log.Info().Str("signal", sig.String()).Msg("stopping: finishing in-flight requests, then stopping workers")
			notify.Stopping()
			return shutdown()
		case err := <-runErr:
			front.Close()
			if err == nil {
				err = errors.New("supervisor stopped unexpectedly")
			}
			return err
		case err := <-serveErr:
			sup.Send(events.Shutdown{})
			<-runErr
			return fmt.Errorf("http server: %w", err)
		}
	}
}

// adminTCPOptions is the admin listener as configured (CONTRACT.md §9).
func adminTCPOptions(cfg *config.Config) admin.TCPOptions {
	token, source := config.AdminToken(os.Getenv, cfg)
	return admin.TCPOptions{
		Addr: cfg.Server.AdminListen, Explicit: cfg.Server.AdminListenSet,
		Token: token, TokenSource: source,
		Dashboard: dashboard.Handler(),
		// Metrics: set by the metrics change (a nil handler answers 404).
	}
}

// contain makes the server a child subreaper, puts instances in cgroups
// where the machine allows it (TQ_CGROUPS=0 turns that off), and says in
// one line how a worker's descendants are kept from outliving it. The
// returned func, run as the server exits, kills what is left of the
// instances, removes the app's cgroup directory and stops the reaper.
func contain(root string, log zerolog.Logger) func() {
	var how []string
	cg, cgErr := "", errors.New("TQ_CGROUPS=0")
	if os.Getenv("TQ_CGROUPS") != "0" {
		cg, cgErr = process.EnableCgroups(root)
	}
	if cgErr == nil {
		how = append(how, "cgroup v2 per instance ("+cg+")")
	}
	stopReaper, subErr := process.EnableSubreaper()
	if subErr == nil {
		how = append(how, "child subreaper")
	}
	how = append(how, process.MarkEnv+" marker")
	ev := log.Info()
	if subErr != nil {
		ev = log.Warn()
	}
	if cgErr != nil {
		ev = ev.Str("no_cgroups", cgErr.Error())
	}
	if subErr != nil {
		ev = ev.Str("no_subreaper", subErr.Error())
	}
	ev.Msg("process containment: " + strings.Join(how, " + "))
	return func() {
		process.StopAll(root) // an interrupted shutdown leaves descendants
		process.DisableCgroups()
		stopReaper()
	}
}

// startWatcher runs the dev-mode file watcher (when enabled); its events go
// to the supervisor loop. A watcher that cannot start is reported and the
// server keeps serving without it.
func startWatcher(lay layout.Root, mode string, cfg *config.Config, sup *supervisor.Supervisor, log zerolog.Logger) func() {
	fw := cfg.Deployment.FileWatcher(mode)
	if mode != "dev" || !fw.Enabled {
		return func() {}
	}
	w, err := watcher.New(watcher.Options{
		Root: lay.Dir(), WorkersDir: lay.WorkersDir(), ServerSrc: lay.ServerSources(),
		Debounce: time.Duration(fw.DebounceMs) * time.Millisecond,
		Send:     func(ev events.FilesChanged) { sup.Send(ev) },
		Logger:   log,
	})
	if err != nil {
		log.Error().Err(err).Msg("file watcher not started: edits will not be rebuilt (SIGHUP still works)")
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			log.Error().Err(err).Msg("file watcher stopped")
		}
	}()
	log.Info().Msg("watching workers/, config/ and server sources for changes")
	return func() { cancel(); <-done }
}

// buildAll builds every worker that has sources and that
// workers.discovery.include_patterns select (dev mode, at start).
func buildAll(lay layout.Root, cfg *config.Config, log zerolog.Logger) []events.BuildFinished {
	found, warnings, err := lay.Discover(layout.Sources)
	if err != nil {
		log.Error().Err(err).Msg("nothing built")
	}
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	dirs := make([]string, 0, len(found))
	for _, f := range found {
		dirs = append(dirs, f.Dir)
	}
	var out []events.BuildFinished
	for _, r := range builder.BuildAll(context.Background(), dirs, cfg.Deployment.Dev.Build.ParallelBuilds, builder.Options{LDFlags: cfg.Deployment.Dev.Build.LDFlags}) {
		if r.Err != nil {
			log.Error().Str("worker", r.Worker).Msg("build failed:\n" + r.Output)
		} else {
			log.Info().Str("worker", r.Worker).Dur("took", r.Duration).Msg("built")
		}
		out = append(out, events.BuildFinished{Worker: r.Worker, Duration: r.Duration, Err: r.Err, Output: r.Output})
	}
	return out
}
