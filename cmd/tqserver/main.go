// Command tqserver is a web server and process supervisor: it runs one worker
// process per route, proxies HTTP to them and replaces them without dropping
// a request. This file only parses flags and wires the packages together.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

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
	Serve      serveCmd      `cmd:"" default:"withargs" help:"Run the server (default)."`
	History    historyCmd    `cmd:"" help:"Print the transition log."`
	Status     statusCmd     `cmd:"" help:"Print the workers and their instances."`
	Reload     reloadCmd     `cmd:"" help:"Check for changed files and restart what changed (same as SIGHUP)."`
	Restart    restartCmd    `cmd:"" help:"Replace every instance of one worker without downtime (reason operator)."`
	Rollback   rollbackCmd   `cmd:"" help:"Swap one worker back to its previous good binary without downtime (reason rollback)."`
	Build      buildCmd      `cmd:"" help:"Build worker binaries from workers/NAME/src."`
	Log        logCmd        `cmd:"" help:"Check or salvage the history log (var/tqserver.db)."`
	Completion completionCmd `cmd:"" help:"Print a shell completion script: source <(tqserver completion bash)."`
	Version    versionCmd    `cmd:"" help:"Print the version."`
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("tqserver", versionString())
	return nil
}

// exitUsage is the exit status of a command line that does not parse
// (as getopt-style tools and bash builtins use).
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var c cli
	parser, err := newParser(&c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tqserver: %s\n", err)
		return 1
	}
	completeIfAsked(parser) // exits when the shell asks for completions
	ctx, err := parser.Parse(args)
	if err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			if unknownCommand(parser, pe.Context, args) {
				fmt.Fprintf(os.Stderr, "tqserver: error: unknown command %q (commands: %s)\n", args[0], commandNames(parser))
				fmt.Fprintln(os.Stderr, `Run "tqserver --help" for more information.`)
				return exitUsage
			}
			fmt.Fprintf(os.Stderr, "tqserver: error: %s\n", oneLine(err.Error()))
			pe.Context.Stdout = os.Stderr
			_ = kong.DefaultShortHelpPrinter(kong.HelpOptions{}, pe.Context)
			return exitUsage
		}
		fmt.Fprintf(os.Stderr, "tqserver: error: %s\n", oneLine(err.Error()))
		return exitUsage
	}
	if err := ctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "tqserver: %s\n", oneLine(err.Error()))
		return 1
	}
	return 0
}

// unknownCommand: the first word is no command, and since serve is the
// default command kong read it as an argument to serve.
func unknownCommand(parser *kong.Kong, ctx *kong.Context, args []string) bool {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return false
	}
	for _, n := range parser.Model.Children {
		if n.Name == args[0] {
			return false
		}
	}
	return ctx.Error != nil && strings.HasPrefix(ctx.Error.Error(), "unexpected argument "+args[0])
}

func commandNames(parser *kong.Kong) string {
	var names []string
	for _, n := range parser.Model.Children {
		if !n.Hidden {
			names = append(names, n.Name)
		}
	}
	return strings.Join(names, ", ")
}

func newParser(c *cli) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("tqserver"),
		kong.Description("A web server and process supervisor for Go workers."),
		kong.ValueFormatter(helpWithDefault),
	)
}

// helpWithDefault ends every flag's help with its default, so --help shows
// what an omitted flag means.
func helpWithDefault(v *kong.Value) string {
	h := kong.DefaultHelpValueFormatter(v)
	if v.Flag == nil || v.Name == "help" || strings.Contains(h, "(default") {
		return h
	}
	def := v.Default
	switch {
	case def != "":
	case v.IsBool():
		def = "false"
	case v.IsCounter():
		def = "0"
	default:
		def = "none"
	}
	return strings.TrimSpace(h + " (default: " + def + ")")
}

func oneLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
