package process

import (
	"bytes"
	"strings"
	"sync"
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

// output collects the lines of both streams: it logs them and keeps the
// last ones in a ring shared by stdout and stderr.
type output struct {
	stdout, stderr *lineWriter

	mu   sync.Mutex
	ring []string
	next int // index of the oldest line once the ring is full
	full bool
}

func newOutput(log zerolog.Logger, tailLines int) *output {
	o := &output{ring: make([]string, 0, tailLines)}
	o.stdout = &lineWriter{log: log, level: zerolog.InfoLevel, stream: "stdout", o: o}
	o.stderr = &lineWriter{log: log, level: zerolog.WarnLevel, stream: "stderr", o: o}
	return o
}

func (o *output) add(line []byte) {
	if len(line) > maxTailLine {
		cut := maxTailLine
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut]
	}
	s := string(line)
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.full {
		o.ring = append(o.ring, s)
		o.full = len(o.ring) == cap(o.ring)
		return
	}
	o.ring[o.next] = s
	o.next = (o.next + 1) % len(o.ring)
}

func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	lines := make([]string, 0, len(o.ring))
	lines = append(lines, o.ring[o.next:]...)
	lines = append(lines, o.ring[:o.next]...)
	return strings.Join(lines, "\n")
}

// flush emits unterminated last lines; called once the copying has ended.
func (o *output) flush() {
	o.stdout.flush()
	o.stderr.flush()
}

// lineWriter splits one stream into lines. os/exec writes to it from a
// single goroutine and stops before Cmd.Wait returns, so it needs no lock.
type lineWriter struct {
	log    zerolog.Logger
	level  zerolog.Level
	stream string
	o      *output
	buf    []byte // the current unterminated line, at most maxLine bytes
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
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
		w.buf = append(w.buf, seg...)
		if i < 0 {
			break
		}
		p = p[i+1:]
		w.emit()
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit()
	}
}

func (w *lineWriter) emit() {
	line := bytes.TrimSuffix(w.buf, []byte{'\r'})
	w.log.WithLevel(w.level).Str("stream", w.stream).Msg(string(line))
	w.o.add(line)
	w.buf = w.buf[:0]
}
