package core

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// Golden scenarios: testdata/*.txt are interaction files in the style of
// etcd-io/raft's: a command, "----", the records and effects it produced.
// `go test ./internal/core -run Golden -update` rewrites the expectations.
// After every step the rig checks that replaying every record appended so
// far (store.Registry.Apply, the code `status --at` and recovery use) gives
// the core's live instances, and that an aborted step left the registry as
// it was.

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Errorf("%d golden scenarios, want at least 30", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runGolden(t, f) })
	}
}

type block struct {
	cmd    string
	want   string
	blanks []string // comment and blank lines before it
}

func parseGolden(t *testing.T, path string) []block {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var out []block
	var pre []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			pre = append(pre, l)
			continue
		}
		bl := block{cmd: l, blanks: pre}
		pre = nil
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: command %q without a ---- line after it", path, i+1, l)
		}
		i += 2
		var want []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		i-- // the blank line ends the block and belongs to the next one's preamble
		bl.want = strings.Join(want, "\n")
		out = append(out, bl)
	}
	return out
}

// rig is a core with a fake log, clock and port allocator.
type rig struct {
	t       *testing.T
	c       *Core
	now     time.Time
	log     []store.Record
	nextSeq uint64
	ports   []int // in use order for the allocator
	lo, hi  int
	cursor  int
	gone    map[int]bool // ports other processes hold
	lost    bool         // a record was lost: machine and log may differ
	opts    Options
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), lo: 9000, hi: 9009, gone: map[int]bool{}}
	r.opts = Options{RestartDelay: 100 * time.Millisecond, RestartBackoffMax: time.Second, RestartBackoffReset: 10 * time.Second,
		DrainTimeout: 5 * time.Second, Grace: 2 * time.Second, StartupDelay: 0, PortLo: r.lo, PortHi: r.hi}
	r.opts.Port = r.port
	r.c = New(r.opts, nil)
	return r
}

func (r *rig) port(inUse func(int) bool) (int, error) {
	n := r.hi - r.lo + 1
	for i := range n {
		p := r.lo + (r.cursor+i)%n
		if inUse(p) || r.gone[p] {
			continue
		}
		r.cursor = p - r.lo + 1
		return p, nil
	}
	return 0, fmt.Errorf("no free port in range %d-%d", r.lo, r.hi)
}

func args(fields []string) map[string]string {
	m := map[string]string{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			v = "true"
		}
		m[k] = v
	}
	return m
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func settings(t *testing.T, a map[string]string) config.WorkerSettings {
	ws := config.WorkerSettings{Instances: 1, MinInstances: 1, MaxInstances: 1, MaxRequests: 0,
		ScaleTargetInflight: 4, ScaleDownAfterMs: 1000, RollbackWindowMs: 30000}
	if v, ok := a["instances"]; ok {
		n := atoi(t, v)
		ws.Instances, ws.MinInstances, ws.MaxInstances = n, n, n
	}
	if v, ok := a["min"]; ok {
		ws.MinInstances = atoi(t, v)
		ws.Instances = ws.MinInstances
	}
	if v, ok := a["max"]; ok {
		ws.MaxInstances = atoi(t, v)
	}
	if v, ok := a["canary"]; ok {
		ws.Canary = config.Canary{WeightPercent: atoi(t, v), DurationMs: 60000, MaxErrorRate: 0.01, MaxP99Ratio: 2}
	}
	if v, ok := a["max_requests"]; ok {
		ws.MaxRequests = int64(atoi(t, v))
	}
	return ws
}

