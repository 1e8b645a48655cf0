package testrig

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
)

// SocketPath is the admin socket of the server on root.
func SocketPath(root string) string { return layout.New(root, layout.Options{}).Socket() }

// BuildServer builds ./cmd/tqserver of the tree at src into out, with
// -race when race is set.
func BuildServer(src, out string, race bool) error {
	return GoBuild(Build{Dir: src, Pkg: "./cmd/tqserver", Out: out, Race: race})
}

// ServerOptions says how to run `tqserver serve`.
type ServerOptions struct {
	Bin  string   // the tqserver binary
	Root string   // the app root
	Mode string   // --mode; empty means prod
	Args []string // more serve flags
	// Listen is --listen; empty means 127.0.0.1:0, and WaitUp learns the
	// port from the status.
	Listen string
	// LogFile, when set, receives the server's stdout and stderr instead of
	// memory (a benchmark's thousand workers log a lot).
	LogFile string
}

// Server is a running tqserver in its own process group.
type Server struct {
	root    string
	cmd     *exec.Cmd
	logs    *Buffer
	logFile *os.File
	done    chan struct{}

	mu   sync.Mutex
	addr string
	exit error
}

// StartServer starts `tqserver serve` as o says and returns at once; see
// WaitUp.
func StartServer(o ServerOptions) (*Server, error) {
	if o.Mode == "" {
		o.Mode = "prod"
	}
	listen := o.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	s := &Server{root: o.Root, done: make(chan struct{})}
	if !strings.HasSuffix(listen, ":0") {
		s.addr = listen
	}
	var out io.Writer
	if o.LogFile != "" {
		f, err := os.Create(o.LogFile)
		if err != nil {
			return nil, fmt.Errorf("server log: %w", err)
		}
		s.logFile, out = f, f
	} else {
		s.logs = &Buffer{}
		out = s.logs
	}
	args := append([]string{"serve", "--root", o.Root, "--mode", o.Mode, "--listen", listen}, o.Args...)
	s.cmd = exec.Command(o.Bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		if s.logFile != nil {
			s.logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", o.Bin, err)
	}
	go func() {
		err := s.cmd.Wait()
		s.mu.Lock()
		s.exit = err
		s.mu.Unlock()
		if s.logFile != nil {
			s.logFile.Close()
		}
		close(s.done)
	}()
	return s, nil
}

// StartServerT starts the server for one test and waits until its admin
// socket reports it running with a listen address (upTimeout covers a dev
// mode's first builds). When the test ends the server is stopped; a data
// race it reported fails the test, and a failed test logs its output.
func StartServerT(t testing.TB, o ServerOptions, upTimeout time.Duration) *Server {
	t.Helper()
	s, err := StartServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(15 * time.Second)
		if strings.Contains(s.Logs(), "WARNING: DATA RACE") {
			t.Errorf("the server reported a data race")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.Logs())
		}
	})
	if err := s.WaitUp(upTimeout); err != nil {
		t.Fatal(err) // the cleanup logs the server's output
	}
	return s
}

// Root is the server's app root.
func (s *Server) Root() string { return s.root }

// PID is the server's process id (and process group id).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Addr is the server's listen address: as given, or learnt by WaitUp.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL is http://Addr() followed by path.
func (s *Server) URL(path string) string { return "http://" + s.Addr() + path }

// Done is closed once the server has exited and been reaped.
func (s *Server) Done() <-chan struct{} { return s.done }

// ExitErr is what the server's Wait returned (nil while it runs).
func (s *Server) ExitErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// Logs is everything the server wrote to stdout and stderr so far.
func (s *Server) Logs() string {
	if s.logs != nil {
		return s.logs.String()
	}
	b, err := os.ReadFile(s.logFile.Name())
	if err != nil {
		return fmt.Sprintf("(server log %s: %v)", s.logFile.Name(), err)
	}
	return string(b)
}

// LogTail is the last n bytes of Logs.
func (s *Server) LogTail(n int) string {
	l := s.Logs()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return l
}

