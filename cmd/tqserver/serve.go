package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/logs"
	app "github.com/mevdschee/tqserver/internal/server"
)

type serveCmd struct {
	rootFlag
	Mode   string `help:"dev or prod (default: TQ_MODE, else DEPLOYMENT_MODE, else the config's mode, else dev)." enum:"dev,prod," default:""`
	Listen string `help:"Listen address (default: :PORT, server.port of config/server.yaml)."`
}

// Run starts the server and turns signals into its calls: SIGHUP reloads,
// SIGTERM and SIGINT shut down; a second one during shutdown exits at once.
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
	logSet, err := logs.Open(root, mode, cfg.Logs, os.Stderr)
	if err != nil {
		return err
	}
	defer logSet.Close()
	log := logSet.Server()
	notify := newNotifier(log) // systemd Type=notify (notify.go); before any worker starts
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	m, err := app.Open(app.Options{Root: root, Mode: mode, Listen: c.Listen, Config: cfg, Logger: log, Version: versionString(), Notify: notify})
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run() }()
	stopping := false
	for {
		select {
		case err := <-runErr:
			return err
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				go func() {
					if res := m.Reload(context.Background(), "sighup"); res.Error != "" {
						log.Error().Str("error", res.Error).Msg("reload")
					}
				}()
			case stopping:
				log.Warn().Msg("second signal: exiting now; what is left of the workers is killed")
				m.Abort()
				return fmt.Errorf("interrupted during shutdown")
			default:
				stopping = true
				log.Info().Str("signal", sig.String()).Msg("stopping: finishing in-flight requests, then stopping workers")
				go m.Close(context.Background())
			}
		}
	}
}
