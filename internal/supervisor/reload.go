package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// serverFiles are compared on every reload besides the workers.
func (s *Supervisor) serverFiles() []string {
	lay := s.layout()
	return []string{lay.ServerConfig(), lay.DeploymentConfig(), lay.ServerBinary()}
}

func (s *Supervisor) stampServerFiles() {
	for _, p := range s.serverFiles() {
		s.stamps[p] = statFile(p)
	}
}

// onReload compares what is on disk with what was recorded and restarts only
// what changed (CONTRACT.md §4, SIGHUP).
func (s *Supervisor) onReload(ev events.Reload) {
	p := &pendingReload{reply: ev.Reply, waiting: map[*instance]bool{}}
	if s.shutting || s.closing.Load() {
		// Nothing starts once the server is stopping (CONTRACT.md §4).
		p.result.Error = "server is shutting down"
		s.finish(p)
		return
	}
	s.joinReloads(p)
	s.checkChanges(ev, p)
	p.checked = true
	s.settleReloads()
}

// checkChanges is one reload's own change check; the restarts it starts
// settle p later.
func (s *Supervisor) checkChanges(ev events.Reload, p *pendingReload) {
	res := &p.result
	s.log.Info().Str("source", ev.Source).Msg("checking for changes")

	// Config first: a worker restarted for its binary gets the new settings too.
	cfgChanged := false
	for _, f := range s.serverFiles()[:2] {
		if st := statFile(f); st != s.stamps[f] {
			cfgChanged = true
		}
	}
	restart := map[string]string{} // worker → reason
	if cfgChanged {
		ncfg, err := config.Load(s.root)
		if err != nil {
			msg := firstLine(err.Error())
			res.Failures = append(res.Failures, "config rejected: "+msg)
			res.Error = "config rejected: " + msg
			// Nothing follows (the old config stays); a failure is logged.
			_ = s.record(&store.Record{Event: sm.EventConfigRejected, Detail: msg + " (previous configuration stays in force)"})
		} else if detail, err := s.recordConfigReloaded(ncfg); err != nil {
			// Write-ahead: a config that is not in the log is not applied;
			// the stamps stay, so the next reload tries again.
			res.Failures = append(res.Failures, "config not applied: "+err.Error())
			res.Error = "config not applied: " + err.Error()
		} else {
			for _, f := range s.serverFiles()[:2] {
				s.stamps[f] = statFile(f)
			}
			s.cfg = ncfg
			for _, name := range sortedKeys(s.workers) {
				w := s.workers[name]
				nws := ncfg.ForWorker(w.route)
				if nws.Equal(w.settings) || w.removed {
					continue
				}
				old := w.settings
				w.settings = nws
				w.scale = scaleState{}
				n := nws.ClampInstances(len(w.slots)) // an autoscaled count stays if in range
				if !old.EqualExceptScaling(nws) {
					restart[name] = sm.ReasonConfigChanged // the roll starts any new slot too
					s.resizeWorker(w, n, false, res, p)
				} else {
					s.resizeWorker(w, n, true, res, p)
				}
			}
			res.Changes = append(res.Changes, detail)
		}
	}

	srv := s.layout().ServerBinary()
	if st := statFile(srv); st != s.stamps[srv] {
		msg := "server/bin/tqserver changed: a server upgrade is pending (restart tqserver to run it)"
		if !st.exists {
			s.stamps[srv] = st
		} else if err := s.record(&store.Record{Event: sm.EventServerUpgradePending, Detail: msg}); err != nil {
			// Not noted as seen: the next reload records it.
			res.Failures = append(res.Failures, "server/bin/tqserver changed, but this could not be recorded: "+err.Error())
		} else {
			s.stamps[srv] = st
			res.Changes = append(res.Changes, msg)
			s.log.Warn().Msg(msg)
		}
	}

	if !s.cfg.TimestampCheckEnabled(s.mode) {
		msg := "timestamp checks are disabled by timestamp_check.enabled in config: workers not checked"
		res.Changes = append(res.Changes, msg)
		s.log.Warn().Msg(msg)
		return
	}
	found, warnings, err := discover(s.layout())
	if err != nil {
		res.Error = err.Error()
		return
	}
	for _, w := range warnings {
		s.log.Warn().Msg(w)
	}
	// Removed workers drain and stop.
	for _, name := range sortedKeys(s.workers) {
		w := s.workers[name]
		if _, ok := found[name]; ok || w.removed {
			continue
		}
		s.removeWorker(w, res)
	}
	for _, name := range sortedKeys(found) {
		f := found[name]
		w := s.workers[name]
		if w == nil || w.removed {
			b, err := s.acceptBinary(f, nil)
			if err != nil {
				s.rejectBinary(p, name, err)
				continue
			}
			f.stamp.bin = b
			w = s.addWorker(f)
			res.Changes = append(res.Changes, name+": new worker")
			for _, sl := range w.slots {
				s.start(sl, sm.ReasonBinaryChanged, "new worker", p)
			}
			continue
		}
		nst, old := f.stamp, w.stamp
		// The assets' stamps move on at once; the binary's only once its
		// new content is accepted, so a rejected binary is checked again.
		w.stamp.public, w.stamp.private = nst.public, nst.private
		if !nst.bin.sameStat(old.bin) {
			b, err := s.acceptBinary(f, w)
			switch {
			case errors.Is(err, errSameContent):
				w.stamp.bin = b // touched or copied again: refresh, no restart
			case err != nil:
				s.rejectBinary(p, name, err)
			default:
				w.stamp.bin = b
				restart[name] = sm.ReasonBinaryChanged
			}
		}
		if _, ok := restart[name]; ok {
			continue
		}
		if nst.public != old.public || nst.private != old.private {
			s.assetsChanged(w, nst.public != old.public, nst.private != old.private, res)
		}
	}
	for _, name := range sortedKeys(restart) {
		w := s.workers[name]
		reason := restart[name]
		res.Changes = append(res.Changes, name+": "+reason)
		for _, sl := range w.slots {
			// The roll abandons these successors of an earlier reload:
			// a failure for that reload only, not for those joining it.
			if n := sl.next; n != nil && n.batch != nil && n.batch != p {
				n.batch.supersede(n.name)
			}
		}
		s.startRoll(w, reason, "", p, time.Time{})
	}
	if len(res.Changes) == 0 && len(res.Failures) == 0 {
		res.Changes = []string{}
	}
	s.log.Info().Strs("changes", res.Changes).Strs("failures", res.Failures).Msg("change check done")
}

