package devreload

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Paths served by the Hub (through Local).
const (
	EventsPath = "/__tqserver/events"
	ScriptPath = "/__tqserver/client.js"
)

// SSE event names sent to browsers.
const (
	eventHello       = "hello"
	eventReload      = "reload"
	eventBuildFailed = "build_failed"
	eventBuildFixed  = "build_fixed"
)

const (
	defaultHeartbeat    = 15 * time.Second
	defaultWriteTimeout = 10 * time.Second
	streamQueue         = 64 // events buffered per stream before it is dropped
)

//go:embed client.js
var clientJS []byte

type event struct {
	name string
	data []byte // one line of JSON
}

type stream struct {
	ch chan event // closed by the Hub when the stream falls behind
}

// Hub fans dev events out to browsers. It is safe for concurrent use.
type Hub struct {
	instance     string        // identifies this Hub; a new one means a server restart
	heartbeat    time.Duration // comment line interval keeping idle streams open
	writeTimeout time.Duration // bound on each write to a browser

	mu       sync.Mutex
	streams  map[*stream]struct{}
	failures map[string]event // worker → its build_failed event
	reloads  uint64           // number of Reloaded calls
	closed   bool
	done     chan struct{}  // closed by Close
	active   sync.WaitGroup // running ServeEvents handlers
}

// NewHub returns a Hub with no connected browsers and no failures.
func NewHub() *Hub {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return &Hub{
		instance:     hex.EncodeToString(b[:]),
		heartbeat:    defaultHeartbeat,
		writeTimeout: defaultWriteTimeout,
		streams:      make(map[*stream]struct{}),
		failures:     make(map[string]event),
		done:         make(chan struct{}),
	}
}

type helloData struct {
	Instance string   `json:"instance"`
	Reload   uint64   `json:"reload"`
	Failing  []string `json:"failing"`
}

type reloadData struct {
	Worker string `json:"worker"`
	Reload uint64 `json:"reload"`
}

type failedData struct {
	Worker string       `json:"worker"`
	Output string       `json:"output"`
	Errors []BuildError `json:"errors"`
}

type fixedData struct {
	Worker string `json:"worker"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil { // only plain structs of strings and numbers are marshalled
		panic(fmt.Errorf("devreload: marshal %T: %w", v, err))
	}
	return b
}

// Reloaded reports that worker was swapped to a new instance: every page
// reloads. It also clears a build failure recorded for worker (it built).
func (h *Hub) Reloaded(worker string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reloads++
	delete(h.failures, worker)
	h.broadcastLocked(event{eventReload, mustJSON(reloadData{Worker: worker, Reload: h.reloads})})
}

// BuildFailed reports that worker failed to build with the given compiler
// output: every page shows the overlay, including pages that connect later,
// until BuildFixed or Reloaded for the same worker.
func (h *Hub) BuildFailed(worker string, output string) {
	ev := event{eventBuildFailed, mustJSON(failedData{Worker: worker, Output: output, Errors: ParseBuildErrors(output)})}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures[worker] = ev
	h.broadcastLocked(ev)
}

// BuildFixed reports that worker, which had failed, built again: its errors
// are removed from the overlay (the overlay disappears when no worker is
// failing). The Reloaded that follows the swap reloads the pages.
func (h *Hub) BuildFixed(worker string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.failures, worker)
	h.broadcastLocked(event{eventBuildFixed, mustJSON(fixedData{Worker: worker})})
}

// broadcastLocked queues ev on every stream without blocking; a stream whose
// queue is full is ended (its browser reconnects and resynchronises).
func (h *Hub) broadcastLocked(ev event) {
	for s := range h.streams {
		select {
		case s.ch <- ev:
		default:
			close(s.ch)
			delete(h.streams, s)
		}
	}
}

// Close ends every event stream and waits for their handlers to return.
// Later ServeEvents calls answer 503. Close is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
	h.active.Wait()
}

// subscribe registers a stream and returns, atomically with the
// registration, the events describing the current state.
func (h *Hub) subscribe() (*stream, []event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, false
	}
	h.active.Add(1)
	s := &stream{ch: make(chan event, streamQueue)}
	h.streams[s] = struct{}{}
	failing := make([]string, 0, len(h.failures))
	for w := range h.failures {
		failing = append(failing, w)
	}
	slices.Sort(failing)
	state := []event{{eventHello, mustJSON(helloData{Instance: h.instance, Reload: h.reloads, Failing: failing})}}
	for _, w := range failing {
		state = append(state, h.failures[w])
	}
	return s, state, true
}

func (h *Hub) unsubscribe(s *stream) {
	h.mu.Lock()
	delete(h.streams, s) // no-op when already dropped
	h.mu.Unlock()
	h.active.Done()
}

func appendEvent(b []byte, ev event) []byte {
	b = append(b, "event: "...)
	b = append(b, ev.name...)
	b = append(b, "\ndata: "...)
	b = append(b, ev.data...)
	return append(b, "\n\n"...)
}

// ServeEvents serves GET /__tqserver/events as a text/event-stream: first a
// "hello" event and the active build failures, then every event as it
// happens, and a comment line every 15 s. It returns when the client goes
// away, the stream falls behind, a write fails, or the Hub is closed.
func (h *Hub) ServeEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s, state, ok := h.subscribe()
	if !ok {
		http.Error(w, "tqserver is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer h.unsubscribe(s)

	rc := http.NewResponseController(w)
	// A deadline left behind would break the next request on a kept-alive
	// connection; errors mean the writer has no deadlines (fine).
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	w.WriteHeader(http.StatusOK)

	send := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(h.writeTimeout))
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("devreload: write event: %w", err)
		}
		if err := rc.Flush(); err != nil {
			return fmt.Errorf("devreload: flush event: %w", err)
		}
		return nil
	}

	var buf []byte
	for _, ev := range state {
		buf = appendEvent(buf, ev)
	}
	if send(buf) != nil {
		return
	}
	tick := time.NewTicker(h.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case ev, ok := <-s.ch:
			if !ok {
				return // fell behind; the browser reconnects
			}
			buf = appendEvent(buf[:0], ev)
			if send(buf) != nil {
				return
			}
		case <-tick.C:
			if send([]byte(": ping\n\n")) != nil {
				return
			}
		}
	}
}

// ServeScript serves GET /__tqserver/client.js, the client script, with
// Cache-Control: no-store.
func (h *Hub) ServeScript(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/javascript; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(len(clientJS)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(clientJS)
	}
}
