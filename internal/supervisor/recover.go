package supervisor

import (
	"fmt"
	"time"

	"github.com/mevdschee/tqserver/internal/process"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// recover replays the log: instance numbering continues where it stopped,
// and every instance the log shows alive is stopped (after a hand-off,
// Options.Adopt, adopted when it is alive and healthy: upgrade.go) — killed when its PID
// still belongs to it (PID and start time match), otherwise only recorded.
// It returns, per worker, the highest instance number the log has used.
func (s *Supervisor) recover() (map[string]uint64, error) {
	g, err := store.Replay(s.st, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("replay log: %w", err)
	}
	grace := time.Duration(s.cfg.Workers.ShutdownGracePeriodMs) * time.Millisecond
	for _, in := range g.Live() {
		notAdopted := ""
		if s.adopting {
			proc, err := s.adoptable(*in)
			if err == nil {
				s.adoptees = append(s.adoptees, adoptee{in: *in, proc: proc})
				continue
			}
			notAdopted = "not adopted (" + err.Error() + "); "
		}
		alive := in.PID > 0 && process.Alive(in.PID, in.StartTicks)
		remnants := 0
		if !alive && in.PID > 0 {
			remnants = len(process.GroupMembers(in.PID, in.StartTicks))
		}
		// Processes it started that left its group or session (setsid).
		mark, strays := process.Mark(s.root, in.Instance), 0
		if in.PID > 0 {
			strays = process.Marked(mark, in.StartTicks)
		}
		detail := "process already gone"
		switch {
		case alive:
			detail = fmt.Sprintf("pid %d still running after a server crash; stopping it", in.PID)
		case remnants > 0:
			detail = fmt.Sprintf("pid %d gone, but %d process(es) of its group still running; stopping them", in.PID, remnants)
		case strays > 0:
			detail = fmt.Sprintf("pid %d gone, but %d process(es) it started still running; stopping them", in.PID, strays)
		case in.PID == 0:
			detail = "never got a pid"
		}
		r := &store.Record{Worker: in.Worker, Instance: in.Instance, From: in.State, To: sm.Stopped,
			Event: sm.Reap, Reason: sm.ReasonOrphanReaped, PID: in.PID, Port: in.Port, StartTicks: in.StartTicks, Detail: notAdopted + detail}
		if err := s.record(r); err != nil {
			return nil, fmt.Errorf("recover: %w", err)
		}
		var rerr error
		switch {
		case alive:
			_, rerr = s.reap(in.PID, in.StartTicks, grace)
		case remnants > 0:
			_, rerr = process.ReapGroup(in.PID, in.StartTicks, grace)
		}
		if in.PID > 0 && (alive || remnants > 0 || strays > 0) {
			if _, err := process.ReapMarked(mark, in.StartTicks, grace); err != nil && rerr == nil {
				rerr = err
			}
		}
		if rerr != nil {
			s.log.Error().Err(rerr).Str("instance", in.Instance).Int("pid", in.PID).Msg("could not reap orphan")
		}
	}
	return g.MaxInstance, nil
}
