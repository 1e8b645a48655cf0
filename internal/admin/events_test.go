package admin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "var", "tqserver.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// serveEvents serves the events endpoint of st on a real loopback socket.
func serveEvents(t *testing.T, st *store.Store) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := serve(ln, eventsHandler(st))
	t.Cleanup(stop)
	return ln.Addr().String()
}

func appendN(t *testing.T, st *store.Store, n int, detail string) {
	t.Helper()
	for range n {
		if err := st.Append(&store.Record{Event: "config_reloaded", Detail: detail}); err != nil {
			t.Fatal(err)
		}
	}
}

// rawEvents sends GET /v1/events on a plain connection (receive buffer
// rcvbuf bytes when > 0) and returns it unread.
func rawEvents(t *testing.T, addr, lastID string, rcvbuf int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET /v1/events HTTP/1.0\r\nHost: x\r\n" // no chunking: lines arrive whole
	if lastID != "" {
		req += "Last-Event-ID: " + lastID + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// readIDs reads the stream on c until stop says so or it ends (chunked
// encoding is skipped over: only "id: N" lines count), and returns the ids
// seen and whether the stream ended.
func readIDs(t *testing.T, c net.Conn, timeout time.Duration, stop func(ids []uint64) bool) (ids []uint64, text string, ended bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(c)
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "id: "); ok {
			id, perr := strconv.ParseUint(v, 10, 64)
			if perr != nil {
				t.Fatalf("bad id line %q", line)
			}
			ids = append(ids, id)
			if stop != nil && stop(ids) {
				return ids, sb.String(), false
			}
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("stream neither ended nor reached its goal within %s; ids %d..", timeout, len(ids))
			}
			return ids, sb.String(), true
		}
	}
}

func contiguous(t *testing.T, ids []uint64, from uint64) {
	t.Helper()
	for i, id := range ids {
		if id != from+uint64(i) {
			t.Fatalf("ids not contiguous from %d: position %d is %d (%v…)", from, i, id, ids[:min(len(ids), i+3)])
		}
	}
}

// A client that stops reading never slows appends: once its buffer
// overflows it is disconnected after what was buffered, and its reconnect
// with Last-Event-ID replays every record it missed, in order.
func TestEventsSlowClientIsDisconnected(t *testing.T) {
	old := eventBuffer
	eventBuffer = 8
	t.Cleanup(func() { eventBuffer = old })
	st := openStore(t)
	addr := serveEvents(t, st)
	c := rawEvents(t, addr, "", 4096)
	// Wait until the handler observes the store: the first comment is out.
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("no stream start: %v", err)
		}
		if strings.HasPrefix(line, ": tqserver") {
			break
		}
	}
	// 400 records of 32 KiB: far more than the socket buffers hold, so
	// the handler blocks writing and the observer's buffer overflows.
	detail := strings.Repeat("x", 32<<10)
	const n = 400
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		appendN(t, st, 1, detail)
		if d := time.Since(t0); d > 5*time.Second {
			t.Fatalf("append %d took %s with a stalled client", i+1, d)
		}
	}
	t.Logf("%d appends of 32 KiB with a stalled client: %s", n, time.Since(start))
	// Now read: the stream ends by itself, with contiguous ids from 1.
	ids, text, ended := readIDs(t, &bufConn{Conn: c, r: br}, 30*time.Second, nil)
	if !ended || len(ids) == 0 || len(ids) >= n {
		t.Fatalf("stalled client: ended %v after %d of %d records", ended, len(ids), n)
	}
	if !strings.Contains(text, ": "+errSlowClient.Error()) {
		t.Fatalf("no slow-client comment at the end: %q", text[max(0, len(text)-200):])
	}
	contiguous(t, ids, 1)
	last := ids[len(ids)-1]
	// Reconnect where it stopped: the rest comes from the log.
	c2 := rawEvents(t, addr, strconv.FormatUint(last, 10), 0)
	rest, _, ended := readIDs(t, c2, 30*time.Second, func(ids []uint64) bool { return ids[len(ids)-1] >= n })
	if ended {
		t.Fatalf("replay ended early after %d records", len(rest))
	}
	contiguous(t, rest, last+1)
}

// bufConn reads through r (which already holds bytes read from Conn).
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Records appended while a reconnect replays the log arrive once each, in
// seq order, with no gap between the replay and the live records.
func TestEventsReplayThenLiveHasNoGapOrDuplicate(t *testing.T) {
	st := openStore(t)
	appendN(t, st, 50, "before")
	addr := serveEvents(t, st)
	// 20 records land between the observer's start and the replay (both
	// see them), 30 more while the stream runs.
	var once sync.Once
	old := afterObserve
	afterObserve = func() { once.Do(func() { appendN(t, st, 20, "between") }) }
	t.Cleanup(func() { afterObserve = old })
	var wg sync.WaitGroup
	c := rawEvents(t, addr, "10", 0)
	ids, _, ended := readIDs(t, c, 30*time.Second, func(ids []uint64) bool {
		if ids[len(ids)-1] == 70 {
			wg.Go(func() { appendN(t, st, 30, "after") })
		}
		return ids[len(ids)-1] >= 100
	})
	wg.Wait()
	if ended {
		t.Fatalf("stream ended after %d records", len(ids))
	}
	contiguous(t, ids, 11)
	if len(ids) != 90 {
		t.Fatalf("got %d records, want 90 (11..100)", len(ids))
	}
}

// An idle stream gets a heartbeat comment; a bad Last-Event-ID is 400.
func TestEventsHeartbeatAndBadLastEventID(t *testing.T) {
	old := heartbeat
	heartbeat = 20 * time.Millisecond
	t.Cleanup(func() { heartbeat = old })
	st := openStore(t)
	addr := serveEvents(t, st)
	c := rawEvents(t, addr, "", 0)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("no heartbeat: %v", err)
		}
		if line == ": heartbeat\n" {
			break
		}
	}
	resp, err := http.Get("http://" + addr + "/v1/events?last_event_id=x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `last_event_id "x"`) {
		t.Fatalf("bad last_event_id: %d %q", resp.StatusCode, b)
	}
}

// Stopping the listener ends open streams at once rather than waiting for
// them (the server's shutdown must not hang on a dashboard).
func TestEventsEndOnStop(t *testing.T) {
	st := openStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := serve(ln, eventsHandler(st))
	c := rawEvents(t, ln.Addr().String(), "", 0)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.") || !strings.Contains(line, " 200 ") {
		t.Fatalf("no stream: %q %v", line, err)
	}
	// A record appended just before the stop (the server's server_stop)
	// still reaches the client.
	appendN(t, st, 1, "last words")
	t0 := time.Now()
	stop()
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("stop took %s with a stream open", d)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}
	if !strings.Contains(string(rest), "id: 1\n") {
		t.Fatalf("the last record was not sent before the stream ended: %q", rest)
	}
}
