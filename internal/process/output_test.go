package process

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A worker that floods its output is logged at the configured rate; the
// rest is counted and reported in one "dropped N lines" line, and the tail
// still holds the true last lines.
func TestOutputRateLimitFlood(t *testing.T) {
	var logs syncBuffer
	var own syncBuffer
	spec := helperSpec(t, "flood", "20000")
	spec.TailLines = 3
	spec.Logger = zerolog.New(&own)
	lines := zerolog.New(&logs).With().Str("worker", "w").Logger()
	spec.Output = Output{Lines: &lines, LinesPerSecond: 0.001, Burst: 5}
	p := start(t, spec)
	waitDone(t, p)
	var logged, dropped int
	var last string
	for _, l := range logs.lines(t) {
		var n int
		if _, err := fmt.Sscanf(l.Message, "dropped %d lines", &n); err == nil {
			if l.Level != "warn" {
				t.Errorf("dropped line at level %q, want warn", l.Level)
			}
			dropped += n
			continue
		}
		if l.Worker != "w" {
			t.Errorf("line without the Lines logger's fields: %+v", l)
		}
		logged++
		last = l.Message
	}
	if logged != 5 {
		t.Errorf("logged %d lines, want the burst of 5", logged)
	}
	if logged+dropped != 20001 {
		t.Errorf("logged %d + dropped %d = %d, want every one of 20001 lines accounted for", logged, dropped, logged+dropped)
	}
	if last != "line 5" {
		t.Errorf("last line logged %q, want \"line 5\"", last)
	}
	// The two pipes are read concurrently: "done" (stderr) may come
	// before the end of stdout; the last stdout line is in the tail either way.
	if got := p.Tail(); !strings.Contains(got, "line 20000") || !strings.Contains(got, "line 19999") {
		t.Errorf("Tail() = %q, want the last lines (line 19999, line 20000)", got)
	}
	if strings.Contains(own.String(), "line ") {
		t.Errorf("output lines went to Spec.Logger: %.200s", own.String())
	}
}

// Once tokens come back, the next line logged is preceded by the count of
// the lines dropped meanwhile.
func TestOutputRateLimitResumes(t *testing.T) {
	var logs syncBuffer
	o := newOutput(zerolog.New(&logs), 4, Output{LinesPerSecond: 10, Burst: 2})
	now := time.Unix(1000, 0)
	o.now = func() time.Time { return now }
	_, _ = o.stdout.Write([]byte("a\nb\nc\nd\n")) // a, b pass; c, d dropped
	now = now.Add(150 * time.Millisecond)         // 1.5 tokens
	_, _ = o.stderr.Write([]byte("e\nf\n"))       // e passes after "dropped 2"; f dropped
	now = now.Add(time.Second)                    // bucket full again (2)
	_, _ = o.stdout.Write([]byte("g\n"))          // "dropped 1", g
	o.flush()
	var got []string
	for _, l := range logs.lines(t) {
		got = append(got, l.Level+":"+strings.Fields(l.Message + " ")[0]+":"+l.Stream)
	}
	want := "info:a:stdout info:b:stdout warn:dropped: info:e:stderr warn:dropped: info:g:stdout"
	if strings.Join(got, " ") != want {
		t.Errorf("logged\n %s\nwant\n %s", strings.Join(got, " "), want)
	}
	if !strings.Contains(logs.String(), `"dropped_lines":2`) || !strings.Contains(logs.String(), `"dropped_lines":1`) {
		t.Errorf("dropped counts missing: %s", logs.String())
	}
}

// Without a limit every line is logged.
func TestOutputNoLimit(t *testing.T) {
	var logs syncBuffer
	o := newOutput(zerolog.New(&logs), 2, Output{})
	for i := range 1000 {
		_, _ = fmt.Fprintf(o.stdout, "l%d\n", i)
	}
	o.flush()
	if n := len(logs.lines(t)); n != 1000 {
		t.Errorf("logged %d lines, want 1000", n)
	}
}

// While lines are dropped the stream is read no faster than
// FloodBytesPerSecond (the copy sleeps, so the pipe fills and the worker
// waits); within the limit nothing sleeps.
func TestOutputFloodBrake(t *testing.T) {
	o := newOutput(zerolog.Nop(), 2, Output{LinesPerSecond: 1, Burst: 10, FloodBytesPerSecond: 1 << 20})
	now := time.Unix(1000, 0)
	o.now = func() time.Time { return now }
	var slept time.Duration
	o.sleep = func(d time.Duration) { slept += d }
	chunk := []byte(strings.Repeat("0123456789abcde\n", 4096)) // 64 KiB, 4096 lines
	small := []byte("a\nb\nc\n")
	_, _ = o.stdout.Write(small)
	if slept != 0 {
		t.Fatalf("slept %v within the limit", slept)
	}
	for range 16 { // 1 MiB, all dropped
		_, _ = o.stdout.Write(chunk)
	}
	if slept < 990*time.Millisecond || slept > 1010*time.Millisecond {
		t.Errorf("slept %v reading 1 MiB over the limit at 1 MiB/s, want ~1s", slept)
	}
}
