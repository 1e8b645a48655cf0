package store

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// Instance is one process as the log last recorded it.
type Instance struct {
	Instance string `json:"instance"`
	Worker   string `json:"worker"`
	Route    string `json:"route,omitempty"`
	State    string `json:"state"`
	// Reason is the reason of the last record applied to the instance.
	Reason     string `json:"reason,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Port       int    `json:"port,omitempty"`
	StartTicks uint64 `json:"start_ticks,omitempty"`
	// Since is when the instance entered State.
	Since time.Time `json:"since"`
	// Seq is the last record applied to the instance.
	Seq uint64 `json:"seq"`
}

// Registry is the state of every instance the log mentions, rebuilt from the
// records alone.
type Registry struct {
	// Instances holds every instance ever seen, by name, in its last known
	// state; stopped ones stay so their names are never reused.
	Instances map[string]*Instance `json:"instances"`
	// LastSeq and LastTime are those of the last record applied.
	LastSeq  uint64    `json:"last_seq"`
	LastTime time.Time `json:"last_time"`
	// MaxInstance is, per worker, the highest N seen in an instance name
	// "{worker}-{N}" in any record; the next instance is N+1.
	MaxInstance map[string]uint64 `json:"max_instance"`
	// Server is the server as the last server_start or server_stop record
	// left it.
	Server Server `json:"server"`
}

// Server is the tqserver process as the log last recorded it. A server
// killed with -9 records no stop: the log shows it running until the next
// start.
type Server struct {
	Running bool   `json:"running"`
	PID     int    `json:"pid,omitempty"`
	Mode    string `json:"mode,omitempty"`
	Listen  string `json:"listen,omitempty"`
	// Since is when it started or stopped; zero before the first start.
	Since time.Time `json:"since,omitzero"`
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{Instances: map[string]*Instance{}, MaxInstance: map[string]uint64{}}
}

// Apply folds one record into the registry. A record with To is a transition
// of its instance; one without To (server-level events, builds, notes about a
// worker) only advances LastSeq and LastTime. A record that contradicts what
// came before is refused with an error naming its seq, and leaves the
// registry unchanged.
func (g *Registry) Apply(r Record) error {
	if r.Seq <= g.LastSeq {
		return fmt.Errorf("record %d: seq does not follow %d", r.Seq, g.LastSeq)
	}
	if r.To == "" {
		if r.From != "" {
			return fmt.Errorf("record %d: from %q without to", r.Seq, r.From)
		}
		g.advance(r)
		return nil
	}
	if r.Instance == "" {
		return fmt.Errorf("record %d: transition to %s without instance", r.Seq, r.To)
	}
	if r.Worker == "" {
		return fmt.Errorf("record %d: transition of %s without worker", r.Seq, r.Instance)
	}
	if !sm.ValidState(r.To) {
		return fmt.Errorf("record %d: %s: unknown state %q", r.Seq, r.Instance, r.To)
	}
	in := g.Instances[r.Instance]
	if in == nil {
		in = &Instance{}
	}
	if err := in.Apply(r); err != nil {
		return err
	}
	g.Instances[r.Instance] = in
	g.advance(r)
	return nil
}

// Apply folds one transition record of this instance into it: the one code
// by which both replay (Registry.Apply) and the live supervisor's core
// (internal/core) move an instance, so the two cannot disagree. A zero
// Instance takes only a first record (from "" to starting). A record that
// contradicts what came before is refused and leaves in unchanged.
func (in *Instance) Apply(r Record) error {
	switch {
	case r.To == "" || r.Instance == "" || r.Worker == "":
		return fmt.Errorf("record %d: not a transition of an instance", r.Seq)
	case !sm.ValidState(r.To):
		return fmt.Errorf("record %d: %s: unknown state %q", r.Seq, r.Instance, r.To)
	case in.Instance == "":
		if r.From != "" || r.To != sm.Starting {
			return fmt.Errorf("record %d: %s: first record goes from %q to %q, want from \"\" to starting", r.Seq, r.Instance, r.From, r.To)
		}
		in.Instance, in.Worker = r.Instance, r.Worker
	case in.Instance != r.Instance:
		return fmt.Errorf("record %d: for %s, not %s", r.Seq, r.Instance, in.Instance)
	case in.Worker != r.Worker:
		return fmt.Errorf("record %d: %s belongs to worker %s, not %s", r.Seq, r.Instance, in.Worker, r.Worker)
	case r.From == "":
		return fmt.Errorf("record %d: %s starts again; instance names are never reused", r.Seq, r.Instance)
	case in.State == sm.Stopped:
		return fmt.Errorf("record %d: %s is already stopped", r.Seq, r.Instance)
	case r.From != in.State:
		return fmt.Errorf("record %d: %s: from %q, but it is %s", r.Seq, r.Instance, r.From, in.State)
	}
	if in.State != r.To {
		in.State = r.To
		in.Since = r.Time
	}
	in.Reason = r.Reason
	in.Seq = r.Seq
	if r.Route != "" {
		in.Route = r.Route
	}
	if r.PID != 0 {
		in.PID = r.PID
	}
	if r.Port != 0 {
		in.Port = r.Port
	}
	if r.StartTicks != 0 {
		in.StartTicks = r.StartTicks
	}
	return nil
}

// advance records r as the last one seen.
func (g *Registry) advance(r Record) {
	g.LastSeq = r.Seq
	g.LastTime = r.Time
	if r.Worker == "" && r.Instance == "" {
		switch r.Event {
		case sm.EventServerStart: // CONTRACT.md §5: the server-level records Replay follows
			g.Server = serverStarted(r)
		case sm.EventServerStop:
			g.Server = Server{Since: r.Time}
		}
	}
	if n, ok := instanceNumber(r.Worker, r.Instance); ok && n > g.MaxInstance[r.Worker] {
		g.MaxInstance[r.Worker] = n
	}
}

// serverStarted reads a server_start record: the supervisor writes
// "pid N, mode M, version V, listen ADDR" in its detail; a pid field, when
// present, wins.
func serverStarted(r Record) Server {
	sv := Server{Running: true, PID: r.PID, Since: r.Time}
	for part := range strings.SplitSeq(r.Detail, ", ") {
		k, v, _ := strings.Cut(part, " ")
		switch k {
		case "pid":
			if n, err := strconv.Atoi(v); err == nil && sv.PID == 0 && n > 0 {
				sv.PID = n
			}
		case "mode":
			sv.Mode = v
		case "listen":
			sv.Listen = v
		}
	}
	return sv
}

// instanceNumber parses N from an instance name "{worker}-{N}".
func instanceNumber(worker, instance string) (uint64, bool) {
	if worker == "" {
		return 0, false
	}
	rest, ok := strings.CutPrefix(instance, worker+"-")
	if !ok || rest == "" || rest[0] < '0' || rest[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil
}

// Live returns copies of the instances that are not stopped, sorted by worker
// then instance number.
func (g *Registry) Live() []*Instance {
	var out []*Instance
	for _, in := range g.Instances {
		if in.State != sm.Stopped {
			c := *in
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *Instance) int {
		if c := cmp.Compare(a.Worker, b.Worker); c != 0 {
			return c
		}
		an, aok := instanceNumber(a.Worker, a.Instance)
		bn, bok := instanceNumber(b.Worker, b.Instance)
		if aok && bok && an != bn {
			return cmp.Compare(an, bn)
		}
		return cmp.Compare(a.Instance, b.Instance)
	})
	return out
}

// Replay rebuilds the registry from every record of s with Time <= until
// (zero: all of them).
func Replay(s *Store, until time.Time) (*Registry, error) {
	g := NewRegistry()
	// A recreated or salvaged log says how far instance numbering had got
	// in records it no longer holds.
	floors, err := s.instanceFloors()
	if err != nil {
		return nil, err
	}
	for w, n := range floors {
		g.MaxInstance[w] = n
	}
	err = s.Scan(Filter{Until: until}, func(r Record) error {
		if err := g.Apply(r); err != nil {
			return fmt.Errorf("%s: %w", s.path, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// maxLine bounds one line of ReplayJSONL input; records are small, but a
// detail can carry a few kilobytes of stderr.
const maxLine = 16 << 20

// ReplayJSONL is Replay over the output of `history --json`: one record per
// line, oldest first. Blank lines are skipped; any other line that is not a
// whole record is an error naming its line number.
func ReplayJSONL(r io.Reader, until time.Time) (*Registry, error) {
	g := NewRegistry()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	d := newScanDecoder()
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		var rec Record
		if err := d.decode(b, &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if !until.IsZero() && rec.Time.After(until) {
			continue
		}
		if err := g.Apply(rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxLine)
		}
		return nil, fmt.Errorf("read history: %w", err)
	}
	return g, nil
}
