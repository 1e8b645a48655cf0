// Command tqbench is the load benchmark of tqserver. It builds tqserver and a
// minimal hello worker, runs them on temporary app roots on loopback, and
// measures, in one run: throughput and latency of the proxy against a direct
// connection to the worker and against nginx (interleaved rounds), a restart
// under load, a CPU-bound worker with one, several and autoscaled instances,
// the server's memory with many workers, the cost of a no-op SIGHUP check
// and of reading a large history log. See docs/performance.md.
//
//	go run ./cmd/tqbench -json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

type options struct {
	rounds         int
	duration       time.Duration
	warmup         time.Duration
	conns          int
	restarts       int
	rssSmall       int
	rssLarge       int
	sighupWorkers  int
	historyRecords int
	instances      int
	workN          int
	scaleTarget    int
	json           bool
	src            string
	keep           bool
	verbose        bool
}

// report is the -json output. Figures that could not be measured (nginx
// missing, a part disabled by its flag) are null.
type report struct {
	ProxyRPS             float64  `json:"proxy_rps"`
	DirectRPS            float64  `json:"direct_rps"`
	NginxRPS             *float64 `json:"nginx_rps"`
	ProxyP50             float64  `json:"proxy_p50_ms"`
	ProxyP99             float64  `json:"proxy_p99_ms"`
	DirectP50            float64  `json:"direct_p50_ms"`
	DirectP99            float64  `json:"direct_p99_ms"`
	NginxP50             *float64 `json:"nginx_p50_ms"`
	NginxP99             *float64 `json:"nginx_p99_ms"`
	ProxyOverDirect      float64  `json:"proxy_over_direct"`
	ProxyOverNginx       *float64 `json:"proxy_over_nginx"`
	LoadFailedRequests   uint64   `json:"load_failed_requests"`
	RestartFailed        *uint64  `json:"restart_failed_requests"`
	RestartRequests      *uint64  `json:"restart_requests"`
	Restarts             int      `json:"restarts"`
	SteadyP99            *float64 `json:"steady_p99_ms"`
	RestartP99           *float64 `json:"restart_p99_ms"`
	RestartP99OverSteady *float64 `json:"restart_p99_over_steady_p99"`
	// The restart window split where the new instance first answers: before
	// (install, SIGHUP, start, health gate) and after (traffic on the new
	// instance while the old one drains and stops).
	BeforeSwapP99         *float64 `json:"restart_before_swap_p99_ms"`
	AfterSwapP99          *float64 `json:"restart_after_swap_p99_ms"`
	BeforeSwapRequests    *uint64  `json:"restart_before_swap_requests"`
	AfterSwapRequests     *uint64  `json:"restart_after_swap_requests"`
	RSS20                 *float64 `json:"rss_mib_20"`
	RSS200                *float64 `json:"rss_mib_200"`
	RSSWorkersSmall       int      `json:"rss_workers_small"`
	RSSWorkersLarge       int      `json:"rss_workers_large"`
	SighupMs200           *float64 `json:"sighup_ms_200"`
	ReloadCmdMs200        *float64 `json:"reload_cmd_ms_200"`
	SighupCheckMs200      *float64 `json:"sighup_check_ms_200"`
	SighupMs1000          *float64 `json:"sighup_ms_1000"`
	SighupCheckMs1000     *float64 `json:"sighup_check_ms_1000"`
	ReloadCmdMs1000       *float64 `json:"reload_cmd_ms_1000"`
	RSS1000               *float64 `json:"rss_mib_sighup_workers"`
	SighupWorkers         int      `json:"sighup_workers"`
	HistoryMs             *float64 `json:"history_ms_1m"`
	HistoryDBMiB          *float64 `json:"history_db_mib"`
	HistoryRecords        int      `json:"history_records"`
	Instances             int      `json:"instances"`
	WorkN                 int      `json:"work_n"`
	WorkRPS1              float64  `json:"work_rps_1"`
	WorkRPSN              float64  `json:"work_rps_n"`
	WorkRPSAuto           float64  `json:"work_rps_auto"`
	WorkNOver1            *float64 `json:"work_n_over_1"`
	WorkAutoOver1         *float64 `json:"work_auto_over_1"`
	WorkP99Ms1            float64  `json:"work_p99_ms_1"`
	WorkP99MsN            float64  `json:"work_p99_ms_n"`
	WorkP99MsAuto         float64  `json:"work_p99_ms_auto"`
	WorkFailed            uint64   `json:"work_failed_requests"`
	AutoScaleUpMs         *float64 `json:"auto_scale_up_ms"`
	AutoInstances         *int     `json:"auto_instances"`
	Rounds                int      `json:"rounds"`
	Conns                 int      `json:"conns"`
	PhaseSeconds          float64  `json:"phase_seconds"`
	GoVersion             string   `json:"go_version"`
	NginxVersion          string   `json:"nginx_version"`
	CPUs                  int      `json:"cpus"`
	LoadAvgStart          string   `json:"loadavg_start"`
	LoadAvgEnd            string   `json:"loadavg_end"`
	Targets               []target `json:"targets"`
	Notes                 []string `json:"notes"`
	restartFirstErr       string
	loadFirstErr          string
	proxyRes, directRes   *result
	nginxRes              *result
	steadyRes, restartRes *result
}

