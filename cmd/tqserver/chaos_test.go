package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

var chaosRounds = flag.Int("chaos-rounds", 20, "rounds of kill -9 of the server in TestChaosKillServer")

// TestChaosKillServer kills the server with SIGKILL at random moments —
// during start-up, mid-replacement, during a drain, idle — and restarts it
// on the same root each time. After every restart: nothing the log ever
// started is alive unless it is live now, the history replays, and seq
// strictly increases.
func TestChaosKillServer(t *testing.T) {
	root := newRoot(t, fastConfig)
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	t.Logf("chaos: %d rounds", *chaosRounds)
	for round := 0; round < *chaosRounds; round++ {
		s := startServer(t, root)
		moment := []string{"startup", "replacement", "drain", "idle"}[rng.IntN(4)]
		switch moment {
		case "startup":
			// killed while instances are still starting (or just became healthy)
		case "replacement", "drain":
			waitBody(t, s.URL("/"), " index", 10*time.Second)
			install(t, root, "index", fmt.Sprintf("v%d", round+2), "normal")
			if moment == "drain" {
				go get(t, s.URL("/slow?ms=2000")) // keeps the old instance draining
			}
			s.signal(syscall.SIGHUP)
			if moment == "drain" {
				waitBody(t, s.URL("/"), fmt.Sprintf("v%d index", round+2), 10*time.Second)
			}
		case "idle":
			waitBody(t, s.URL("/api/users"), " api_users", 10*time.Second)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond) // the random moment itself, not synchronization
		s.signal(syscall.SIGKILL)
		s.wait(10 * time.Second)

		s2 := startServer(t, root)
		waitBody(t, s2.URL("/"), " index", 15*time.Second)
		waitBody(t, s2.URL("/api/users"), " api_users", 15*time.Second)
		live := map[int]bool{}
		for _, w := range s2.status().Workers {
			for _, in := range w.Instances {
				live[in.PID] = true
			}
		}
		recs := history(t, root)
		var prev uint64
		for _, r := range recs {
			if r.Seq <= prev {
				t.Fatalf("round %d (%s): seq %d after %d", round, moment, r.Seq, prev)
			}
			prev = r.Seq
			if r.PID != 0 && !live[r.PID] {
				pid := r.PID
				testrig.WaitFor(t, 10*time.Second, fmt.Sprintf("round %d (%s): pid %d of %s gone", round, moment, pid, r.Instance), func() bool { return !testrig.PIDAlive(pid) })
			}
		}
		if n := count(recs, func(r store.Record) bool { return r.Event == "server_start" }); n != 2*(round+1) {
			t.Fatalf("round %d: %d server_start records", round, n)
		}
		s2.signal(syscall.SIGTERM)
		if err := s2.wait(30 * time.Second); err != nil {
			t.Fatalf("round %d: clean stop after recovery: %v", round, err)
		}
		for pid := range live {
			if testrig.PIDAlive(pid) {
				t.Fatalf("round %d: pid %d outlived a clean stop", round, pid)
			}
		}
	}
}

// TestChaosKillWorkers kills one worker's processes with SIGKILL at random
// moments while another worker is under load: the server stays up and
// restarts the victim, and the other worker's load sees no failure.
func TestChaosKillWorkers(t *testing.T) {
	root := newRoot(t, fastConfig+"  restart_backoff_max_ms: 400\n")
	install(t, root, "index", "v1", "normal")
	install(t, root, "api_users", "v1", "normal")
	s := startServer(t, root)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)
	waitBody(t, s.URL("/api/users"), "v1 api_users", 10*time.Second)
	l := testrig.StartLoad(s.URL("/"), 4, 1_000_000, 60*time.Second)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	kills := 0
	for i := 0; i < 8; i++ {
		var pid int
		testrig.WaitFor(t, 15*time.Second, "api_users healthy", func() bool {
			for _, w := range s.status().Workers {
				if w.Name == "api_users" {
					for _, in := range w.Instances {
						if in.State == "healthy" {
							pid = in.PID
							return true
						}
					}
				}
			}
			return false
		})
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond) // random moment
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			kills++
		}
		testrig.WaitFor(t, 10*time.Second, "victim gone", func() bool { return !testrig.PIDAlive(pid) })
	}
	waitBody(t, s.URL("/api/users"), "v1 api_users", 20*time.Second)
	ok, failed, errs := l.Finish()
	if failed != 0 {
		t.Fatalf("load on the other worker: %d of %d failed: %v", failed, ok+failed, errs)
	}
	recs := history(t, root, "--worker", "api_users")
	crashed := count(recs, func(r store.Record) bool { return r.Reason == "crashed" && r.To == "stopped" && r.Signal == "SIGKILL" })
	if crashed != kills {
		t.Fatalf("%d kills, %d crashed records with SIGKILL", kills, crashed)
	}
	if st := s.status(); !st.Running {
		t.Fatal("server not running")
	}
}
