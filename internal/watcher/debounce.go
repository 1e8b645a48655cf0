package watcher

import (
	"sort"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
)

// maxPaths caps the paths one event carries; a bigger change (a branch switch)
// is still one event, and the consumer reacts to the area, not the list.
const maxPaths = 200

// key is what debounces independently: one area of one worker.
type key struct {
	kind   events.ChangeKind
	worker string
}

type batch struct {
	seq      uint64 // first-seen order, breaks ties between equal deadlines
	first    time.Time
	deadline time.Time
	last     time.Time
	settled  time.Time // when a tentative notice is due (zero: none due)
	noticed  bool      // the tentative notice went out
	paths    map[string]struct{}
	dropped  int // paths beyond maxPaths
}

// debouncer gathers paths per key until the key has been quiet for delay. It
// is not safe for concurrent use; the Run goroutine owns it.
type debouncer struct {
	delay   time.Duration
	settle  time.Duration // quiet time before a tentative notice
	seq     uint64
	pending map[key]*batch
}

// maxSettle is the quiet time after which worker sources get a tentative
// notice: longer than an editor's save sequence (write temp file, rename,
// chmod: about a millisecond), far shorter than the debounce.
const maxSettle = 10 * time.Millisecond

func newDebouncer(delay time.Duration) *debouncer {
	return &debouncer{delay: delay, settle: min(maxSettle, delay/2), pending: map[key]*batch{}}
}

// tentative reports whether k's changes get an early notice: only worker
// sources, where it lets a build overlap the debounce.
func tentative(k key) bool { return k.kind == events.SourceChanged }

// add records paths for k at now and restarts k's quiet period. Paths may be
// empty: the key is then still emitted, with no paths.
func (d *debouncer) add(now time.Time, k key, paths ...string) {
	b := d.pending[k]
	if b == nil {
		d.seq++
		b = &batch{seq: d.seq, first: now, paths: map[string]struct{}{}}
		d.pending[k] = b
	}
	b.deadline, b.last = now.Add(d.delay), now
	// One notice per batch: a change after it means the area is busy (a
	// checkout, a generator), and a build per change would only be killed.
	if tentative(k) && d.settle < d.delay && !b.noticed {
		b.settled = now.Add(d.settle)
	}
	for _, p := range paths {
		if _, ok := b.paths[p]; ok {
			continue
		}
		if len(b.paths) >= maxPaths {
			b.dropped++
			continue
		}
		b.paths[p] = struct{}{}
	}
}

// has reports whether k is waiting to be emitted.
func (d *debouncer) has(k key) bool { return d.pending[k] != nil }

// drop forgets k without emitting it.
func (d *debouncer) drop(k key) { delete(d.pending, k) }

// next is the earliest deadline or tentative notice, if anything is pending.
func (d *debouncer) next() (time.Time, bool) {
	var t time.Time
	for _, b := range d.pending {
		if t.IsZero() || b.deadline.Before(t) {
			t = b.deadline
		}
		if !b.settled.IsZero() && b.settled.Before(t) {
			t = b.settled
		}
	}
	return t, !t.IsZero()
}

// early returns a tentative notice for every key that has been quiet for the
// settle time at now but not yet for the whole delay; each change earns one.
func (d *debouncer) early(now time.Time) []events.FilesChanged {
	var out []events.FilesChanged
	for k, b := range d.pending {
		if b.settled.IsZero() || b.settled.After(now) || !b.deadline.After(now) {
			continue
		}
		b.settled, b.noticed = time.Time{}, true
		out = append(out, events.FilesChanged{Kind: k.kind, Worker: k.worker, First: b.first, Last: b.last, Tentative: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Worker < out[j].Worker })
	return out
}

// due removes and returns the keys whose quiet period has passed at now,
// oldest deadline first; the int is how many paths were left off.
func (d *debouncer) due(now time.Time) ([]events.FilesChanged, []int) {
	type ready struct {
		k key
		b *batch
	}
	var rs []ready
	for k, b := range d.pending {
		if !b.deadline.After(now) {
			rs = append(rs, ready{k, b})
			delete(d.pending, k)
		}
	}
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].b.deadline.Equal(rs[j].b.deadline) {
			return rs[i].b.deadline.Before(rs[j].b.deadline)
		}
		return rs[i].b.seq < rs[j].b.seq
	})
	out := make([]events.FilesChanged, len(rs))
	dropped := make([]int, len(rs))
	for i, r := range rs {
		paths := make([]string, 0, len(r.b.paths))
		for p := range r.b.paths {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		out[i] = events.FilesChanged{Kind: r.k.kind, Worker: r.k.worker, Paths: paths, First: r.b.first, Last: r.b.last}
		dropped[i] = r.b.dropped
	}
	return out, dropped
}
