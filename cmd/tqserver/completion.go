package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"
	"github.com/willabides/kongplete"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/layout"
)

// Shell completion: the script a shell sources only registers tqserver
// itself as the completer (bash's `complete -C`); the shell then runs
// tqserver with COMP_LINE set, and kongplete answers from the same kong
// model that parses the command line, so completions never go stale.

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

var completionScripts = map[string]string{
	"bash": `# tqserver completion for bash: source <(tqserver completion bash)
complete -o default -C %[1]q %[2]s
`,
	"zsh": `# tqserver completion for zsh: source <(tqserver completion zsh)
(( $+functions[compdef] )) || { autoload -U +X compinit && compinit }
autoload -U +X bashcompinit && bashcompinit
complete -o default -C %[1]q %[2]s
`,
	"fish": `# tqserver completion for fish: tqserver completion fish | source
function __complete_%[2]s
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    %[1]q
end
complete -f -c %[2]s -a "(__complete_%[2]s)"
`,
}

func (c *completionCmd) Run() error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("completion: where is this tqserver binary: %w", err)
	}
	bin, err = filepath.EvalSymlinks(bin)
	if err != nil {
		return fmt.Errorf("completion: %w", err)
	}
	script, ok := completionScripts[c.Shell]
	if !ok { // kong's enum already refuses it
		return fmt.Errorf("completion: unknown shell %q (want bash, zsh or fish)", c.Shell)
	}
	fmt.Printf(script, bin, "tqserver")
	return nil
}

// completeIfAsked answers a shell's completion request (COMP_LINE set) and
// exits; otherwise it returns at once.
func completeIfAsked(parser *kong.Kong) {
	if os.Getenv("COMP_LINE") == "" {
		return
	}
	kongplete.Complete(parser,
		kongplete.WithPredictor("worker", complete.PredictFunc(predictWorkers)),
		kongplete.WithErrorHandler(func(err error) {
			fmt.Fprintf(os.Stderr, "tqserver: completion: %v\n", err)
		}),
	)
}

// predictWorkers offers the worker names of the app root named by --root
// on the line so far (or the current directory): directories under the
// workers directory with sources or a binary.
func predictWorkers(a complete.Args) []string {
	root := "."
	for i, w := range a.Completed {
		if w == "--root" && i+1 < len(a.Completed) {
			root = a.Completed[i+1]
		} else if v, ok := strings.CutPrefix(w, "--root="); ok {
			root = v
		}
	}
	lay := layout.New(root, layout.Options{})
	if cfg, err := config.Load(root); err == nil {
		lay = cfg.Layout(root)
	}
	var names []string
	entries, err := os.ReadDir(lay.WorkersDir())
	if err != nil {
		return nil
	}
	for _, e := range entries {
		w := lay.Worker(e.Name())
		if !e.IsDir() || !layout.ValidName(e.Name()) {
			continue
		}
		if _, err := os.Stat(w.Binary()); err == nil || w.HasSource() {
			names = append(names, e.Name())
		}
	}
	return names
}
