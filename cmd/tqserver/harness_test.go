package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// The end-to-end tests run the real tqserver binary against app roots in
// t.TempDir(), with worker binaries built from testdata/testworker, and talk
// to it over loopback HTTP, its CLI and real signals.

var (
	tqBin    string
	buildDir string
	binMu    sync.Mutex
	bins     = map[string]string{}
)

func TestMain(m *testing.M) {
	var err error
	buildDir, err = os.MkdirTemp("", "tqserver-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tqBin = filepath.Join(buildDir, "tqserver")
	args := []string{"build", "-o", tqBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build tqserver: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(buildDir)
	os.Exit(code)
}

// workerBin builds (once) the test worker with a version and behaviour.
func workerBin(t testing.TB, version, behaviour string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	key := version + "-" + behaviour
	if p, ok := bins[key]; ok {
		return p
	}
	p := filepath.Join(buildDir, "testworker-"+key)
	cmd := exec.Command("go", "build", "-o", p, "-ldflags", "-X main.version="+version+" -X main.behaviour="+behaviour, "./testdata/testworker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build test worker: %v\n%s", err, out)
	}
	bins[key] = p
	return p
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

func writeFile(t testing.TB, path, content string) {
	t.Helper()
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

// install deploys a worker binary the way rsync does: write a temp file, rename.
func install(t testing.TB, root, name, version, behaviour string) {
	t.Helper()
	src := workerBin(t, version, behaviour)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	installBytes(t, root, name, data)
}

func installBytes(t testing.TB, root, name string, data []byte) {
	t.Helper()
	dst := filepath.Join(root, "workers", name, "bin", name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".deploy"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type server struct {
	t      testing.TB
	root   string
	cmd    *exec.Cmd
	addr   string
	logs   *syncBuffer
	done   chan struct{}
	exitMu sync.Mutex
	exit   error
}

// startServer runs `tqserver serve` in prod mode on a free loopback port and
// waits until its admin socket answers.
func startServer(t testing.TB, root string, args ...string) *server {
	t.Helper()
	return startServerMode(t, root, "prod", args...)
}

func startServerMode(t testing.TB, root, mode string, args ...string) *server {
	t.Helper()
	s := &server{t: t, root: root, logs: &syncBuffer{}, done: make(chan struct{})}
	all := append([]string{"serve", "--root", root, "--mode", mode, "--listen", "127.0.0.1:0"}, args...)
	s.cmd = exec.Command(tqBin, all...)
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		s.exitMu.Lock()
		s.exit = err
		s.exitMu.Unlock()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(15 * time.Second):
				syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
		}
		if strings.Contains(s.logs.String(), "WARNING: DATA RACE") {
			t.Errorf("the server reported a data race")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second) // dev mode builds first
	for {
		select {
		case <-s.done:
			t.Fatalf("server exited at start: %v\n%s", s.exit, s.logs.String())
		default:
		}
		if st, err := s.statusErr(); err == nil && st.Running && st.Listen != "" {
			s.addr = st.Listen
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cli runs the tqserver binary with args and returns stdout, stderr, error.
func runCLI(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tqBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (s *server) statusErr() (*supervisor.Status, error) {
	out, errs, err := runCLI(s.t, "status", "--json", "--root", s.root)
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, errs)
	}
	var st supervisor.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status json: %v: %q", err, out)
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
	out, errs, err := runCLI(t, append([]string{"history", "--json", "--root", root}, args...)...)
	if err != nil {
		t.Fatalf("history: %v: %s", err, errs)
	}
	var recs []store.Record
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r store.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("history line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

func (s *server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// wait waits for the server to exit and returns its exit error.
func (s *server) wait(timeout time.Duration) error {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("server did not exit within %s\n%s", timeout, s.logs.String())
	}
	s.exitMu.Lock()
	defer s.exitMu.Unlock()
	return s.exit
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

// waitFor polls fn until it returns true or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBody polls url until its body contains want.
func waitBody(t testing.TB, url, want string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, url+" to answer "+want, func() bool {
		code, body := get(t, url)
		return code == 200 && strings.Contains(body, want)
	})
}

// load runs n keep-alive clients against url until stop is called, bounded
// by maxRequests in total and maxDur.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	samples    []sample // every request's start and duration, for percentiles
	stop       chan struct{}
	wg         sync.WaitGroup
	last       atomic.Value // last body seen
	watch      atomic.Pointer[bodyWatch]
}

// bodyWatch is closed by the first response whose body starts with prefix.
type bodyWatch struct {
	prefix string
	seen   chan struct{}
	once   sync.Once
}

// await returns a channel closed as soon as a load client gets a 200 whose
// body starts with prefix (without polling, so waiting costs no CPU).
// It replaces any earlier watch.
func (l *load) await(prefix string) <-chan struct{} {
	w := &bodyWatch{prefix: prefix, seen: make(chan struct{})}
	l.watch.Store(w)
	return w.seen
}

func startLoad(url string, n int, maxRequests int64, maxDur time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	end := time.Now().Add(maxDur)
	var total atomic.Int64
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			for total.Add(1) <= maxRequests && time.Now().Before(end) {
				select {
				case <-l.stop:
					return
				default:
				}
				t0 := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				l.mu.Lock()
				if len(l.samples) < 5_000_000 {
					l.samples = append(l.samples, sample{t0, time.Since(t0)})
				}
				l.mu.Unlock()
				if err != nil || resp.StatusCode != 200 {
					l.fail(fmt.Sprintf("%d %v %q", resp.StatusCode, err, b))
					continue
				}
				l.ok.Add(1)
				l.last.Store(string(b))
				if w := l.watch.Load(); w != nil && strings.HasPrefix(string(b), w.prefix) {
					w.once.Do(func() { close(w.seen) })
				}
			}
		}()
	}
	return l
}

func (l *load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, msg)
	}
	l.mu.Unlock()
}

func (l *load) finish() (ok, failed int64, errs []string) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.failed.Load(), l.errs
}

// transitions filters records to those of one worker with a given reason.
func count(recs []store.Record, pred func(store.Record) bool) int {
	n := 0
	for _, r := range recs {
		if pred(r) {
			n++
		}
	}
	return n
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

type sample struct {
	at  time.Time
	dur time.Duration
}

// p99 of the samples for which in reports true.
func p99(samples []sample, in func(time.Time) bool) (time.Duration, int) {
	var d []time.Duration
	for _, s := range samples {
		if in(s.at) {
			d = append(d, s.dur)
		}
	}
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*99/100], len(d)
}
