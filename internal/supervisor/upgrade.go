package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/core"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/process"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// Server self-upgrade (CONTRACT.md §11, docs/architecture.md "Server
// self-upgrade"). The old server's side: a reload that finds
// server/bin/tqserver changed records server_upgrade and hands over
// (Upgrader.HandOff: the log is released, the new binary started with the
// listeners, and waited for). When the new server is ready, Run returns
// ErrHandedOff without stopping any instance; otherwise the old one keeps
// serving and records the rollback. The new server's side: with
// Options.Adopt, recovery takes over the instances the log shows healthy
// whose process is alive (PID and start time) and answers /health, instead
// of reaping them.

// ErrHandedOff is Run's result once a new server took over the listeners,
// the log and the instances. Nothing was stopped.
var ErrHandedOff = errors.New("handed over to the new server")

// Upgrader is the server process's part of a self-upgrade.
type Upgrader interface {
	// HandOff runs on the loop once server_upgrade is in the log: it
	// releases the log, starts bin with the listening sockets and waits
	// until it is ready. nil: the new server (pid) runs and owns the log.
	// An error: it is gone and the log is this server's again.
	HandOff(bin string) (pid int, err error)
}

// adoptee is an instance recovery found alive and healthy (Options.Adopt).
type adoptee struct {
	in   store.Instance
	proc *process.Process
}

// tryUpgrade hands over to a changed server/bin/tqserver. It reports
// whether the new server took over (the loop then ends).
func (s *Supervisor) tryUpgrade(r checkDone, p *pendingReload) bool {
	srv := s.serverFiles()[2]
	st := r.srvStamp
	if s.upgrader == nil || !st.exists || st == s.stamps[srv] {
		return false
	}
	res := &p.result
	if busy := s.replacing(); busy != "" {
		// An unjudged canary or a half-done roll would be adopted as if it
		// had been accepted. Not noted as seen: the next reload tries again.
		res.Failures = append(res.Failures, "server upgrade postponed: "+busy+" is being replaced (roll, warm-up or canary); run reload again once it serves")
		res.Error = res.Failures[len(res.Failures)-1]
		return false
	}
	if err := checkExecutable(srv); err != nil {
		s.stamps[srv] = st // seen: the next deploy of the file tries again
		s.upgradeFailed(res, "not started: "+err.Error())
		return false
	}
	n := 0
	for _, w := range s.core.Workers() {
		n += len(w.Instances)
	}
	if err := s.record(&store.Record{Event: sm.EventServerUpgrade, Reason: sm.ReasonServerUpgrade,
		Detail: fmt.Sprintf("pid %d hands the listeners, the log and %d instance(s) to the new %s (asked by %s)", os.Getpid(), n, srv, p.source)}); err != nil {
		// Not noted as seen: the next reload tries again.
		res.Failures = append(res.Failures, "server upgrade not started: "+err.Error())
		res.Error = res.Failures[len(res.Failures)-1]
		return false
	}
	s.stamps[srv] = st
	started := time.Now()
	pid, err := s.upgrader.HandOff(srv)
	if err != nil {
		s.upgradeFailed(res, err.Error())
		return false
	}
	s.handedOff = true
	msg := fmt.Sprintf("server upgraded: pid %d took over the listeners, the log and the instances in %s; pid %d stops serving",
		pid, time.Since(started).Round(time.Millisecond), os.Getpid())
	res.Changes = append(res.Changes, msg)
	s.log.Info().Int("new_pid", pid).Int64("took_ms", time.Since(started).Milliseconds()).Msg(msg)
	return true
}

// replacing names the workers with a successor starting, warming or on
// canary ("" when none).
func (s *Supervisor) replacing() string {
	var names []string
	for _, w := range s.core.Workers() {
		for _, st := range w.Slots {
			if st == core.SlotRolling || st == core.SlotWarming || st == core.SlotCanary {
				names = append(names, w.Name)
				break
			}
		}
	}
	return strings.Join(names, ", ")
}

// upgradeFailed records a self-upgrade that did not happen and says so to
// the reload (its command exits non-zero).
func (s *Supervisor) upgradeFailed(res *events.ReloadResult, why string) {
	msg := fmt.Sprintf("server upgrade failed: %s; rolled back: pid %d keeps serving", why, os.Getpid())
	res.Failures = append(res.Failures, msg)
	res.Error = msg
	// The old server serves on either way; a failure is logged by record.
	_ = s.record(&store.Record{Event: sm.EventServerUpgradeFailed, Reason: sm.ReasonRollback, Detail: msg})
}

