// Package server is one tqserver process put together: the log, process
// containment, the proxy and its listener, the admin socket and listener,
// the supervisor and (dev) the file watcher. cmd/tqserver parses flags and
// signals and drives a Main; tests drive one in-process the same way.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/admin"
	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/devreload"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/metrics"
	"github.com/mevdschee/tqserver/internal/proxy"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// Notifier is told the server's state (systemd's sd_notify); every method
// must return quickly.
type Notifier interface {
	Ready()
	Reloading()
	Reloaded()
	Stopping()
}

type nopNotifier struct{}

func (nopNotifier) Ready()     {}
func (nopNotifier) Reloading() {}
func (nopNotifier) Reloaded()  {}
func (nopNotifier) Stopping()  {}

// Options configure a Main.
type Options struct {
	Root    string // absolute app root
	Mode    string // "dev" or "prod"
	Listen  string // the public address; "" is :server.port
	Config  *config.Config
	Logger  zerolog.Logger
	Version string
	Notify  Notifier // nil: nobody
}

// Main is one running server.
type Main struct {
	o      Options
	log    zerolog.Logger
	lay    layout.Root
	notify Notifier

	st      *store.Store
	ln      net.Listener
	adminLn net.Listener
	sockLn  net.Listener // var/tqserver.sock

	// Server self-upgrade (upgrade.go).
	ready     *os.File    // the new server's readiness pipe to the old one
	childPID  int         // the new server, once it took over (reaped by HandOff's goroutine)
	handed    bool        // handed over: nothing of the instances is stopped at exit
	handing   atomic.Bool // the new server is ready: this one stops accepting
	stopOnce  sync.Once
	frontDone chan struct{} // closed once the public listener's requests finished (stopAccepting)
	px        *proxy.Proxy
	front     *proxy.Server
	sup       *supervisor.Supervisor
	hub       *devreload.Hub
	col       *metrics.Collector

	runErr   chan error // the supervisor's Run
	closeReq chan struct{}
	closeOne sync.Once
	done     chan struct{}
	err      error
	cleanups []func() // run in reverse order when Run returns (or Open fails)
	cleanOne sync.Once
}

