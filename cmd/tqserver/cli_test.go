package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

// runExit runs the tqserver binary with env added and returns stdout,
// stderr and the exit status.
func runExit(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tqBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	default:
		t.Fatalf("tqserver %s: %v", strings.Join(args, " "), err)
		return "", "", -1
	}
}

// A command line that does not parse: one error line and the short usage
// of the command on stderr, nothing on stdout, exit status 2.
func TestUsageErrorExit2(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		error string // in the first line
		usage string // the usage line
	}{
		{[]string{"histroy"}, `unknown command "histroy"`, `Run "tqserver --help"`},
		{[]string{"history", "--limt", "3"}, `unknown flag --limt, did you mean "--limit"?`, "Usage: tqserver history [flags]"},
		{[]string{"history", "--limit", "many"}, "--limit", "Usage: tqserver history [flags]"},
		{[]string{"status", "extra"}, "unexpected argument extra", "Usage: tqserver status [flags]"},
		{[]string{"serve", "--mode", "staging"}, "--mode", "Usage: tqserver serve [flags]"},
		{[]string{"completion", "tcsh"}, `"tcsh"`, "Usage: tqserver completion <shell>"},
		{[]string{"completion"}, "expected \"<shell>\"", "Usage: tqserver completion <shell>"},
	} {
		out, errOut, code := runExit(t, nil, tc.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || out != "" || !strings.HasPrefix(lines[0], "tqserver: error: ") || !strings.Contains(lines[0], tc.error) || !strings.Contains(errOut, tc.usage) || len(lines) > 3 {
			t.Errorf("tqserver %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2, no stdout, an error line with %q and the short usage %q",
				strings.Join(tc.args, " "), code, out, errOut, tc.error, tc.usage)
		}
	}
}

// `build NAME` for a worker that is not there, and `build` on a root with
// nothing to build, say why and fail.
func TestBuildSaysWhyNothingBuilds(t *testing.T) {
	root := newRoot(t, "")
	if err := os.MkdirAll(filepath.Join(root, "workers", "assets", "public"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build", "--root", root, "nosuch"}, "build nosuch: no such worker: " + filepath.Join(root, "workers", "nosuch", "src", "main.go") + " not found"},
		{[]string{"build", "--root", root, "assets"}, "build assets: it has no source: "},
		{[]string{"build", "--root", root}, "build: nothing to build: no " + filepath.Join(root, "workers") + "/NAME/src/main.go"},
		{[]string{"build", "--root", root, "--outdated"}, "build: nothing to build"},
		{[]string{"build", "--root", root, "--server"}, "has no cmd/tqserver/main.go"},
		{[]string{"build", "--root", filepath.Join(root, "config")}, "build: no workers directory"},
	} {
		out, errOut, code := runExit(t, nil, tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("tqserver %s: exit %d, stdout %q, stderr %q; want exit 1 and one line with %q",
				strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
}

// Every command's --help ends each flag's help with its default.
func TestHelpListsFlagDefaults(t *testing.T) {
	var c cli
	parser, err := newParser(&c)
	if err != nil {
		t.Fatal(err)
	}
	flagStart := func(s string) int { // index of the next flag column in collapsed help
		i := strings.Index(s, " --")
		j := strings.Index(s, " -h, --")
		if j >= 0 && (i < 0 || j < i) {
			return j
		}
		return i
	}
	checked := 0
	for _, node := range parser.Model.Leaves(false) {
		path := strings.Fields(node.Path())
		out, errOut, code := runExit(t, nil, append(path, "--help")...)
		if code != 0 {
			t.Fatalf("tqserver %s --help: exit %d: %s", node.Path(), code, errOut)
		}
		help := strings.Join(strings.Fields(out), " ")
		var flags []*kong.Flag
		for n := node; n != nil; n = n.Parent {
			flags = append(flags, n.Flags...)
		}
		for _, f := range flags {
			if f.Name == "help" || f.Hidden {
				continue
			}
			col := " --" + f.Name
			if !f.IsBool() {
				col += "="
			}
			i := strings.Index(help, col)
			if i < 0 {
				t.Errorf("tqserver %s --help does not list --%s:\n%s", node.Path(), f.Name, out)
				continue
			}
			rest := help[i+len(col):]
			if j := flagStart(rest); j >= 0 {
				rest = rest[:j]
			}
			want := "(default: "
			switch {
			case f.Default != "":
				want += f.Default + ")"
			case f.IsBool():
				want += "false)"
			}
			if !strings.Contains(rest, want) || strings.Contains(rest, "(default: none)") {
				t.Errorf("tqserver %s --help: --%s says %q; want its default, %q…", node.Path(), f.Name, rest, want)
			}
			checked++
		}
	}
	if checked < 15 {
		t.Fatalf("only %d flags checked; the command model is not what the test expects", checked)
	}
}

// `tqserver completion SHELL` registers tqserver as its own completer; the
// shell then runs it with COMP_LINE, and it answers commands, flags and
// the worker names of the root on the line.
func TestShellCompletion(t *testing.T) {
	root := newRoot(t, "")
	writeFile(t, filepath.Join(root, "workers", "index", "src", "main.go"), "package main\n")
	writeFile(t, filepath.Join(root, "workers", "api_users", "bin", "api_users"), "#!/bin/sh\n")
	writeFile(t, filepath.Join(root, "workers", "assets", "public", "a.css"), "")

	complete := func(line string) []string {
		t.Helper()
		out, errOut, code := runExit(t, []string{"COMP_LINE=" + line}, "tqserver")
		if code != 0 {
			t.Fatalf("COMP_LINE=%q: exit %d: %s", line, code, errOut)
		}
		return strings.Fields(out)
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"tqserver his", []string{"history"}},
		{"tqserver co", []string{"completion"}},
		{"tqserver completion ", []string{"bash", "fish", "zsh"}},
		{"tqserver history --li", []string{"--limit"}},
		{"tqserver build --root " + root + " ", []string{"api_users", "index"}},
		{"tqserver history --root=" + root + " --worker i", []string{"index"}},
	} {
		got := complete(tc.line)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("completions of %q: %q, want %q", tc.line, got, tc.want)
		}
	}

	bin, err := filepath.EvalSymlinks(tqBin)
	if err != nil {
		t.Fatal(err)
	}
	shells := []struct {
		shell, script, want string
	}{
		{"bash", `source <("$TQ" completion bash) && complete -p tqserver`, "complete -o default -C '" + bin + "' tqserver"},
		{"zsh", `source <("$TQ" completion zsh) && print -r -- $_comps[tqserver]`, "_bash_complete -o default -C " + bin},
		// fish runs the completion itself: the whole path, end to end.
		{"fish", `"$TQ" completion fish | source; and complete -C "tqserver build --root $ROOT "`, "api_users\nindex"},
	}
	for _, sh := range shells {
		t.Run(sh.shell, func(t *testing.T) {
			path, err := exec.LookPath(sh.shell)
			if err != nil {
				if os.Getenv("TQ_REQUIRE_TOOLS") != "" {
					t.Fatalf("TQ_REQUIRE_TOOLS is set but %s is not installed", sh.shell)
				}
				t.Skipf("%s not installed (apt-get install -y %s; TQ_REQUIRE_TOOLS=1 makes this a failure)", sh.shell, sh.shell)
			}
			cmd := exec.Command(path, "-c", sh.script)
			cmd.Env = append(os.Environ(), "TQ="+tqBin, "ROOT="+root, "HOME="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != sh.want {
				t.Fatalf("%s -c %q: %v\n%s\nwant %q", sh.shell, sh.script, err, out, sh.want)
			}
		})
	}
}
