package store

import (
	"time"

	"github.com/mevdschee/tqserver/internal/stats"
)

// timeAppend counts one Append, from its call (waiting for the appends
// before it included) to its return, failed ones too.
func (s *Store) timeAppend(start time.Time) { s.appendTime.Observe(time.Since(start)) }

// AppendDurations reads how long the appends of this Store took so far
// (every Append with a record, successful or not). Lock-free; safe from
// any goroutine.
func (s *Store) AppendDurations() stats.HistSnapshot { return s.appendTime.Snapshot() }
