package layout

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// mk writes root/rel (and its directories).
func mk(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func names(fs []Found) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, f.Name)
	}
	return out
}

func TestPaths(t *testing.T) {
	r := New("/app", Options{})
	for got, want := range map[string]string{
		r.ServerConfig():                "/app/config/server.yaml",
		r.DeploymentConfig():            "/app/config/deployment.yaml",
		r.ConfigDir():                   "/app/config",
		r.DB():                          "/app/var/tqserver.db",
		r.Socket():                      "/app/var/tqserver.sock",
		r.PID():                         "/app/var/tqserver.pid",
		r.VarDir():                      "/app/var",
		r.ServerBinary():                "/app/server/bin/tqserver",
		r.WorkersDir():                  "/app/workers",
		r.StaticDir():                   "/app/workers",
		r.Worker("api_users").Dir:       "/app/workers/api_users",
		r.Worker("api_users").Src():     "/app/workers/api_users/src",
		r.Worker("api_users").Main():    "/app/workers/api_users/src/main.go",
		r.Worker("api_users").BinDir():  "/app/workers/api_users/bin",
		r.Worker("api_users").Binary():  "/app/workers/api_users/bin/api_users",
		r.Worker("a").Checksum():        "/app/workers/a/bin/a.sha256",
		r.Worker("a").Public():          "/app/workers/a/public",
		r.Worker("a").Private():         "/app/workers/a/private",
		r.Worker("api_users").Route():   "/api/users",
		WorkerOf("/x/y/index").Binary(): "/x/y/index/bin/index",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// Configured directories: relative ones are under the root, absolute
	// ones stay; the static directory follows the workers directory unless
	// set.
	r = New("/app", Options{WorkersDir: "apps"})
	if r.WorkersDir() != "/app/apps" || r.StaticDir() != "/app/apps" {
		t.Errorf("workers_dir apps: workers %q static %q", r.WorkersDir(), r.StaticDir())
	}
	r = New("/app", Options{WorkersDir: "/srv/w/", StaticDir: "assets"})
	if r.WorkersDir() != "/srv/w" || r.StaticDir() != "/app/assets" || r.Worker("x").Dir != "/srv/w/x" {
		t.Errorf("absolute workers_dir: workers %q static %q", r.WorkersDir(), r.StaticDir())
	}
	if got := New("/app", Options{}).IncludePatterns(); !reflect.DeepEqual(got, []string{"*/src/main.go"}) {
		t.Errorf("default include patterns %q", got)
	}
}

func TestValidNameAndRoute(t *testing.T) {
	re := regexp.MustCompile(NamePattern)
	for _, name := range []string{"index", "api_users", "a", "0", "a-b", "a_b_c", "x9", "", "_a", "-a", "A", "aB", "a b", "a/b", "a.b", ".a", "é", "a\x00"} {
		if got, want := ValidName(name), re.MatchString(name); got != want {
			t.Errorf("ValidName(%q) = %v, NamePattern says %v", name, got, want)
		}
	}
	for name, want := range map[string]string{"index": "/", "api": "/api", "api_users": "/api/users", "a-b_c": "/a-b/c", "indexes": "/indexes"} {
		if got := Route(name); got != want {
			t.Errorf("Route(%q) = %q, want %q", name, got, want)
		}
	}
}

// A root with every kind of directory discovery must tell apart.
func discoveryRoot(t *testing.T) string {
	root := t.TempDir()
	w := func(rel, content string) { mk(t, root, "workers/"+rel, content) }
	w("both/src/main.go", "package main")
	w("both/bin/both", "bin")
	w("srconly/src/main.go", "package main")
	w("binonly/bin/binonly", "bin")
	w("Bad/src/main.go", "package main")
	w("Bad/bin/Bad", "bin")
	w("bad.name/bin/bad.name", "bin")
	w("empty/README", "")
	w(".hidden/src/main.go", "package main")
	w(".hidden/bin/.hidden", "bin")
	w("notmain/src/other.go", "package main")
	w("cmdonly/cmd/main.go", "package main")
	w("bindir/bin/bindir/x", "a directory, not a binary")
	w("loose.txt", "a file")
	return root
}

func TestDiscoverBinaries(t *testing.T) {
	root := discoveryRoot(t)
	found, warnings, err := New(root, Options{}).Discover(Binaries)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(found), []string{"binonly", "both"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("prod discovery found %q, want %q", got, want)
	}
	for _, f := range found {
		if f.Bin == nil || !f.Bin.Mode().IsRegular() || f.Bin.Name() != f.Name {
			t.Errorf("%s: Bin %v", f.Name, f.Bin)
		}
	}
	w := strings.Join(warnings, "\n")
	for _, want := range []string{
		"srconly: skipped: no binary bin/srconly (build it with `tqserver build srconly`)",
		"Bad: skipped: worker names must match ^[a-z0-9][a-z0-9_-]*$",
		"bad.name: skipped: worker names must match",
		"empty: skipped: neither bin/empty nor src/main.go",
		"notmain: skipped: neither",
		"cmdonly: skipped: neither",
		"bindir: skipped: neither",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "hidden") || strings.Contains(w, "loose.txt") {
		t.Errorf("dot directories and plain files must be ignored silently:\n%s", w)
	}
	if len(warnings) != 7 {
		t.Errorf("%d warnings, want 7:\n%s", len(warnings), w)
	}
}

func TestDiscoverSources(t *testing.T) {
	root := discoveryRoot(t)
	found, warnings, err := New(root, Options{}).Discover(Sources)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(found), []string{"both", "srconly"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("dev discovery found %q, want %q", got, want)
	}
	// Only the bad name that a pattern selects is worth a warning here.
	if len(warnings) != 1 || !strings.Contains(warnings[0], "Bad: skipped: worker names must match") {
		t.Errorf("warnings = %q, want one for Bad", warnings)
	}
	for _, f := range found {
		if f.Bin != nil {
			t.Errorf("%s: Sources must not stat binaries", f.Name)
		}
	}
}

func TestDiscoverIncludePatterns(t *testing.T) {
	root := discoveryRoot(t)
	for _, tc := range []struct {
		patterns []string
		want     []string
	}{
		// A pattern selects its match's top directory; src/main.go is
		// still needed to build it.
		{[]string{"*/cmd/main.go"}, nil},
		{[]string{"s*/src/main.go"}, []string{"srconly"}},
		{[]string{"both/src/*.go", "srconly/src/main.go", "both/bin/*"}, []string{"both", "srconly"}},
		{[]string{"*/src/other.go"}, nil},
		{[]string{"*"}, []string{"both", "srconly"}},
		{[]string{}, nil},
	} {
		found, _, err := New(root, Options{IncludePatterns: tc.patterns}).Discover(Sources)
		if err != nil {
			t.Fatal(err)
		}
		got := names(found)
		if len(got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("patterns %q found %q, want %q", tc.patterns, got, tc.want)
		}
	}
	// Include patterns do not decide what runs.
	found, _, err := New(root, Options{IncludePatterns: []string{}}).Discover(Binaries)
	if err != nil || len(found) != 2 {
		t.Errorf("Binaries with no include patterns: %q, %v", names(found), err)
	}
}

func TestDiscoverConfiguredWorkersDir(t *testing.T) {
	root := t.TempDir()
	mk(t, root, "apps/a/bin/a", "bin")
	mk(t, root, "workers/b/bin/b", "bin")
	found, _, err := New(root, Options{WorkersDir: "apps"}).Discover(Binaries)
	if err != nil || !reflect.DeepEqual(names(found), []string{"a"}) {
		t.Fatalf("workers_dir apps: %q, %v", names(found), err)
	}
}

func TestDiscoverMissingAndUnreadable(t *testing.T) {
	root := t.TempDir()
	found, warnings, err := New(root, Options{}).Discover(Binaries)
	if err != nil || len(found) != 0 || len(warnings) != 1 || !strings.Contains(warnings[0], "no workers directory") {
		t.Errorf("missing workers dir: %v %q %v", found, warnings, err)
	}
	found, warnings, err = New(root, Options{}).Discover(Sources)
	if err != nil || len(found) != 0 || len(warnings) != 0 {
		t.Errorf("missing workers dir, Sources: %v %q %v", found, warnings, err)
	}
	mk(t, root, "workers", "a file where the directory should be")
	if _, _, err := New(root, Options{}).Discover(Binaries); err == nil || !strings.Contains(err.Error(), filepath.Join(root, "workers")) {
		t.Errorf("workers is a file: err %v, want one naming it", err)
	}
	if _, _, err := New(t.TempDir(), Options{}).Discover(Want(0)); err == nil {
		t.Error("an unknown Want must be an error")
	}
}

// Symlinked worker directories count, as deploy tools create them.
func TestDiscoverSymlink(t *testing.T) {
	root := t.TempDir()
	mk(t, root, "releases/a-v2/src/main.go", "package main")
	mk(t, root, "releases/a-v2/bin/a", "bin")
	if err := os.MkdirAll(filepath.Join(root, "workers"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "releases", "a-v2"), filepath.Join(root, "workers", "a")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []Want{Sources, Binaries} {
		found, _, err := New(root, Options{}).Discover(want)
		if err != nil || !reflect.DeepEqual(names(found), []string{"a"}) {
			t.Errorf("want %d: %q, %v", want, names(found), err)
		}
	}
}

// Enough workers for the parallel stat path; every one must be found.
func TestDiscoverMany(t *testing.T) {
	root := t.TempDir()
	for i := range 300 {
		mk(t, root, fmt.Sprintf("workers/w%03d/bin/w%03d", i, i), "bin")
	}
	found, warnings, err := New(root, Options{}).Discover(Binaries)
	if err != nil || len(found) != 300 || len(warnings) != 0 || found[0].Name != "w000" || found[299].Name != "w299" {
		t.Fatalf("found %d, warnings %q, err %v", len(found), warnings, err)
	}
}

func TestServerSources(t *testing.T) {
	root := t.TempDir()
	r := New(root, Options{})
	if r.IsServerRepo() || r.ServerSources() != nil {
		t.Fatal("an app root without cmd/tqserver is not the server repository")
	}
	mk(t, root, "cmd/tqserver/main.go", "package main")
	mk(t, root, "pkg/x.go", "package x")
	if got, want := r.ServerSources(), []string{filepath.Join(root, "cmd"), filepath.Join(root, "pkg")}; !reflect.DeepEqual(got, want) {
		t.Errorf("ServerSources = %q, want %q", got, want)
	}
}

// The cases that proxy and supervisor tested for their own copies.
func TestWorkerRoute(t *testing.T) {
	for name, want := range map[string]string{
		"index":       "/",
		"api":         "/api",
		"api_users":   "/api/users",
		"a_b_c":       "/a/b/c",
		"blog-admin":  "/blog-admin",
		"index_stats": "/index/stats",
	} {
		if got := Route(name); got != want {
			t.Errorf("Route(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestValidWorkerName(t *testing.T) {
	for name, want := range map[string]bool{
		"index": true, "api_users": true, "a-b": true, "0": true, "9x_": true, "9x": true,
		"": false, "_a": false, "-a": false, "Index": false, "a.b": false, "a/b": false,
		"..": false, "a b": false, "é": false, "_x": false, "-x": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

// binaries.path moves every worker's binary: Worker, Discover(Binaries),
// BinDir and Checksum all follow it.
func TestConfiguredBinaryPath(t *testing.T) {
	root := t.TempDir()
	r := New(root, Options{BinaryPath: "build/{worker_name}"})
	w := r.Worker("api_users")
	if got, want := w.Binary(), filepath.Join(root, "build", "api_users"); got != want {
		t.Errorf("Binary() = %q, want %q", got, want)
	}
	if got, want := w.BinDir(), filepath.Join(root, "build"); got != want {
		t.Errorf("BinDir() = %q, want %q", got, want)
	}
	if got, want := w.Checksum(), filepath.Join(root, "build", "api_users.sha256"); got != want {
		t.Errorf("Checksum() = %q, want %q", got, want)
	}
	abs := New(root, Options{BinaryPath: "/opt/bin/{worker_name}.bin"})
	if got := abs.Worker("x").Binary(); got != "/opt/bin/x.bin" {
		t.Errorf("absolute path: Binary() = %q", got)
	}

	mk(t, root, "workers/index/src/main.go", "package main")
	mk(t, root, "build/index", "bin")
	mk(t, root, "workers/old/bin/old", "bin") // the default place: not a binary here
	mk(t, root, "workers/old/src/main.go", "package main")
	found, warnings, err := r.Discover(Binaries)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(found); !reflect.DeepEqual(got, []string{"index"}) {
		t.Errorf("Discover(Binaries) = %v, want [index] (from build/)", got)
	}
	if len(found) == 1 && found[0].Binary() != filepath.Join(root, "build", "index") {
		t.Errorf("found binary %q", found[0].Binary())
	}
	if want := "skipped: no binary build/old (build it with `tqserver build old`)"; len(warnings) != 1 || !strings.HasSuffix(warnings[0], want) {
		t.Errorf("warnings = %q, want one ending %q", warnings, want)
	}
}
