package server

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/admin"
	"github.com/mevdschee/tqserver/internal/builder"
	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/dashboard"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/supervisor"
	"github.com/mevdschee/tqserver/internal/watcher"
)

// adminTCPOptions is the admin listener as configured (CONTRACT.md §9).
func adminTCPOptions(cfg *config.Config) admin.TCPOptions {
	token, source := config.AdminToken(os.Getenv, cfg)
	return admin.TCPOptions{
		Addr: cfg.Server.AdminListen, Explicit: cfg.Server.AdminListenSet,
		Token: token, TokenSource: source,
		Dashboard: dashboard.Handler(),
		// Metrics is set in Run once the proxy and the store exist.
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
		// Only changes these select rebuild or reload; public/ and
		// private/ follow resources.watch_resource_changes.
		Patterns:        fw.WatchPatterns,
		IgnoreResources: !cfg.Deployment.Resources(mode).WatchResourceChanges,
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
	log.Info().Strs("patterns", fw.WatchPatterns).Bool("resources", cfg.Deployment.Resources(mode).WatchResourceChanges).
		Msg("watching workers/, config/ and server sources for changes")
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
	for _, r := range builder.BuildAll(context.Background(), dirs, cfg.Deployment.Dev.Build.ParallelBuilds, builder.Options{LDFlags: cfg.Deployment.Dev.Build.LDFlags, Layout: &lay}) {
		if r.Err != nil {
			log.Error().Str("worker", r.Worker).Msg("build failed:\n" + r.Output)
		} else {
			log.Info().Str("worker", r.Worker).Int64("took_ms", r.Duration.Milliseconds()).Msg("built")
		}
		out = append(out, events.BuildFinished{Worker: r.Worker, Duration: r.Duration, Err: r.Err, Output: r.Output})
	}
	return out
}
