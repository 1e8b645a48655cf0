package supervisor

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mevdschee/tqserver/internal/core"
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
	id      uint64 // the batch id its instances carry in the core
	source  string
	reply   chan<- events.ReloadResult
	result  events.ReloadResult // own changes and failures
	waiting map[string]bool     // instances it started, until they serve or fail
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

// errSameContent: the binary's stat changed but its bytes did not.
var errSameContent = errors.New("same content as the running binary")

// acceptBinary reads f's binary and decides whether it is a deploy: the same
// bytes as the running one, old (errSameContent, with the fresh stamp to
// record), or new bytes that match bin/NAME.sha256 and form a complete
// executable (nil), or a rejection (any other error; nothing is to be
// recorded). old is nil for a new worker; pids are its serving processes,
// whose program is hashed when old's content is not known yet. It runs
// beside the loop.
func acceptBinary(f found, old *binStamp, pids []int) (binStamp, error) {
	b, err := hashBin(f.bin)
	if err != nil {
		return b, err
	}
	if old != nil {
		if !old.hashed {
			if sum, ok := runningSum(pids); ok {
				old.sum, old.hashed = sum, true
			}
		}
		if b.sameContent(*old) {
			return b, errSameContent
		}
	}
	if err := verifyBinary(f.bin, b); err != nil {
		return b, err
	}
	return b, nil
}

// settle is a core Settle effect: one instance of a reload served or failed
// (or, with no instance, a start of it could not be made).
func (s *Supervisor) settle(e core.Settle) {
	p := s.batches[e.Batch]
	if p == nil {
		return
	}
	if e.Instance != "" {
		delete(p.waiting, e.Instance)
	}
	if e.OK {
		p.result.Changes = append(p.result.Changes, e.Instance+": serving")
	} else {
		p.result.Failures = append(p.result.Failures, e.Msg)
	}
	if len(p.waiting) == 0 {
		s.settleReloads()
	}
}

// failBatchOf tells the reload behind ev (if any) that its step could not
// be recorded; the step is retried with backoff.
func (s *Supervisor) failBatchOf(ev events.Event, err error) {
	var batch uint64
	var worker string
	switch ev := ev.(type) {
	case events.AddWorker:
		batch, worker = ev.Batch, ev.Worker
	case events.RollWorker:
		batch, worker = ev.Batch, ev.Worker
	case events.Reconfigure:
		batch, worker = ev.Batch, ev.Worker
	}
	if p := s.batches[batch]; p != nil {
		p.result.Failures = append(p.result.Failures, fmt.Sprintf("%s: %v (retrying with backoff)", worker, err))
	}
}

func (s *Supervisor) finish(p *pendingReload) {
	delete(s.batches, p.id)
	if p.reply != nil {
		r := p.merged()
		if r.Changes == nil {
			r.Changes = []string{}
		}
		if r.Failures == nil {
			r.Failures = []string{}
		}
		p.reply <- r
		p.reply = nil
	}
}
