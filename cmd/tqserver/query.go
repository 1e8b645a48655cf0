package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/admin"
	"github.com/mevdschee/tqserver/internal/builder"
	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

type historyCmd struct {
	rootFlag
	Worker string `help:"Only this worker (default: all)." predictor:"worker"`
	Since  string `help:"Only records since a duration ago (90s, 2h) or an RFC 3339 time (default: all)."`
	Limit  int    `default:"0" help:"Keep the newest N matching records (still printed oldest first); 0 keeps all."`
	JSON   bool   `name:"json" help:"One JSON object per line."`
}

// openLog opens the log read-only, for when no server answers.
func openLog(root string) (*store.Store, error) {
	db := layout.New(root, layout.Options{}).DB()
	st, err := store.Open(db, store.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("%s is locked but no server answers on %s", layout.DBFile, layout.SocketFile)
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no log at %s (the server has never run on this root)", db)
		}
		return nil, err
	}
	return st, nil
}

func (c *historyCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	q := url.Values{}
	if c.Worker != "" {
		q.Set("worker", c.Worker)
	}
	if c.Since != "" {
		q.Set("since", c.Since)
	}
	if c.Limit < 0 {
		return fmt.Errorf("--limit %d: want a number ≥ 0", c.Limit)
	}
	if c.Limit > 0 {
		q.Set("limit", strconv.Itoa(c.Limit))
	}
	f, err := admin.FilterFromQuery(q)
	if err != nil {
		return err
	}
	out := newStdout()
	defer out.Flush()
	if c.JSON {
		// The stored records are already the output format: copy, don't re-encode.
		if cl, err := admin.Dial(root); err == nil {
			return cl.HistoryJSON(context.Background(), q, out)
		}
		st, err := openLog(root)
		if err != nil {
			return err
		}
		defer st.Close()
		return st.ScanJSON(f, out)
	}
	p := admin.NewPrinter(out, c.JSON)
	if cl, err := admin.Dial(root); err == nil {
		if err := cl.History(context.Background(), q, p.Print); err != nil {
			return err
		}
		return p.Close()
	}
	st, err := openLog(root)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Scan(f, p.Print); err != nil {
		return err
	}
	return p.Close()
}

type statusCmd struct {
	rootFlag
	JSON bool   `name:"json" help:"Print one JSON object."`
	At   string `help:"The registry as it was at this time (RFC 3339, or a duration ago), replayed from the log (default: now)."`
}

func (c *statusCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	if c.At != "" {
		if _, err := admin.ParseTime(c.At, time.Now()); err != nil {
			return fmt.Errorf("--at: %w", err)
		}
	}
	var st *supervisor.Status
	if cl, err := admin.Dial(root); err == nil {
		st, err = cl.Status(context.Background(), c.At)
		if err != nil {
			return err
		}
	} else {
		lg, err := openLog(root)
		if err != nil {
			return err
		}
		defer lg.Close()
		at := time.Time{}
		if c.At != "" {
			at, _ = admin.ParseTime(c.At, time.Now())
		}
		st, err = admin.StatusAt(lg, at)
		if err != nil {
			return err
		}
		if c.At == "" {
			// Now: no server answers, so none runs, whatever the log's
			// last record says (a kill -9 records no stop).
			st.At = nil
			st.Running, st.PID, st.Mode, st.Listen = false, 0, "", ""
		}
	}
	return admin.PrintStatus(os.Stdout, st, c.JSON)
}

type reloadCmd struct {
	rootFlag
	Timeout time.Duration `default:"2m" help:"How long to wait for restarts to settle."`
}

func (c *reloadCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	cl, err := admin.Dial(root)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	res, err := cl.Reload(ctx)
	if err != nil {
		return err
	}
	return printResult(res)
}

