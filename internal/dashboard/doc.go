// Package dashboard is the operator's page served at GET / of the admin
// listener (CONTRACT.md §9): one HTML document with its CSS and JavaScript
// inlined from embedded files, no build step and nothing loaded from
// elsewhere. The page talks only to the admin API of the same origin:
// GET /v1/status (polled every 2 s, one request for all workers),
// GET /v1/history for the initial timeline, GET /v1/events (server-sent
// events read with fetch so that a bearer token can be sent),
// POST /v1/reload and POST /v1/workers/{name}/restart.
//
// Concurrency: Handler's page is assembled once at package init and only
// read afterwards; the handler is safe for concurrent requests.
package dashboard
