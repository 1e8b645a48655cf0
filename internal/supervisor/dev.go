package supervisor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/builder"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// DevNotifier is told what the browsers of a dev session should show.
type DevNotifier interface {
	Reloaded(worker string)
	BuildFailed(worker, output string)
	BuildFixed(worker string)
}

type buildState struct {
	id      uint64
	cancel  context.CancelFunc
	started time.Time // when the first change it builds was seen (swap timing)
	began   time.Time // when this build was started
	// tentative: started on the watcher's early notice, before the change
	// settled; it is recorded, reported and installed only once the final
	// event confirms that no change came after it began.
	tentative bool
	done      *events.BuildFinished // finished while still tentative
}

// onFilesChanged is dev mode's reaction to the watcher.
func (s *Supervisor) onFilesChanged(ev events.FilesChanged) {
	if s.core.Shutting() {
		return
	}
	if ev.Tentative {
		if ev.Kind == events.SourceChanged {
			s.build(ev.Worker, ev.First, true)
		}
		return
	}
	s.log.Debug().Str("kind", ev.Kind.String()).Str("worker", ev.Worker).Strs("paths", ev.Paths).Msg("files changed")
	switch ev.Kind {
	case events.SourceChanged:
		// The build begun on the early notice is current when nothing
		// changed after it began: the debounce then cost no time at all.
		if b := s.builds[ev.Worker]; b != nil && b.tentative && b.began.After(ev.Last) {
			s.commitBuild(ev.Worker, b)
			return
		}
		s.build(ev.Worker, ev.First, false)
	case events.WorkerAdded:
		s.build(ev.Worker, ev.First, false)
	case events.WorkerRemoved:
		if b := s.builds[ev.Worker]; b != nil {
			s.dropBuild(b)
			delete(s.builds, ev.Worker)
		}
		if s.known[ev.Worker] != nil {
			delete(s.known, ev.Worker)
			s.handle(events.RemoveWorker{Worker: ev.Worker, Reason: sm.ReasonOperator, Detail: "worker removed"})
			s.notifyReloaded(ev.Worker)
		}
	case events.PublicChanged, events.PrivateChanged:
		k := s.known[ev.Worker]
		if k == nil {
			return
		}
		s.restamp(k.f)
		s.handle(events.Assets{Worker: ev.Worker, Public: ev.Kind == events.PublicChanged, Private: ev.Kind == events.PrivateChanged})
		s.notifyReloaded(ev.Worker)
	case events.ConfigChanged:
		s.onReload(events.Reload{Source: "watcher"})
	case events.ServerChanged:
		s.buildServer()
	}
}

func (s *Supervisor) notifyReloaded(worker string) {
	if s.dev != nil {
		s.dev.Reloaded(worker)
	}
}

// dropBuild cancels b and removes what it built but did not install.
func (s *Supervisor) dropBuild(b *buildState) {
	b.cancel()
	if b.done != nil {
		builder.Discard(&builder.Result{Staged: b.done.Staged})
		b.done = nil
	}
}

// build (re)builds a worker's sources; a newer change cancels the build in
// progress. At most parallel_builds run at once. A tentative build starts
// on the watcher's early notice and stays unrecorded until commitBuild.
func (s *Supervisor) build(name string, seen time.Time, tentative bool) {
	if !layout.ValidName(name) {
		return
	}
	lay := s.layout()
	lw := lay.Worker(name)
	if !lw.HasSource() {
		return
	}
	if seen.IsZero() {
		seen = time.Now()
	}
	if b := s.builds[name]; b != nil {
		s.dropBuild(b)
		delete(s.builds, name)
		if b.started.Before(seen) {
			seen = b.started // the swap time counts from the first unbuilt change
		}
	}
	if !tentative {
		if err := s.record(&store.Record{Worker: name, Event: sm.EventBuildStarted}); err != nil {
			// No build without its record; the next save tries again.
			s.log.Error().Str("worker", name).Msg("build not started: its build_started record could not be written; save again once the log is writable")
			return
		}
	}
	s.buildSeq++
	id := s.buildSeq
	ctx, cancel := context.WithCancel(s.ctx)
	s.builds[name] = &buildState{id: id, cancel: cancel, started: seen, began: time.Now(), tentative: tentative}
	bo := s.cfg.Deployment.Dev.Build
	sem := s.buildSem
	go func() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			s.Send(events.BuildFinished{Worker: name, ID: id, Canceled: true})
			return
		}
		defer func() { <-sem }()
		r := builder.Build(ctx, lw.Dir, builder.Options{LDFlags: bo.LDFlags, Stage: true, Layout: &lay})
		ev := events.BuildFinished{Worker: name, ID: id, Duration: r.Duration, Err: r.Err, Output: r.Output, Canceled: r.Canceled, Staged: r.Staged}
		select {
		case s.events <- ev:
		case <-s.quit:
			builder.Discard(&r)
		}
	}()
}

