package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// The end-to-end tests run the real tqserver binary against app roots in
// t.TempDir(), with worker binaries built from testdata/testworker, and talk
// to it over loopback HTTP, its CLI and real signals. The rig itself
// (builds, the server process, status, load) is internal/testrig; this file
// binds it to this package's binary and to testing.TB.

var (
	tqBin  string
	builds *testrig.Builds // test worker variants, built once per run
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tqserver-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	src, err := testrig.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tqBin = filepath.Join(dir, "tqserver")
	// -race when the tests run with it: a data race in the supervisor or
	// the proxy fails the end-to-end tests too.
	if err := testrig.BuildServer(src, tqBin, testrig.Race); err != nil {
		fmt.Fprintf(os.Stderr, "build tqserver: %v\n", err)
		return 1
	}
	builds = testrig.NewBuilds(dir)
	return m.Run()
}

// newRoot makes an app root with the given config/server.yaml (may be empty).
func newRoot(t testing.TB, serverYAML string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"config", "workers", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if serverYAML != "" {
		writeFile(t, filepath.Join(root, "config", "server.yaml"), serverYAML)
	}
	return root
}

// portBlock moves the test configs' worker port range (21000-21999) to a
// block of 100 in 11000-19999 chosen by this test binary's pid, so that test binaries
// running side by side on one machine (a CI run beside a developer's) do
// not hand their workers the same ports.
var portBlock = 11000 + (os.Getpid()%90)*100

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if filepath.Base(path) == "server.yaml" {
		content = strings.Replace(content, "port_range_start: 21000\n  port_range_end: 21999",
			fmt.Sprintf("port_range_start: %d\n  port_range_end: %d", portBlock, portBlock+99), 1)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// install deploys the test worker built with version and behaviour the way
// rsync does: write a temp file, rename.
func install(t testing.TB, root, name, version, behaviour string) {
	t.Helper()
	if err := testrig.Install(root, name, builds.TestWorker(t, version, behaviour)); err != nil {
		t.Fatal(err)
	}
}

func installBytes(t testing.TB, root, name string, data []byte) {
	t.Helper()
	if err := testrig.InstallBytes(root, name, data); err != nil {
		t.Fatal(err)
	}
}

// server is the rig's server bound to one test.
type server struct {
	*testrig.Server
	t testing.TB
}

// startServer runs `tqserver serve` in prod mode on a free loopback port and
// waits until its admin socket answers.
func startServer(t testing.TB, root string, args ...string) *server {
	t.Helper()
	return startServerMode(t, root, "prod", args...)
}

func startServerMode(t testing.TB, root, mode string, args ...string) *server {
	t.Helper()
	o := testrig.ServerOptions{Bin: tqBin, Root: root, Mode: mode, Args: args}
	return &server{testrig.StartServerT(t, o, 60*time.Second), t} // dev mode builds first
}

// runCLI runs the tqserver binary with args and returns stdout, stderr, error.
func runCLI(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	return testrig.RunCLI(tqBin, args...)
}

// statusErr is `tqserver status --json`: the CLI, not only the socket.
func (s *server) statusErr() (*supervisor.Status, error) {
	var st supervisor.Status
	if err := testrig.CLIStatus(tqBin, s.Root(), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (s *server) status() *supervisor.Status {
	s.t.Helper()
	st, err := s.statusErr()
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

func history(t testing.TB, root string, args ...string) []store.Record {
	t.Helper()
	lines, err := testrig.HistoryLines(tqBin, root, args...)
	if err != nil {
		t.Fatal(err)
	}
	var recs []store.Record
	for _, line := range lines {
		var r store.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("history line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func (s *server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// wait waits for the server to exit and returns its exit error.
func (s *server) wait(timeout time.Duration) error {
	s.t.Helper()
	err, ok := s.Wait(timeout)
	if !ok {
		s.t.Fatalf("server did not exit within %s\n%s", timeout, s.Logs())
	}
	return err
}

var plainClient = &http.Client{Timeout: 30 * time.Second}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := plainClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitBody polls url until its body contains want.
func waitBody(t testing.TB, url, want string, timeout time.Duration) {
	t.Helper()
	testrig.WaitFor(t, timeout, url+" to answer "+want, func() bool {
		code, body := get(t, url)
		return code == 200 && strings.Contains(body, want)
	})
}

// count is how many records pred accepts.
func count(recs []store.Record, pred func(store.Record) bool) int {
	n := 0
	for _, r := range recs {
		if pred(r) {
			n++
		}
	}
	return n
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
