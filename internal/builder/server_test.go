package builder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
)

// A root with cmd/tqserver/main.go builds its server to server/bin/tqserver
// (with a .sha256 naming the binary in prod); any other root says why not.
func TestBuildServer(t *testing.T) {
	root := t.TempDir()
	writeWorker(t, root, "index", "package main\n\nfunc main() {}\n")
	lay := layout.New(root, layout.Options{})
	r := BuildServer(context.Background(), lay, Options{Prod: true})
	if r.Err == nil || !strings.Contains(r.Err.Error(), "cmd/tqserver/main.go") {
		t.Fatalf("server build without sources: %v", r.Err)
	}
	main := filepath.Join(root, "cmd", "tqserver", "main.go")
	if err := os.MkdirAll(filepath.Dir(main), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(main, []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"the server\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = BuildServer(context.Background(), lay, Options{Prod: true, LDFlags: "-s -w"})
	if r.Err != nil {
		t.Fatalf("%v\n%s", r.Err, r.Output)
	}
	if r.Binary != filepath.Join(root, "server", "bin", "tqserver") {
		t.Fatalf("binary at %s", r.Binary)
	}
	out, err := exec.Command(r.Binary).Output()
	if err != nil || strings.TrimSpace(string(out)) != "the server" {
		t.Fatalf("run the server binary: %q %v", out, err)
	}
	sum, err := os.ReadFile(r.Binary + ".sha256")
	if f := strings.Fields(string(sum)); err != nil || len(f) != 2 || len(f[0]) != 64 || f[1] != "tqserver" {
		t.Fatalf("server .sha256: %q %v", sum, err)
	}
	if r2 := BuildServer(context.Background(), lay, Options{Prod: true, LDFlags: "-s -w"}); r2.Err != nil || !r2.Unchanged {
		t.Fatalf("second identical server build: unchanged=%v err=%v", r2.Unchanged, r2.Err)
	}
}

func TestOutdated(t *testing.T) {
	root := t.TempDir()
	dir := writeWorker(t, root, "index", "package main\n\nfunc main() {}\n")
	check := func(want bool, when string) {
		t.Helper()
		got, err := Outdated(dir, layout.WorkerOf(dir).Binary(), root)
		if err != nil || got != want {
			t.Fatalf("%s: outdated=%v err=%v, want %v", when, got, err, want)
		}
	}
	check(true, "no binary")
	if r := Build(context.Background(), dir, Options{}); r.Err != nil {
		t.Fatal(r.Err)
	}
	// The binary is newer than everything once built; set times explicitly
	// so the test does not depend on the file system's mtime granularity.
	bin := layout.WorkerOf(dir).Binary()
	base := time.Now().Add(-time.Hour)
	setTime := func(p string, d time.Duration) {
		t.Helper()
		if err := os.Chtimes(p, base.Add(d), base.Add(d)); err != nil {
			t.Fatal(err)
		}
	}
	setTime(filepath.Join(dir, "src", "main.go"), 0)
	setTime(filepath.Join(root, "go.mod"), 0)
	setTime(bin, time.Minute)
	check(false, "binary newer than its sources")

	sub := filepath.Join(dir, "src", "handlers", "h.go")
	if err := os.MkdirAll(filepath.Dir(sub), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sub, []byte("package handlers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	setTime(sub, 2*time.Minute)
	check(true, "a file in a subdirectory of src/ is newer")
	setTime(sub, 0)
	check(false, "subdirectory file older again")
	setTime(filepath.Join(root, "go.mod"), 2*time.Minute)
	check(true, "the module's go.mod is newer")

	// binaries.path elsewhere: the binary asked about is the one compared
	// (workers/index/bin/index no longer exists).
	moved := filepath.Join(root, "build", "index")
	if err := os.MkdirAll(filepath.Dir(moved), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin, moved); err != nil {
		t.Fatal(err)
	}
	setTime(filepath.Join(root, "go.mod"), 0)
	if got, err := Outdated(dir, moved, root); err != nil || got {
		t.Fatalf("binary at binaries.path newer than its sources: outdated=%v err=%v", got, err)
	}
}
