package process

import (
	"os"
	"testing"
	"time"
)

// BenchmarkStop measures Stop of a worker that exits on SIGTERM: without a
// mark (group kill only), with one (group kill plus the /proc scan for
// descendants that left the group or session), and in a cgroup (group kill
// plus cgroup.kill, no scan).
func BenchmarkStop(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	for _, name := range []string{"unmarked", "marked", "cgroup"} {
		mark := ""
		if name != "unmarked" {
			mark = Mark(root, "bench-1")
		}
		b.Run(name, func(b *testing.B) {
			if name == "cgroup" {
				if _, err := EnableCgroups(root); err != nil {
					b.Skip(err)
				}
				defer DisableCgroups()
			}
			var stopping time.Duration
			for b.Loop() {
				p, err := Start(Spec{Path: exe, Args: []string{"sleep"}, Env: helperEnviron(), Mark: mark})
				if err != nil {
					b.Fatal(err)
				}
				for deadline := time.Now().Add(waitLimit); p.Tail() != "ready"; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						b.Fatal("helper not ready")
					}
				}
				t0 := time.Now()
				p.Stop(time.Second)
				stopping += time.Since(t0)
			}
			b.ReportMetric(float64(stopping.Microseconds())/float64(b.N), "stop-µs/op")
		})
	}
}

// BenchmarkScan is one scan of /proc for a mark no process carries.
func BenchmarkScan(b *testing.B) {
	mark := Mark(b.TempDir(), "bench-1")
	for b.Loop() {
		markedProcs(mark, 0, 0)
	}
}
