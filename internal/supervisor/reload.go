package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// A reload (SIGHUP, `tqserver reload`, the watcher's config change) compares
// what is on disk with what was accepted and restarts only what changed
// (CONTRACT.md §4, §11). The comparison — config load, discovery, stat and
// hash checks — runs beside the loop (checkInput → runCheck → checkDone);
// the loop then records and decides. Checks run one at a time, so a second
// reload compares against what the first accepted.

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

func (s *Supervisor) onReload(ev events.Reload) {
	s.batchSeq++
	p := &pendingReload{id: s.batchSeq, source: ev.Source, reply: ev.Reply, waiting: map[string]bool{}}
	if s.core.Shutting() || s.closing.Load() {
		// Nothing starts once the server is stopping (CONTRACT.md §4).
		p.result.Error = "server is shutting down"
		s.finish(p)
		return
	}
	s.batches[p.id] = p
	s.joinReloads(p)
	s.queued = append(s.queued, p)
	s.nextCheck()
}

// checkInput is what a check compares the disk with: copies, so the check
// can run beside the loop.
type checkInput struct {
	root, mode string
	varDir     string
	cfg        *config.Config
	files      []string // server config files, then the server binary
	stamps     map[string]fileStamp
	known      map[string]knownCopy
}

type knownCopy struct {
	stamp workerStamp
	pids  []int // its serving processes (their program is the running binary)
}

// checkDone is a check's result, handled by the loop.
type checkDone struct {
	p          *pendingReload
	cfgChanged bool
	cfg        *config.Config // the new config when it loaded
	cfgErr     error
	cfgStamps  map[string]fileStamp
	srvStamp   fileStamp
	found      map[string]found
	warnings   []string
	discErr    error
	verdicts   map[string]verdict
}

// verdict is what a check found about one worker's binary.
type verdict struct {
	old      binStamp // the running binary's stamp (hashed when it could be)
	previous string   // a saved copy of the running binary, for rollback ("" none)
	changed  bool     // new content, accepted
	same     bool     // new stat, same content: refresh the stamp only
	stamp    binStamp // the stamp to keep when accepted or same
	err      error    // rejected (checksum_mismatch)
}

func (s *Supervisor) nextCheck() {
	if s.checking || len(s.queued) == 0 {
		return
	}
	p := s.queued[0]
	s.queued = s.queued[1:]
	s.checking = true
	in := checkInput{root: s.root, mode: s.mode, varDir: s.layout().VarDir(), cfg: s.cfg, files: s.serverFiles(), stamps: map[string]fileStamp{}, known: map[string]knownCopy{}}
	for k, v := range s.stamps {
		in.stamps[k] = v
	}
	pids := map[string][]int{}
	for _, w := range s.core.Workers() {
		for _, i := range w.Instances {
			if i.State == sm.Healthy && i.PID > 0 {
				pids[w.Name] = append(pids[w.Name], i.PID)
			}
		}
	}
	for name, k := range s.known {
		in.known[name] = knownCopy{stamp: k.stamp, pids: pids[name]}
	}
	s.log.Info().Str("source", p.source).Msg("checking for changes")
	go func() { s.Send(events.Local{V: runCheck(in, p)}) }()
}

// runCheck does a reload's file work. It runs beside the loop.
func runCheck(in checkInput, p *pendingReload) checkDone {
	r := checkDone{p: p, cfgStamps: map[string]fileStamp{}, verdicts: map[string]verdict{}}
	for _, f := range in.files[:2] {
		st := statFile(f)
		r.cfgStamps[f] = st
		if st != in.stamps[f] {
			r.cfgChanged = true
		}
	}
	cfg := in.cfg
	if r.cfgChanged {
		r.cfg, r.cfgErr = config.Load(in.root)
		if r.cfgErr == nil {
			cfg = r.cfg
		}
	}
	r.srvStamp = statFile(in.files[2])
	if !cfg.TimestampCheckEnabled(in.mode) {
		return r
	}
	r.found, r.warnings, r.discErr = discover(cfg.Layout(in.root))
	for name, f := range r.found {
		k, ok := in.known[name]
		if !ok {
			b, err := acceptBinary(f, nil, nil)
			r.verdicts[name] = verdict{changed: err == nil, stamp: b, err: err}
			continue
		}
		if f.stamp.bin.sameStat(k.stamp.bin) {
			continue
		}
		old := k.stamp.bin
		b, err := acceptBinary(f, &old, k.pids)
		switch {
		case errors.Is(err, errSameContent):
			r.verdicts[name] = verdict{old: old, same: true, stamp: b}
		case err != nil:
			r.verdicts[name] = verdict{old: old, err: err}
		default:
			v := verdict{old: old, changed: true, stamp: b}
			// The binary that ran until now is what a rollback goes back to.
			if prev, err := saveRunning(in.varDir, name, k.pids); err == nil {
				v.previous = prev
			} else {
				r.warnings = append(r.warnings, err.Error()+" (no rollback to it)")
			}
			r.verdicts[name] = v
		}
	}
	return r
}

