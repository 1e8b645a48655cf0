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

// writeWorker makes a self-contained module with one worker under root.
func writeWorker(t *testing.T, root, name, src string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/app\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "workers", name)
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildOKAndFailure(t *testing.T) {
	root := t.TempDir()
	good := writeWorker(t, root, "good", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from good\") }\n")
	bad := writeWorker(t, root, "bad", "package main\n\nfunc main() { undefinedThing() }\n")
	res := BuildAll(context.Background(), []string{good, bad}, 2, Options{Prod: true, LDFlags: "-s -w"})
	if res[0].Err != nil {
		t.Fatalf("good: %v\n%s", res[0].Err, res[0].Output)
	}
	out, err := exec.Command(res[0].Binary).Output()
	if err != nil || strings.TrimSpace(string(out)) != "hello from good" {
		t.Fatalf("run built binary: %q %v", out, err)
	}
	sum, err := os.ReadFile(res[0].Binary + ".sha256")
	if err != nil || len(strings.Fields(string(sum))[0]) != 64 {
		t.Fatalf("sha256 file: %q %v", sum, err)
	}
	if res[1].Err == nil {
		t.Fatal("bad worker built")
	}
	if !strings.Contains(res[1].Output, "main.go:3") || !strings.Contains(res[1].Err.Error(), "undefined") {
		t.Fatalf("compiler output not kept: err=%v out=%q", res[1].Err, res[1].Output)
	}
	if _, err := os.Stat(res[1].Binary); !os.IsNotExist(err) {
		t.Fatalf("failed build left a binary: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(bad, "bin"))
	for _, e := range entries {
		t.Errorf("failed build left %s", e.Name())
	}
	// A dev rebuild removes the prod checksum, which would no longer match.
	if r := Build(context.Background(), good, Options{}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if _, err := os.Stat(res[0].Binary + ".sha256"); !os.IsNotExist(err) {
		t.Fatal("dev build kept a stale .sha256")
	}
}

func TestNoSource(t *testing.T) {
	r := Build(context.Background(), t.TempDir(), Options{})
	if r.Err == nil || !strings.Contains(r.Err.Error(), "no src/main.go") {
		t.Fatalf("got %v", r.Err)
	}
}

func TestCancelKillsBuild(t *testing.T) {
	root := t.TempDir()
	dir := writeWorker(t, root, "slow", "package main\n\nfunc main() {}\n")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // cancelled before it starts: must not leave a binary or temp file
	r := Build(ctx, dir, Options{})
	if !r.Canceled || r.Err == nil {
		t.Fatalf("want a cancelled build, got %+v", r)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "bin"))
	for _, e := range entries {
		t.Errorf("cancelled build left %s", e.Name())
	}
}

func TestStageInstallDiscard(t *testing.T) {
	root := t.TempDir()
	dir := writeWorker(t, root, "w", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"v1\") }\n")
	if r := Build(context.Background(), dir, Options{}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"v2\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(p string) string {
		t.Helper()
		out, err := exec.Command(p).Output()
		if err != nil {
			t.Fatalf("run %s: %v", p, err)
		}
		return strings.TrimSpace(string(out))
	}
	r := Build(context.Background(), dir, Options{Stage: true})
	if r.Err != nil || r.Staged == "" {
		t.Fatalf("staged build: %v staged=%q", r.Err, r.Staged)
	}
	if got := run(r.Binary); got != "v1" {
		t.Fatalf("a staged build replaced the binary: it prints %q", got)
	}
	if got := run(r.Staged); got != "v2" {
		t.Fatalf("staged file prints %q", got)
	}
	staged := r.Staged
	if err := Install(&r); err != nil {
		t.Fatal(err)
	}
	if got := run(r.Binary); got != "v2" {
		t.Fatalf("after Install the binary prints %q", got)
	}
	if _, err := os.Stat(staged); !os.IsNotExist(err) {
		t.Fatalf("staged file still there after Install: %v", err)
	}
	if err := Install(&r); err == nil {
		t.Fatal("second Install of the same result succeeded")
	}

	r = Build(context.Background(), dir, Options{Stage: true})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	staged = r.Staged
	Discard(&r)
	if _, err := os.Stat(staged); !os.IsNotExist(err) {
		t.Fatalf("Discard left %s: %v", staged, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "bin"))
	if len(entries) != 1 || entries[0].Name() != "w" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("bin/ holds %v, want only the binary", names)
	}
}

// A rebuild that produces the same bytes leaves the installed binary (and
// its .sha256) alone, so its mtime stays; a changed source replaces it.
func TestRebuildIdenticalLeavesBinaryAlone(t *testing.T) {
	root := t.TempDir()
	dir := writeWorker(t, root, "w", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"v1\") }\n")
	o := Options{Prod: true, LDFlags: "-s -w"}
	first := Build(context.Background(), dir, o)
	if first.Err != nil || first.Unchanged {
		t.Fatalf("first build: err=%v unchanged=%v", first.Err, first.Unchanged)
	}
	// An old mtime, so that a rewrite cannot go unnoticed within the
	// filesystem's timestamp granularity.
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{first.Binary, first.Binary + ".sha256"} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	mtime := func(p string) time.Time {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	for _, prod := range []bool{true, false} {
		o.Prod = prod
		again := Build(context.Background(), dir, o)
		if again.Err != nil {
			t.Fatal(again.Err)
		}
		if !mtime(first.Binary).Equal(old) {
			t.Fatalf("prod=%v: an identical rebuild rewrote the binary (mtime %v)", prod, mtime(first.Binary))
		}
		if prod && !again.Unchanged {
			t.Fatal("an identical prod rebuild was not reported as unchanged")
		}
		if prod && !mtime(first.Binary+".sha256").Equal(old) {
			t.Fatal("an identical rebuild rewrote the .sha256")
		}
		o.Prod = true
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "bin"))
	for _, e := range entries {
		if e.Name() != "w" && e.Name() != "w.sha256" {
			t.Errorf("rebuild left %s", e.Name())
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"v2\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := Build(context.Background(), dir, o)
	if changed.Err != nil || changed.Unchanged {
		t.Fatalf("changed build: err=%v unchanged=%v", changed.Err, changed.Unchanged)
	}
	if mtime(first.Binary).Equal(old) || mtime(first.Binary+".sha256").Equal(old) {
		t.Fatal("a changed build did not replace the binary and its .sha256")
	}
	if out, err := exec.Command(first.Binary).Output(); err != nil || strings.TrimSpace(string(out)) != "v2" {
		t.Fatalf("after the changed build: %q %v", out, err)
	}
}

// With a layout, the build goes where binaries.path says, checksum beside it.
func TestBuildToConfiguredBinaryPath(t *testing.T) {
	root := t.TempDir()
	dir := writeWorker(t, root, "app", "package main\n\nfunc main() { println(\"app\") }\n")
	lay := layout.New(root, layout.Options{BinaryPath: "build/{worker_name}.bin"})
	r := Build(context.Background(), dir, Options{Prod: true, Layout: &lay})
	if r.Err != nil {
		t.Fatalf("%v\n%s", r.Err, r.Output)
	}
	want := filepath.Join(root, "build", "app.bin")
	if r.Binary != want {
		t.Errorf("Binary = %q, want %q", r.Binary, want)
	}
	for _, p := range []string{want, want + ".sha256"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bin")); !os.IsNotExist(err) {
		t.Errorf("the build also made workers/app/bin: %v", err)
	}
}
