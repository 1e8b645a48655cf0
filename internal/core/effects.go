package core

import (
	"fmt"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
)

// Effect is something the executor does after the step's records are in the log.
type Effect interface {
	String() string
}

// Spawn starts the instance's process (Spawned or SpawnFailed follows).
type Spawn struct {
	Instance, Worker, Bin, Dir, Route string
	Port                              int
	Settings                          config.WorkerSettings
}

// Gate polls a starting instance's /health (HealthOK or HealthTimeout follows).
type Gate struct {
	Instance string
	Port     int
	Settings config.WorkerSettings
	Delay    time.Duration
}

// Warm opens connections to a healthy successor before traffic moves, as
// many as its predecessor From uses (Warmed follows).
type Warm struct {
	Instance, From, Worker string
	Port                   int
	MaxRequests            int64
	Settings               config.WorkerSettings // warmup_urls
}

// Route is one route of the table: its serving instances, and a canary
// taking CanaryPercent of the requests.
type Route struct {
	Prefix, Worker string
	Backends       []Backend
	Canary         *Backend
	CanaryPercent  int
}

// Backend is one serving instance.
type Backend struct {
	Instance    string
	Port        int
	MaxRequests int64
}

// Routes replaces the proxy's route table.
type Routes struct{ Table []Route }

// Probe checks a serving instance's /health periodically (ProbeFailed follows).
type Probe struct {
	Instance string
	Port     int
	Settings config.WorkerSettings
}

// Cancel stops the instance's health gate or probe.
type Cancel struct{ Instance string }

// Drain waits (up to Timeout) for the instance's in-flight requests (Drained follows).
type Drain struct {
	Instance string
	Timeout  time.Duration
}

// Stop sends SIGTERM, then SIGKILL after Grace, to the instance's process
// group (Exited follows).
type Stop struct {
	Instance string
	Grace    time.Duration
}

// Kill sends SIGKILL now (shutdown overran its deadline).
type Kill struct{ Instance string }

// Forget drops what the executor holds for an instance that has no process.
type Forget struct{ Instance string }

// After sends Event to the loop once Delay has passed.
type After struct {
	Delay time.Duration
	Event events.Event
}

// Signal sends Sig to the instance's process group.
type Signal struct{ Instance, Sig string }

// Settle tells the reload Batch that Instance served (OK) or failed (Msg).
type Settle struct {
	Batch    uint64
	Instance string
	OK       bool
	Msg      string
}

// Join: reload Batch waits for Instance to serve or fail.
type Join struct {
	Batch    uint64
	Instance string
}

func (e Join) String() string { return fmt.Sprintf("join batch=%d %s", e.Batch, e.Instance) }

// Notify tells dev browsers that Worker's new code serves.
type Notify struct{ Worker string }

// Swapped: Instance now takes its worker's traffic; Since is when the change
// that caused it was seen (dev), zero otherwise.
type Swapped struct {
	Instance string
	Since    time.Time
}

// Log is a log line the core asks for: Level "info", "warn" or "error".
type Log struct {
	Level, Worker, Instance, Msg string
}

func (e Spawn) String() string { return fmt.Sprintf("spawn %s port=%d", e.Instance, e.Port) }
func (e Gate) String() string {
	return fmt.Sprintf("gate %s port=%d delay=%s", e.Instance, e.Port, e.Delay)
}
func (e Warm) String() string { return fmt.Sprintf("warm %s from=%s", e.Instance, e.From) }
func (e Routes) String() string {
	var parts []string
	for _, r := range e.Table {
		var bs []string
		for _, b := range r.Backends {
			bs = append(bs, b.Instance)
		}
		if r.Canary != nil {
			bs = append(bs, fmt.Sprintf("canary:%s@%d%%", r.Canary.Instance, r.CanaryPercent))
		}
		parts = append(parts, fmt.Sprintf("%s=[%s]", r.Prefix, strings.Join(bs, " ")))
	}
	return "routes " + strings.Join(parts, " ")
}
func (e Probe) String() string  { return fmt.Sprintf("probe %s port=%d", e.Instance, e.Port) }
func (e Cancel) String() string { return "cancel " + e.Instance }
func (e Drain) String() string {
	return fmt.Sprintf("drain %s timeout=%s", e.Instance, e.Timeout)
}
func (e Stop) String() string   { return fmt.Sprintf("stop %s grace=%s", e.Instance, e.Grace) }
func (e Kill) String() string   { return "kill " + e.Instance }
func (e Forget) String() string { return "forget " + e.Instance }
func (e After) String() string  { return fmt.Sprintf("after %s %s", e.Delay, EventString(e.Event)) }
func (e Signal) String() string { return fmt.Sprintf("signal %s %s", e.Instance, e.Sig) }
func (e Settle) String() string {
	if e.OK {
		return fmt.Sprintf("settle batch=%d %s ok", e.Batch, e.Instance)
	}
	if e.Instance == "" {
		return fmt.Sprintf("settle batch=%d failed: %s", e.Batch, e.Msg)
	}
	return fmt.Sprintf("settle batch=%d %s failed: %s", e.Batch, e.Instance, e.Msg)
}
func (e Notify) String() string  { return "notify " + e.Worker }
func (e Swapped) String() string { return "swapped " + e.Instance }
func (e Log) String() string     { return fmt.Sprintf("log %s %s", e.Level, e.Msg) }

// EventString prints an event for golden files and logs.
func EventString(ev events.Event) string {
	switch ev := ev.(type) {
	case events.RestartDue:
		return fmt.Sprintf("restart-due %s slot=%d gen=%d", ev.Worker, ev.Slot, ev.Gen)
	case events.ForceKill:
		return "force-kill"
	case events.CanaryDue:
		return "canary-due " + ev.Instance
	case events.Warmed:
		if ev.Err != "" {
			return fmt.Sprintf("warmed %s err=%q", ev.Instance, ev.Err)
		}
		return "warmed " + ev.Instance
	}
	return fmt.Sprintf("%T", ev)
}
