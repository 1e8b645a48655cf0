package logs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/process"
)

// ServerFile is the server's own log file inside logs.dir.
const ServerFile = "server.log"

// WorkerFile is the name of worker's log file inside logs.dir.
func WorkerFile(worker string) string { return worker + ".log" }

// Set is the log destinations of one server run.
type Set struct {
	dir  string // absolute; "" = no files
	conf config.Logs

	mu      sync.Mutex
	files   map[string]*lumberjack.Logger // by worker; "" = server.log
	servers zerolog.Logger
}

var current atomic.Pointer[Set]

// Open sets up the server's logger for mode ("dev": console lines, else
// JSON lines) on stderr and, when c.Dir is set, also as JSON lines in
// {dir}/server.log; the directory is created. It makes the result the
// current set, which Output uses.
func Open(root, mode string, c config.Logs, stderr io.Writer) (*Set, error) {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	s := &Set{conf: c, files: map[string]*lumberjack.Logger{}}
	var w io.Writer = stderr
	if mode == config.ModeDev {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}
	}
	if c.Dir != "" {
		s.dir = c.Dir
		if !filepath.IsAbs(s.dir) {
			s.dir = filepath.Join(root, filepath.FromSlash(c.Dir))
		}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, fmt.Errorf("logs.dir %s: %w", c.Dir, err)
		}
		w = zerolog.MultiLevelWriter(w, s.file(""))
	}
	s.servers = zerolog.New(w).With().Timestamp().Logger()
	current.Store(s)
	return s, nil
}

// Server is the server's logger.
func (s *Set) Server() zerolog.Logger { return s.servers }

// Dir is the absolute log directory, "" when logs go to stderr only.
func (s *Set) Dir() string { return s.dir }

// Close closes the files and stops being the current set.
func (s *Set) Close() error {
	current.CompareAndSwap(s, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// file is the rotated file of worker ("" = the server), opened on first use.
func (s *Set) file(worker string) *lumberjack.Logger {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[worker]; f != nil {
		return f
	}
	name := ServerFile
	if worker != "" {
		name = WorkerFile(worker)
	}
	f := &lumberjack.Logger{
		Filename:   filepath.Join(s.dir, name),
		MaxSize:    s.conf.MaxSizeMB,
		MaxBackups: s.conf.MaxFiles,
	}
	s.files[worker] = f
	return f
}

// Output is how an instance of worker logs its output under cfg: limited
// to logs.worker_lines_per_second (burst logs.worker_burst), and, when the
// current set has a directory, into {dir}/{worker}.log as JSON lines with
// the worker and instance fields instead of the server's log.
func Output(cfg *config.Config, worker, instance string) process.Output {
	o := process.Output{
		LinesPerSecond: float64(cfg.Logs.WorkerLinesPerSecond),
		Burst:          cfg.Logs.WorkerBurst,
	}
	if s := current.Load(); s != nil && s.dir != "" {
		l := zerolog.New(s.file(worker)).With().Timestamp().
			Str("worker", worker).Str("instance", instance).Logger()
		o.Lines = &l
	}
	return o
}