func (r *rig) event(cmd string) (ev events.Event, failAppend bool) {
	t := r.t
	f := strings.Fields(cmd)
	if f[0] == "fail" {
		failAppend = true
		f = f[1:]
	}
	a := args(f[1:])
	arg := func(i int) string {
		if len(f) <= i {
			t.Fatalf("%q: missing argument %d", cmd, i)
		}
		return f[i]
	}
	u64 := func(k string) uint64 {
		if v, ok := a[k]; ok {
			return uint64(atoi(t, v))
		}
		return 0
	}
	switch f[0] {
	case "add-all":
		var list []events.AddWorker
		for _, n := range f[1:] {
			list = append(list, events.AddWorker{Worker: n, Bin: "/app/workers/" + n + "/bin/" + n, Settings: settings(t, nil), Reason: sm.ReasonStartup})
		}
		return events.AddWorkers{Workers: list}, failAppend
	case "add":
		reason := a["reason"]
		if reason == "" {
			reason = sm.ReasonStartup
		}
		bin := "/app/workers/" + arg(1) + "/bin/" + arg(1)
		if a["nobin"] == "true" {
			bin = ""
		}
		return events.AddWorker{Worker: arg(1), Bin: bin, Settings: settings(t, a),
			Reason: reason, Batch: u64("batch")}, failAppend
	case "release":
		var rolls []events.RollWorker
		for _, n := range f[1:] {
			if !strings.Contains(n, "=") {
				rolls = append(rolls, events.RollWorker{Worker: n, Reason: sm.ReasonBinaryChanged})
			}
		}
		return events.Release{Rolls: rolls, Batch: u64("batch")}, failAppend
	case "canary-due":
		return events.CanaryDue{Instance: arg(1)}, failAppend
	case "judged":
		f64 := func(k string) float64 {
			v, err := strconv.ParseFloat(a[k], 64)
			if err != nil {
				t.Fatalf("%q: %s=%q: %v", cmd, k, a[k], err)
			}
			return v
		}
		return events.CanaryJudged{Instance: arg(1), Requests: u64("req"), Errors: u64("err"), P99Ms: f64("p99"),
			OldRequests: u64("oldreq"), OldErrors: u64("olderr"), OldP99Ms: f64("oldp99")}, failAppend
	case "spawned":
		return events.Spawned{Instance: arg(1), PID: atoi(t, a["pid"])}, failAppend
	case "spawn-failed":
		return events.SpawnFailed{Instance: arg(1), Err: a["err"]}, failAppend
	case "healthy":
		return events.HealthOK{Instance: arg(1)}, failAppend
	case "warmed":
		return events.Warmed{Instance: arg(1), Err: a["err"]}, failAppend
	case "health-timeout":
		return events.HealthTimeout{Instance: arg(1), Detail: "not healthy within 10s"}, failAppend
	case "probe-failed":
		return events.ProbeFailed{Instance: arg(1), Detail: "3 health probes failed in a row"}, failAppend
	case "max-requests":
		return events.MaxRequests{Instance: arg(1)}, failAppend
	case "exited":
		ev := events.Exited{Instance: arg(1), Signal: a["signal"], Tail: strings.ReplaceAll(a["tail"], "_", " ")}
		if ev.Signal == "" {
			ev.Code = atoi(t, a["code"])
		} else {
			ev.Code = -1
		}
		return ev, failAppend
	case "drained":
		return events.Drained{Instance: arg(1), TimedOut: a["timeout"] == "true"}, failAppend
	case "due":
		return events.RestartDue{Worker: arg(1), Slot: atoi(t, a["slot"]), Gen: u64("gen")}, failAppend
	case "roll":
		return events.RollWorker{Worker: arg(1), Reason: a["reason"], Batch: u64("batch"), Bin: a["bin"], Previous: a["previous"]}, failAppend
	case "remove":
		return events.RemoveWorker{Worker: arg(1), Reason: sm.ReasonOperator, Detail: "worker removed"}, failAppend
	case "reconfigure":
		return events.Reconfigure{Worker: arg(1), Settings: settings(t, a), Restart: map[bool]string{true: sm.ReasonConfigChanged}[a["restart"] == "true"], Batch: u64("batch")}, failAppend
	case "assets":
		return events.Assets{Worker: arg(1), Public: a["public"] == "true", Private: a["private"] == "true"}, failAppend
	case "tick":
		means := map[string]float64{}
		for k, v := range a {
			m, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("tick %s=%s: %v", k, v, err)
			}
			means[k] = m
		}
		return events.ScaleTick{Now: r.now, Means: means}, failAppend
	case "shutdown":
		return events.Shutdown{}, failAppend
	case "force-kill":
		return events.ForceKill{}, failAppend
	}
	t.Fatalf("unknown command %q", cmd)
	return nil, false
}

