package watcher

import "time"

// Clock is the watcher's view of time, replaceable so debounce tests are exact.
type Clock interface {
	Now() time.Time
	// After delivers once, d from now. The watcher keeps at most one pending
	// After channel and always receives from it while Run is running.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