// Open prepares a server: it takes the log's lock, binds the listeners,
// builds the workers (dev), and starts the supervisor (server_start is in
// the log when Open returns). Nothing answers requests until Run.
func Open(o Options) (_ *Main, err error) {
	if o.Notify == nil {
		o.Notify = nopNotifier{}
	}
	cfg := o.Config
	if o.Listen == "" {
		o.Listen = ":" + strconv.Itoa(cfg.Server.Port)
	}
	m := &Main{o: o, log: o.Logger, lay: cfg.Layout(o.Root), notify: o.Notify,
		closeReq: make(chan struct{}), done: make(chan struct{}), frontDone: make(chan struct{})}
	defer func() {
		if err != nil {
			m.cleanup()
		}
	}()
	log, lay := m.log, m.lay
	inh, err := takeInherited()
	if err != nil {
		return nil, err
	}
	if inh != nil {
		m.ready = inh.ready
		m.defer_(func() {
			if m.ready != nil {
				m.ready.Close()
			}
		})
		hook("new-started")
	}
	if err := os.MkdirAll(lay.VarDir(), 0o755); err != nil {
		return nil, fmt.Errorf("create %s/: %w", layout.VarDir, err)
	}
	st, err := store.Open(lay.DB(), store.Options{Timeout: time.Second,
		// A log deleted under the running server is recreated by the next
		// append; say so loudly, once.
		Recreated: func(detail string) { log.Error().Str("log", lay.DB()).Msg(detail) },
	})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("another tqserver is running on %s (%s is locked)", o.Root, layout.DBFile)
		}
		return nil, err
	}
	m.st = st
	m.defer_(func() { st.Close() })
	// With the log's lock held: no other server uses this root's cgroups.
	stopContain := contain(o.Root, log)
	m.defer_(func() {
		if !m.handed { // the adopted instances run on
			stopContain()
		}
	})

	if inh != nil {
		m.ln = inh.public
	} else if m.ln, err = net.Listen("tcp", o.Listen); err != nil {
		return nil, fmt.Errorf("listen %s: %w", o.Listen, err)
	}
	m.defer_(func() { m.ln.Close() })
	// The admin listener is bound now, so a bad address stops the server
	// before anything starts; it serves only after server_start, like the
	// socket (a connection meanwhile waits).
	adminOpts := adminTCPOptions(cfg)
	adminLn, warning, err := net.Listener(nil), "", error(nil)
	if inh != nil && inh.admin != nil {
		adminLn = inh.admin
	} else if adminLn, warning, err = admin.ListenTCP(adminOpts); err != nil {
		return nil, err
	}
	if warning != "" {
		log.Warn().Msg(warning)
	}
	if adminLn != nil {
		m.adminLn = adminLn
		m.defer_(func() { adminLn.Close() })
	}

	var builds []events.BuildFinished
	if o.Mode == "dev" && inh == nil { // a new server adopts what the old one built
		builds = buildAll(lay, cfg, log)
	}
	m.px = proxy.New(m.proxyOptions())
	// Before the supervisor runs, so restarts and builds recorded from its
	// first records on are counted.
	m.col = metrics.New(metrics.Options{Proxy: m.px, Store: st, Status: func() *supervisor.Status { return m.sup.Status() }})
	m.defer_(func() { m.col.Close() })
	adminOpts.Metrics = metrics.Handler(m.col)
	sopts := supervisor.Options{
		Root: o.Root, Mode: o.Mode, Listen: m.ln.Addr().String(), Config: cfg, Store: st, Proxy: m.px,
		Logger: log, Version: o.Version, Builds: builds,
		Adopt: inh != nil, Upgrade: m,
	}
	if m.hub != nil {
		sopts.Dev = m.hub
	}
	m.sup = supervisor.New(sopts)

	// The admin socket (and with it `status`, and the test rigs' "up")
	// answers only once this server's server_start is in the log.
	m.runErr = make(chan error, 1)
	go func() { m.runErr <- m.sup.Run() }()
	select {
	case <-m.sup.Started():
	case err := <-m.runErr:
		if err == nil {
			err = errors.New("supervisor stopped before it started")
		}
		return nil, err
	}
	api := admin.Handler(st, m)
	stopAdmin, err := m.serveSocket(inh, api)
	if err != nil {
		m.sup.Send(events.Shutdown{})
		<-m.runErr
		return nil, err
	}
	m.defer_(stopAdmin)
	if m.adminLn != nil {
		m.defer_(admin.ServeTCP(m.adminLn, admin.TCPHandler(api, adminOpts)))
		ev := log.Info().Str("admin_listen", m.adminLn.Addr().String())
		if adminOpts.Token != "" {
			ev = ev.Str("token_from", adminOpts.TokenSource)
		}
		ev.Msg("admin listener: dashboard, /healthz, /metrics and the API at http://" + m.adminLn.Addr().String() + "/")
	}
	pidFile := lay.PID()
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	m.defer_(func() {
		if !m.handed { // the new server's pid is in it
			os.Remove(pidFile)
		}
	})

	m.front = proxy.NewServer(m.px, proxy.ServerOptions{
		HeaderTimeout:  cfg.Server.HeaderTimeout(),
		IdleTimeout:    cfg.Server.IdleTimeout(),
		ReadTimeout:    cfg.Server.ReadTimeout(),
		WriteTimeout:   cfg.Server.WriteTimeout(),
		MaxHeaderBytes: cfg.Server.MaxHeaderBytes,
	})
	m.defer_(startWatcher(lay, o.Mode, cfg, m.sup, log))
	return m, nil
}

func (m *Main) proxyOptions() proxy.Options {
	cfg, lay := m.o.Config, m.lay
	popts := proxy.Options{
		WorkersDir:        lay.StaticDir(),
		StaticEnabled:     cfg.Server.Static.Enabled,
		StaticPrefix:      cfg.Server.Static.URLPrefix,
		CacheMaxAge:       cfg.Server.Static.CacheMaxAgeSeconds,
		OnMaxRequests:     func(instance string) { go m.sup.Send(events.MaxRequests{Instance: instance}) },
		Logger:            m.log,
		WorkerTimeout:     cfg.Server.UpstreamTimeout(),
		WorkerIdleTimeout: cfg.Server.WorkerIdleTimeout(),
		WorkerIdleConns:   cfg.Server.WorkerIdleConns,
		Hold:              cfg.Proxy.Hold(),
		HoldQueue:         cfg.Proxy.HoldQueue,
	}
	if m.o.Mode == "dev" {
		// Browsers reload after a swap and show build errors; prod responses
		// are never touched. The engine is the same in both modes.
		m.hub = devreload.NewHub()
		popts.Local = devreload.Local(m.hub)
		popts.Rewrite = devreload.Rewrite
	}
	return popts
}

func (m *Main) defer_(f func()) { m.cleanups = append(m.cleanups, f) }

func (m *Main) cleanup() {
	m.cleanOne.Do(func() {
		for i := len(m.cleanups) - 1; i >= 0; i-- {
			m.cleanups[i]()
		}
	})
}

// Abort is the end of an interrupted shutdown (a second signal): what is
// left of the instances is killed (their groups, cgroups and marked
// descendants), the listeners and the log are closed, now. The process is
// expected to exit right after.
func (m *Main) Abort() { m.cleanup() }

