package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

// BenchmarkDevReload measures, in one run, the time from writing an edited
// worker source to the first HTTP response showing the change (dev mode:
// watcher → debounce → go build → start → health → swap), next to a bare
// `go build` of an equally fresh edit of the same worker. Every iteration is
// one edit; run with -benchtime=20x for a median over 20 edits (fewer are
// swamped by the builds' own spread under load):
//
//	go test ./cmd/tqserver -run '^$' -bench DevReload -benchtime 20x
//
// It also keeps 2 keep-alive clients busy and reports failed requests.
func BenchmarkDevReload(b *testing.B) {
	root := newRoot(b, fastConfig)
	writeFile(b, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	base, err := os.ReadFile("testdata/testworker/main.go")
	if err != nil {
		b.Fatal(err)
	}
	edit := func(v string) string {
		return strings.Replace(string(base), `version   = "v0"`, `version   = "`+v+`"`, 1)
	}
	writeFile(b, src, edit("r0"))
	// A copy of the worker for the bare builds, in its own module.
	bare := b.TempDir()
	writeFile(b, filepath.Join(bare, "go.mod"), "module example.com/bare\n\ngo 1.22\n")
	s := startServerMode(b, root, "dev")
	waitBody(b, s.URL("/"), "r0 index", 60*time.Second)
	l := testrig.StartLoad(s.URL("/"), 2, 10_000_000, time.Hour)

	var reloads, builds []time.Duration
	type window struct{ from, to time.Time }
	var windows []window
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Bare go build of a fresh edit (never built before: no cache hit).
		bareBuild := func() {
			writeFile(b, filepath.Join(bare, "main.go"), edit(fmt.Sprintf("bare%d-%d", i, time.Now().UnixNano())))
			t0 := time.Now()
			cmd := exec.Command("go", "build", "-o", filepath.Join(bare, "out"), ".")
			cmd.Dir = bare
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("bare build: %v\n%s", err, out)
			}
			builds = append(builds, time.Since(t0))
		}
		// The bare build goes first in even edits and last in odd ones, so
		// neither side always runs right after the other (a swap's tail, the
		// other build's write-back).
		if i%2 == 0 {
			bareBuild()
		}
		v := fmt.Sprintf("r%d-%d", i+1, time.Now().UnixNano())
		seen := l.Await(v + " ")
		t1 := time.Now()
		writeFile(b, src, edit(v))
		select {
		case <-seen:
		case <-time.After(60 * time.Second):
			b.Fatalf("edit %d not served within 60s", i)
		}
		reloads = append(reloads, time.Since(t1))
		windows = append(windows, window{t1, time.Now()})
		if i%2 == 1 {
			bareBuild()
		}
	}
	b.StopTimer()
	ok, failed, errs := l.Finish()
	med := func(d []time.Duration) time.Duration {
		c := append([]time.Duration(nil), d...)
		sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
		return c[len(c)/2]
	}
	mr, mb := med(reloads), med(builds)
	diffs := make([]time.Duration, len(reloads))
	for i := range reloads {
		diffs[i] = reloads[i] - builds[i]
	}
	md := med(diffs) // paired per edit: less sensitive to the machine's drift
	b.ReportMetric(float64(md.Milliseconds()), "paired-overhead-ms")
	inReload := func(at time.Time) bool {
		for _, w := range windows {
			if !at.Before(w.from) && at.Before(w.to) {
				return true
			}
		}
		return false
	}
	samples := l.Samples()
	p99Reload, nReload := testrig.P99(samples, inReload)
	p99Steady, nSteady := testrig.P99(samples, func(at time.Time) bool { return !inReload(at) })
	if p99Steady > 0 {
		b.ReportMetric(float64(p99Reload)/float64(p99Steady), "p99-reload/steady")
	}
	b.Logf("p99 during reloads %v (%d requests), steady %v (%d requests)", p99Reload, nReload, p99Steady, nSteady)
	b.ReportMetric(float64(mr.Milliseconds()), "reload-ms-median")
	b.ReportMetric(float64(mb.Milliseconds()), "gobuild-ms-median")
	b.ReportMetric(float64((mr - mb).Milliseconds()), "overhead-ms")
	b.ReportMetric(float64(failed), "failed-requests")
	// The server's own view: how long its builds took, and save → serving.
	if builtMs, swapMs := devTimings(s.Logs()); len(builtMs) > 0 && len(swapMs) > 0 {
		mBuilt, mSwap := medianF(builtMs), medianF(swapMs)
		b.ReportMetric(mBuilt, "server-build-ms-median")
		b.ReportMetric(mSwap-mBuilt, "server-beyond-build-ms")
		b.Logf("server log: build median %.0f ms, save → serving median %.0f ms (%d builds, %d swaps)", mBuilt, mSwap, len(builtMs), len(swapMs))
	}
	b.Logf("%d edits: reload median %v, bare go build median %v (overhead %v, paired median %v); load: %d ok, %d failed %v",
		len(reloads), mr, mb, mr-mb, md, ok, failed, errs)
}

var (
	ansiCodes   = regexp.MustCompile("\x1b\\[[0-9;]*m")
	builtTook   = regexp.MustCompile(`\bbuilt took=([0-9.]+)`)
	swapSinceMs = regexp.MustCompile(`swapped: new code serving.*since_change=([0-9.]+)`)
)

// devTimings reads the dev server's console log: the duration of every
// build it swapped in ("built took=MS") and every save → serving time
// ("swapped … since_change=MS"), in milliseconds.
func devTimings(log string) (built, swapped []float64) {
	log = ansiCodes.ReplaceAllString(log, "")
	for _, m := range builtTook.FindAllStringSubmatch(log, -1) {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			built = append(built, v)
		}
	}
	for _, m := range swapSinceMs.FindAllStringSubmatch(log, -1) {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			swapped = append(swapped, v)
		}
	}
	return built, swapped
}

func medianF(v []float64) float64 {
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	return c[len(c)/2]
}
