package supervisor

import (
	"errors"
	"slices"
	"strings"

	"github.com/mevdschee/tqserver/internal/events"
)

// pendingReload is one reload request. Its own part is its change check and
// the restarts that check started (waiting); it is done once checked and
// nothing waits. A reload that arrives while others are still in their own
// part joins them: it replies only when they and it are done, with their
// changes and failures before its own. So ten concurrent `tqserver reload`
// all report the deploy the first one found, and all fail when it fails.
// One exception: a start that a newer deploy abandoned is a failure of the
// reload that made it only (superseded).
type pendingReload struct {
	reply   chan<- events.ReloadResult
	result  events.ReloadResult // own changes and failures
	waiting map[*instance]bool
	checked bool
	joined  []*pendingReload // earlier reloads in progress when this one arrived
	// superseded: instances of this reload that a newer deploy abandoned
	// before they served. Their failure is this reload's, not its joiners'.
	superseded map[string]bool
}

func (p *pendingReload) supersede(instance string) {
	if p.superseded == nil {
		p.superseded = map[string]bool{}
	}
	p.superseded[instance] = true
}

func (p *pendingReload) ownDone() bool { return p.checked && len(p.waiting) == 0 }

// joinReloads registers p, joining every reload still in its own part.
func (s *Supervisor) joinReloads(p *pendingReload) {
	for _, q := range s.reloads {
		if !q.ownDone() {
			p.joined = append(p.joined, q)
		}
	}
	s.reloads = append(s.reloads, p)
}

// settleReloads replies to every reload whose own part and joined reloads
// are done.
func (s *Supervisor) settleReloads() {
	keep := s.reloads[:0]
	var done []*pendingReload
	for _, p := range s.reloads {
		ready := p.ownDone()
		for _, q := range p.joined {
			ready = ready && q.ownDone()
		}
		if ready {
			done = append(done, p)
		} else {
			keep = append(keep, p)
		}
	}
	clear(s.reloads[len(keep):])
	s.reloads = keep
	for _, p := range done {
		s.finish(p)
	}
}

// failReloads answers every reload still waiting with msg (shutdown).
func (s *Supervisor) failReloads(msg string) {
	for _, p := range s.reloads {
		p.result.Error = msg
		s.finish(p)
	}
	s.reloads = nil
}

// merged is p's reply: the joined reloads' outcomes, then its own, each
// line once.
func (p *pendingReload) merged() events.ReloadResult {
	var out events.ReloadResult
	for _, q := range append(slices.Clone(p.joined), p) {
		for _, c := range q.result.Changes {
			if !slices.Contains(out.Changes, c) {
				out.Changes = append(out.Changes, c)
			}
		}
		for _, f := range q.result.Failures {
			inst, _, _ := strings.Cut(f, ": ")
			if q != p && q.superseded[inst] {
				continue
			}
			if !slices.Contains(out.Failures, f) {
				out.Failures = append(out.Failures, f)
			}
		}
	}
	out.Error = p.result.Error
	for _, q := range p.joined {
		if out.Error == "" {
			out.Error = q.result.Error
		}
	}
	return out
}

// BeginShutdown is called when the server starts stopping, before it waits
// for in-flight requests: from then on a reload answers "server is shutting
// down" and starts nothing. Safe from any goroutine.
func (s *Supervisor) BeginShutdown() { s.closing.Store(true) }

// errSameContent: the binary's stat changed but its bytes did not.
var errSameContent = errors.New("same content as the running binary")

// acceptBinary reads f's binary and decides whether it is a deploy: the same
// bytes as w runs (errSameContent, with the fresh stamp to record), or new
// bytes that match bin/NAME.sha256 and form a complete executable (nil), or
// a rejection (any other error; nothing is to be recorded). w is nil for a
// new worker.
func (s *Supervisor) acceptBinary(f found, w *worker) (binStamp, error) {
	b, err := hashBin(f.bin)
	if err != nil {
		return b, err
	}
	if w != nil {
		if !w.stamp.bin.hashed {
			if sum, ok := runningSum(w); ok {
				w.stamp.bin.sum, w.stamp.bin.hashed = sum, true
			}
		}
		if b.sameContent(w.stamp.bin) {
			return b, errSameContent
		}
	}
	if err := verifyBinary(f.bin, b); err != nil {
		return b, err
	}
	return b, nil
}
