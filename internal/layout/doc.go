// Package layout owns the shape of an app root (CONTRACT.md §1): where the
// config files, the workers, a worker's src/, bin/, public/ and private/,
// its binary and that binary's .sha256, the server's own binary and the
// state files under var/ are; which names a worker may have and which route
// a name gets; and discovery, the one function that lists the workers of a
// root (what dev mode and `tqserver build` build, what runs).
//
// Every other package asks this one instead of joining path elements of its
// own, so a path, a default and the name rule are each written once. The
// configured parts (workers.workers_dir, server.static.dev_root,
// workers.discovery.include_patterns) come in through Options; config turns a
// *config.Config into a Root (config.Config.Layout). This package imports
// nothing of tqserver, so config can use its names and defaults.
//
// binaries.path and binaries.format are not used: a worker's binary is
// workers/{name}/bin/{name}, as the contract fixes it.
//
// Concurrency: Root and Worker are immutable values; every function is safe
// from any goroutine. Discover reads the file system and reports what it saw
// at that moment.
package layout
