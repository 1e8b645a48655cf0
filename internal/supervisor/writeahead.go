package supervisor

import (
	"fmt"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// What the loop does when the log cannot be written (read-only or full
// var/, a damaged disk): an effect whose record failed is skipped, loudly,
// and retried where that makes sense. What only takes something away goes
// ahead without its record (transitionAnyway: an exit, the stop of an
// instance that will never serve or has no place any more), and so does
// everything during shutdown: stopping the workers must still happen.
// docs/architecture.md has the table, call site by call site.

// The messages of a failed append, as logged at error level by record.
const (
	msgEffectSkipped      = "could not record; effect skipped"
	msgShutdownUnrecorded = "could not record during shutdown; stopping anyway (this record is lost)"
	msgStoppedUnrecorded  = "could not record; stopped anyway (this record is lost)"
)

// retrySwap keeps a healthy successor waiting (as while warming) because its
// predecessor's drain could not be recorded, and tries the swap again after
// the restart backoff: a Warmed event swaps it in, unless it was abandoned,
// stopped or exited meanwhile.
func (s *Supervisor) retrySwap(inst *instance) {
	inst.warming = true
	base := time.Duration(s.cfg.Workers.RestartDelayMs) * time.Millisecond
	limit := time.Duration(s.cfg.Workers.RestartBackoffMaxMs) * time.Millisecond
	delay := backoff(base, limit, inst.swapRetries)
	inst.swapRetries++
	s.log.Warn().Str("worker", inst.w.f.name).Str("instance", inst.name).Dur("delay", delay).Int("attempt", inst.swapRetries).
		Msg("successor waits: its predecessor's drain could not be recorded; the predecessor keeps serving")
	name := inst.name
	time.AfterFunc(delay, func() { s.Send(events.Warmed{Instance: name}) })
}

// recordConfigReloaded records that ncfg replaces the running config, before
// it is applied, and returns the record's detail.
func (s *Supervisor) recordConfigReloaded(ncfg *config.Config) (string, error) {
	detail := "configuration reloaded"
	if notes := serverSettingsChanged(s.cfg, ncfg); len(notes) > 0 {
		detail += "; needs a server restart to apply: " + strings.Join(notes, ", ")
	}
	return detail, s.record(&store.Record{Event: sm.EventConfigReloaded, Detail: detail})
}

// record appends a record and logs it. The caller performs the effect only
// when record returns nil: no effect without its record.
func (s *Supervisor) record(r *store.Record) error { return s.appendLogged(r, false) }

// appendLogged appends r and logs it; proceed says that the caller goes on
// without the record (the log line says so).
func (s *Supervisor) appendLogged(r *store.Record, proceed bool) error {
	err := s.appendRecord(r)
	ev := s.log.Info()
	if err != nil {
		ev = s.log.Error().Err(err)
	}
	if r.Worker != "" {
		ev = ev.Str("worker", r.Worker)
	}
	if r.Instance != "" {
		ev = ev.Str("instance", r.Instance).Str("from", r.From).Str("to", r.To)
	}
	ev = ev.Str("event", r.Event)
	if r.Reason != "" {
		ev = ev.Str("reason", r.Reason)
	}
	if r.PID != 0 {
		ev = ev.Int("pid", r.PID)
	}
	if r.Port != 0 {
		ev = ev.Int("port", r.Port)
	}
	if r.ExitCode != nil {
		ev = ev.Int("exit_code", *r.ExitCode)
	}
	if r.Signal != "" {
		ev = ev.Str("signal", r.Signal)
	}
	if r.Detail != "" {
		ev = ev.Str("detail", r.Detail)
	}
	ev = ev.Uint64("seq", r.Seq)
	if err != nil {
		switch {
		case s.shutting:
			// Not retried: the record is lost, the shutdown goes on.
			ev.Msg(msgShutdownUnrecorded)
		case proceed:
			ev.Msg(msgStoppedUnrecorded)
		default:
			ev.Msg(msgEffectSkipped)
		}
		return fmt.Errorf("record %s: %w", r.Event, err)
	}
	if r.Instance != "" && r.From == "" {
		ev.Msg(r.Instance + " → " + r.To)
	} else if r.Instance != "" {
		ev.Msg(r.Instance + " " + r.From + " → " + r.To)
	} else {
		ev.Msg(r.Event)
	}
	return nil
}

// transition records event of inst and fires it on inst's machine. On a
// record failure the machine is left unchanged and the caller skips the
// effect — except during shutdown (see transitionAnyway).
func (s *Supervisor) transition(inst *instance, event, reason string, fill func(*store.Record)) error {
	return s.step(inst, event, reason, fill, false)
}

// transitionAnyway records a transition towards stopped that happens with
// or without its record: an exit (the process is gone already) or the stop
// of an instance that will never serve. A failed append is logged; the
// machine still follows what is true.
func (s *Supervisor) transitionAnyway(inst *instance, event, reason string, fill func(*store.Record)) error {
	return s.step(inst, event, reason, fill, true)
}

func (s *Supervisor) step(inst *instance, event, reason string, fill func(*store.Record), anyway bool) error {
	from := inst.m.State()
	to, err := sm.Next(from, event)
	if err != nil {
		s.log.Error().Err(err).Str("instance", inst.name).Msg("supervisor: refused transition")
		return err
	}
	r := &store.Record{Worker: inst.w.f.name, Instance: inst.name, From: from, To: to, Event: event, Reason: reason, Port: inst.port}
	if inst.proc != nil {
		r.PID = inst.proc.PID
		r.StartTicks = inst.proc.StartTicks
	}
	if fill != nil {
		fill(r)
	}
	if err := s.appendLogged(r, anyway); err != nil && !anyway && !s.shutting {
		return err
	}
	// During shutdown a transition whose record failed still happens
	// (appendLogged logged it): stopping the workers is the one effect
	// that must not wait for a writable log (docs/architecture.md).
	if _, _, err := inst.m.Fire(event); err != nil {
		return err
	}
	inst.since = r.Time
	if inst.since.IsZero() {
		inst.since = time.Now()
	}
	return nil
}
