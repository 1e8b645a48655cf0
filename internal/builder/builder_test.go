package builder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
