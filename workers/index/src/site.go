package main

import (
	"bytes"
	"log"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mevdschee/tqserver/pkg/tqworker"
)

// site holds what the pages show. Handlers run concurrently with the reload
// hook, hence the atomics.
type site struct {
	tpl      *tqworker.Templates
	started  time.Time
	loadedAt atomic.Int64 // unix nanoseconds of the last successful template load
	reloads  atomic.Int64 // successful reloads since start
}

func newSite(tpl *tqworker.Templates, started time.Time) *site {
	s := &site{tpl: tpl, started: started}
	s.loadedAt.Store(time.Now().UnixNano())
	return s
}

// reload is the SIGUSR1 hook: re-read the templates, keep the old ones when
// the new ones do not parse.
func (s *site) reload() {
	if err := s.tpl.Reload(); err != nil {
		log.Printf("index: reload templates: %v", err)
		return
	}
	s.loadedAt.Store(time.Now().UnixNano())
	n := s.reloads.Add(1)
	log.Printf("index: templates reloaded (%d since start)", n)
}

func (s *site) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", s.home)
	mux.HandleFunc("/", s.notFound)
	return mux
}

// pageData is what every template receives.
type pageData struct {
	Title     string
	Static    string // URL prefix of this worker's public/ files
	Name      string
	Route     string
	Mode      string
	PID       int
	Started   time.Time
	Uptime    time.Duration
	LoadedAt  time.Time
	Reloads   int64
	GoVersion string
	Host      string
	Path      string
}

func (s *site) data(r *http.Request, title string) pageData {
	host, _ := os.Hostname()
	now := time.Now()
	return pageData{
		Title:     title,
		Static:    "/static/" + tqworker.Name(),
		Name:      tqworker.Name(),
		Route:     tqworker.Route(),
		Mode:      tqworker.Mode(),
		PID:       os.Getpid(),
		Started:   s.started,
		Uptime:    now.Sub(s.started).Truncate(time.Second),
		LoadedAt:  time.Unix(0, s.loadedAt.Load()),
		Reloads:   s.reloads.Load(),
		GoVersion: runtime.Version(),
		Host:      host,
		Path:      r.URL.Path,
	}
}

func (s *site) home(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.render(w, http.StatusOK, "index.html", s.data(r, "Welcome"))
}

func (s *site) notFound(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusNotFound, "404.html", s.data(r, "Page not found"))
}

// render executes into a buffer so a template error still becomes a clean
// 500 instead of half a page with a 200 status.
func (s *site) render(w http.ResponseWriter, status int, name string, data pageData) {
	var buf bytes.Buffer
	if err := s.tpl.Execute(&buf, name, data); err != nil {
		log.Printf("index: render %s: %v", name, err)
		http.Error(w, "500 internal server error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
