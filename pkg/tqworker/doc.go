// Package tqworker is what a tqserver worker imports: it reads the worker
// contract from the environment tqserver sets (port, name, route, base
// directory, mode), resolves files under the worker's base directory without
// letting a path escape it, serves GET /health, reloads private files on
// SIGUSR1 and shuts down gracefully on SIGTERM/SIGINT.
//
// A worker's main is typically:
//
//	tpl, err := tqworker.LoadTemplates("private/views/*.html")
//	...
//	tqworker.OnReload(func() { _ = tpl.Reload() })
//	if err := tqworker.Run(mux); err != nil {
//		log.Fatal(err)
//	}
//
// Concurrency: the environment accessors, Path and PathErr are safe to call
// from any goroutine. OnReload may be called at any time from any goroutine;
// hooks run one at a time, in registration order, on the goroutine Run uses
// for signals, concurrently with request handlers. A Templates value is safe
// for concurrent Execute while Reload swaps the parsed set atomically. Run
// owns the process signals SIGTERM, SIGINT and SIGUSR1 while it runs and must
// not be called twice at the same time.
package tqworker
