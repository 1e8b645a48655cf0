package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// needTool skips the test when name is not installed, or fails it when
// TQ_REQUIRE_TOOLS is set (as in CI).
func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("TQ_REQUIRE_TOOLS") != "" {
			t.Fatalf("TQ_REQUIRE_TOOLS is set but %s is not installed", name)
		}
		t.Skipf("%s not installed (apt-get install -y %s; TQ_REQUIRE_TOOLS=1 makes this a failure)", name, pkg)
	}
}

// script runs scripts/NAME of this repository on the app root src with
// the test's tqserver binary, and returns its combined output and exit
// status.
func script(t *testing.T, src, name string, args ...string) (string, int) {
	t.Helper()
	repo, err := testrig.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(repo, "scripts", name)}, args...)...)
	cmd.Env = append(os.Environ(), "TQ_ROOT="+src, "TQSERVER="+tqBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		return "", -1
	}
}

func mustScript(t *testing.T, src, name string, args ...string) string {
	t.Helper()
	out, code := script(t, src, name, args...)
	if code != 0 {
		t.Fatalf("scripts/%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	t.Logf("scripts/%s %s:\n%s", name, strings.Join(args, " "), out)
	return out
}

// backdate sets path's mtime an hour back, so that a later edit is newer
// whatever the file system's timestamp granularity.
func backdate(t *testing.T, paths ...string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for _, p := range paths {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func instanceOf(st *supervisor.Status, worker string) string {
	for _, w := range st.Workers {
		if w.Name == worker && len(w.Instances) == 1 {
			return w.Instances[0].Instance
		}
	}
	return ""
}

// The deployment workflow of the seed, with the scripts as a person runs
// them: build-dev (only what is out of date), build-prod (stripped, with
// .sha256), deploy of one worker to a local directory target that a
// running server serves, under load: no failed request, the other worker
// not restarted, the reload's output shown. A public/-only deploy
// restarts nothing and serves the new file.
func TestScriptsBuildAndDeployUnderLoad(t *testing.T) {
	needTool(t, "rsync", "rsync")
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "go.mod"), "module example.com/scriptsapp\n\ngo 1.22\n")
	indexSrc := filepath.Join(src, "workers", "index", "src", "main.go")
	writeFile(t, indexSrc, devSource(t, "a1"))
	writeFile(t, filepath.Join(src, "workers", "other", "src", "main.go"), devSource(t, "o1"))
	css := filepath.Join(src, "workers", "index", "public", "app.css")
	writeFile(t, css, "body{color:red}\n")
	target := newRoot(t, fastConfigNoAdmin)
	writeFile(t, filepath.Join(src, "config", "deploy.yaml"),
		"# targets of scripts/deploy.sh\ntargets:\n  local: \""+target+"\"   # this machine\n  staging: deploy@staging.invalid:/opt/tqserver\n")

	// build-dev: both, then neither, then only the edited one.
	out := mustScript(t, src, "build-dev.sh")
	if !strings.Contains(out, "✓ index (") || !strings.Contains(out, "✓ other (") {
		t.Fatalf("first build-dev built not both workers:\n%s", out)
	}
	binIndex := filepath.Join(src, "workers", "index", "bin", "index")
	binOther := filepath.Join(src, "workers", "other", "bin", "other")
	backdate(t, indexSrc, filepath.Join(src, "workers", "other", "src", "main.go"), filepath.Join(src, "go.mod"))
	out = mustScript(t, src, "build-dev.sh")
	if !strings.Contains(out, "✓ index up to date") || !strings.Contains(out, "✓ other up to date") || strings.Contains(out, "→") {
		t.Fatalf("build-dev with nothing changed built something:\n%s", out)
	}
	writeFile(t, indexSrc, devSource(t, "a1")+"\n// edited\n")
	out = mustScript(t, src, "build-dev.sh")
	if !strings.Contains(out, "✓ index (") || !strings.Contains(out, "✓ other up to date") {
		t.Fatalf("build-dev after editing index: want index rebuilt and other up to date:\n%s", out)
	}

	// build-prod: stripped binaries with their .sha256.
	mustScript(t, src, "build-prod.sh")
	for _, bin := range []string{binIndex, binOther} {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s has a symbol table: not built with -s -w", bin)
		}
		f.Close()
		if _, err := os.Stat(bin + ".sha256"); err != nil {
			t.Errorf("build-prod wrote no .sha256: %v", err)
		}
	}

	// First deploy, before the server runs.
	out = mustScript(t, src, "deploy.sh", "--no-reload", "local")
	for _, p := range []string{"workers/index/bin/index", "workers/index/bin/index.sha256", "workers/index/public/app.css", "workers/other/bin/other"} {
		if _, err := os.Stat(filepath.Join(target, p)); err != nil {
			t.Fatalf("after the first deploy: %v\n%s", err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(target, "workers", "index", "src")); !os.IsNotExist(err) {
		t.Fatalf("deploy shipped src/: %v", err)
	}

	s := startServer(t, target)
	waitBody(t, s.URL("/"), "a1 index", 10*time.Second)
	waitBody(t, s.URL("/other"), "o1 other", 10*time.Second)
	otherBefore := instanceOf(s.status(), "other")
	if otherBefore == "" {
		t.Fatalf("status: no single instance of other: %+v", s.status())
	}
	lIndex := testrig.StartLoad(s.URL("/"), 4, 1_000_000, 120*time.Second)
	lOther := testrig.StartLoad(s.URL("/other"), 2, 1_000_000, 120*time.Second)
	defer lIndex.Finish()
	defer lOther.Finish()

	// A new version of index only: build-prod leaves other's binary alone,
	// deploy ships index and returns once it serves.
	writeFile(t, indexSrc, devSource(t, "a2"))
	out = mustScript(t, src, "build-prod.sh")
	if !strings.Contains(out, "other") || !strings.Contains(out, "unchanged") {
		t.Errorf("build-prod does not say other is unchanged:\n%s", out)
	}
	out = mustScript(t, src, "deploy.sh", "local", "index")
	if !strings.Contains(out, "index: binary_changed") || !strings.Contains(out, ": serving") || strings.Contains(out, "other") {
		t.Fatalf("deploy of index: want the reload's output with index restarted and nothing of other:\n%s", out)
	}
	if c, b := get(t, s.URL("/")); c != 200 || !strings.HasPrefix(b, "a2 index") {
		t.Fatalf("after deploy.sh returned: GET / = %d %q", c, b)
	}
	indexAfter := instanceOf(s.status(), "index")

	// public/ only: served as soon as it is on disk, before any reload;
	// the reload reports it and restarts nothing.
	writeFile(t, css, "body{color:green}\n")
	mustScript(t, src, "deploy.sh", "--no-reload", "local", "index")
	if c, b := get(t, s.URL("/static/index/app.css")); c != 200 || b != "body{color:green}\n" {
		t.Fatalf("GET /static/index/app.css after a deploy without reload: %d %q", c, b)
	}
	writeFile(t, css, "body{color:blue}\n")
	out = mustScript(t, src, "deploy.sh", "local", "index")
	if !strings.Contains(out, "index: public/ changed") || strings.Contains(out, "binary_changed") {
		t.Fatalf("deploy of a public/ change: want the reload to report public/ changed and no restart:\n%s", out)
	}
	if c, b := get(t, s.URL("/static/index/app.css")); c != 200 || b != "body{color:blue}\n" {
		t.Fatalf("GET /static/index/app.css after the deploy: %d %q", c, b)
	}

	// Everything again, nothing changed: nothing shipped, nothing restarted.
	out = mustScript(t, src, "deploy.sh", "local")
	if !strings.Contains(out, "nothing changed") {
		t.Fatalf("deploy of everything unchanged:\n%s", out)
	}

	okI, failedI, errsI := lIndex.Finish()
	okO, failedO, errsO := lOther.Finish()
	t.Logf("load: index %d ok %d failed, other %d ok %d failed", okI, failedI, okO, failedO)
	if failedI != 0 || failedO != 0 || okI == 0 || okO == 0 {
		t.Fatalf("requests during the deploys: index %d ok %d failed %v; other %d ok %d failed %v", okI, failedI, errsI, okO, failedO, errsO)
	}
	st := s.status()
	if got := instanceOf(st, "other"); got != otherBefore {
		t.Fatalf("other was restarted: instance %s → %s", otherBefore, got)
	}
	if got := instanceOf(st, "index"); got != indexAfter {
		t.Fatalf("the public/-only deploy restarted index: %s → %s", indexAfter, got)
	}
	if n := count(history(t, target, "--worker", "other"), func(r store.Record) bool { return r.Event == "start" }); n != 1 {
		t.Fatalf("other started %d times, want 1", n)
	}
}

// deploy.sh refuses what it cannot do, with one line that says why.
func TestDeployScriptErrors(t *testing.T) {
	needTool(t, "rsync", "rsync")
	src := t.TempDir()
	target := t.TempDir()
	writeFile(t, filepath.Join(src, "workers", "index", "src", "main.go"), "package main\n")
	for _, tc := range []struct {
		yaml string // config/deploy.yaml, "" for none
		args []string
		code int
		want string
	}{
		{"", []string{}, 2, "usage: deploy.sh [--no-reload] TARGET [worker...]"},
		{"", []string{"--bogus", "local"}, 2, "unknown option --bogus"},
		{"", []string{"local"}, 1, "no " + filepath.Join(src, "config", "deploy.yaml")},
		{"targets:\n  local: " + target + "\n  staging: 'deploy@host:/opt/x' # c\n", []string{"prod"}, 1, "unknown target prod in " + filepath.Join(src, "config", "deploy.yaml") + " (targets: local,staging)"},
		{"targets:\n  local: " + target + "\n", []string{"local", "index"}, 1, "no " + filepath.Join(src, "workers", "index", "bin", "index") + ": build it first"},
		{"targets:\n  local: " + target + "\n", []string{"local", "../x"}, 1, "../x is not a worker name"},
		{"targets:\n  local: " + filepath.Join(target, "missing") + "\n", []string{"local"}, 1, "target directory " + filepath.Join(target, "missing") + " does not exist"},
	} {
		os.Remove(filepath.Join(src, "config", "deploy.yaml"))
		if tc.yaml != "" {
			writeFile(t, filepath.Join(src, "config", "deploy.yaml"), tc.yaml)
		}
		out, code := script(t, src, "deploy.sh", tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("deploy.sh %s: exit %d, output:\n%s\nwant exit %d and %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
		}
	}
}

// A user@host:path target: rsync and the reload go through ssh. A fake ssh
// on PATH runs the remote command here, so the test sees exactly what the
// remote shell would be asked to run (quoting included: the target path has
// a space).
func TestDeployScriptRemoteTarget(t *testing.T) {
	needTool(t, "rsync", "rsync")
	fake := t.TempDir()
	log := filepath.Join(fake, "ssh.log")
	writeFile(t, filepath.Join(fake, "ssh"), `#!/bin/sh
# ssh [options] HOST COMMAND...: run COMMAND here, as sshd would with sh -c.
while [ $# -gt 0 ]; do
	case "$1" in
	-l|-p|-e|-o) shift 2 ;;
	-*) shift ;;
	*) echo "host=$1" >>"`+log+`"; shift; break ;;
	esac
done
exec sh -c "$*"
`)
	if err := os.Chmod(filepath.Join(fake, "ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	t.Setenv("TQ_REMOTE_TQSERVER", tqBin)

	src := t.TempDir()
	target := filepath.Join(t.TempDir(), "app root")
	for _, d := range []string{"config", "workers", "var"} {
		if err := os.MkdirAll(filepath.Join(target, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(target, "config", "server.yaml"), fastConfigNoAdmin)
	install(t, target, "index", "v1", "normal")
	install(t, src, "index", "v2", "normal")
	writeFile(t, filepath.Join(src, "workers", "docs_only", "src", "main.go"), "package main\n")
	writeFile(t, filepath.Join(src, "config", "deploy.yaml"), "targets:\n  prod: \"deploy@prod.example:"+target+"\"\n")

	s := startServer(t, target)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	out := mustScript(t, src, "deploy.sh", "prod")
	if !strings.Contains(out, "Deploying to prod (deploy@prod.example:"+target+")") || !strings.Contains(out, "index: binary_changed") || !strings.Contains(out, "Deployed to prod.") {
		t.Fatalf("remote deploy output:\n%s", out)
	}
	if c, b := get(t, s.URL("/")); c != 200 || !strings.HasPrefix(b, "v2 index") {
		t.Fatalf("after the remote deploy: GET / = %d %q", c, b)
	}
	if _, err := os.Stat(filepath.Join(target, "workers", "docs_only")); !os.IsNotExist(err) {
		t.Fatalf("a worker with only sources was created on the target: %v", err)
	}
	hosts, err := os.ReadFile(log)
	// Once for rsync, once for the reload.
	if n := strings.Count(string(hosts), "prod.example\n"); err != nil || n < 2 {
		t.Fatalf("ssh to prod.example used %d times, want rsync's and the reload's: %q %v", n, hosts, err)
	}
}