// commitBuild makes a tentative build the build of a settled change: it is
// recorded now, and if it already finished, its result is handled now.
func (s *Supervisor) commitBuild(name string, b *buildState) {
	b.tentative = false
	if err := s.record(&store.Record{Worker: name, Event: sm.EventBuildStarted,
		Detail: "begun " + time.Since(b.began).Round(time.Millisecond).String() + " ago, when the change settled"}); err != nil {
		// Unrecorded, the early build is as if never made.
		s.dropBuild(b)
		delete(s.builds, name)
		s.log.Error().Str("worker", name).Msg("build dropped: its build_started record could not be written; save again once the log is writable")
		return
	}
	if b.done != nil {
		ev := *b.done
		b.done = nil
		s.onBuildFinished(ev)
	}
}

// onBuildFinished records a build and, in dev mode, swaps the new binary in.
func (s *Supervisor) onBuildFinished(ev events.BuildFinished) {
	var started time.Time
	if ev.ID != 0 {
		b := s.builds[ev.Worker]
		if ev.Worker == "" {
			b = s.serverBuild
		}
		if b == nil || b.id != ev.ID {
			builder.Discard(&builder.Result{Staged: ev.Staged})
			return // superseded
		}
		if b.tentative && !ev.Canceled {
			b.done = &ev // kept until the change settles (or changes again)
			s.log.Debug().Str("worker", ev.Worker).Bool("ok", ev.Err == nil).Int64("took_ms", ev.Duration.Milliseconds()).
				Msg("early build finished; waiting for the change to settle")
			return
		}
		started = b.started
		b.cancel()
		if ev.Worker == "" {
			s.serverBuild = nil
		} else {
			delete(s.builds, ev.Worker)
		}
	}
	if ev.Canceled {
		return
	}
	r := &store.Record{Worker: ev.Worker, Event: sm.EventBuildOK, Detail: "built in " + ev.Duration.Round(time.Millisecond).String(), TookMs: ev.Duration.Milliseconds()}
	if ev.Err != nil {
		r.Event = sm.EventBuildFailed
		r.Detail = strings.TrimSpace(ev.Err.Error() + "\n" + ev.Output)
	}
	if ev.Worker == "" {
		r.Detail = "server/bin/tqserver: " + r.Detail
		if ev.Err == nil {
			r.Detail += "; `tqserver reload` (or SIGHUP) upgrades the running server to it"
			s.log.Warn().Msg("server sources changed and were rebuilt into server/bin/tqserver: `tqserver reload` (or SIGHUP) upgrades the running server to it")
		}
	}
	if err := s.record(r); err != nil && ev.Err == nil && ev.Staged != "" {
		// Write-ahead: a build that is not in the log is not installed
		// and starts nothing. (A failed build is still shown below; the
		// builds made before Run installed themselves and only miss
		// their record.)
		builder.Discard(&builder.Result{Staged: ev.Staged})
		s.log.Error().Str("worker", ev.Worker).Msg("build not installed: its build_ok record could not be written; save again once the log is writable")
		return
	}
	if ev.Err == nil && ev.Staged != "" {
		res := builder.Result{Worker: ev.Worker, Binary: s.layout().Worker(ev.Worker).Binary(), Staged: ev.Staged}
		if err := builder.Install(&res); err != nil {
			ev.Err = err
			// Nothing was installed; a failure to record that is logged
			// by record and changes nothing that follows.
			_ = s.record(&store.Record{Worker: ev.Worker, Event: sm.EventBuildFailed, Detail: "install: " + err.Error()})
		}
	}
	if ev.Err != nil {
		s.log.Error().Str("worker", ev.Worker).Msg("build failed; the running instance keeps serving\n" + ev.Output)
		if ev.Worker != "" {
			s.buildFailing[ev.Worker] = true
			if s.dev != nil {
				s.dev.BuildFailed(ev.Worker, ev.Output)
			}
			if ev.ID != 0 && s.known[ev.Worker] == nil && s.core != nil {
				s.addSourceOnly(ev.Worker)
			}
		}
		return
	}
	if ev.ID == 0 || ev.Worker == "" {
		return // builds before Run: the workers start from discovery
	}
	s.log.Info().Str("worker", ev.Worker).Int64("took_ms", ev.Duration.Milliseconds()).Msg("built")
	if s.buildFailing[ev.Worker] {
		delete(s.buildFailing, ev.Worker)
		if s.dev != nil {
			s.dev.BuildFixed(ev.Worker)
		}
	}
	detail := "built in " + ev.Duration.Round(time.Millisecond).String()
	if k := s.known[ev.Worker]; k != nil && !k.nobin {
		s.restamp(k.f)
		s.handle(events.RollWorker{Worker: ev.Worker, Reason: sm.ReasonSourceChanged, Detail: detail, ChangedAt: started})
		return
	}
	lw := s.layout().Worker(ev.Worker)
	f := foundOf(lw)
	f.stamp.bin = statBin(f.bin)
	if !f.stamp.bin.exists {
		return
	}
	a := s.addWorker(f, sm.ReasonSourceChanged, "new worker; "+detail, 0)
	a.ChangedAt = started
	s.restamp(f)
	s.handle(a)
}

