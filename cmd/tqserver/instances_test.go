package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

func healthyPIDs(s *server, worker string) []int {
	var out []int
	for _, w := range s.status().Workers {
		if w.Name == worker {
			for _, in := range w.Instances {
				if in.State == "healthy" {
					out = append(out, in.PID)
				}
			}
		}
	}
	sort.Ints(out)
	return out
}

func TestSeveralInstancesRollOneAtATime(t *testing.T) {
	root := newRoot(t, fastConfig+"    instances: 3\n")
	install(t, root, "index", "v1", "normal")
	s := startServer(t, root)
	testrig.WaitFor(t, 20*time.Second, "3 healthy instances", func() bool { return len(healthyPIDs(s, "index")) == 3 })

	// Requests spread over all instances.
	seen := map[string]bool{}
	l := testrig.StartLoad(s.URL("/"), 6, 1_000_000, 60*time.Second)
	testrig.WaitFor(t, 10*time.Second, "responses from 3 pids", func() bool {
		if b := l.Last(); b != "" {
			f := strings.Fields(b)
			seen[f[2]] = true
		}
		return len(seen) == 3
	})

	// A new binary replaces them one at a time, without a failed request,
	// and the reload answers once all three serve.
	install(t, root, "index", "v2", "normal")
	out, errs, err := runCLI(t, "reload", "--root", root)
	if err != nil || strings.Count(out, ": serving") != 3 {
		t.Fatalf("reload: %v %q %q", err, out, errs)
	}
	testrig.WaitFor(t, 10*time.Second, "v2 answering", func() bool {
		b := l.Last()
		return strings.HasPrefix(b, "v2 ")
	})
	ok, failed, fails := l.Finish()
	if failed != 0 {
		t.Fatalf("%d of %d failed during the roll: %v", failed, ok+failed, fails)
	}
	recs := history(t, root, "--worker", "index")
	var starts, healthy []uint64
	for _, r := range recs {
		if r.Reason == "binary_changed" && r.From == "" {
			starts = append(starts, r.Seq)
		}
		if r.Reason == "binary_changed" && r.To == "healthy" {
			healthy = append(healthy, r.Seq)
		}
	}
	if len(starts) != 3 || len(healthy) != 3 {
		t.Fatalf("want 3 binary_changed starts and 3 healthy, got %d %d", len(starts), len(healthy))
	}
	for i := 1; i < 3; i++ {
		if starts[i] < healthy[i-1] {
			t.Fatalf("instance %d started (seq %d) before instance %d was healthy (seq %d): not one at a time", i+1, starts[i], i, healthy[i-1])
		}
	}
	if n := count(recs, func(r store.Record) bool { return r.Reason == "replaced" && r.To == "draining" }); n != 3 {
		t.Fatalf("want 3 replaced drains, got %d", n)
	}

	// Fewer instances: the extra ones drain; more: new ones start.
	// rollback_window_ms 0: the crash below is of a binary deployed moments
	// ago, which would otherwise be rolled back in every slot (TestAutomaticRollback).
	writeFile(t, filepath.Join(root, "config", "server.yaml"), fastConfig+"    instances: 1\n    rollback_window_ms: 0\n")
	if out, errs, err := runCLI(t, "reload", "--root", root); err != nil || !strings.Contains(out, "instances 3 → 1") {
		t.Fatalf("reduce: %v %q %q", err, out, errs)
	}
	testrig.WaitFor(t, 10*time.Second, "1 instance", func() bool { return len(healthyPIDs(s, "index")) == 1 })
	writeFile(t, filepath.Join(root, "config", "server.yaml"), fastConfig+"    instances: 2\n    rollback_window_ms: 0\n")
	if out, errs, err := runCLI(t, "reload", "--root", root); err != nil || !strings.Contains(out, "instances 1 → 2") {
		t.Fatalf("grow: %v %q %q", err, out, errs)
	}
	testrig.WaitFor(t, 10*time.Second, "2 instances", func() bool { return len(healthyPIDs(s, "index")) == 2 })
	recs = history(t, root, "--worker", "index")
	if n := count(recs, func(r store.Record) bool { return r.Reason == "config_changed" && r.To == "draining" }); n != 2 {
		t.Fatalf("want 2 config_changed drains, got %d", n)
	}
	if n := count(recs, func(r store.Record) bool { return r.Reason == "config_changed" && r.To == "healthy" }); n != 1 {
		t.Fatalf("want 1 config_changed start, got %d", n)
	}
	// A crash of one instance restarts only that one; the others keep serving.
	pids := healthyPIDs(s, "index")
	if err := killPID(pids[0]); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 10*time.Second, "crashed instance replaced", func() bool {
		now := healthyPIDs(s, "index")
		return len(now) == 2 && now[0] != pids[0] && now[1] != pids[0]
	})
	if got := healthyPIDs(s, "index"); !(got[0] == pids[1] || got[1] == pids[1]) {
		t.Fatalf("the other instance was restarted too: before %v after %v", pids, got)
	}
	_ = fmt.Sprint()
}
