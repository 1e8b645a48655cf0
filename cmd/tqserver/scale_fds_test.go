package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

// Many idle workers cost the server a handful of file descriptors each
// (output pipes, a pidfd, the odd health probe), not a pool of warm
// keep-alive connections: with 32 per instance, a thousand workers ran the
// server out of descriptors.
func TestManyIdleWorkersFewDescriptors(t *testing.T) {
	const n = 40
	root := newRoot(t, fastConfig)
	for i := range n {
		install(t, root, fmt.Sprintf("w%02d", i), "v1", "normal")
	}
	s := startServer(t, root)
	healthy := func() int {
		c := 0
		for _, w := range s.status().Workers {
			for _, in := range w.Instances {
				if in.State == "healthy" {
					c++
				}
			}
		}
		return c
	}
	testrig.WaitFor(t, 60*time.Second, fmt.Sprintf("%d healthy workers", n), func() bool { return healthy() == n })
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.PID()))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	// Per worker: stdout and stderr pipes, a pidfd, sometimes a probe
	// connection; plus the server's own listeners, log, socket and inotify.
	if limit := n*5 + 64; len(ents) > limit {
		t.Fatalf("server holds %d descriptors with %d idle workers (limit %d)", len(ents), n, limit)
	}
	t.Logf("%d descriptors with %d idle workers", len(ents), n)
}