// removeWorker drains and stops a worker whose directory is gone.
func (s *Supervisor) removeWorker(w *worker, res *events.ReloadResult) {
	name := w.f.name
	w.removed = true
	w.roll = nil
	res.Changes = append(res.Changes, name+": removed")
	for _, sl := range w.slots {
		s.clearSlot(sl, sm.ReasonOperator, "worker removed")
	}
	s.publishRoutes()
	if !s.hasInstances(w) {
		delete(s.workers, name)
	}
}

func (s *Supervisor) rejectBinary(p *pendingReload, name string, err error) {
	msg := fmt.Sprintf("%s: %s: %v (the running instance keeps serving)", name, sm.ReasonChecksumMismatch, err)
	p.result.Failures = append(p.result.Failures, msg)
	// Nothing follows either way (the binary is not started); a failure
	// to record it is logged by record.
	_ = s.record(&store.Record{Worker: name, Event: sm.EventBinaryRejected, Reason: sm.ReasonChecksumMismatch, Detail: err.Error()})
}

// assetsChanged: no restart. Public files are read fresh on each request;
// the worker is told about private/ changes with AssetSignal.
func (s *Supervisor) assetsChanged(w *worker, public, private bool, res *events.ReloadResult) {
	var parts []string
	if public {
		parts = append(parts, "public/")
	}
	if private {
		parts = append(parts, "private/")
	}
	detail := strings.Join(parts, " and ") + " changed"
	var targets []*instance
	for _, sl := range w.slots {
		for _, in := range []*instance{sl.current, sl.next} {
			if in != nil && in.proc != nil {
				targets = append(targets, in)
			}
		}
	}
	if len(targets) > 0 {
		var names []string
		for _, in := range targets {
			names = append(names, in.name)
		}
		detail += "; " + AssetSignal + " sent to " + strings.Join(names, ", ")
	}
	res.Changes = append(res.Changes, w.f.name+": "+detail)
	if err := s.record(&store.Record{Worker: w.f.name, Event: sm.EventAssetsChanged, Detail: detail}); err != nil {
		return
	}
	for _, in := range targets {
		if err := in.proc.Signal(syscall.SIGUSR1); err != nil {
			s.log.Warn().Err(err).Str("instance", in.name).Msg("could not signal asset change")
		}
	}
}

