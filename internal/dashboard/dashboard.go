// Package dashboard is the admin listener's HTML page (GET / on
// server.admin_listen, CONTRACT.md §9). This first version lists the workers
// and instances from /v1/status and the newest history records, and follows
// /v1/events; it holds no state and is safe for concurrent requests.
package dashboard

import (
	_ "embed"
	"net/http"
)

//go:embed index.html
var page []byte

// Handler serves the dashboard page at / and answers 404 below it.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(page)
	})
}