// addSourceOnly serves the route of a dev worker that has sources but no
// binary yet (its first build failed): 503 with Retry-After, never 404,
// until a build succeeds.
func (s *Supervisor) addSourceOnly(name string) {
	lw := s.layout().Worker(name)
	if !lw.HasSource() {
		return
	}
	a := s.addWorker(foundOf(lw), sm.ReasonSourceChanged, "", 0)
	s.known[name].nobin = true
	a.Bin = ""
	s.handle(a)
}

// restamped carries a worker's fresh stamps (binary hashed) back to the loop.
type restamped struct {
	worker string
	stamp  workerStamp
}

// restamp stamps f beside the loop (it walks public/ and private/ and hashes
// the binary) so the next reload compares against what now runs.
func (s *Supervisor) restamp(f found) {
	go func() { s.Send(events.Local{V: restamped{worker: f.name, stamp: stampWorker(f)}}) }()
}

// buildServer rebuilds server/bin/tqserver when the app root is the
// tqserver repository itself (it has cmd/tqserver).
func (s *Supervisor) buildServer() {
	lay := s.layout()
	if !lay.IsServerRepo() {
		return
	}
	if s.serverBuild != nil {
		s.serverBuild.cancel()
	}
	s.buildSeq++
	id := s.buildSeq
	ctx, cancel := context.WithCancel(s.ctx)
	s.serverBuild = &buildState{id: id, cancel: cancel, started: time.Now()}
	root := s.root
	go func() {
		start := time.Now()
		out := lay.ServerBinary()
		tmp := out + ".build"
		os.MkdirAll(filepath.Dir(out), 0o755)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "./cmd/tqserver")
		cmd.Dir = root
		b, err := cmd.CombinedOutput()
		if err == nil {
			err = os.Rename(tmp, out)
		} else {
			os.Remove(tmp)
			err = fmt.Errorf("build server: %w", err)
		}
		s.Send(events.BuildFinished{ID: id, Duration: time.Since(start), Err: err, Output: strings.TrimSpace(string(b)), Canceled: ctx.Err() != nil})
	}()
}