type target struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Met   *bool  `json:"met"`
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of direct, proxy, nginx")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each load phase")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load on each target before the first round")
	flag.IntVar(&o.conns, "conns", 64, "concurrent keep-alive connections")
	flag.IntVar(&o.restarts, "restarts", 10, "binary replacements + SIGHUP under load (0 skips the restart test)")
	flag.IntVar(&o.rssSmall, "rss-small", 20, "workers of the first memory measurement (0 skips)")
	flag.IntVar(&o.rssLarge, "rss-large", 200, "workers of the second memory measurement; its server also times reload (0 skips)")
	flag.IntVar(&o.sighupWorkers, "sighup-workers", 1000, "running workers of the SIGHUP-cost server (0 skips)")
	flag.IntVar(&o.historyRecords, "history-records", 1000000, "records in the generated history log (0 skips)")
	flag.IntVar(&o.instances, "instances", 2, "instances of the CPU-bound worker compared with 1 and with autoscaling 1..N (0 skips)")
	flag.IntVar(&o.workN, "work-n", 1000, "CPU work per request of the instances part: GET /work?n=N spins N thousand xorshift rounds")
	flag.IntVar(&o.scaleTarget, "scale-target", 8, "scale_target_inflight of the autoscaled worker")
	flag.BoolVar(&o.json, "json", false, "print one JSON object instead of a table")
	flag.StringVar(&o.src, "src", "", "tqserver module root (default: found with go env GOMOD)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, app roots)")
	flag.BoolVar(&o.verbose, "v", false, "progress on stderr")
	flag.Parse()
	if o.rounds < 1 || o.conns < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "tqbench: -rounds, -conns and -duration must be positive")
		os.Exit(2)
	}
	if o.instances < 0 || o.instances == 1 || o.instances > 64 || o.workN < 0 || o.scaleTarget < 1 {
		fmt.Fprintln(os.Stderr, "tqbench: -instances must be 0 (skip) or 2..64, -work-n >= 0, -scale-target >= 1")
		os.Exit(2)
	}
	rep, err := run(o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tqbench:", firstLine(err.Error()))
		os.Exit(1)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	printTable(os.Stdout, rep)
}

// bench holds what run needs to clean up.
type bench struct {
	o       options
	dir     string
	tqBin   string
	helloV1 string
	helloV2 string
	servers []*server
	nginx   *nginx
	logw    io.Writer
}

func (b *bench) logf(format string, args ...any) {
	if b.o.verbose {
		fmt.Fprintf(b.logw, "tqbench: "+format+"\n", args...)
	}
}

func (b *bench) cleanup() {
	b.nginx.stop()
	for _, s := range b.servers {
		s.Stop(60 * time.Second)
	}
	if !b.o.keep {
		os.RemoveAll(b.dir)
	}
}