// Signal sends sig to the server process (not its group).
func (s *Server) Signal(sig syscall.Signal) error {
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to tqserver pid %d: %w", sig, s.PID(), err)
	}
	return nil
}

// Wait waits up to timeout for the server to exit and returns its exit
// error; ok is false when it still runs.
func (s *Server) Wait(timeout time.Duration) (exit error, ok bool) {
	select {
	case <-s.done:
		return s.ExitErr(), true
	case <-time.After(timeout):
		return nil, false
	}
}

// Stop sends SIGTERM (the server stops its workers) and waits; after
// timeout it kills the server's process group. It is a no-op once the
// server has exited.
func (s *Server) Stop(timeout time.Duration) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if _, ok := s.Wait(timeout); !ok {
		syscall.Kill(-s.PID(), syscall.SIGKILL)
		<-s.done
	}
}

// WaitUp polls the admin socket until the server reports itself running
// with a listen address, fails early when the server exits, and records the
// address for Addr.
func (s *Server) WaitUp(timeout time.Duration) error {
	err := s.PollAlive(timeout, 20*time.Millisecond, "tqserver on "+s.root+" to come up", func() (bool, string) {
		var st struct {
			Running bool   `json:"running"`
			Listen  string `json:"listen"`
		}
		if err := SocketStatus(s.root, &st); err != nil {
			return false, err.Error()
		}
		if !st.Running || st.Listen == "" {
			return false, fmt.Sprintf("running %v, listen %q", st.Running, st.Listen)
		}
		s.mu.Lock()
		s.addr = st.Listen
		s.mu.Unlock()
		return true, ""
	})
	return err
}

// PollAlive is Poll that gives up as soon as the server exits, with an
// error that carries the end of its log.
func (s *Server) PollAlive(timeout, interval time.Duration, what string, cond func() (bool, string)) error {
	exited := false
	err := Poll(timeout, interval, what, func() (bool, string) {
		select {
		case <-s.done:
			exited = true
			return true, ""
		default:
		}
		return cond()
	})
	if exited {
		return fmt.Errorf("tqserver on %s exited (%v) while waiting for %s:\n%s", s.root, s.ExitErr(), what, s.LogTail(4000))
	}
	return err
}

// AdminClient talks HTTP to the admin socket of the server on root; every
// request dials afresh, so no idle connection outlives the server.
func AdminClient(root string, timeout time.Duration) *http.Client {
	sock := SocketPath(root)
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

// SocketStatus reads GET /v1/status from the admin socket of the server on
// root into v (a *supervisor.Status, or a struct with the fields wanted):
// what `tqserver status --json` prints of a running server, without
// starting a process.
func SocketStatus(root string, v any) error {
	resp, err := AdminClient(root, 10*time.Second).Get("http://tqserver/v1/status")
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", SocketPath(root), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET /v1/status: status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET /v1/status: %w", err)
	}
	return nil
}

// CLITimeout bounds one RunCLI.
const CLITimeout = 60 * time.Second

// RunCLI runs bin with args (a tqserver command) and returns its stdout and
// stderr; err is set when it fails or outlives CLITimeout.
func RunCLI(bin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), CLITimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%s %s: killed after %s: %w", filepath.Base(bin), strings.Join(args, " "), CLITimeout, err)
	}
	return out.String(), errb.String(), err
}

// CLIStatus runs `tqserver status --json --root root` and decodes its
// output into v.
func CLIStatus(bin, root string, v any) error {
	out, errs, err := RunCLI(bin, "status", "--json", "--root", root)
	if err != nil {
		return fmt.Errorf("tqserver status: %w: %s", err, strings.TrimSpace(errs))
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("tqserver status --json: %w: %q", err, out)
	}
	return nil
}

// HistoryLines runs `tqserver history --json --root root args...` and
// returns its lines (one JSON record each; empty lines dropped).
func HistoryLines(bin, root string, args ...string) ([]string, error) {
	out, errs, err := RunCLI(bin, append([]string{"history", "--json", "--root", root}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("tqserver history: %w: %s", err, strings.TrimSpace(errs))
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
