package config

// Logs is the "logs" section of server.yaml: where the server's and the
// workers' log lines go, how files rotate, and how many lines a worker
// instance may log per second.
type Logs struct {
	// Dir, relative to the app root (or absolute), holds server.log and
	// {worker}.log; "" writes everything to stderr only.
	Dir string
	// MaxSizeMB: a log file is rotated when it would grow past this.
	MaxSizeMB int
	// MaxFiles: rotated files kept per log, besides the current one.
	MaxFiles int
	// WorkerLinesPerSecond and WorkerBurst rate-limit each instance's
	// output (stdout and stderr together); 0 lines per second = no limit.
	WorkerLinesPerSecond int
	WorkerBurst          int
}

func defaultLogs() Logs {
	return Logs{Dir: "", MaxSizeMB: 100, MaxFiles: 5, WorkerLinesPerSecond: 1000, WorkerBurst: 10000}
}

// LimitBytes is the most disk one log takes: the current file and
// MaxFiles rotated ones, each at most MaxSizeMB.
func (l Logs) LimitBytes() int64 { return int64(l.MaxSizeMB) << 20 * int64(l.MaxFiles+1) }

func logsFields(l *Logs) map[string]fieldFunc {
	return map[string]fieldFunc{
		"dir":                     stringField(&l.Dir, nil),
		"max_size_mb":             intField(&l.MaxSizeMB, 1, 1<<20),
		"max_files":               intField(&l.MaxFiles, 1, 1000),
		"worker_lines_per_second": nonNegative(&l.WorkerLinesPerSecond),
		"worker_burst":            positive(&l.WorkerBurst),
	}
}

// deployment.switch values.
const (
	SwitchOneByOne = "one_by_one"
	SwitchTogether = "together"
)