func run(o options, logw io.Writer) (*report, error) {
	b := &bench{o: o, logw: logw}
	src := o.src
	if src == "" {
		var err error
		if src, err = moduleRoot(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "tqbench-")
	if err != nil {
		return nil, err
	}
	b.dir = dir
	defer b.cleanup()
	// Ctrl-C still stops the servers and nginx we started.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			b.cleanup()
			os.Exit(130)
		}
	}()

	rep := &report{Rounds: o.rounds, Conns: o.conns, PhaseSeconds: o.duration.Seconds(), Notes: []string{},
		RSSWorkersSmall: o.rssSmall, RSSWorkersLarge: o.rssLarge, SighupWorkers: o.sighupWorkers,
		HistoryRecords: o.historyRecords, CPUs: numCPU(), LoadAvgStart: loadAvg()}
	if v, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		rep.GoVersion = strings.TrimSpace(string(v))
	}

	b.logf("building tqserver and the hello worker in %s", dir)
	b.tqBin = filepath.Join(dir, "tqserver")
	b.helloV1 = filepath.Join(dir, "hello-v1")
	b.helloV2 = filepath.Join(dir, "hello-v2")
	if err := testrig.BuildServer(src, b.tqBin, false); err != nil {
		return nil, err
	}
	for _, h := range []struct{ out, v string }{{b.helloV1, "v1"}, {b.helloV2, "v2"}} {
		if err := testrig.GoBuild(testrig.Build{Dir: src, Pkg: "./cmd/tqbench/testdata/hello", Out: h.out, Vars: map[string]string{"version": h.v}}); err != nil {
			return nil, err
		}
	}

	if err := b.throughput(rep); err != nil {
		return nil, err
	}
	if o.instances > 0 {
		if err := b.instances(rep); err != nil {
			return nil, err
		}
	}
	if o.rssSmall > 0 {
		if err := b.memory(rep, o.rssSmall, false); err != nil {
			return nil, err
		}
	}
	if o.rssLarge > 0 {
		if err := b.memory(rep, o.rssLarge, true); err != nil {
			return nil, err
		}
	}
	if o.sighupWorkers > 0 {
		if err := b.sighup(rep); err != nil {
			return nil, err
		}
	}
	if o.historyRecords > 0 {
		if err := b.history(rep); err != nil {
			return nil, err
		}
	}
	rep.Targets = targets(rep)
	rep.LoadAvgEnd = loadAvg()
	return rep, nil
}

// throughput runs the interleaved direct/proxy/nginx rounds and then the
// restart test on one server with one worker, index.
func (b *bench) throughput(rep *report) error {
	o := b.o
	root, err := newAppRoot(filepath.Join(b.dir, "main"), nil, "")
	if err != nil {
		return err
	}
	if err := testrig.Install(root, "index", b.helloV1); err != nil {
		return err
	}
	srv, err := startServer(b.tqBin, root)
	if err != nil {
		return err
	}
	b.servers = append(b.servers, srv)
	st, err := srv.waitSteady(1, 30*time.Second)
	if err != nil {
		return err
	}
	workerAddr := fmt.Sprintf("127.0.0.1:%d", st.workerPort("index"))
	b.logf("tqserver pid %d on %s, worker on %s", srv.PID(), srv.Addr(), workerAddr)

	type tgt struct {
		name string
		addr string
		res  *result
	}
	targets := []*tgt{{name: "direct", addr: workerAddr, res: &result{}}, {name: "proxy", addr: srv.Addr(), res: &result{}}}
	if bin := findNginx(); bin == "" {
		rep.Notes = append(rep.Notes, "nginx not found in PATH or /usr/sbin: nginx figures skipped")
	} else {
		rep.NginxVersion = nginxVersion(bin)
		n, err := startNginx(bin, filepath.Join(b.dir, "nginx"), st.workerPort("index"))
		if err != nil {
			rep.Notes = append(rep.Notes, "nginx did not start, figures skipped: "+firstLine(err.Error()))
		} else {
			b.nginx = n
			targets = append(targets, &tgt{name: "nginx", addr: n.addr, res: &result{}})
		}
	}
	for _, t := range targets {
		if o.warmup > 0 {
			load(t.addr, "/", o.conns, o.warmup, nil)
		}
	}
	for r := range o.rounds {
		for _, t := range targets {
			res := load(t.addr, "/", o.conns, o.duration, nil)
			b.logf("round %d %-6s %8.0f req/s p50 %.3f ms p99 %.3f ms failed %d", r+1, t.name, res.rps(), res.h.quantileMs(0.5), res.h.quantileMs(0.99), res.failed)
			t.res.add(res)
		}
	}
	for _, t := range targets {
		rep.LoadFailedRequests += t.res.failed
		if t.res.firstErr != "" && rep.loadFirstErr == "" {
			rep.loadFirstErr = t.name + ": " + t.res.firstErr
		}
		p50, p99, rps := t.res.h.quantileMs(0.5), t.res.h.quantileMs(0.99), t.res.rps()
		switch t.name {
		case "direct":
			rep.DirectRPS, rep.DirectP50, rep.DirectP99, rep.directRes = rps, p50, p99, t.res
		case "proxy":
			rep.ProxyRPS, rep.ProxyP50, rep.ProxyP99, rep.proxyRes = rps, p50, p99, t.res
		case "nginx":
			rep.NginxRPS, rep.NginxP50, rep.NginxP99, rep.nginxRes = &rps, &p50, &p99, t.res
		}
	}
	if rep.LoadFailedRequests > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d requests failed during the throughput rounds (first: %s)", rep.LoadFailedRequests, rep.loadFirstErr))
	}
	if rep.DirectRPS > 0 {
		rep.ProxyOverDirect = rep.ProxyRPS / rep.DirectRPS
	}
	if rep.NginxRPS != nil && *rep.NginxRPS > 0 {
		v := rep.ProxyRPS / *rep.NginxRPS
		rep.ProxyOverNginx = &v
	}
	b.nginx.stop()
	b.nginx = nil

	if o.restarts > 0 {
		if err := b.restart(rep, srv); err != nil {
			return err
		}
	}
	srv.Stop(30 * time.Second)
	return nil
}

