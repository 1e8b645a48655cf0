package supervisor

import (
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/store"
)

// What the loop does when the log cannot be written (read-only or full
// var/, a damaged disk): an effect whose record failed is skipped, loudly,
// and retried where that makes sense — except during shutdown, when the
// record is given up on and the workers are stopped anyway.

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
	return detail, s.record(&store.Record{Event: EventConfigReloaded, Detail: detail})
}
