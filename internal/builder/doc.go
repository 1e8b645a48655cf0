// Package builder compiles worker sources (workers/{name}/src) into
// workers/{name}/bin/{name} with `go build`, through a temporary file that is
// renamed into place, so a half-written binary is never run. A build whose
// bytes equal the installed binary's is not renamed (Result.Unchanged): the
// binary keeps its mtime.
//
// Build is safe to call from several goroutines for different workers;
// BuildAll bounds the parallelism. Callers must not build the same worker
// twice at once.
package builder