// restart keeps one load through the proxy running while it alternates,
// o.restarts times, a steady second and a replacement of the worker binary
// (SIGHUP, wait for the new binary, wait for the old one to stop). Each
// request counts as steady or restarting by when it was sent, so both sets
// share the same connections and the same background noise.
func (b *bench) restart(rep *report, srv *server) error {
	o := b.o
	steadyDur := min(o.duration, time.Second)
	var phase atomic.Int32
	stop := make(chan struct{})
	resc := make(chan [phases]*result, 1)
	// Bounded: each replacement gives up after 60 s.
	maxDur := time.Duration(o.restarts)*(steadyDur+60*time.Second) + 10*time.Second
	go func() { resc <- loadPhased(srv.Addr(), "/", o.conns, maxDur, stop, &phase) }()
	bins := []string{b.helloV1, b.helloV2}
	var rerr error
	for i := range o.restarts {
		phase.Store(0)
		time.Sleep(steadyDur)
		phase.Store(1)
		t0 := time.Now()
		if err := b.replace(srv, bins[(i+1)%2], fmt.Sprintf("hello v%d", (i+1)%2+1), func() { phase.Store(2) }); err != nil {
			rerr = fmt.Errorf("restart %d: %w", i+1, err)
			break
		}
		b.logf("restart %d: new binary serving, old one stopped after %s", i+1, time.Since(t0).Round(time.Millisecond))
	}
	phase.Store(0)
	close(stop)
	rs := <-resc
	if rerr != nil {
		return rerr
	}
	steady, before, after := rs[0], rs[1], rs[2]
	res := &result{}
	res.add(before)
	res.add(after)
	sp99, rp99 := steady.h.quantileMs(0.99), res.h.quantileMs(0.99)
	bp99, ap99 := before.h.quantileMs(0.99), after.h.quantileMs(0.99)
	bn, an := before.ok+before.failed, after.ok+after.failed
	rep.BeforeSwapP99, rep.AfterSwapP99 = &bp99, &ap99
	rep.BeforeSwapRequests, rep.AfterSwapRequests = &bn, &an
	total := res.ok + res.failed
	rep.SteadyP99, rep.RestartP99 = &sp99, &rp99
	rep.RestartRequests, rep.RestartFailed = &total, &res.failed
	rep.Restarts = o.restarts
	if sp99 > 0 {
		v := rp99 / sp99
		rep.RestartP99OverSteady = &v
	}
	if res.failed+steady.failed > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("restart test: %d failed while restarting, %d while steady; first: %s%s",
			res.failed, steady.failed, res.firstErr, steady.firstErr))
	}
	rep.steadyRes, rep.restartRes = steady, res
	return nil
}

// replace installs bin as the index worker (temp file + rename), sends
// SIGHUP, waits until the proxy answers with want (running onSeen in the
// load client that sees it first), then until the old instance has drained
// and stopped.
//
// It observes as lightly as it can, since it runs inside the measured
// window: the load's own responses tell when the new binary serves, and the
// admin socket (no process start) when the old instance is gone.
func (b *bench) replace(srv *server, bin, want string, onSeen func()) error {
	seen := awaitBody(want, onSeen)
	defer bodyWatch.Store(nil)
	if err := testrig.Install(srv.Root(), "index", bin); err != nil {
		return err
	}
	if err := syscall.Kill(srv.PID(), syscall.SIGHUP); err != nil {
		return err
	}
	select {
	case <-seen:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("responses did not come from the new binary (%q) within 30s", want)
	}
	return srv.waitSteadySocket(1, 30*time.Second)
}

func workerNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("w%04d", i)
	}
	return names
}

// startMany starts a fresh server with n copies of the hello worker and
// waits until every one is healthy.
func (b *bench) startMany(label string, n int) (*server, error) {
	root, err := newAppRoot(filepath.Join(b.dir, label), workerNames(n), b.helloV1)
	if err != nil {
		return nil, err
	}
	srv, err := startServer(b.tqBin, root)
	if err != nil {
		return nil, err
	}
	b.servers = append(b.servers, srv)
	t0 := time.Now()
	if _, err := srv.waitSteady(n, 60*time.Second+time.Duration(n)*300*time.Millisecond); err != nil {
		return nil, fmt.Errorf("%d workers: %w", n, err)
	}
	b.logf("%d workers healthy after %s", n, time.Since(t0).Round(time.Millisecond))
	return srv, nil
}

// settledRSS is the server's VmRSS two seconds after all workers were
// healthy (startup allocations settle; the periodic probe keeps running).
func settledRSS(srv *server) (float64, error) {
	time.Sleep(2 * time.Second)
	return rssMiB(srv.PID())
}

func (b *bench) memory(rep *report, n int, timeReload bool) error {
	srv, err := b.startMany(fmt.Sprintf("rss%d", n), n)
	if err != nil {
		return err
	}
	rss, err := settledRSS(srv)
	if err != nil {
		return err
	}
	b.logf("%d workers: server RSS %.1f MiB", n, rss)
	if timeReload {
		rep.RSS200 = &rss
		a, c, chk, err := b.timeReloads(srv)
		if err != nil {
			return err
		}
		rep.SighupMs200, rep.ReloadCmdMs200, rep.SighupCheckMs200 = &a, &c, chk
	} else {
		rep.RSS20 = &rss
	}
	srv.Stop(60 * time.Second)
	return nil
}

// timeReloads times no-op reloads of a running server: over the admin
// socket (the server's check itself plus one local round trip) and as the
// `tqserver reload` command. Medians of 7.
func (b *bench) timeReloads(srv *server) (adminMs, cmdMs float64, checkMs *float64, err error) {
	var as, cs []time.Duration
	before := len(srv.checkTimes())
	for range 7 {
		d, err := adminReload(srv.Root())
		if err != nil {
			return 0, 0, nil, err
		}
		as = append(as, d)
		d, err = reloadCmd(srv.bin, srv.Root())
		if err != nil {
			return 0, 0, nil, err
		}
		cs = append(cs, d)
	}
	// The log is written asynchronously to a file; give it a moment.
	time.Sleep(200 * time.Millisecond)
	if ct := srv.checkTimes(); len(ct) >= before+len(as)+len(cs) {
		v := ms(median(ct[before:]))
		checkMs = &v
	}
	return ms(median(as)), ms(median(cs)), checkMs, nil
}

func (b *bench) sighup(rep *report) error {
	n := b.o.sighupWorkers
	srv, err := b.startMany(fmt.Sprintf("sighup%d", n), n)
	if err != nil {
		return err
	}
	if rss, err := settledRSS(srv); err == nil {
		rep.RSS1000 = &rss
	}
	a, c, chk, err := b.timeReloads(srv)
	if err != nil {
		return err
	}
	rep.SighupMs1000, rep.ReloadCmdMs1000, rep.SighupCheckMs1000 = &a, &c, chk
	b.logf("%d workers: reload %.2f ms (admin socket), %.2f ms (command)", n, a, c)
	srv.Stop(120 * time.Second)
	return nil
}

func (b *bench) history(rep *report) error {
	root := filepath.Join(b.dir, "history", "app")
	t0 := time.Now()
	path, err := genHistory(root, b.o.historyRecords)
	if err != nil {
		return err
	}
	b.logf("generated %d records in %s", b.o.historyRecords, time.Since(t0).Round(time.Millisecond))
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	size := float64(fi.Size()) / (1 << 20)
	d, err := timeHistory(b.tqBin, root, 3)
	if err != nil {
		return err
	}
	hms := ms(d)
	rep.HistoryMs, rep.HistoryDBMiB = &hms, &size
	return nil
}
