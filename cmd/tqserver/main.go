// Command tqserver is a web server and process supervisor: it runs one worker
// process per route, proxies HTTP to them and replaces them without dropping
// a request. This file only parses flags and wires the packages together.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/alecthomas/kong"
)

var version = "" // set with -ldflags "-X main.version=..."

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

type rootFlag struct {
	Root string `default:"." help:"App root (config/, workers/, var/)." type:"path"`
}

func (r rootFlag) abs() (string, error) {
	abs, err := filepath.Abs(r.Root)
	if err != nil {
		return "", fmt.Errorf("--root %s: %w", r.Root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("--root %s: %w", r.Root, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("--root %s: not a directory", r.Root)
	}
	return abs, nil
}

type cli struct {
	Serve    serveCmd    `cmd:"" default:"withargs" help:"Run the server (default)."`
	History  historyCmd  `cmd:"" help:"Print the transition log."`
	Status   statusCmd   `cmd:"" help:"Print the workers and their instances."`
	Reload   reloadCmd   `cmd:"" help:"Check for changed files and restart what changed (same as SIGHUP)."`
	Restart  restartCmd  `cmd:"" help:"Replace every instance of one worker without downtime (reason operator)."`
	Rollback rollbackCmd `cmd:"" help:"Swap one worker back to its previous good binary without downtime (reason rollback)."`
	Build    buildCmd    `cmd:"" help:"Build worker binaries from workers/NAME/src."`
	Log      logCmd      `cmd:"" help:"Check or salvage the history log (var/tqserver.db)."`
	Version  versionCmd  `cmd:"" help:"Print the version."`
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("tqserver", versionString())
	return nil
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("tqserver"),
		kong.Description("A web server and process supervisor for Go workers."),
		kong.UsageOnError(),
	)
	if err := ctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "tqserver: %s\n", oneLine(err.Error()))
		os.Exit(1)
	}
}

func oneLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
