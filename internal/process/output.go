package process

import (
	"bytes"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
)

const (
	// maxLine bounds the memory one unterminated line can take; a longer line
	// is emitted in pieces of this size.
	maxLine = 64 << 10
	// maxTailLine bounds each line kept for Tail (it ends up in log records).
	maxTailLine = 512
)

// Output says where a process's output lines go and how many per second.
// The zero value logs every line to Spec.Logger.
type Output struct {
	// Lines, when set, receives the output lines instead of Spec.Logger
	// (e.g. a logger writing logs/{worker}.log); Spec.Logger keeps the
	// package's own messages about the process.
	Lines *zerolog.Logger
	// LinesPerSecond and Burst limit the lines logged, both streams
	// together, with a token bucket: Burst lines at once, refilled at
	// LinesPerSecond. Lines over the limit are dropped from the log (the
	// tail still keeps them) and counted; the next line logged is preceded
	// by one "dropped N lines" line, as is the end of the output. 0 (or a
	// negative value) means no limit; Burst below 1 means 1.
	LinesPerSecond float64
	Burst          int
	// FloodBytesPerSecond caps how fast output is read while lines are
	// being dropped (default 64 MiB/s): past it the pipe fills and the
	// worker's writes wait, so a flood costs neither it nor the server
	// more than a slice of one CPU. Below the line limit nothing waits.
	FloodBytesPerSecond int64
}

// defaultFloodBytesPerSecond is Output.FloodBytesPerSecond when unset.
const defaultFloodBytesPerSecond = 64 << 20

// output collects the lines of both streams: it logs them (within the rate
// limit) and keeps the last ones in a ring shared by stdout and stderr.
type output struct {
	stdout, stderr *lineWriter
	log            zerolog.Logger // where lines and "dropped" notes go

	mu   sync.Mutex
	ring [][]byte // slots of at most maxTailLine bytes, reused
	n    int      // slots in use
	next int      // the slot the next line goes to (the oldest once full)
	lim  *limiter // nil: no limit
	now  func() time.Time

	floodRate int64               // bytes/s read while dropping
	sleep     func(time.Duration) // time.Sleep; tests replace it
}

func newOutput(log zerolog.Logger, tailLines int, o Output) *output {
	if o.Lines != nil {
		log = *o.Lines
	}
	out := &output{log: log, ring: make([][]byte, tailLines), now: time.Now, sleep: time.Sleep}
	if o.LinesPerSecond > 0 {
		out.lim = &limiter{rate: o.LinesPerSecond, burst: float64(max(o.Burst, 1))}
		out.lim.tokens = out.lim.burst
		out.floodRate = o.FloodBytesPerSecond
		if out.floodRate <= 0 {
			out.floodRate = defaultFloodBytesPerSecond
		}
	}
	// Both streams log at info: a worker's stderr is its ordinary log
	// output (Go's log package writes there), not a warning from tqserver.
	out.stdout = &lineWriter{stream: "stdout", o: out}
	out.stderr = &lineWriter{stream: "stderr", o: out}
	return out
}

// line keeps line in the tail and logs it unless the limit says drop; it
// reports whether it dropped the line.
func (o *output) line(stream string, line []byte) (dropped bool) {
	o.mu.Lock()
	slot := o.ring[o.next][:0]
	cut := min(len(line), maxTailLine)
	for cut < len(line) && cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	o.ring[o.next] = append(slot, line[:cut]...)
	o.next = (o.next + 1) % len(o.ring)
	o.n = min(o.n+1, len(o.ring))
	var before int64
	ok := true
	if o.lim != nil {
		ok, before = o.lim.take(o.now())
	}
	o.mu.Unlock()
	if before > 0 {
		o.logDropped(before)
	}
	if ok {
		o.log.Info().Str("stream", stream).Msg(string(line))
	}
	return !ok
}

func (o *output) logDropped(n int64) {
	o.log.Warn().Int64("dropped_lines", n).
		Msg(fmt.Sprintf("dropped %d lines of output over the rate limit (logs.worker_lines_per_second)", n))
}

func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b bytes.Buffer
	start := (o.next - o.n + len(o.ring)) % max(len(o.ring), 1)
	for i := range o.n {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.Write(o.ring[(start+i)%len(o.ring)])
	}
	return b.String()
}

// flush emits unterminated last lines and the count of lines dropped since
// the last one logged; called once the copying has ended.
func (o *output) flush() {
	o.stdout.flush()
	o.stderr.flush()
	if o.lim == nil {
		return
	}
	o.mu.Lock()
	n := o.lim.dropped
	o.lim.dropped = 0
	o.mu.Unlock()
	if n > 0 {
		o.logDropped(n)
	}
}

// limiter is a token bucket; output.mu guards it.
type limiter struct {
	rate, burst, tokens float64
	last                time.Time
	dropped             int64 // lines dropped since the last one allowed
}

// take reports whether a line may be logged now and, when it may, how many
// were dropped before it (reset to 0).
func (l *limiter) take(now time.Time) (ok bool, dropped int64) {
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false, 0
	}
	l.tokens--
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}

// lineWriter splits one stream into lines. os/exec writes to it from a
// single goroutine and stops before Cmd.Wait returns, so it needs no lock.
type lineWriter struct {
	stream  string
	o       *output
	buf     []byte        // the current unterminated line, at most maxLine bytes
	dropped bool          // a line of the current Write was dropped
	debt    time.Duration // reading time owed while dropping (flood brake)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.dropped = false
	w.lines(p)
	if w.dropped && w.o.floodRate > 0 {
		// Over the limit: read this stream no faster than floodRate, so
		// the pipe fills and the worker waits instead of both burning CPU.
		w.debt += time.Duration(int64(n) * int64(time.Second) / w.o.floodRate)
		if w.debt >= time.Millisecond {
			w.o.sleep(w.debt)
			w.debt = 0
		}
	}
	return n, nil
}

func (w *lineWriter) lines(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		if room := maxLine - len(w.buf); len(seg) > room {
			w.buf = append(w.buf, seg[:room]...)
			p = p[room:]
			w.emit()
			continue
		}
		if len(w.buf) == 0 && i >= 0 {
			// A whole line in p: no copy into buf.
			w.dropped = w.o.line(w.stream, bytes.TrimSuffix(seg, []byte{'\r'})) || w.dropped
			p = p[i+1:]
			continue
		}
		w.buf = append(w.buf, seg...)
		if i < 0 {
			break
		}
		p = p[i+1:]
		w.emit()
	}
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	w.dropped = w.o.line(w.stream, bytes.TrimSuffix(w.buf, []byte{'\r'})) || w.dropped
	w.buf = w.buf[:0]
}
