package store

import "slices"

// observer is one registration of Observe; its identity is its pointer.
type observer struct{ fn func(Record) }

// Observe registers fn to be called with every record this store appends,
// after its transaction committed: in append (seq) order, one call at a
// time, from the goroutine that appended it. A failed append calls nothing.
// The log_recreated record written when a deleted log is recreated is
// delivered too, before the record whose append noticed the loss.
//
// fn runs while appends wait for it, so it must not block: copy the record
// and hand it off (a non-blocking channel send). fn must not call Append,
// Observe or a cancel function (that deadlocks).
//
// cancel unregisters fn; once it has returned fn is not called again.
// Calling it more than once is harmless.
func (s *Store) Observe(fn func(Record)) (cancel func()) {
	o := &observer{fn: fn}
	s.obsMu.Lock()
	s.observers = append(s.observers, o)
	s.obsMu.Unlock()
	return func() {
		s.obsMu.Lock()
		defer s.obsMu.Unlock()
		s.observers = slices.DeleteFunc(s.observers, func(x *observer) bool { return x == o })
	}
}

// notify hands committed records to every observer. Called with appendMu
// held, so records of concurrent appends are delivered in seq order.
func (s *Store) notify(recs ...Record) {
	s.obsMu.Lock()
	defer s.obsMu.Unlock()
	for _, r := range recs {
		for _, o := range s.observers {
			o.fn(r)
		}
	}
}
