package tqworker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables set by tqserver for every worker instance.
const (
	EnvPort       = "PORT"
	EnvWorkerPort = "TQ_WORKER_PORT"
	EnvName       = "TQ_WORKER_NAME"
	EnvRoute      = "TQ_WORKER_ROUTE"
	EnvBase       = "TQ_WORKER_BASE"
	EnvMode       = "TQ_MODE"
	// The server's read, write and idle timeouts for this worker, in
	// seconds (Run uses them unless its Options set them).
	EnvReadTimeout  = "TQ_READ_TIMEOUT_SECONDS"
	EnvWriteTimeout = "TQ_WRITE_TIMEOUT_SECONDS"
	EnvIdleTimeout  = "TQ_IDLE_TIMEOUT_SECONDS"
)

// DefaultPort is the port Addr uses when neither PORT nor TQ_WORKER_PORT is
// set, i.e. when a worker is started by hand.
const DefaultPort = "8080"

// ErrOutsideBase is returned (wrapped) by PathErr for elements that would
// resolve outside Base().
var ErrOutsideBase = errors.New("path escapes worker base directory")

// Name returns the worker name (TQ_WORKER_NAME). When unset it falls back to
// the last element of Base(), which is the worker name when the worker runs
// from workers/{name}.
func Name() string {
	if v := os.Getenv(EnvName); v != "" {
		return v
	}
	return filepath.Base(Base())
}

// Route returns the URL path prefix the worker serves (TQ_WORKER_ROUTE). When
// unset it is derived from Name() the way tqserver does: "index" is "/", any
// other name maps "_" to "/" ("api_users" is "/api/users").
func Route() string {
	if v := os.Getenv(EnvRoute); v != "" {
		return v
	}
	name := Name()
	if name == "index" {
		return "/"
	}
	return "/" + strings.ReplaceAll(name, "_", "/")
}

// Mode returns TQ_MODE ("dev" or "prod"), or "dev" when unset.
func Mode() string {
	if v := os.Getenv(EnvMode); v != "" {
		return v
	}
	return "dev"
}

// Base returns the absolute path of the worker directory (workers/{name}):
// TQ_WORKER_BASE, or the working directory when that is unset. tqserver
// starts workers in that directory, so both agree under the server.
func Base() string {
	base := os.Getenv(EnvBase)
	if base == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "."
		}
		return wd
	}
	if abs, err := filepath.Abs(base); err == nil {
		return abs
	}
	return filepath.Clean(base)
}

// Path joins elem onto Base(). It returns "" when the result would lie
// outside Base() (an absolute element, or ".." climbing above it); use
// PathErr to get the reason. With no elements it returns Base().
func Path(elem ...string) string {
	p, err := PathErr(elem...)
	if err != nil {
		return ""
	}
	return p
}

// PathErr is Path with an error instead of "": the error wraps
// ErrOutsideBase when the joined elements are absolute or leave Base().
// The check is lexical; symbolic links inside the base are not resolved,
// which keeps deploys that symlink private/ working.
func PathErr(elem ...string) (string, error) {
	base := Base()
	rel := filepath.Join(elem...)
	if rel == "" {
		return base, nil
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("tqworker: resolve %q under %s: %w", strings.Join(elem, string(filepath.Separator)), base, ErrOutsideBase)
	}
	return filepath.Join(base, rel), nil
}

// Addr returns the address the worker listens on: "127.0.0.1:" followed by
// PORT, else TQ_WORKER_PORT, else DefaultPort.
func Addr() string {
	port := os.Getenv(EnvPort)
	if port == "" {
		port = os.Getenv(EnvWorkerPort)
	}
	if port == "" {
		port = DefaultPort
	}
	return "127.0.0.1:" + port
}