// onCheckDone records what the check found and turns it into steps.
func (s *Supervisor) onCheckDone(r checkDone) {
	s.checking = false
	defer s.nextCheck()
	p := r.p
	res := &p.result
	defer func() {
		p.checked = true
		if len(res.Changes) == 0 && len(res.Failures) == 0 {
			res.Changes = []string{}
		}
		s.log.Info().Strs("changes", res.Changes).Strs("failures", res.Failures).Msg("change check done")
		s.settleReloads()
	}()
	if s.core.Shutting() {
		res.Error = "server is shutting down"
		return
	}
	if s.tryUpgrade(r, p) {
		return // the new server loads the config and checks the workers itself
	}
	// Config first: a worker restarted for its binary gets the new settings too.
	restart := map[string]string{} // worker → reason
	why := map[string][]string{}   // worker → what changed
	bins := map[string][2]string{} // worker → its new binary and the saved previous
	var reconf []events.Reconfigure
	if r.cfgChanged {
		if r.cfgErr != nil {
			msg := firstLine(r.cfgErr.Error())
			res.Failures = append(res.Failures, "config rejected: "+msg)
			res.Error = "config rejected: " + msg
			// Nothing follows (the old config stays); a failure is logged.
			_ = s.record(&store.Record{Event: sm.EventConfigRejected, Detail: msg + " (previous configuration stays in force)"})
		} else if detail, err := s.recordConfigReloaded(r.cfg); err != nil {
			// Write-ahead: a config that is not in the log is not applied;
			// the stamps stay, so the next reload tries again.
			res.Failures = append(res.Failures, "config not applied: "+err.Error())
			res.Error = "config not applied: " + err.Error()
		} else {
			for f, st := range r.cfgStamps {
				s.stamps[f] = st
			}
			s.cfg = r.cfg
			s.core.Configure(s.coreOptions())
			for _, w := range s.core.Workers() {
				if w.Removed {
					continue
				}
				nws := r.cfg.ForWorker(w.Route)
				if nws.Equal(w.Settings) {
					continue
				}
				rc := events.Reconfigure{Worker: w.Name, Settings: nws, Batch: p.id}
				if !w.Settings.EqualExceptScaling(nws) {
					restart[w.Name] = sm.ReasonConfigChanged
					why[w.Name] = append(why[w.Name], "config: "+strings.Join(w.Settings.ChangedKeys(nws), ", ")+" changed")
				}
				reconf = append(reconf, rc)
			}
			res.Changes = append(res.Changes, detail)
		}
	}

	srv := s.serverFiles()[2]
	if st := r.srvStamp; st != s.stamps[srv] && s.upgrader == nil { // with one: tryUpgrade (upgrade.go)
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

	if r.found == nil && r.discErr == nil {
		msg := "timestamp checks are disabled by timestamp_check.enabled in config: workers not checked"
		res.Changes = append(res.Changes, msg)
		s.log.Warn().Msg(msg)
		s.applyReconfigure(p, reconf, restart, why, bins)
		return
	}
	if r.discErr != nil {
		res.Error = r.discErr.Error()
		s.applyReconfigure(p, reconf, restart, why, bins)
		return
	}
	for _, w := range r.warnings {
		s.log.Warn().Msg(w)
	}
	// Removed workers drain and stop.
	for _, name := range sortedKeys(s.known) {
		if _, ok := r.found[name]; ok || s.known[name].nobin {
			continue // a dev worker without a binary yet is the watcher's
		}
		delete(s.known, name)
		res.Changes = append(res.Changes, name+": removed")
		s.handle(events.RemoveWorker{Worker: name, Reason: sm.ReasonOperator, Detail: "worker removed"})
	}
	var adds []events.AddWorker
	for _, name := range sortedKeys(r.found) {
		f := r.found[name]
		v, checked := r.verdicts[name]
		if k := s.known[name]; k != nil && k.nobin && !checked {
			continue // became a dev worker without a binary after the check began
		}
		k := s.known[name]
		if k == nil || k.nobin {
			if v.err != nil {
				s.rejectBinary(p, name, v.err)
				continue
			}
			f.stamp.bin = v.stamp
			res.Changes = append(res.Changes, name+": new worker")
			adds = append(adds, s.addWorker(f, sm.ReasonBinaryChanged, "new worker", p.id))
			continue
		}
		nst, old := f.stamp, k.stamp
		// The assets' stamps move on at once; the binary's only once its
		// new content is accepted, so a rejected binary is checked again.
		k.stamp.public, k.stamp.private = nst.public, nst.private
		if checked {
			switch {
			case v.same:
				k.stamp.bin = v.stamp // touched or copied again: refresh, no restart
			case v.err != nil:
				s.rejectBinary(p, name, v.err)
			default:
				k.stamp.bin = v.stamp
				restart[name] = sm.ReasonBinaryChanged
				why[name] = append([]string{binaryChange(v.old, v.stamp)}, why[name]...)
				bins[name] = [2]string{f.bin, v.previous}
			}
		}
		if _, ok := restart[name]; ok {
			continue
		}
		if nst.public != old.public || nst.private != old.private {
			s.handle(events.Assets{Worker: name, Public: nst.public != old.public, Private: nst.private != old.private, Batch: p.id})
		}
	}
	for _, a := range adds {
		s.handle(a)
	}
	s.applyReconfigure(p, reconf, restart, why, bins)
}

// applyReconfigure steps the config changes and the restarts: one roll per
// worker, with the binary's reason when both changed.
func (s *Supervisor) applyReconfigure(p *pendingReload, reconf []events.Reconfigure, restart map[string]string, why map[string][]string, bins map[string][2]string) {
	detail := func(name string) string {
		return strings.Join(why[name], "; ") + "; asked by " + p.source
	}
	// deployment.switch: together — the restarts are one atomic release.
	together := s.cfg.Deployment.Switch == config.SwitchTogether
	var rolls []events.RollWorker
	roll := func(name string) events.RollWorker {
		p.result.Changes = append(p.result.Changes, name+": "+restart[name])
		return events.RollWorker{Worker: name, Reason: restart[name], Detail: detail(name), Batch: p.id,
			Bin: bins[name][0], Previous: bins[name][1]}
	}
	done := map[string]bool{}
	for _, rc := range reconf {
		done[rc.Worker] = true
		if restart[rc.Worker] != "" && together {
			s.handle(rc) // the settings now; the release replaces the instances
			rolls = append(rolls, roll(rc.Worker))
			continue
		}
		rc.Restart = restart[rc.Worker]
		if rc.Restart != "" {
			rc.Detail = detail(rc.Worker)
			p.result.Changes = append(p.result.Changes, rc.Worker+": "+rc.Restart)
		}
		rc.Bin, rc.Previous = bins[rc.Worker][0], bins[rc.Worker][1]
		s.handle(rc)
	}
	for _, name := range sortedKeys(restart) {
		if done[name] {
			continue
		}
		if together {
			rolls = append(rolls, roll(name))
			continue
		}
		s.handle(roll(name))
	}
	if len(rolls) > 0 {
		s.handle(events.Release{Rolls: rolls, Batch: p.id})
	}
}

// binaryChange says how a worker binary changed, for the binary_changed
// start records: size, mtime and the start of the sha256, old → new.
func binaryChange(old, cur binStamp) string {
	sum := func(b binStamp) string {
		if !b.hashed {
			return "?"
		}
		return b.hex()[:12]
	}
	mt := func(b binStamp) string {
		return time.Unix(0, b.mtime).UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return fmt.Sprintf("binary: size %d → %d bytes, mtime %s → %s, sha256 %s → %s",
		old.size, cur.size, mt(old), mt(cur), sum(old), sum(cur))
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

func (s *Supervisor) rejectBinary(p *pendingReload, name string, err error) {
	msg := fmt.Sprintf("%s: %s: %v (the running instance keeps serving)", name, sm.ReasonChecksumMismatch, err)
	p.result.Failures = append(p.result.Failures, msg)
	// Nothing follows either way (the binary is not started); a failure
	// to record it is logged by record.
	_ = s.record(&store.Record{Worker: name, Event: sm.EventBinaryRejected, Reason: sm.ReasonChecksumMismatch, Detail: err.Error()})
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
	if a.Server.AdminListen != b.Server.AdminListen {
		out = append(out, "server.admin_listen")
	}
	if a.Server.AdminToken != b.Server.AdminToken {
		out = append(out, "server.admin_token")
	}
	if a.Binaries != b.Binaries {
		out = append(out, "binaries")
	}
	if a.Logs != b.Logs {
		out = append(out, "logs")
	}
	if a.Proxy != b.Proxy {
		out = append(out, "proxy")
	}
	return out
}
