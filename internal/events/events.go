package events

import (
	"time"

	"github.com/mevdschee/tqserver/internal/config"
)

// Event is anything the supervisor loop consumes.
type Event interface{ event() }

// Reload asks for a change check (SIGHUP, `tqserver reload`). Reply, when set,
// receives one result once every restart the check triggered has settled.
type Reload struct {
	Source string // "sighup", "admin", "watcher"
	Reply  chan<- ReloadResult
}

// ReloadResult says what a reload did.
type ReloadResult struct {
	Changes  []string `json:"changes"`
	Failures []string `json:"failures"`
	Error    string   `json:"error,omitempty"`
}

// HealthOK: a starting instance answered GET /health with 200.
type HealthOK struct{ Instance string }

// Warmed: the connections opened to a healthy instance before it takes its
// predecessor's traffic have answered (or the warm-up gave up). Err is set
// when the instance refused or dropped a connection without answering.
type Warmed struct {
	Instance string
	Err      string
}

// HealthTimeout: a starting instance was not healthy within health_timeout_ms.
type HealthTimeout struct {
	Instance string
	Detail   string
}

// ProbeFailed: a healthy instance failed health_failure_threshold probes in a row.
type ProbeFailed struct {
	Instance string
	Detail   string
}

// Exited: the instance's process (group leader) exited.
type Exited struct {
	Instance string
	Code     int    // -1 when killed by a signal
	Signal   string // "SIGKILL"; empty for a normal exit
	Tail     string // last output lines
}

// MaxRequests: the instance served its max_requests.
type MaxRequests struct{ Instance string }

// Drained: a draining instance has no request in flight any more (or the
// drain timeout passed).
type Drained struct {
	Instance string
	TimedOut bool
}

// RestartDue: a worker's backoff delay after a failure has passed. Slot is
// the slot's id; Gen the timer's generation (a newer timer or a start in
// between makes this one stale).
type RestartDue struct {
	Worker string
	Slot   int
	Gen    uint64
}

// BuildFinished reports a worker build (dev mode and `serve` at start).
type BuildFinished struct {
	Worker   string // empty: the server's own binary
	ID       uint64 // which build (a newer one supersedes older ones); 0 for builds made before Run
	Duration time.Duration
	Err      error
	Output   string // compiler output on failure
	Canceled bool   // superseded by a newer change
	Staged   string // dev: the built file, installed over the binary only when the build is current
}

// Spawned: the executor started an instance's process.
type Spawned struct {
	Instance   string
	PID        int
	StartTicks uint64
}

// SpawnFailed: the executor could not start an instance's process.
type SpawnFailed struct {
	Instance string
	Err      string
}

// AddWorker: a worker to run (at start, a new directory on reload, a first
// successful dev build). Its slots start with Reason. Without Bin (dev: its
// sources have not built yet) only its route is served, 503 until a later
// AddWorker with a Bin starts it.
type AddWorker struct {
	Worker, Route, Bin, Dir string
	Settings                config.WorkerSettings
	Reason, Detail          string
	Batch                   uint64    // the reload waiting for it; 0 for none
	ChangedAt               time.Time // dev: when the change was seen
}

// AddWorkers adds several workers in one step (server start): their routes
// are all in the table before any instance starts, and their start records
// go to the log in one transaction.
type AddWorkers struct{ Workers []AddWorker }

// RollWorker: replace every instance of Worker, one slot at a time.
type RollWorker struct {
	Worker, Reason, Detail string
	Batch                  uint64
	ChangedAt              time.Time
	// Bin, when set, is the binary the worker runs from now on (a deploy:
	// bin/NAME again; a rollback: the saved previous one). Previous, when
	// set, is a saved copy of the binary that ran until now: what a
	// rollback goes back to.
	Bin, Previous string
}

// RemoveWorker: Worker's directory is gone: drain and stop it.
type RemoveWorker struct {
	Worker, Reason, Detail string
}

// Reconfigure: Worker's settings changed (config reload). Restart, when
// set, is the reason its instances are replaced (config_changed, or
// binary_changed when its binary changed too); the new slot count comes from
// the settings (an autoscaled count stays when in range).
type Reconfigure struct {
	Worker   string
	Settings config.WorkerSettings
	Restart  string
	Detail   string // what changed and what asked, for the start records
	Batch    uint64
	// Bin and Previous as in RollWorker, when its binary changed too.
	Bin, Previous string
}

// Assets: only Worker's public/ or private/ files changed.
type Assets struct {
	Worker          string
	Public, Private bool
	Batch           uint64 // the reload told what was done; 0 for none
}

// ScaleTick: one autoscaling sample: the mean requests in flight per
// serving instance of each autoscaled worker.
type ScaleTick struct {
	Now   time.Time
	Means map[string]float64
}

