// Package admin is the running server's control socket (var/tqserver.sock)
// and the client side the CLI uses: history, status (now or replayed at a
// time) and reload. Reads go through the server so the CLI never blocks on
// the bbolt file lock; when no server answers, the CLI reads the log file
// directly (see Open).
//
// The Server handler is safe for concurrent requests: it only reads the
// store (bbolt read transactions) and the supervisor's published snapshot,
// and asks for reloads through the supervisor's event channel.
package admin