func (r *rig) run(cmd string) string {
	f := strings.Fields(cmd)
	switch f[0] {
	case "time":
		d, err := time.ParseDuration(strings.TrimPrefix(f[1], "+"))
		if err != nil {
			r.t.Fatal(err)
		}
		r.now = r.now.Add(d)
		return "now " + r.now.Format("15:04:05.000")
	case "opts":
		a := args(f[1:])
		if v, ok := a["dev"]; ok {
			r.opts.Dev = v == "true"
		}
		if v, ok := a["ports"]; ok {
			lo, hi, _ := strings.Cut(v, "-")
			r.lo, r.hi = atoi(r.t, lo), atoi(r.t, hi)
			r.opts.PortLo, r.opts.PortHi = r.lo, r.hi
		}
		if v, ok := a["startup_delay"]; ok {
			r.opts.StartupDelay, _ = time.ParseDuration(v)
		}
		r.c.o = r.opts
		return "ok"
	case "port-taken":
		r.gone[atoi(r.t, f[1])] = true
		return "ok"
	case "port-free":
		delete(r.gone, atoi(r.t, f[1]))
		return "ok"
	case "status":
		return r.status()
	case "crash":
		return r.crash()
	case "upgrade":
		return r.upgrade(f[1:])
	}
	ev, fail := r.event(cmd)
	before := r.status()
	p := r.c.Step(r.now, ev)
	if len(p.Records) == 0 {
		fail = false // nothing to append, nothing to fail
	}
	var out []string
	if fail {
		if !p.Anyway {
			r.c.Abort(p)
			if after := r.status(); after != before {
				r.t.Errorf("%q: aborted step changed the registry:\nbefore:\n%s\nafter:\n%s", cmd, before, after)
			}
			msg := "append failed: aborted, nothing done"
			if p.Retry {
				msg += fmt.Sprintf("; retry in %s", p.RetryIn)
			}
			if p.OnFail != nil {
				u := *p.OnFail
				u.Err = "disk full"
				msg += "\nthen " + r.commit(r.c.Step(r.now, u), false, cmd)
			}
			return msg
		}
		out = append(out, "append failed: committed anyway (observation or removal)")
	}
	out = append(out, r.commit(p, fail, cmd))
	return strings.TrimPrefix(strings.Join(out, "\n"), "\n")
}

// commit appends p's records to the fake log (unless fail), commits and
// prints the step.
func (r *rig) commit(p *Plan, fail bool, cmd string) string {
	if len(p.Records) == 0 {
		fail = false
	}
	if !fail {
		for _, rec := range p.Records {
			r.nextSeq++
			rec.Seq = r.nextSeq
			r.log = append(r.log, *rec)
		}
	}
	if err := r.c.Commit(p, !fail); err != nil {
		r.t.Errorf("%q: commit: %v", cmd, err)
	}
	var out []string
	for _, rec := range p.Records {
		out = append(out, "rec "+recString(*rec, fail))
	}
	for _, e := range p.Effects() {
		out = append(out, e.String())
	}
	r.lost = r.lost || fail
	r.checkReplay(cmd)
	r.checkSlots(cmd)
	if len(out) == 0 {
		return "(nothing)"
	}
	return strings.Join(out, "\n")
}

