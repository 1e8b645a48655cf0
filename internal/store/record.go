package store

import "time"

// Record is one entry of the append-only log. Instance transitions carry
// From/To; server-level records (server start, config reload, pending upgrade,
// build results) leave Worker/Instance/From/To empty as appropriate.
//
// The JSON form is the external history format (CONTRACT.md §5): field names
// never change meaning.
type Record struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Worker   string    `json:"worker,omitempty"`
	Instance string    `json:"instance,omitempty"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	Event    string    `json:"event"`
	Reason   string    `json:"reason,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Port     int       `json:"port,omitempty"`
	// StartTicks is the process start time (field 22 of /proc/PID/stat, clock
	// ticks since boot). With PID it identifies one process, so a reused PID is
	// never mistaken for ours when reaping after a crash.
	StartTicks uint64 `json:"start_ticks,omitempty"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	Signal     string `json:"signal,omitempty"`
	Detail     string `json:"detail,omitempty"`
	// Route is recorded on the starting record so status can be rebuilt from the log alone.
	Route string `json:"route,omitempty"`
	// TookMs is how long the recorded operation took (build_ok and
	// build_failed: the build), in milliseconds.
	TookMs int64 `json:"took_ms,omitempty"`
}