// Unrecorded: the step of Event (an instance's spawned, health_ok or
// warmed) could not be written to the log, so none of it happened. What
// follows is the core's to decide: a process whose pid is not in the log is
// stopped; a reload waiting for a swap is told.
type Unrecorded struct {
	Instance   string
	Event      Event
	Err        string
	PID        int
	StartTicks uint64
}

// Local carries an event private to the loop's owner (a change check's
// result, a retry): the supervisor sends them to itself.
type Local struct{ V any }

// ForceKill: shutdown overran its deadline.
type ForceKill struct{}

// Shutdown asks the supervisor to stop every instance and return.
type Shutdown struct{}

func (Reload) event()        {}
func (HealthOK) event()      {}
func (Warmed) event()        {}
func (HealthTimeout) event() {}
func (ProbeFailed) event()   {}
func (Exited) event()        {}
func (MaxRequests) event()   {}
func (Drained) event()       {}
func (RestartDue) event()    {}
func (BuildFinished) event() {}
func (Shutdown) event()      {}
func (Spawned) event()       {}
func (SpawnFailed) event()   {}
func (AddWorker) event()     {}
func (RollWorker) event()    {}
func (AddWorkers) event()    {}
func (RemoveWorker) event()  {}
func (Reconfigure) event()   {}
func (Assets) event()        {}
func (ScaleTick) event()     {}
func (ForceKill) event()     {}
func (Local) event()         {}
func (Unrecorded) event()    {}

// FilesChanged is what the dev-mode watcher reports after its debounce: the
// files of one area that changed. Worker is empty for config and server
// sources.
type FilesChanged struct {
	Kind   ChangeKind
	Worker string
	Paths  []string  // absolute paths, deduplicated, at most a few hundred
	First  time.Time // when the first change of the batch was seen
	Last   time.Time // when the last change of the batch was seen
	// Tentative marks an early notice for worker sources: the area has been
	// quiet for a few milliseconds, not yet for the whole debounce, so the
	// supervisor may start building. The final event (Tentative false)
	// follows once the area stayed quiet for the debounce; a batch gets at
	// most one tentative notice, so a build started for it is current only
	// if it started after the final event's Last.
	Tentative bool
}

// ChangeKind says which area of the app root changed.
type ChangeKind int

// Areas the watcher reports.
const (
	SourceChanged  ChangeKind = iota + 1 // workers/{name}/src/**
	PublicChanged                        // workers/{name}/public/**
	PrivateChanged                       // workers/{name}/private/**
	WorkerAdded                          // a new workers/{name}/ directory
	WorkerRemoved                        // workers/{name}/ deleted
	ConfigChanged                        // config/*.yaml
	ServerChanged                        // the server's own sources
)

func (k ChangeKind) String() string {
	switch k {
	case SourceChanged:
		return "source"
	case PublicChanged:
		return "public"
	case PrivateChanged:
		return "private"
	case WorkerAdded:
		return "worker_added"
	case WorkerRemoved:
		return "worker_removed"
	case ConfigChanged:
		return "config"
	case ServerChanged:
		return "server"
	}
	return "unknown"
}

func (FilesChanged) event() {}

// Release: an atomic release of several workers (deployment.switch:
// together). Every new instance of every roll starts at once beside the
// old set; once all are healthy and warmed, one step moves every route;
// if any fails, none switches.
type Release struct {
	Rolls []RollWorker
	Batch uint64
}

func (Release) event() {}

// CanaryDue: a canary's duration_ms has passed; judge it.
type CanaryDue struct{ Instance string }

// CanaryJudged: the proxy's counters of a canary and of the instances it
// ran beside, over the canary's time.
type CanaryJudged struct {
	Instance               string
	Requests, Errors       uint64  // the canary's answers and 5xx among them
	P99Ms                  float64 // the canary's p99 latency (0: no data)
	OldRequests, OldErrors uint64
	OldP99Ms               float64
}

func (CanaryDue) event()    {}
func (CanaryJudged) event() {}

// Adopt: a server upgrade hands the new server Worker's running instances
// (checked alive by PID and start time; the healthy ones answering
// /health). The healthy ones take its slots as serving; slots left over
// start as usual; draining ones keep draining outside any slot.
type Adopt struct {
	Add       AddWorker
	Instances []Adopted
}

// Adopted is one running instance a previous server started.
type Adopted struct {
	Instance   string
	PID        int
	StartTicks uint64
	Port       int
	Since      time.Time // when it entered State, as the log says
	// Draining: it was draining (the old server finishes its requests in
	// flight and stops it); DrainReason is why it drains. Otherwise healthy.
	Draining    bool
	DrainReason string
}

func (Adopt) event() {}
