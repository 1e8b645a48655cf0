package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
)

// The /v1/events stream (docs/operations.md, "Admin API").
var (
	// eventBuffer is how many records may wait for one client; a client
	// that falls further behind is disconnected (it reconnects with
	// Last-Event-ID and replays from the log), never slowing the appender.
	eventBuffer = 256
	// heartbeat is the interval of the ": heartbeat" comment that keeps
	// idle streams (and proxies in between) from timing out.
	heartbeat = 15 * time.Second
	// eventWriteTimeout bounds one write to a client that stopped reading.
	eventWriteTimeout = 10 * time.Second
	// afterObserve runs between registering the observer and reading the
	// log (tests append there: records both replayed and observed).
	afterObserve = func() {}
)

// errWrite marks a failed write to the client during a replay.
var errWrite = errors.New("write to client")

// errSlowClient ends the stream of a client whose buffer overflowed.
var errSlowClient = errors.New("client too slow: more than the buffered records waiting")

// eventsHandler serves GET /v1/events: one server-sent event per history
// record appended from now on,
//
//	id: SEQ
//	data: {the record as `history --json` prints it}
//
// With a Last-Event-ID header (or ?last_event_id=SEQ, for a first
// connection that has read history up to SEQ), the records after SEQ are
// replayed from the log first, so a reconnecting client misses none.
func eventsHandler(st *store.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last, replay, err := lastEventID(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Observe before reading the log: a record appended meanwhile is
		// then both replayed and observed (sent once), never neither.
		ch := make(chan store.Record, eventBuffer)
		overflow := make(chan struct{})
		// Once one record did not fit, none after it is queued: the stream
		// ends after what was buffered, with no gap inside it, and the
		// client resumes from the log.
		var over atomic.Bool
		cancel := st.Observe(func(rec store.Record) {
			if over.Load() {
				return
			}
			select {
			case ch <- rec:
			default:
				over.Store(true)
				close(overflow)
			}
		})
		defer cancel()
		afterObserve()

		rc := http.NewResponseController(w)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		var buf bytes.Buffer
		send := func() error {
			_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
			if _, err := w.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
			return rc.Flush()
		}
		buf.WriteString(": tqserver history events\n\n")
		if err := send(); err != nil {
			return
		}
		if replay {
			err := st.Scan(store.Filter{AfterSeq: last}, func(rec store.Record) error {
				last = rec.Seq
				if err := writeEvent(&buf, &rec); err != nil {
					return err
				}
				if buf.Len() < 32<<10 {
					return nil
				}
				if err := send(); err != nil {
					return fmt.Errorf("%w: %w", errWrite, err)
				}
				return nil
			})
			if err == nil {
				err = send()
			} else if !errors.Is(err, errWrite) {
				// The log could not be read (the client reconnects from
				// the last id it received): say why in a comment.
				fmt.Fprintf(&buf, ": history unreadable after seq %d: %s\n\n", last, firstLine(err.Error()))
				_ = send()
			}
			if err != nil {
				return
			}
		}
		tick := time.NewTicker(heartbeat)
		defer tick.Stop()
		for {
			select {
			case rec := <-ch:
				if replay && rec.Seq <= last {
					continue // already replayed from the log
				}
				if err := writeEvent(&buf, &rec); err != nil {
					return
				}
				// Send what else is waiting in one write.
				for more := true; more; {
					select {
					case rec := <-ch:
						if !(replay && rec.Seq <= last) {
							if err := writeEvent(&buf, &rec); err != nil {
								return
							}
						}
					default:
						more = false
					}
				}
				if err := send(); err != nil {
					return
				}
			case <-overflow:
				// What was buffered goes out first; then the stream ends
				// and the client resumes from the log.
				for len(ch) > 0 {
					rec := <-ch
					if !(replay && rec.Seq <= last) {
						if err := writeEvent(&buf, &rec); err != nil {
							return
						}
					}
				}
				fmt.Fprintf(&buf, ": %v\n\n", errSlowClient)
				_ = send()
				return
			case <-tick.C:
				buf.WriteString(": heartbeat\n\n")
				if err := send(); err != nil {
					return
				}
			case <-r.Context().Done():
				// The server is stopping (or the client left): what was
				// already observed (server_stop) still goes out, best effort.
				for len(ch) > 0 {
					rec := <-ch
					if !(replay && rec.Seq <= last) {
						if err := writeEvent(&buf, &rec); err != nil {
							return
						}
					}
				}
				if buf.Len() > 0 {
					_ = send()
				}
				return
			}
		}
	})
}

// writeEvent appends one event for rec to buf.
func writeEvent(buf *bytes.Buffer, rec *store.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	fmt.Fprintf(buf, "id: %d\ndata: %s\n\n", rec.Seq, b)
	return nil
}

// lastEventID reads Last-Event-ID (or ?last_event_id): replay is true when
// one was given.
func lastEventID(r *http.Request) (seq uint64, replay bool, err error) {
	v := r.Header.Get("Last-Event-ID")
	name := "Last-Event-ID"
	if v == "" {
		v, name = r.URL.Query().Get("last_event_id"), "last_event_id"
	}
	if v == "" {
		return 0, false, nil
	}
	seq, err = strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s %q: want the seq of the last record received (a number ≥ 0)", name, v)
	}
	return seq, true, nil
}