// abandon stops a starting (or warming) instance that is no longer wanted.
func (s *Supervisor) abandon(inst *instance, reason, detail string) {
	if inst.warming {
		// Healthy but never swapped in: drain it (nothing is in flight)
		// and settle its reload as not done.
		s.drain(inst, reason, detail)
		s.resolve(inst, false, inst.name+": "+detail)
		return
	}
	if inst.m.State() != sm.Starting {
		return
	}
	// It will never serve: stopped even when this cannot be recorded.
	if err := s.transitionAnyway(inst, sm.Stop, reason, func(r *store.Record) { r.Detail = detail }); err != nil {
		return
	}
	if inst.cancel != nil {
		inst.cancel()
	}
	if inst.sl.next == inst {
		inst.sl.next = nil
	}
	s.resolve(inst, false, inst.name+": "+detail)
	if inst.proc == nil {
		delete(s.insts, inst.name)
		return
	}
	s.stopProcess(inst)
}

// resolve settles inst in the reload that started it; the reload replies
// once all its instances settled.
func (s *Supervisor) resolve(inst *instance, ok bool, msg string) {
	p := inst.batch
	if p == nil {
		return
	}
	inst.batch = nil
	delete(p.waiting, inst)
	if ok {
		p.result.Changes = append(p.result.Changes, inst.name+": serving")
	} else {
		p.result.Failures = append(p.result.Failures, msg)
	}
	if len(p.waiting) == 0 {
		s.settleReloads()
	}
}

func (s *Supervisor) failBatch(p *pendingReload, msg string) {
	if p != nil {
		p.result.Failures = append(p.result.Failures, msg)
	}
}

func (s *Supervisor) finish(p *pendingReload) {
	if p.reply != nil {
		r := p.merged()
		if r.Changes == nil {
			r.Changes = []string{}
		}
		if r.Failures == nil {
			r.Failures = []string{}
		}
		p.reply <- r
		p.reply = nil
	}
}

// serverSettingsChanged lists changed settings that only a server restart applies.
func serverSettingsChanged(a, b *config.Config) []string {
	var out []string
	if a.Server.Port != b.Server.Port {
		out = append(out, "server.port")
	}
	if a.Server.ReadTimeoutSeconds != b.Server.ReadTimeoutSeconds || a.Server.WriteTimeoutSeconds != b.Server.WriteTimeoutSeconds || a.Server.IdleTimeoutSeconds != b.Server.IdleTimeoutSeconds {
		out = append(out, "server timeouts")
	}
	if a.Server.Static != b.Server.Static {
		out = append(out, "server.static")
	}
	if a.Workers.WorkersDir != b.Workers.WorkersDir {
		out = append(out, "workers.workers_dir")
	}
	return out
}

// clearSlot stops everything of one slot: its backoff timer, its starting
// successor and (draining it) its serving instance.
func (s *Supervisor) clearSlot(sl *slot, reason, detail string) {
	if sl.timer != nil {
		sl.timer.Stop()
		sl.timer = nil
	}
	if sl.next != nil {
		s.abandon(sl.next, reason, detail)
	}
	if sl.current != nil {
		s.drain(sl.current, reason, detail)
	}
}

// resizeWorker changes how many instances w runs: extra slots drain and
// stop; new slots start now when startNew (else a roll will start them).
func (s *Supervisor) resizeWorker(w *worker, n int, startNew bool, res *events.ReloadResult, p *pendingReload) {
	before := len(w.slots)
	if n == before {
		return
	}
	for _, sl := range w.resize(n) {
		s.clearSlot(sl, sm.ReasonConfigChanged, fmt.Sprintf("instances reduced to %d", n))
	}
	res.Changes = append(res.Changes, fmt.Sprintf("%s: instances %d → %d", w.f.name, before, n))
	s.publishRoutes()
	if !startNew || n < before {
		return
	}
	for _, sl := range w.slots[before:] {
		s.start(sl, sm.ReasonConfigChanged, fmt.Sprintf("instances increased to %d", n), p)
	}
}
