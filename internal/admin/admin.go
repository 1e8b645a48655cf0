package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/layout"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// Backend is what the socket serves from.
type Backend interface {
	Status() *supervisor.Status
	Reload(ctx context.Context, source string) events.ReloadResult
	// Restart replaces every instance of worker with reason operator; an
	// Error starting with events.UnknownWorker means there is no such worker.
	Restart(ctx context.Context, worker string) events.ReloadResult
	// Rollback swaps worker back to its previous good binary (reason
	// rollback); an Error when there is none.
	Rollback(ctx context.Context, worker string) events.ReloadResult
}

// Handler serves the admin API, the same on var/tqserver.sock and on the
// admin TCP listener (CONTRACT.md §9):
//
//	GET  /healthz                                  200 "ok"
//	GET  /v1/history?worker=&since=&until=&limit=   JSON lines, oldest first
//	GET  /v1/status[?at=RFC3339]                   one JSON object
//	GET  /v1/events                                server-sent events (events.go)
//	POST /v1/reload                                the reload result
//	POST /v1/workers/{name}/restart                the restart's result; 404 for no such worker
func Handler(st *store.Store, b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /v1/events", eventsHandler(st))
	mux.HandleFunc("POST /v1/workers/{name}/restart", func(w http.ResponseWriter, r *http.Request) {
		workerResult(w, b.Restart(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("POST /v1/workers/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		workerResult(w, b.Rollback(r.Context(), r.PathValue("name")))
	})
	mux.HandleFunc("GET /v1/history", func(w http.ResponseWriter, r *http.Request) {
		f, err := FilterFromQuery(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		bw := bufio.NewWriterSize(w, 64<<10)
		err = st.ScanJSON(f, bw)
		if err != nil {
			// Mid-stream: the client sees a line it cannot decode as a record.
			fmt.Fprintf(bw, "{\"error\":%q}\n", err.Error())
		}
		bw.Flush()
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		var st0 *supervisor.Status
		if at := r.URL.Query().Get("at"); at != "" {
			t, err := ParseTime(at, time.Now())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			// The server as it was at t, from the log: not this process.
			st0, err = StatusAt(st, t)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		} else {
			st0 = b.Status()
			// The supervisor's snapshot does not track the log; the log
			// knows its own last seq.
			last, err := st.LastSeq()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			st0.LastSeq = last
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st0)
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		res := b.Reload(r.Context(), source(r))
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
	})
	return mux
}

// workerResult answers a restart or rollback: 404 for an unknown worker.
func workerResult(w http.ResponseWriter, res events.ReloadResult) {
	w.Header().Set("Content-Type", "application/json")
	if strings.HasPrefix(res.Error, events.UnknownWorker) {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": res.Error})
		return
	}
	json.NewEncoder(w).Encode(res)
}

// StatusAt replays the log up to t (zero: all of it): the instances live
// then, and the server as its start and stop records left it (CONTRACT.md
// §8: not running and no pid before its first start).
func StatusAt(st *store.Store, t time.Time) (*supervisor.Status, error) {
	g, err := store.Replay(st, t)
	if err != nil {
		return nil, err
	}
	s := supervisor.StatusFromRegistry(g)
	s.Running, s.PID, s.Mode, s.Listen = g.Server.Running, g.Server.PID, g.Server.Mode, g.Server.Listen
	s.At = &t
	return s, nil
}

// FilterFromQuery reads worker, since, until and limit.
func FilterFromQuery(q url.Values) (store.Filter, error) {
	var f store.Filter
	f.Worker = q.Get("worker")
	now := time.Now()
	var err error
	if v := q.Get("since"); v != "" {
		if f.Since, err = ParseTime(v, now); err != nil {
			return f, err
		}
	}
	if v := q.Get("until"); v != "" {
		if f.Until, err = ParseTime(v, now); err != nil {
			return f, err
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, fmt.Errorf("--limit %q: want a number ≥ 0", v)
		}
		f.Limit = n
	}
	return f, nil
}

// ParseTime accepts a Go duration (meaning that long before now) or an RFC
// 3339 time.
func ParseTime(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (90s, 2h) nor an RFC 3339 time", v)
}

// Client talks to a running server over its socket.
type Client struct {
	http *http.Client
}

// ErrNotRunning means no server answered on the socket.
var ErrNotRunning = errors.New("no server answers on the socket")

// Dial returns a client when a server answers on root's socket, else
// ErrNotRunning.
func Dial(root string) (*Client, error) {
	sock := layout.New(root, layout.Options{}).Socket()
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", ErrNotRunning, sock)
	}
	conn.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}
	return &Client{http: &http.Client{Transport: tr}}, nil
}

func (c *Client) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := "http://tqserver" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("server: %s", firstLine(string(b)))
	}
	return resp, nil
}

