package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mevdschee/tqserver/internal/layout"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// moduleRoot is the directory of the tqserver module (where go.mod is),
// found from the working directory.
func moduleRoot() (string, error) {
	root, err := testrig.ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("%w (run from the tqserver repository, or pass -src)", err)
	}
	return root, nil
}

const benchConfig = `workers:
  port_range_start: 20000
  port_range_end: 29999
  default:
    go_max_procs: 1
`

// newAppRoot makes an app root under dir with the given worker names, each a
// hard link (or else a copy) of bin.
func newAppRoot(dir string, names []string, bin string) (string, error) {
	return newAppRootConfig(dir, names, bin, benchConfig)
}

// newAppRootConfig is newAppRoot with cfg as config/server.yaml.
func newAppRootConfig(dir string, names []string, bin, cfg string) (string, error) {
	root := filepath.Join(dir, "app")
	lay := layout.New(root, layout.Options{})
	if err := os.MkdirAll(lay.ConfigDir(), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(lay.ServerConfig(), []byte(cfg), 0o644); err != nil {
		return "", err
	}
	for _, n := range names {
		// Hard links: 1,000 copies of a Go binary would cost gigabytes.
		dst := testrig.WorkerBinPath(root, n)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.Link(bin, dst); err != nil {
			if err := testrig.Install(root, n, bin); err != nil {
				return "", err
			}
		}
	}
	return root, nil
}

// server is one running tqserver, its output in a file next to its root.
type server struct {
	*testrig.Server
	bin string
}

func startServer(bin, root string) (*server, error) {
	port, err := testrig.FreePort()
	if err != nil {
		return nil, err
	}
	s, err := testrig.StartServer(testrig.ServerOptions{Bin: bin, Root: root,
		Listen: "127.0.0.1:" + strconv.Itoa(port), LogFile: filepath.Join(filepath.Dir(root), "tqserver.log")})
	if err != nil {
		return nil, err
	}
	return &server{Server: s, bin: bin}, nil
}

type statusJSON struct {
	Running bool   `json:"running"`
	PID     int    `json:"pid"`
	Listen  string `json:"listen"`
	Workers []struct {
		Name      string `json:"name"`
		Instances []struct {
			Instance string `json:"instance"`
			State    string `json:"state"`
			PID      int    `json:"pid"`
			Port     int    `json:"port"`
			Served   int64  `json:"served"`
		} `json:"instances"`
	} `json:"workers"`
}

func (s *server) status() (*statusJSON, error) {
	var st statusJSON
	if err := testrig.CLIStatus(s.bin, s.Root(), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// socketStatus reads the status over the server's admin socket: what
// `tqserver status --json` prints, without starting a process. The restart
// test polls it while measuring, so the observer costs a local round trip,
// not a process start.
func (s *server) socketStatus() (*statusJSON, error) {
	var st statusJSON
	if err := testrig.SocketStatus(s.Root(), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// pollStatus reads the status with read every interval until done accepts
// it (done also says, when not, what it saw), the server exits, or timeout.
func (s *server) pollStatus(read func() (*statusJSON, error), interval, timeout time.Duration,
	done func(*statusJSON) (bool, string)) (*statusJSON, error) {
	var got *statusJSON
	err := s.PollAlive(timeout, interval, "the workers to be ready", func() (bool, string) {
		st, err := read()
		if err != nil {
			return false, err.Error()
		}
		ok, seen := done(st)
		if ok {
			got = st
		}
		return ok, seen
	})
	return got, err
}

// steady accepts a running server whose want workers each have one healthy
// instance.
func steady(want int) func(*statusJSON) (bool, string) {
	return func(st *statusJSON) (bool, string) {
		h := st.healthy()
		return st.Running && h == want, fmt.Sprintf("%d of %d workers healthy", h, want)
	}
}

// waitSteadySocket is waitSteady over the admin socket, polling every 20 ms.
func (s *server) waitSteadySocket(want int, timeout time.Duration) error {
	_, err := s.pollStatus(s.socketStatus, 20*time.Millisecond, timeout, steady(want))
	return err
}

// healthy counts workers with exactly one instance, healthy: the steady state.
func (st *statusJSON) healthy() int {
	n := 0
	for _, w := range st.Workers {
		if len(w.Instances) == 1 && w.Instances[0].State == sm.Healthy {
			n++
		}
	}
	return n
}

// waitSteady polls status until the server runs and want workers each have
// one healthy instance.
func (s *server) waitSteady(want int, timeout time.Duration) (*statusJSON, error) {
	return s.pollStatus(s.status, 200*time.Millisecond, timeout, steady(want))
}

// workerPort is the port of the named worker's healthy instance.
func (st *statusJSON) workerPort(name string) int {
	for _, w := range st.Workers {
		if w.Name == name {
			for _, in := range w.Instances {
				if in.State == sm.Healthy {
					return in.Port
				}
			}
		}
	}
	return 0
}

// rssMiB reads VmRSS of pid.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					return 0, err
				}
				return kb / 1024, nil
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

// adminReload posts a reload to the server's admin socket (what `tqserver
// reload` does, without starting a process) and returns how long the
// server took to answer.
func adminReload(root string) (time.Duration, error) {
	sock := testrig.SocketPath(root)
	c := testrig.AdminClient(root, 60*time.Second)
	// Connect before timing, so the figure is the check, not the dial.
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return 0, err
	}
	conn.Close()
	t0 := time.Now()
	resp, err := c.Post("http://tqserver/v1/reload", "application/json", nil)
	if err != nil {
		return 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("reload: status %d: %s", resp.StatusCode, body)
	}
	var res struct {
		Changes  []string `json:"changes"`
		Failures []string `json:"failures"`
		Error    string   `json:"error"`
	}
	if err := json.Unmarshal(body, &res); err == nil {
		if res.Error != "" || len(res.Changes) > 0 || len(res.Failures) > 0 {
			return d, fmt.Errorf("reload was not a no-op: %s", body)
		}
	}
	return d, nil
}

// reloadCmd times `tqserver reload --root root`.
func reloadCmd(bin, root string) (time.Duration, error) {
	t0 := time.Now()
	_, stderr, err := testrig.RunCLI(bin, "reload", "--root", root)
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("tqserver reload: %w: %s", err, strings.TrimSpace(stderr))
	}
	return d, nil
}

// nginx is a running nginx proxying to one upstream port.
type nginx struct {
	cmd    *exec.Cmd
	exited chan struct{}
	addr   string
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

func nginxVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	v := strings.TrimSpace(string(out))
	v = strings.TrimPrefix(v, "nginx version: ")
	return v
}

func startNginx(bin, dir string, upstreamPort int) (*nginx, error) {
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	port, err := testrig.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	conf := fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream hello {
        server 127.0.0.1:%[2]d;
        keepalive 256;
    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, upstreamPort, addr)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "logs", "stderr.log"))
	if err != nil {
		return nil, err
	}
	n := &nginx{addr: addr, exited: make(chan struct{})}
	n.cmd = exec.Command(bin, "-p", dir, "-c", confPath, "-g", "daemon off;")
	n.cmd.Stdout = logf
	n.cmd.Stderr = logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	go func() { n.cmd.Wait(); logf.Close(); close(n.exited) }()
	exited := false
	err = testrig.Poll(10*time.Second, 50*time.Millisecond, "nginx to answer", func() (bool, string) {
		_, err := get(addr, "/")
		if err == nil {
			return true, ""
		}
		select {
		case <-n.exited:
			exited = true
			return true, ""
		default:
			return false, err.Error()
		}
	})
	if exited {
		b, _ := os.ReadFile(filepath.Join(dir, "logs", "stderr.log"))
		e, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
		return nil, fmt.Errorf("nginx exited: %s %s", b, e)
	}
	if err != nil {
		n.stop()
		return nil, err
	}
	return n, nil
}

// stop asks nginx for a fast shutdown, then kills its process group.
func (n *nginx) stop() {
	if n == nil {
		return
	}
	select {
	case <-n.exited:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
}

// checkTimes reads the server's JSON log and returns, for each reload, the
// time between its "checking for changes" and "change check done" lines:
// the check inside the supervisor loop, without queueing or the socket.
// These are log messages, not a contract; none found gives nil.
func (s *server) checkTimes() []time.Duration {
	var out []time.Duration
	var start time.Time
	for line := range strings.SplitSeq(s.Logs(), "\n") {
		if !strings.Contains(line, "checking for changes") && !strings.Contains(line, "change check done") {
			continue
		}
		var l struct {
			Time    string `json:"time"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil {
			continue
		}
		switch l.Message {
		case "checking for changes":
			start = t
		case "change check done":
			if !start.IsZero() {
				out = append(out, t.Sub(start))
				start = time.Time{}
			}
		}
	}
	return out
}