// printResult prints a reload's (or restart's) changes and failures, one
// per line; any failure is the command's error.
func printResult(res events.ReloadResult) error {
	if len(res.Changes) == 0 && len(res.Failures) == 0 && res.Error == "" {
		fmt.Println("nothing changed")
	}
	for _, ch := range res.Changes {
		fmt.Println(ch)
	}
	for _, f := range res.Failures {
		fmt.Println("FAILED: " + f)
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	if len(res.Failures) > 0 {
		return fmt.Errorf("%d change(s) failed: %s", len(res.Failures), strings.Join(res.Failures, "; "))
	}
	return nil
}

type restartCmd struct {
	rootFlag
	Timeout time.Duration `default:"2m" help:"How long to wait for the new instances to serve."`
	Worker  string        `arg:"" name:"name" predictor:"worker" help:"The worker to restart."`
}

// Run replaces every instance of one worker, one at a time and without
// dropping a request, with reason operator (POST /v1/workers/NAME/restart).
func (c *restartCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	cl, err := admin.Dial(root)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	res, err := cl.Restart(ctx, c.Worker)
	if err != nil {
		return fmt.Errorf("restart %s: %w", c.Worker, err)
	}
	return printResult(res)
}

type rollbackCmd struct {
	rootFlag
	Timeout time.Duration `default:"2m" help:"How long to wait for the new instances to serve."`
	Worker  string        `arg:"" name:"name" predictor:"worker" help:"The worker to roll back."`
}

// Run swaps one worker back to its previous good binary with zero downtime
// (reason rollback; POST /v1/workers/NAME/rollback).
func (c *rollbackCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	cl, err := admin.Dial(root)
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	res, err := cl.Rollback(ctx, c.Worker)
	if err != nil {
		return fmt.Errorf("rollback %s: %w", c.Worker, err)
	}
	return printResult(res)
}

type buildCmd struct {
	rootFlag
	Prod     bool     `help:"Production build: prod ldflags and a .sha256 next to each binary."`
	Outdated bool     `help:"Only workers whose binary is missing or older than a file in their src/ or the root's go.mod/go.sum."`
	Server   bool     `help:"Also build the server (./cmd/tqserver) to server/bin/tqserver; the root must be the tqserver repository."`
	Workers  []string `arg:"" optional:"" name:"name" predictor:"worker" help:"Workers to build (default: all with src/main.go that workers.discovery.include_patterns select)."`
}

func (c *buildCmd) Run() error {
	root, err := c.abs()
	if err != nil {
		return err
	}
	cfg, err := config.Load(root)
	if err != nil {
		return err
	}
	lay := cfg.Layout(root)
	dirs, err := c.workerDirs(lay)
	if err != nil {
		return err
	}
	if c.Outdated {
		var stale []string
		for _, d := range dirs {
			old, err := builder.Outdated(d, lay.Worker(filepath.Base(d)).Binary(), root)
			if err != nil {
				return fmt.Errorf("build: %w", err)
			}
			if !old {
				fmt.Printf("✓ %s up to date\n", filepath.Base(d))
				continue
			}
			stale = append(stale, d)
		}
		dirs = stale
	}
	o := builder.Options{LDFlags: cfg.Deployment.Dev.Build.LDFlags, Layout: &lay}
	par := cfg.Deployment.Dev.Build.ParallelBuilds
	if c.Prod {
		o = builder.Options{LDFlags: cfg.Deployment.Prod.Build.LDFlags, Prod: true, Layout: &lay}
		par = cfg.Deployment.Prod.Build.ParallelBuilds
	}
	if c.Server && !lay.IsServerRepo() {
		return fmt.Errorf("build --server: %s has no %s: only the tqserver repository builds the server; elsewhere install the tqserver binary as %s", root, layout.ServerMainFile, layout.ServerBinaryFile)
	}
	// The server builds beside the workers, inside the same bound.
	var results []builder.Result
	serverDone := make(chan builder.Result, 1)
	if c.Server {
		par = max(par-1, 1)
		go func() { serverDone <- builder.BuildServer(context.Background(), lay, o) }()
	}
	results = builder.BuildAll(context.Background(), dirs, par, o)
	if c.Server {
		results = append(results, <-serverDone)
	}
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "✗ %s: %v\n", r.Worker, r.Err)
			if r.Output != "" {
				fmt.Fprintln(os.Stderr, r.Output)
			}
			continue
		}
		note := ""
		if r.Unchanged {
			note = " (unchanged: same bytes, left alone)"
		}
		fmt.Printf("✓ %s (%s) → %s%s\n", r.Worker, r.Duration.Round(time.Millisecond), r.Binary, note)
	}
	if failed > 0 {
		return fmt.Errorf("build: %d of %d failed", failed, len(results))
	}
	return nil
}

// workerDirs are the directories of the workers named, each checked to
// have sources, or of every worker with sources; none is an error that
// says what was looked for.
func (c *buildCmd) workerDirs(lay layout.Root) ([]string, error) {
	var dirs []string
	for _, n := range c.Workers {
		if !layout.ValidName(n) {
			return nil, fmt.Errorf("build: %q is not a valid worker name (names must match %s)", n, layout.NamePattern)
		}
		w := lay.Worker(n)
		if !w.HasSource() {
			why := "no such worker"
			if _, err := os.Stat(w.Dir); err == nil {
				why = "it has no source"
			}
			return nil, fmt.Errorf("build %s: %s: %s not found", n, why, w.Main())
		}
		dirs = append(dirs, w.Dir)
	}
	if len(c.Workers) > 0 {
		return dirs, nil
	}
	if _, err := os.Stat(lay.WorkersDir()); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("build: no workers directory %s (a worker is %s/NAME/src/main.go)", lay.WorkersDir(), lay.WorkersDir())
		}
		return nil, fmt.Errorf("build: %w", err)
	}
	found, warnings, err := lay.Discover(layout.Sources)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning: "+w)
	}
	for _, f := range found {
		dirs = append(dirs, f.Dir)
	}
	if len(dirs) == 0 && !c.Server {
		return nil, fmt.Errorf("build: nothing to build: no %s/NAME/src/main.go that workers.discovery.include_patterns (%s) select", lay.WorkersDir(), strings.Join(lay.IncludePatterns(), ", "))
	}
	return dirs, nil
}
