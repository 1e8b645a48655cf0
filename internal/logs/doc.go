// Package logs owns where tqserver's log lines go: the server's logger
// (console lines in dev, JSON lines in prod, on stderr) and, when logs.dir
// is set, size-rotated files under it: server.log for the server's own lines
// and {worker}.log for each worker's output (lumberjack: a file is rotated
// when it would pass logs.max_size_mb, and logs.max_files rotated copies are
// kept). It also gives each worker instance its output limit
// (logs.worker_lines_per_second, logs.worker_burst), which
// internal/process applies.
//
// Concurrency: Open is called once at start and sets the package's current
// log set, which Output reads; Output and the writers it hands out are safe
// for concurrent use. One rotated file has exactly one writer in the
// process (lumberjack's rule), shared by every instance of its worker.
package logs
