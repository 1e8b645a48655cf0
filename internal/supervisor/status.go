package supervisor

import (
	"sort"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
)

// Status is the registry as `tqserver status --json` prints it
// (CONTRACT.md §8). Extra fields may be added; these never change meaning.
type Status struct {
	Running bool           `json:"running"`
	PID     int            `json:"pid,omitempty"`
	Mode    string         `json:"mode,omitempty"`
	Listen  string         `json:"listen,omitempty"`
	At      *time.Time     `json:"at,omitempty"`
	LastSeq uint64         `json:"last_seq"`
	Workers []WorkerStatus `json:"workers"`
}

// WorkerStatus is one worker and its live instances.
type WorkerStatus struct {
	Name      string           `json:"name"`
	Route     string           `json:"route"`
	Instances []InstanceStatus `json:"instances"`
	// Slots are the states of its serving positions (internal/core):
	// serving, starting, rolling, warming, backing_off, pending, empty.
	Slots []string `json:"slots,omitempty"`
	// Binary is the file its instances start from (bin/NAME, or a saved
	// release after a rollback); Previous the saved previous good binary
	// that `tqserver rollback` goes back to ("" none).
	Binary   string `json:"binary,omitempty"`
	Previous string `json:"previous,omitempty"`
}

// InstanceStatus is one live instance.
type InstanceStatus struct {
	Instance string    `json:"instance"`
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Port     int       `json:"port,omitempty"`
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason,omitempty"`
	Inflight *int64    `json:"inflight,omitempty"`
	Served   *int64    `json:"served,omitempty"`
	// Requests counts the instance's answers by status class ("1xx"…"5xx"),
	// P99Ms estimates its 99th percentile latency in milliseconds from the
	// proxy's fixed histogram buckets; both since the instance started
	// (absent when it has no backend yet; P99Ms absent before its first
	// answer).
	Requests map[string]uint64 `json:"requests,omitempty"`
	P99Ms    *float64          `json:"p99_ms,omitempty"`
}

// StatusFromRegistry builds a Status from a replayed log: the live instances
// as the log last recorded them.
func StatusFromRegistry(g *store.Registry) *Status {
	st := &Status{LastSeq: g.LastSeq, Workers: []WorkerStatus{}}
	byName := map[string]*WorkerStatus{}
	for _, in := range g.Live() {
		ws := byName[in.Worker]
		if ws == nil {
			ws = &WorkerStatus{Name: in.Worker, Route: in.Route}
			byName[in.Worker] = ws
		}
		ws.Instances = append(ws.Instances, InstanceStatus{
			Instance: in.Instance, State: in.State, PID: in.PID, Port: in.Port,
			Since: in.Since, Reason: in.Reason,
		})
	}
	for _, ws := range byName {
		st.Workers = append(st.Workers, *ws)
	}
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].Name < st.Workers[j].Name })
	return st
}