// Addr is the public listener's address.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// AdminAddr is the admin listener's address ("" when it is off).
func (m *Main) AdminAddr() string {
	if m.adminLn == nil {
		return ""
	}
	return m.adminLn.Addr().String()
}

// Status, Reload and Restart are the admin API's backend.
func (m *Main) Status() *supervisor.Status { return m.sup.Status() }

// Reload runs a change check (SIGHUP, `tqserver reload`) and waits for it.
func (m *Main) Reload(ctx context.Context, source string) events.ReloadResult {
	m.notify.Reloading()
	defer m.notify.Reloaded()
	return m.sup.Reload(ctx, source)
}

// Restart replaces every instance of worker (reason operator).
func (m *Main) Restart(ctx context.Context, worker string) events.ReloadResult {
	return m.sup.Restart(ctx, worker)
}

// Rollback swaps worker back to its previous good binary (reason rollback).
func (m *Main) Rollback(ctx context.Context, worker string) events.ReloadResult {
	return m.sup.Rollback(ctx, worker)
}

// Run serves until Close is called or something fails, then shuts down:
// in-flight requests finish, workers stop, server_stop is recorded. It
// returns nil after a clean shutdown.
func (m *Main) Run() error {
	defer close(m.done)
	defer m.cleanup()
	serveErr := make(chan error, 1)
	go func() { serveErr <- m.front.Serve(m.ln) }()
	select {
	case <-m.sup.Adopted():
	case <-m.sup.Done():
	}
	m.log.Info().Str("root", m.o.Root).Str("mode", m.o.Mode).Str("listen", m.Addr()).Int("pid", os.Getpid()).Msg("tqserver serving")
	m.notify.Ready() // (after a hand-off the old server then sends MAINPID=)
	m.signalReady()
	select {
	case <-m.closeReq:
		m.err = m.shutdown()
	case err := <-m.runErr:
		if errors.Is(err, supervisor.ErrHandedOff) {
			m.err = m.retire()
			break
		}
		m.front.Close()
		if err == nil {
			err = errors.New("supervisor stopped unexpectedly")
		}
		m.err = err
	case err := <-serveErr:
		if m.handing.Load() { // stopAccepting: the new server is ready
			if err := <-m.runErr; !errors.Is(err, supervisor.ErrHandedOff) {
				m.err = err
				break
			}
			m.err = m.retire()
			break
		}
		m.sup.Send(events.Shutdown{})
		<-m.runErr
		m.err = fmt.Errorf("http server: %w", err)
	}
	return m.err
}

// shutdown: no new requests, in-flight ones finish (up to the drain
// timeout), then the supervisor stops every worker.
func (m *Main) shutdown() error {
	m.notify.Stopping()
	// Before waiting for in-flight requests: a reload meanwhile must not
	// start instances that would only be stopped again.
	m.sup.BeginShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), m.o.Config.Workers.DrainTimeout())
	defer cancel()
	if m.hub != nil {
		m.hub.Close() // open event streams would hold Shutdown open
	}
	if err := m.front.Shutdown(ctx); err != nil {
		m.log.Warn().Err(err).Msg("in-flight requests did not finish in time")
		m.front.Close()
	}
	m.sup.Send(events.Shutdown{})
	err := <-m.runErr
	if errors.Is(err, supervisor.ErrHandedOff) {
		// A hand-off finished before the loop saw the shutdown: the
		// instances are the new server's now (retire stops this
		// process's own, as asked).
		return m.retire()
	}
	return err
}

// Close asks Run to shut down and waits until it has (or until ctx ends).
// Safe to call more than once and from any goroutine.
func (m *Main) Close(ctx context.Context) error {
	m.closeOne.Do(func() { close(m.closeReq) })
	select {
	case <-m.done:
		return m.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when Run has returned.
func (m *Main) Done() <-chan struct{} { return m.done }

// serveSocket serves api on var/tqserver.sock: the inherited listener
// after a hand-off, else a new one (a stale file is removed: the caller
// holds the log's lock, so no other server owns it). The file is removed
// at exit unless this server handed over to a new one, which serves it.
func (m *Main) serveSocket(inh *inherited, api http.Handler) (func(), error) {
	sock := layout.New(m.o.Root, layout.Options{}).Socket() // where admin.Dial looks
	if inh != nil {
		m.sockLn = inh.sock
	} else {
		os.Remove(sock)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("admin socket: %w", err)
		}
		os.Chmod(sock, 0o600)
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		m.sockLn = ln
	}
	stop := admin.ServeTCP(m.sockLn, api)
	return func() {
		stop()
		if !m.handed {
			os.Remove(sock)
		}
	}, nil
}
