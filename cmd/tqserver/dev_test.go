package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// devSource is the test worker's source with its version string replaced.
func devSource(t *testing.T, version string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/testworker/main.go")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), `version   = "v0"`, `version   = "`+version+`"`, 1)
	if src == string(b) {
		t.Fatal("test worker source has no version line to replace")
	}
	return src
}

func TestDevModeEditRebuildSwap(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	writeFile(t, src, devSource(t, "d1"))
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/"), "d1 index", 60*time.Second)

	l := testrig.StartLoad(s.URL("/"), 2, 1_000_000, 120*time.Second)
	// An edit is rebuilt and swapped in.
	writeFile(t, src, devSource(t, "d2"))
	waitBody(t, s.URL("/"), "d2 index", 60*time.Second)

	// A syntax error: the build fails, is recorded with the compiler's
	// file:line, and the running instance keeps serving.
	writeFile(t, src, devSource(t, "d3")+"\nfunc broken( {\n")
	testrig.WaitFor(t, 60*time.Second, "build_failed record", func() bool {
		for _, r := range history(t, root, "--worker", "index") {
			if r.Event == "build_failed" && strings.Contains(r.Detail, "main.go:") {
				return true
			}
		}
		return false
	})
	if c, b := get(t, s.URL("/")); c != 200 || !strings.Contains(b, "d2 index") {
		t.Fatalf("after a failed build: %d %q", c, b)
	}
	// Fixed: swapped again.
	writeFile(t, src, devSource(t, "d4"))
	waitBody(t, s.URL("/"), "d4 index", 60*time.Second)
	ok, failed, errs := l.Finish()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed across dev swaps: %v", failed, ok+failed, errs)
	}

	// A new worker directory is built and served; deleting it stops it.
	writeFile(t, filepath.Join(root, "workers", "blog", "src", "main.go"), devSource(t, "b1"))
	waitBody(t, s.URL("/blog/x"), "b1 blog", 60*time.Second)
	var blogPID int
	for _, w := range s.status().Workers {
		if w.Name == "blog" && len(w.Instances) > 0 {
			blogPID = w.Instances[0].PID
		}
	}
	if err := os.RemoveAll(filepath.Join(root, "workers", "blog")); err != nil {
		t.Fatal(err)
	}
	waitBody(t, s.URL("/blog/x"), "d4 index", 30*time.Second)
	testrig.WaitFor(t, 10*time.Second, "deleted worker's process gone", func() bool { return blogPID == 0 || !testrig.PIDAlive(blogPID) })

	recs := history(t, root)
	if n := count(recs, func(r store.Record) bool {
		return r.Reason == "source_changed" && r.To == "healthy" && r.Worker == "index"
	}); n != 2 {
		t.Fatalf("want 2 source_changed swaps of index, got %d", n)
	}
	s.signal(syscall.SIGTERM)
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.PID != 0 && testrig.PIDAlive(r.PID) {
			t.Errorf("pid %d (%s) outlived the server", r.PID, r.Instance)
		}
	}
}

// When the app root is the server's own repository (it has cmd/tqserver),
// an edit of the server's sources rebuilds server/bin/tqserver and the log
// says a reload upgrades to it; workers keep running. The reload hands over
// to it (here a program that is no server: it exits at once, so the
// upgrade rolls back and the reload fails saying so).
func TestDevModeServerSourceRebuild(t *testing.T) {
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	writeFile(t, filepath.Join(root, "workers", "index", "src", "main.go"), devSource(t, "s1"))
	mainGo := filepath.Join(root, "cmd", "tqserver", "main.go")
	writeFile(t, mainGo, "package main\n\nfunc main() {}\n")
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/"), "s1 index", 60*time.Second)
	pid := s.status().Workers[0].Instances[0].PID

	writeFile(t, mainGo, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"server v2\") }\n")
	bin := filepath.Join(root, "server", "bin", "tqserver")
	testrig.WaitFor(t, 60*time.Second, "server binary rebuilt and recorded", func() bool {
		for _, r := range history(t, root) {
			if r.Event == "build_ok" && r.Worker == "" && strings.Contains(r.Detail, "upgrades the running server") {
				return true
			}
		}
		return false
	})
	out, err := exec.Command(bin).Output()
	if err != nil || strings.TrimSpace(string(out)) != "server v2" {
		t.Fatalf("rebuilt server binary: %v %q", err, out)
	}
	if got := s.status().Workers[0].Instances[0].PID; got != pid {
		t.Fatal("a server source change restarted a worker")
	}
	if !strings.Contains(s.Logs(), "upgrades the running server to it") {
		t.Fatal("the log does not say how to upgrade")
	}
	rout, rerr, err := runCLI(t, "reload", "--root", root)
	if err == nil || !strings.Contains(rout, "server upgrade failed: new server pid") || !strings.Contains(rout, "exited before it was ready (exit code 0)") {
		t.Fatalf("reload with a rebuilt server that is no server: %v\n%s%s", err, rout, rerr)
	}
	if st := s.status(); st.PID != s.PID() || st.Workers[0].Instances[0].PID != pid {
		t.Fatal("a failed server upgrade replaced the server or a worker")
	}
}
