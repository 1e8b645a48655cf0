// Package watcher is tqserver's dev-mode file watcher: it turns fsnotify
// events under the app root into debounced events.FilesChanged values.
//
// It owns the inotify watches (fsnotify is not recursive, so it adds a watch
// for every directory of interest as it appears and scans new directories for
// files created before their watch existed), the filtering (bin/, dot
// directories, editor temp and backup files, Chmod-only events, non-YAML
// config files and non-Go server files never count) and the per-(kind,
// worker) debounce. It watches:
//
//	workers/                     WorkerAdded / WorkerRemoved
//	workers/{name}/src/**        SourceChanged (any file that is not ignored)
//	workers/{name}/public/**     PublicChanged
//	workers/{name}/private/**    PrivateChanged
//	config/*.yaml                ConfigChanged
//	Options.ServerSrc/**         ServerChanged (*.go, go.mod, go.sum)
//
// Paths are absolute, deduplicated, sorted, at most 200 per event. WorkerAdded
// carries the worker directory and the files found in it; changes inside a
// worker whose WorkerAdded is still pending are folded into that one event.
// WorkerRemoved carries the worker directory, and drops what was pending for
// that worker. A directory removed or moved away inside an area is reported
// by its own path. On an inotify queue overflow the watcher rescans the tree,
// re-adds its watches and reports every existing area (config/, each worker's
// src/, public/, private/, each server source directory) by its directory
// path, because something may have been missed.
//
// In the server's sources, bin/, testdata/, node_modules/ and the app root's
// workers/, config/ and var/ are not watched as server sources.
//
// Concurrency: New sets up the watches; Run is a single goroutine that owns all
// watcher state and is the only caller of Options.Send. Close may be called
// from any goroutine, any number of times. The watcher never touches worker
// state; it only sends.
package watcher