func recString(r store.Record, unwritten bool) string {
	var b strings.Builder
	if unwritten {
		b.WriteString("(lost) ")
	} else {
		fmt.Fprintf(&b, "#%d ", r.Seq)
	}
	if r.Instance != "" {
		fmt.Fprintf(&b, "%s %s→%s %s", r.Instance, dash(r.From), r.To, r.Event)
	} else {
		if r.Worker != "" {
			b.WriteString(r.Worker + " ")
		}
		b.WriteString(r.Event)
	}
	if r.Reason != "" {
		b.WriteString(" reason=" + r.Reason)
	}
	if r.PID != 0 {
		fmt.Fprintf(&b, " pid=%d", r.PID)
	}
	if r.Port != 0 {
		fmt.Fprintf(&b, " port=%d", r.Port)
	}
	if r.ExitCode != nil {
		fmt.Fprintf(&b, " exit=%d", *r.ExitCode)
	}
	if r.Signal != "" {
		b.WriteString(" signal=" + r.Signal)
	}
	if r.Detail != "" {
		fmt.Fprintf(&b, " detail=%q", r.Detail)
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "·"
	}
	return s
}

func (r *rig) status() string {
	var out []string
	for _, w := range r.c.Workers() {
		line := fmt.Sprintf("%s %s slots=%v bin=%s", w.Name, w.Route, w.Slots, w.Bin)
		if w.Previous != "" {
			line += " previous=" + w.Previous
		}
		if w.Removed {
			line += " (removed)"
		}
		out = append(out, line)
		for _, in := range w.Instances {
			out = append(out, fmt.Sprintf("  %s %s pid=%d port=%d slot=%d", in.Instance, in.State, in.PID, in.Port, in.Slot))
		}
	}
	if len(out) == 0 {
		return "(empty)"
	}
	return strings.Join(out, "\n")
}

// checkReplay: the log replayed from scratch names the same live instances,
// in the same states, with the same pids and ports, as the core.
func (r *rig) checkReplay(cmd string) {
	g := store.NewRegistry()
	for _, rec := range r.log {
		if err := g.Apply(rec); err != nil {
			r.t.Errorf("%q: replay: %v", cmd, err)
			return
		}
	}
	type inst struct {
		state     string
		pid, port int
	}
	fromLog := map[string]inst{}
	for _, in := range g.Live() {
		fromLog[in.Instance] = inst{in.State, in.PID, in.Port}
	}
	live := map[string]inst{}
	for _, w := range r.c.workers {
		for _, in := range w.insts {
			if in.rec.State != sm.Stopped {
				live[in.name] = inst{in.rec.State, in.rec.PID, in.rec.Port}
			}
			if !r.lost && in.rec.State != in.m.State() {
				r.t.Errorf("%q: %s: machine says %s, log %s", cmd, in.name, in.m.State(), in.rec.State)
			}
		}
	}
	if r.lost {
		// A lost record may leave the log showing an instance the core
		// has forgotten (its process is gone); a crash would reap it.
		for n := range fromLog {
			if w := r.c.workers[workerOf(n)]; w == nil || w.insts[n] == nil {
				delete(fromLog, n)
			}
		}
	}
	if !reflect.DeepEqual(fromLog, live) {
		r.t.Errorf("%q: replayed log and live registry disagree:\nlog:  %v\nlive: %v", cmd, fromLog, live)
	}
}

// checkSlots: a slot's current instance is healthy; its next one starting or
// healthy and warming.
func (r *rig) checkSlots(cmd string) {
	for _, w := range r.c.workers {
		for _, sl := range w.slots {
			if sl.current != "" {
				if in := w.insts[sl.current]; in == nil || in.m.State() != sm.Healthy {
					r.t.Errorf("%q: %s slot %d: current %s is not healthy", cmd, w.name, sl.id, sl.current)
				}
			}
			if sl.next != "" {
				in := w.insts[sl.next]
				if in == nil || !(in.m.State() == sm.Starting || in.m.State() == sm.Healthy && (in.warming || in.canary)) {
					r.t.Errorf("%q: %s slot %d: next %s is neither starting nor warming", cmd, w.name, sl.id, sl.next)
				}
			}
		}
	}
}