// adoptable checks a live instance of the log for adoption: its process is
// the one the log names (PID and start time) and /health answers. It
// returns the adopted process or why not.
func (s *Supervisor) adoptable(in store.Instance) (*process.Process, error) {
	if (in.State != sm.Healthy && in.State != sm.Draining) || in.PID <= 0 || in.Port <= 0 {
		return nil, fmt.Errorf("%s was %s", in.Instance, in.State)
	}
	if !process.Alive(in.PID, in.StartTicks) {
		return nil, fmt.Errorf("pid %d is gone", in.PID)
	}
	if in.State == sm.Draining {
		// It serves nothing new; the old server finishes its requests.
		return process.Adopt(in.PID, in.StartTicks, process.Mark(s.root, in.Instance),
			s.log.With().Str("worker", in.Worker).Str("instance", in.Instance).Logger())
	}
	ws := s.cfg.ForWorker(in.Route)
	timeout := time.Duration(ws.HealthProbeTimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Second
	}
	if err := checkHealth(context.Background(), in.Port, timeout); err != nil {
		return nil, fmt.Errorf("pid %d alive, but /health failed: %w", in.PID, err)
	}
	return process.Adopt(in.PID, in.StartTicks, process.Mark(s.root, in.Instance),
		s.log.With().Str("worker", in.Worker).Str("instance", in.Instance).Logger())
}

// adoptAll steps one Adopt per worker on disk that has adoptees; the
// adoptees of workers that are gone are stopped.
func (s *Supervisor) adoptAll(found map[string]found) {
	byWorker := map[string][]adoptee{}
	for _, a := range s.adoptees {
		byWorker[a.in.Worker] = append(byWorker[a.in.Worker], a)
	}
	s.adoptees = nil
	grace := s.cfg.Workers.ShutdownGracePeriod()
	names := make([]string, 0, len(byWorker))
	for n := range byWorker {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		as := byWorker[name]
		f, ok := found[name]
		if !ok {
			for _, a := range as {
				r := &store.Record{Worker: name, Instance: a.in.Instance, From: sm.Healthy, To: sm.Stopped, Event: sm.Reap,
					Reason: sm.ReasonOrphanReaped, PID: a.in.PID, Port: a.in.Port, StartTicks: a.in.StartTicks,
					Detail: "not adopted: its worker directory is gone; stopping it"}
				_ = s.record(r)
				go a.proc.Stop(grace)
			}
			continue
		}
		add := s.addWorker(f, sm.ReasonStartup, "", 0)
		// What runs is the binary the old server started: its content is
		// read from the process (/proc/PID/exe) when a reload compares it.
		s.known[name].stamp.bin = binStamp{exists: true}
		ev := events.Adopt{Add: add}
		for _, a := range as {
			ev.Instances = append(ev.Instances, events.Adopted{Instance: a.in.Instance, PID: a.in.PID, StartTicks: a.in.StartTicks, Port: a.in.Port, Since: a.in.Since,
				Draining: a.in.State == sm.Draining, DrainReason: a.in.Reason})
			s.x.adopt(a.in.Instance, a.proc)
		}
		s.handle(ev)
		for _, a := range as {
			if !s.coreHas(a.in.Instance) {
				// The step could not be recorded: nobody would manage it.
				s.log.Error().Str("instance", a.in.Instance).Msg("adoption not recorded; stopping the instance")
				s.x.forget(a.in.Instance)
				go a.proc.Stop(grace)
			}
		}
	}
}

func (s *Supervisor) coreHas(instance string) bool {
	for _, w := range s.core.Workers() {
		for _, in := range w.Instances {
			if in.Instance == instance {
				return true
			}
		}
	}
	return false
}

// adopt holds an adopted process like a spawned one and reports its exit.
func (x *executor) adopt(name string, proc *process.Process) {
	x.procs[name] = proc
	s := x.s
	go func() {
		<-proc.Done()
		s.Send(events.Exited{Instance: name, Code: -1, Tail: "exit status unknown: adopted from the previous server, which reaps it"})
	}()
}

func (x *executor) forget(name string) { x.do(core.Forget{Instance: name}) }

// Orphans are the instances' processes this supervisor still holds once Run
// returned ErrHandedOff: the new server adopted them; this process is their
// parent until they exit.
func (s *Supervisor) Orphans() []*process.Process {
	<-s.quit
	out := make([]*process.Process, 0, len(s.x.procs))
	for _, p := range s.x.procs {
		if !p.Adopted() { // adopted ones have another parent
			out = append(out, p)
		}
	}
	return out
}

// DrainingOwn are, once Run returned ErrHandedOff, the processes this
// supervisor started that were draining: the new server adopted them as
// draining; this one stops them once its own requests in flight are done.
func (s *Supervisor) DrainingOwn() []*process.Process {
	<-s.quit
	var out []*process.Process
	for _, w := range s.core.Workers() {
		for _, in := range w.Instances {
			if p := s.x.procs[in.Instance]; p != nil && in.State == sm.Draining && !p.Adopted() {
				out = append(out, p)
			}
		}
	}
	return out
}

// Adopted is closed once recovery and adoption are done (at once without
// Options.Adopt): the new server is ready for traffic from then on.
func (s *Supervisor) Adopted() <-chan struct{} { return s.adoptDone }
