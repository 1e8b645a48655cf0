// Package admin is the running server's control API and the client side
// the CLI uses: history, status (now or replayed at a time), reload, an
// operator restart of one worker, /healthz and a server-sent event stream
// of new history records (events.go, fed by store.Observe). One handler
// (Handler) serves it on the unix socket var/tqserver.sock and on the admin
// TCP listener (listen.go: server.admin_listen, the bearer token, the
// dashboard and /metrics beside it). Reads go through the server so the CLI
// never blocks on the bbolt file lock; when no server answers, the CLI
// reads the log file directly.
//
// The handlers are safe for concurrent requests: they only read the store
// (bbolt read transactions and observers that never block an append) and
// the supervisor's published snapshot, and ask for reloads and restarts
// through the supervisor's event channel.
package admin
