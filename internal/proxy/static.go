package proxy

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/mevdschee/tqserver/internal/layout"
)

// CleanStaticPath validates the part of a static request path after the
// static prefix, e.g. "/index/css/site.css", already percent-decoded once
// (as in http.Request.URL.Path). It returns the worker name and the path
// relative to that worker's public/ directory.
//
// It rejects (ok false) anything that is not "/{worker}/{rel}" with a valid
// worker name, and any rel with an empty, "." or ".." segment, a backslash or
// a NUL byte. It decodes nothing itself, so a double-encoded "%252e%252e"
// stays the literal name "%2e%2e". Symlinks are the caller's job (os.Root).
func CleanStaticPath(rawPath string) (worker, rel string, ok bool) {
	if len(rawPath) < 2 || rawPath[0] != '/' {
		return "", "", false
	}
	worker, rel, found := strings.Cut(rawPath[1:], "/")
	if !found || !layout.ValidName(worker) || rel == "" {
		return "", "", false
	}
	if strings.ContainsAny(rel, "\\\x00") {
		return "", "", false
	}
	for seg := range strings.SplitSeq(rel, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", "", false
		}
	}
	return worker, rel, true
}

// serveStatic serves {WorkersDir}/{worker}/public/{rel}. Every refusal is a
// plain 404 (never a redirect, never a listing) so probes learn nothing.
func (p *Proxy) serveStatic(w http.ResponseWriter, r *http.Request, rest string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	worker, rel, ok := CleanStaticPath(rest)
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Opening the root per request keeps a redeployed public/ (new directory
	// renamed into place) visible at once. os.Root refuses paths and symlinks
	// that leave public/.
	root, err := os.OpenRoot(layout.WorkerAt(p.workersDir, worker).Public())
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer root.Close()
	// Stat first so a FIFO or device is never opened (opening a FIFO blocks).
	if fi, err := root.Stat(rel); err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	f, err := root.Open(rel)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", p.cacheControl)
	h.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size()))
	http.ServeContent(w, r, rel, fi.ModTime(), f)
}
