package dashboard

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

var (
	//go:embed page.html
	pageHTML string
	//go:embed page.css
	pageCSS string
	// Two scripts that share the page's global scope: data.js (the API
	// into one model), then view.js (draws it, and starts the loops).
	//go:embed data.js
	dataJS string
	//go:embed view.js
	viewJS string
)

// The document and its headers, built once: the scripts and the style are
// inlined, and the Content-Security-Policy allows exactly those (by hash)
// and requests to this origin, so nothing else can run in a page that
// holds the admin token and can restart workers.
var (
	page     = assemble(pageHTML, map[string]string{"/*STYLE*/": pageCSS, "/*DATA*/": dataJS, "/*VIEW*/": viewJS})
	pageCSP  = csp(pageCSS, dataJS, viewJS)
	pageETag = etag(page)
)

// assemble puts each slot's content in place of the slot (a comment in
// page.html).
func assemble(html string, slots map[string]string) []byte {
	for slot, content := range slots {
		html = strings.Replace(html, slot, content, 1)
	}
	return []byte(html)
}

func hashSource(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func csp(css string, scripts ...string) string {
	var hashes []string
	for _, js := range scripts {
		hashes = append(hashes, hashSource(js))
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src " + strings.Join(hashes, " "),
		"style-src " + hashSource(css),
		"connect-src 'self'",
		"img-src data:",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

func etag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// Handler serves the dashboard at "/" (GET and HEAD) and answers 404 to
// every other path, so that it can be mounted as the admin listener's
// catch-all.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the dashboard answers GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", pageETag)
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(page))
	})
}