// historyLines calls fn with each JSON line of the server's history. A
// record line starts with {"seq": — the server reports a failure met
// mid-stream as a last line {"error":...}, returned here as the error.
func (c *Client) historyLines(ctx context.Context, q url.Values, fn func(line []byte) error) error {
	resp, err := c.get(ctx, "/v1/history", q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"error":`)) {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(line, &e) == nil {
				return errors.New(e.Error)
			}
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// History streams records from the server to fn.
func (c *Client) History(ctx context.Context, q url.Values, fn func(store.Record) error) error {
	return c.historyLines(ctx, q, func(line []byte) error {
		rec, err := store.DecodeRecord(line)
		if err != nil {
			return fmt.Errorf("history from server: %w", err)
		}
		return fn(rec)
	})
}

// HistoryJSON copies the server's JSON lines to w as they are.
func (c *Client) HistoryJSON(ctx context.Context, q url.Values, w io.Writer) error {
	nl := []byte{'\n'}
	return c.historyLines(ctx, q, func(line []byte) error {
		if _, err := w.Write(line); err != nil {
			return err
		}
		_, err := w.Write(nl)
		return err
	})
}

// Status fetches the status (at may be empty).
func (c *Client) Status(ctx context.Context, at string) (*supervisor.Status, error) {
	q := url.Values{}
	if at != "" {
		q.Set("at", at)
	}
	resp, err := c.get(ctx, "/v1/status", q)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st supervisor.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("status from server: %w", err)
	}
	return &st, nil
}

// Reload asks the server for a change check and waits for the result.
func (c *Client) Reload(ctx context.Context) (events.ReloadResult, error) {
	return c.post(ctx, "/v1/reload", "reload")
}

// Rollback asks the server to swap worker back to its previous good binary
// (reason rollback) and waits for the result.
func (c *Client) Rollback(ctx context.Context, worker string) (events.ReloadResult, error) {
	return c.post(ctx, "/v1/workers/"+url.PathEscape(worker)+"/rollback", "rollback")
}

// Restart asks the server to replace every instance of worker (reason
// operator) and waits for the result. No such worker is an error.
func (c *Client) Restart(ctx context.Context, worker string) (events.ReloadResult, error) {
	return c.post(ctx, "/v1/workers/"+url.PathEscape(worker)+"/restart", "restart")
}

func (c *Client) post(ctx context.Context, path, what string) (events.ReloadResult, error) {
	var res events.ReloadResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://tqserver"+path, nil)
	if err != nil {
		return res, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return res, fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return res, errors.New(e.Error)
		}
		return res, fmt.Errorf("%s: server answered %s: %s", what, resp.Status, firstLine(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("%s result: %w", what, err)
	}
	return res, nil
}

// Serve listens on root's socket (removing a stale one: the caller holds the
// log's file lock, so no other server owns it) and serves h until stop.
func Serve(root string, h http.Handler) (stop func(), err error) {
	sock := layout.New(root, layout.Options{}).Socket()
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	os.Chmod(sock, 0o600)
	stopServe := serve(ln, h)
	return func() {
		stopServe()
		os.Remove(sock)
	}, nil
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
