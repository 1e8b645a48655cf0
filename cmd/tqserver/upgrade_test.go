package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/process"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// Server self-upgrade (CONTRACT.md §11): `tqserver reload` with a changed
// server/bin/tqserver hands the listeners, the log and the running
// instances to the new binary.

// deployServer installs data as root's server/bin/tqserver the way a
// deploy does (temp file, rename), with a new mtime each time.
func deployServer(t testing.TB, root string, data []byte, mode os.FileMode) {
	t.Helper()
	dir := filepath.Join(root, "server", "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".tqserver.tmp")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "tqserver")); err != nil {
		t.Fatal(err)
	}
}

func tqBytes(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(tqBin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var upgradedRE = regexp.MustCompile(`server upgraded: pid (\d+) took over .* in (\S+);`)

// reloadUpgrade runs `tqserver reload` and returns the new server's pid.
func reloadUpgrade(t testing.TB, root string) int {
	pid, _ := reloadUpgradeTook(t, root)
	return pid
}

// reloadUpgradeTook is reloadUpgrade that also returns the hand-off's
// duration as the old server measured it (server_upgrade recorded → the
// new server ready).
func reloadUpgradeTook(t testing.TB, root string) (int, time.Duration) {
	t.Helper()
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err != nil {
		t.Fatalf("reload: %v\n%s%s", err, out, errOut)
	}
	m := upgradedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("reload did not upgrade the server:\n%s", out)
	}
	pid, _ := strconv.Atoi(m[1])
	took, err := time.ParseDuration(m[2])
	if err != nil {
		t.Fatalf("reload output %q: %v", m[0], err)
	}
	return pid, took
}

func instancePIDs(s *server) map[string]int {
	out := map[string]int{}
	for _, w := range s.status().Workers {
		for _, in := range w.Instances {
			out[in.Instance] = in.PID
		}
	}
	return out
}

// stopServerPID stops a server the rig did not start (an upgraded one):
// SIGTERM, then wait until it is gone.
func stopServerPID(t testing.TB, pid int) {
	t.Helper()
	if pid <= 0 || !testrig.PIDAlive(pid) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	testrig.WaitFor(t, 30*time.Second, fmt.Sprintf("server pid %d to exit", pid), func() bool { return !testrig.PIDAlive(pid) })
}

func TestServerUpgradeUnderLoadAdoptsInstances(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	install(t, root, "api", "v1", "normal")
	bin := tqBytes(t)
	deployServer(t, root, bin, 0o755)
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	waitBody(t, s.URL("/api"), "v1 api", 10*time.Second)
	before := instancePIDs(s)
	if len(before) != 2 {
		t.Fatalf("instances before: %v", before)
	}
	l := testrig.StartLoad(s.URL("/"), 8, 10_000_000, 2*time.Minute)
	pids := []int{s.PID()}
	t.Cleanup(func() {
		stopServerPID(t, pids[len(pids)-1])
	})
	var took, handoff []time.Duration
	for i := range 5 {
		deployServer(t, root, bin, 0o755)
		start := time.Now()
		var pid int
		if i == 2 {
			// SIGHUP does what reload does.
			if err := syscall.Kill(pids[len(pids)-1], syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			testrig.WaitFor(t, 30*time.Second, "the server upgraded by SIGHUP", func() bool {
				var st struct {
					Running bool
					PID     int
				}
				if testrig.SocketStatus(root, &st) != nil || !st.Running || st.PID == pids[len(pids)-1] {
					return false
				}
				pid = st.PID
				return true
			})
		} else {
			var h time.Duration
			pid, h = reloadUpgradeTook(t, root)
			handoff = append(handoff, h)
		}
		took = append(took, time.Since(start))
		if slices.Contains(pids, pid) {
			t.Fatalf("upgrade %d: pid %d is not new (%v)", i+1, pid, pids)
		}
		pids = append(pids, pid)
		if st := s.status(); st.PID != pid || !st.Running {
			t.Fatalf("upgrade %d: status --json says pid %d running %v, want the new pid %d", i+1, st.PID, st.Running, pid)
		}
		if after := instancePIDs(s); !mapsEqual(after, before) {
			t.Fatalf("upgrade %d: instances changed: %v → %v", i+1, before, after)
		}
		if code, body := get(t, s.URL("/api")); code != 200 || !strings.Contains(body, "v1 api") {
			t.Fatalf("upgrade %d: /api answered %d %q", i+1, code, body)
		}
	}
	ok, failed, errs := l.Finish()
	t.Logf("5 server upgrades under 8 keep-alive clients: %d ok, %d failed; hand-off (server_upgrade → new server ready) %v (reloads 1, 2, 4, 5); reload or SIGHUP → new pid in status %v", ok, failed, handoff, took)
	if failed != 0 {
		t.Fatalf("%d failed requests: %v", failed, errs)
	}
	if ok < 100 {
		t.Fatalf("load too small to mean anything: %d", ok)
	}
	// The servers in between exited; the first stays the parent of the
	// instances it started (it reaps them) until they exit.
	for _, pid := range pids[1:5] {
		testrig.WaitFor(t, 30*time.Second, fmt.Sprintf("intermediate server %d to exit", pid), func() bool { return !testrig.PIDAlive(pid) })
	}
	recs := history(t, root)
	if n := count(recs, func(r store.Record) bool { return r.Event == "server_upgrade" && r.Worker == "" }); n != 5 {
		t.Errorf("%d server_upgrade records, want 5", n)
	}
	if n := count(recs, func(r store.Record) bool {
		return r.Event == "server_upgrade" && strings.Contains(r.Detail, "asked by sighup")
	}); n != 1 {
		t.Errorf("%d server_upgrade records asked by sighup, want 1", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.Event == "adopt" && r.Reason == "server_upgrade" }); n != 10 {
		t.Errorf("%d adopt records with reason server_upgrade, want 10 (2 instances × 5)", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.Event == "server_start" }); n != 6 {
		t.Errorf("%d server_start records, want 6", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.Reason == "orphan_reaped" || r.Reason == "crashed" }); n != 0 {
		t.Errorf("%d orphan_reaped or crashed records across upgrades, want 0", n)
	}
	// A worker deploy after the upgrades is seen (the running binary is
	// compared through /proc/PID/exe) and rolls as usual.
	install(t, root, "index", "v2", "normal")
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out, "index: binary_changed") {
		t.Fatalf("worker deploy after upgrades: %v\n%s%s", err, out, errOut)
	}
	waitBody(t, s.URL("/"), "v2 index", 10*time.Second)
	// Stopping the last server stops every instance, adopted or not; the
	// first server then has no instance left and exits too.
	stopServerPID(t, pids[5])
	if _, ok := s.Wait(30 * time.Second); !ok {
		t.Fatalf("the first server (parent of the adopted instances) did not exit after the last server stopped\n%s", s.LogTail(3000))
	}
	assertNoMarked(t, root, nil)
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// markedProcs lists live processes whose environment carries an instance
// mark of root: instance → pids.
func markedProcs(t testing.TB, root string) map[string][]int {
	t.Helper()
	prefix := []byte(process.MarkEnv + "=" + process.Mark(root, ""))
	out := map[string][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if strings.HasPrefix(kv, string(prefix)) && testrig.PIDAlive(pid) {
				inst := kv[len(prefix):]
				out[inst] = append(out[inst], pid)
			}
		}
	}
	return out
}

// assertNoMarked fails when a process of root's instances other than
// those in allowed is alive (polling a while: stops take a moment).
func assertNoMarked(t testing.TB, root string, allowed map[string]bool) {
	t.Helper()
	var extra map[string][]int
	err := testrig.Poll(15*time.Second, 20*time.Millisecond, "no orphaned worker processes", func() (bool, string) {
		extra = map[string][]int{}
		for inst, pids := range markedProcs(t, root) {
			if !allowed[inst] {
				extra[inst] = pids
			}
		}
		return len(extra) == 0, fmt.Sprint(extra)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A new server that exits at once, one that never becomes ready and a
// truncated binary: the old server keeps serving (same pid, same
// instances, no failed request), records rollback, and `tqserver reload`
// exits non-zero saying so. A good binary afterwards still upgrades.
func TestServerUpgradeRollsBack(t *testing.T) {
	t.Setenv("TQ_UPGRADE_TIMEOUT_MS", "1500")
	root, bin, s := upgradeRig(t)
	before := instancePIDs(s)
	l := testrig.StartLoad(s.URL("/"), 4, 10_000_000, 2*time.Minute)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"exits at once", []byte("#!/bin/sh\nexit 3\n"), "exited before it was ready (exit code 3)"},
		{"never ready", []byte("#!/bin/sh\nexec sleep 600\n"), "was not ready within 1.5s"},
		{"truncated", bin[:len(bin)/2], "not a complete ELF executable"},
	}
	for _, c := range cases {
		deployServer(t, root, c.data, 0o755)
		out, errOut, err := runCLI(t, "reload", "--root", root)
		if err == nil {
			t.Fatalf("%s: reload exited 0:\n%s", c.name, out)
		}
		for _, want := range []string{"server upgrade failed", c.want, "rolled back"} {
			if !strings.Contains(out+errOut, want) {
				t.Fatalf("%s: reload output lacks %q:\n%s%s", c.name, want, out, errOut)
			}
		}
		if st := s.status(); st.PID != s.PID() || !st.Running {
			t.Fatalf("%s: status pid %d running %v, want the old pid %d serving", c.name, st.PID, st.Running, s.PID())
		}
		if after := instancePIDs(s); !mapsEqual(after, before) {
			t.Fatalf("%s: instances changed: %v → %v", c.name, before, after)
		}
	}
	recs := history(t, root)
	fails := 0
	for _, r := range recs {
		if r.Event == "server_upgrade_failed" {
			fails++
			if r.Reason != "rollback" {
				t.Errorf("server_upgrade_failed record with reason %q, want rollback", r.Reason)
			}
		}
	}
	if fails != 3 {
		t.Errorf("%d server_upgrade_failed records, want 3", fails)
	}
	// The log is still this server's: a good binary now upgrades.
	deployServer(t, root, bin, 0o755)
	pid := reloadUpgrade(t, root)
	t.Cleanup(func() { stopServerPID(t, pid) })
	ok, failed, errs := l.Finish()
	t.Logf("3 failed upgrades and 1 good one under 4 clients: %d ok, %d failed", ok, failed)
	if failed != 0 {
		t.Fatalf("%d failed requests: %v", failed, errs)
	}
	if after := instancePIDs(s); !mapsEqual(after, before) {
		t.Fatalf("after the good upgrade: instances changed: %v → %v", before, after)
	}
}

// The points where a hand-off pauses under TQ_UPGRADE_HOOK, in order, and
// which server waits there.
var handOffPoints = []struct{ name, who string }{
	{"old-before-release", "old"}, // server_upgrade recorded, log still held
	{"new-started", "new"},        // new process started, log not opened yet
	{"new-before-ready", "new"},   // new: log opened, instances adopted, not ready yet
	{"old-handed", "old"},         // old: the new one is ready; old stopped accepting
}

// kill -9 of the old and of the new server at each point of a hand-off,
// then a restart: whatever survived serves or nothing does; after the
// restart no process of the root's instances is alive beyond the new
// server's, the log replays (history and status work), and no instance
// name is used twice.
func TestServerUpgradeKill9AtEachPoint(t *testing.T) {
	for i, p := range handOffPoints {
		for _, victim := range []string{"old", "new"} {
			if victim == "new" && i == 0 {
				continue // no new server yet
			}
			t.Run(p.name+"/kill-"+victim, func(t *testing.T) { kill9During(t, p.name, victim) })
		}
	}
}

func kill9During(t *testing.T, point, victim string) {
	hooks := t.TempDir()
	t.Setenv("TQ_UPGRADE_HOOK", hooks)
	t.Setenv("TQ_UPGRADE_TIMEOUT_MS", "3000")
	root, bin, s := upgradeRig(t)
	oldPID, newPID := s.PID(), 0
	t.Cleanup(func() {
		stopServerPID(t, newPID)
		if _, ok := s.Wait(30 * time.Second); !ok {
			t.Errorf("the first server did not exit")
		}
	})
	deployServer(t, root, bin, 0o755)
	reloaded := make(chan error, 1)
	go func() {
		_, _, err := testrig.RunCLI(tqBin, "reload", "--root", root)
		reloaded <- err
	}()
	for _, p := range handOffPoints {
		file := filepath.Join(hooks, p.name)
		var pid int
		testrig.WaitFor(t, 30*time.Second, "hand-off point "+p.name, func() bool {
			b, err := os.ReadFile(file)
			if err != nil {
				return false
			}
			pid, err = strconv.Atoi(string(b))
			return err == nil
		})
		if p.who == "new" {
			newPID = pid
		}
		if p.name == point {
			target := oldPID
			if victim == "new" {
				target = newPID
			}
			if err := syscall.Kill(target, syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 %s server %d at %s: %v", victim, target, point, err)
			}
			testrig.WaitFor(t, 10*time.Second, victim+" server dead", func() bool { return !testrig.PIDAlive(target) })
			os.Remove(file)
			break
		}
		os.Remove(file)
	}
	// Let the survivor run on: later points pass at once.
	stopHooks := make(chan struct{})
	hooksDone := make(chan struct{})
	go func() {
		defer close(hooksDone)
		for {
			ents, _ := os.ReadDir(hooks)
			for _, e := range ents {
				os.Remove(filepath.Join(hooks, e.Name()))
			}
			select {
			case <-stopHooks:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stopHooks); <-hooksDone }()
	select {
	case <-reloaded:
	case <-time.After(30 * time.Second):
		t.Fatal("reload did not return")
	}
	// Whoever survived and serves has no stray instance processes.
	var st struct {
		Running bool
		PID     int
	}
	if testrig.Poll(5*time.Second, 20*time.Millisecond, "a surviving server", func() (bool, string) {
		err := testrig.SocketStatus(root, &st)
		return err == nil && st.Running, fmt.Sprint(err)
	}) == nil {
		t.Logf("survivor: pid %d", st.PID)
		waitBody(t, "http://"+s.Addr()+"/", "v1 index", 10*time.Second)
		live := map[string]bool{}
		for inst := range statusInstances(t, root) {
			live[inst] = true
		}
		assertNoMarked(t, root, live)
		stopServerPID(t, st.PID)
	}
	// Restart: a fresh server on the same root.
	s2 := startServer(t, root)
	waitBody(t, s2.URL("/"), "v1 index", 10*time.Second)
	live := map[string]bool{}
	for inst := range statusInstances(t, root) {
		live[inst] = true
	}
	assertNoMarked(t, root, live)
	if _, ok := s.Wait(30 * time.Second); !ok {
		t.Fatalf("the first server still runs after the restart\n%s", s.LogTail(3000))
	}
	if newPID > 0 {
		testrig.WaitFor(t, 10*time.Second, "the upgraded server gone", func() bool { return !testrig.PIDAlive(newPID) })
	}
	recs := history(t, root)
	starts := map[string]int{}
	for _, r := range recs {
		if r.Instance != "" && r.From == "" {
			starts[r.Instance]++
		}
	}
	for inst, n := range starts {
		if n != 1 {
			t.Errorf("instance name %s started %d times", inst, n)
		}
	}
	if _, _, err := runCLI(t, "status", "--json", "--root", root, "--at", recs[len(recs)-1].Time.Format(time.RFC3339Nano)); err != nil {
		t.Errorf("status --at the last record: %v", err)
	}
	s2.Stop(30 * time.Second)
	assertNoMarked(t, root, nil)
}

// statusInstances is the live instances the running server reports.
func statusInstances(t testing.TB, root string) map[string]int {
	t.Helper()
	var st struct {
		Workers []struct {
			Instances []struct {
				Instance string
				PID      int
			}
		}
	}
	if err := testrig.SocketStatus(root, &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, w := range st.Workers {
		for _, in := range w.Instances {
			out[in.Instance] = in.PID
		}
	}
	return out
}

// An upgrade while a replaced instance still drains a slow request: the
// new server adopts it as draining (and its successor as serving), the old
// server finishes the request, then stops it; its exit is recorded with
// its drain reason.
func TestServerUpgradeAdoptsDrainingInstance(t *testing.T) {
	root, bin, s := upgradeRig(t)
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		c, b := get(t, s.URL("/slow?ms=8000"))
		done <- result{c, b}
	}()
	testrig.WaitFor(t, 5*time.Second, "slow request in flight", func() bool {
		for _, in := range s.status().Workers[0].Instances {
			if in.Inflight != nil && *in.Inflight > 0 {
				return true
			}
		}
		return false
	})
	install(t, root, "index", "v2", "normal")
	if out, errOut, err := runCLI(t, "reload", "--root", root); err != nil {
		t.Fatalf("worker deploy: %v\n%s%s", err, out, errOut)
	}
	var draining string
	var drainingPID int
	testrig.WaitFor(t, 10*time.Second, "index-1 draining", func() bool {
		for _, in := range s.status().Workers[0].Instances {
			if in.State == "draining" {
				draining, drainingPID = in.Instance, in.PID
				return true
			}
		}
		return false
	})
	deployServer(t, root, bin, 0o755)
	pid := reloadUpgrade(t, root)
	t.Cleanup(func() { stopServerPID(t, pid) })
	r := <-done
	if r.code != 200 || !strings.Contains(r.body, "slow done v1") {
		t.Fatalf("request in flight across the upgrade: %d %q", r.code, r.body)
	}
	testrig.WaitFor(t, 15*time.Second, draining+" stopped", func() bool { return !testrig.PIDAlive(drainingPID) })
	var adopted, exited *store.Record
	testrig.WaitFor(t, 10*time.Second, draining+"'s exit recorded", func() bool {
		adopted, exited = nil, nil
		for _, rec := range history(t, root, "--worker", "index") {
			switch {
			case rec.Instance == draining && rec.Event == "adopt":
				adopted = &rec
			case rec.Instance == draining && rec.To == "stopped":
				exited = &rec
			}
		}
		return exited != nil
	})
	if adopted == nil || adopted.From != "draining" || adopted.To != "draining" || adopted.Reason != "server_upgrade" {
		t.Fatalf("adopt record of the draining instance: %+v", adopted)
	}
	if exited.Reason != "replaced" || exited.Seq < adopted.Seq {
		t.Fatalf("exit record of the draining instance: %+v", exited)
	}
	waitBody(t, s.URL("/"), "v2 index", 5*time.Second)
}

// While a worker's successor is still starting (or on canary), an upgrade
// would adopt a half-done deploy: it is postponed, the reload fails saying
// so, and the next reload once the roll has ended upgrades.
func TestServerUpgradePostponedDuringRoll(t *testing.T) {
	root, bin, s := upgradeRig(t)
	install(t, root, "index", "v2", "nohealth") // never healthy: rolls back after health_timeout_ms
	rolled := make(chan struct{})
	go func() {
		defer close(rolled)
		_, _, _ = testrig.RunCLI(tqBin, "reload", "--root", root)
	}()
	testrig.WaitFor(t, 10*time.Second, "index rolling", func() bool {
		st := s.status()
		return len(st.Workers[0].Instances) == 2
	})
	deployServer(t, root, bin, 0o755)
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err == nil || !strings.Contains(out, "server upgrade postponed: index is being replaced") {
		t.Fatalf("reload during a roll: %v\n%s%s", err, out, errOut)
	}
	if st := s.status(); st.PID != s.PID() {
		t.Fatalf("upgraded during a roll: pid %d", st.PID)
	}
	<-rolled
	testrig.WaitFor(t, 15*time.Second, "the roll ended", func() bool { return len(s.status().Workers[0].Instances) == 1 })
	pid := reloadUpgrade(t, root)
	t.Cleanup(func() { stopServerPID(t, pid) })
	waitBody(t, s.URL("/"), "v1 index", 5*time.Second)
}

// upgradeRig starts a server from its own server/bin/tqserver (bin) with
// the worker index serving v1.
func upgradeRig(t *testing.T) (root string, bin []byte, s *server) {
	t.Helper()
	root = newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	bin = tqBytes(t)
	deployServer(t, root, bin, 0o755)
	s = startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	return root, bin, s
}
