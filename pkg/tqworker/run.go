package tqworker

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options fields left zero.
const (
	DefaultShutdownTimeout   = 25 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// HealthPath is the path Run answers itself; tqserver probes it.
const HealthPath = "/health"

// Options tunes Run. The zero value is ready to use.
type Options struct {
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after SIGTERM/SIGINT (default 25s). Keep it below the server's
	// shutdown_grace_period_ms, after which the worker is SIGKILLed.
	ShutdownTimeout time.Duration
	// Health, when set, is called for every GET /health; a non-nil error
	// answers 503 so tqserver keeps (or takes) the instance out of rotation.
	Health func() error
	// Logger receives lifecycle messages and http.Server errors (default
	// log.Default(), whose stderr tqserver writes to its log).
	Logger *log.Logger

	// ReadHeaderTimeout defaults to 10s; IdleTimeout to 120s. ReadTimeout
	// and WriteTimeout default to none, because they would cut off large
	// uploads, long downloads and server-sent events that the proxy streams.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
}

// envSeconds reads a duration in whole seconds that tqserver passes from the
// worker's settings (workers.default / workers.paths in config/server.yaml).
func envSeconds(key string) (time.Duration, bool) {
	v, err := strconv.Atoi(os.Getenv(key))
	if err != nil || v < 0 {
		return 0, false
	}
	return time.Duration(v) * time.Second, true
}

func (o Options) withDefaults() Options {
	// Unset timeouts come from the server's config when it passed them
	// (0 there means none).
	if d, ok := envSeconds(EnvReadTimeout); ok && o.ReadTimeout == 0 {
		o.ReadTimeout = d
	}
	if d, ok := envSeconds(EnvWriteTimeout); ok && o.WriteTimeout == 0 {
		o.WriteTimeout = d
	}
	if d, ok := envSeconds(EnvIdleTimeout); ok && o.IdleTimeout == 0 && d > 0 {
		o.IdleTimeout = d
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Logger == nil {
		o.Logger = log.Default()
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	return o
}

var running atomic.Bool

// Run serves h on Addr() until SIGTERM or SIGINT, answering GET /health
// itself and running the OnReload hooks on SIGUSR1. On SIGTERM/SIGINT it
// stops accepting connections and waits up to ShutdownTimeout for in-flight
// requests, then returns nil; a second signal, or the timeout, closes the
// remaining connections and returns an error. A listen error is returned
// right away. Only the first Options value is used.
func Run(h http.Handler, opts ...Options) error {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o = o.withDefaults()
	if h == nil {
		h = http.NotFoundHandler()
	}
	if !running.CompareAndSwap(false, true) {
		return errors.New("tqworker: Run is already running in this process")
	}
	defer running.Store(false)

	// Subscribe before listening: once the port is open tqserver may signal
	// us, and an unhandled SIGUSR1 would kill the process.
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, stopSignals...)
	defer signal.Stop(stop)
	reload := make(chan os.Signal, 1)
	if len(reloadSignals) > 0 {
		signal.Notify(reload, reloadSignals...)
		defer signal.Stop(reload)
	}

	addr := Addr()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tqworker: listen on %s: %w", addr, err)
	}
	logger := o.Logger
	srv := &http.Server{
		Handler:           withHealth(h, o.Health, logger),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorLog:          logger,
	}

	var wg sync.WaitGroup
	reloadDone := make(chan struct{})
	wg.Go(func() {
		// A signal that arrives while hooks run stays buffered, so the
		// hooks always run once more after the last SIGUSR1.
		for {
			select {
			case <-reloadDone:
				return
			case <-reload:
				n := runReloadHooks(logger)
				logger.Printf("tqworker: %s: reload signal, ran %d reload hook(s)", Name(), n)
			}
		}
	})
	defer func() {
		close(reloadDone)
		wg.Wait()
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Printf("tqworker: %s (route %s, mode %s, pid %d) listening on %s", Name(), Route(), Mode(), os.Getpid(), ln.Addr())

	var sig os.Signal
	select {
	case err := <-serveErr:
		return fmt.Errorf("tqworker: serve on %s: %w", addr, err)
	case sig = <-stop:
	}

	logger.Printf("tqworker: %s: %v, finishing in-flight requests (up to %s)", Name(), sig, o.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	go func() {
		select {
		case s := <-stop:
			logger.Printf("tqworker: %s: second %v, closing connections now", Name(), s)
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("tqworker: graceful shutdown after %v: %w", sig, err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("tqworker: serve on %s: %w", addr, err)
	}
	logger.Printf("tqworker: %s: stopped", Name())
	return nil
}

var healthAllow = []string{http.MethodGet, http.MethodHead}

// withHealth answers HealthPath before h sees the request.
func withHealth(h http.Handler, check func() error, logger *log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != HealthPath {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !slices.Contains(healthAllow, r.Method) {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if check != nil {
			if err := check(); err != nil {
				// The reason goes to the log only: /health of the index
				// worker is reachable from outside through the proxy.
				logger.Printf("tqworker: %s: health check failed: %v", Name(), err)
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("unavailable"))
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
}