// crash is kill -9 of the server now: a new server replays the log and
// lists what recovery reaps; numbering continues above MaxInstance.
func (r *rig) crash() string {
	g := store.NewRegistry()
	for _, rec := range r.log {
		if err := g.Apply(rec); err != nil {
			r.t.Fatalf("crash: replay: %v", err)
		}
	}
	var out []string
	for _, in := range g.Live() {
		out = append(out, fmt.Sprintf("reap %s %s pid=%d port=%d", in.Instance, in.State, in.PID, in.Port))
	}
	var ws []string
	for w, n := range g.MaxInstance {
		ws = append(ws, fmt.Sprintf("%s=%d", w, n))
	}
	slices.Sort(ws)
	out = append(out, "numbering "+strings.Join(ws, " "))
	// The restarted server starts from an empty registry above the floors.
	r.c = New(r.opts, g.MaxInstance)
	for _, in := range g.Live() {
		rec := store.Record{Worker: in.Worker, Instance: in.Instance, From: in.State, To: sm.Stopped, Event: sm.Reap,
			Reason: sm.ReasonOrphanReaped, PID: in.PID, Port: in.Port}
		r.nextSeq++
		rec.Seq = r.nextSeq
		r.log = append(r.log, rec)
	}
	return strings.Join(out, "\n")
}

func runGolden(t *testing.T, path string) {
	blocks := parseGolden(t, path)
	r := newRig(t)
	var b strings.Builder
	for _, bl := range blocks {
		for _, p := range bl.blanks {
			b.WriteString(p + "\n")
		}
		got := r.run(bl.cmd)
		b.WriteString(bl.cmd + "\n----\n" + got + "\n")
		if !*update && got != bl.want {
			t.Errorf("%s: %s\n--- want\n%s\n--- got\n%s", path, bl.cmd, bl.want, got)
		}
	}
	if *update {
		if err := os.WriteFile(path, []byte(strings.TrimRight(b.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// upgrade is a server self-upgrade now: a new server replays the log,
// reaps the live instances that are starting or are listed as dead=A,B
// (their pid or /health check failed), and steps one Adopt per worker for
// the rest, with the settings the other arguments give.
func (r *rig) upgrade(fields []string) string {
	a := args(fields)
	dead := map[string]bool{}
	for _, n := range strings.Split(a["dead"], ",") {
		dead[n] = true
	}
	delete(a, "dead")
	g := store.NewRegistry()
	for _, rec := range r.log {
		if err := g.Apply(rec); err != nil {
			r.t.Fatalf("upgrade: replay: %v", err)
		}
	}
	r.c = New(r.opts, g.MaxInstance)
	var out []string
	adopt := map[string][]events.Adopted{}
	for _, in := range g.Live() {
		if (in.State == sm.Healthy || in.State == sm.Draining) && !dead[in.Instance] {
			adopt[in.Worker] = append(adopt[in.Worker], events.Adopted{Instance: in.Instance, PID: in.PID, StartTicks: in.StartTicks, Port: in.Port,
				Draining: in.State == sm.Draining, DrainReason: in.Reason})
			continue
		}
		rec := store.Record{Worker: in.Worker, Instance: in.Instance, From: in.State, To: sm.Stopped, Event: sm.Reap,
			Reason: sm.ReasonOrphanReaped, PID: in.PID, Port: in.Port}
		r.nextSeq++
		rec.Seq = r.nextSeq
		r.log = append(r.log, rec)
		out = append(out, "rec "+recString(rec, false))
	}
	var names []string
	for n := range adopt {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		ev := events.Adopt{Add: events.AddWorker{Worker: n, Bin: "/app/workers/" + n + "/bin/" + n, Settings: settings(r.t, a),
			Reason: sm.ReasonStartup}, Instances: adopt[n]}
		out = append(out, r.commit(r.c.Step(r.now, ev), false, "upgrade"))
	}
	if len(out) == 0 {
		return "(nothing)"
	}
	return strings.Join(out, "\n")
}
