package devreload

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

const testWait = 5 * time.Second

type sseEvent struct {
	name    string // "" for a comment
	data    string
	comment string
}

type sseConn struct {
	resp   *http.Response
	events chan sseEvent // closed at the end of the stream
	cancel context.CancelFunc
}

// openSSE connects to url and parses its event stream in a goroutine that
// ends with the stream (t.Cleanup cancels the request).
func openSSE(t *testing.T, client *http.Client, url string) *sseConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	c := &sseConn{resp: resp, events: make(chan sseEvent, 256), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				c.events <- sseEvent{comment: strings.TrimSpace(line[1:])}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return c
}

// next returns the next event (comments included when withComments).
func (c *sseConn) next(t *testing.T, withComments bool) sseEvent {
	t.Helper()
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatal("event stream ended, want an event")
			}
			if ev.name == "" && !withComments {
				continue
			}
			return ev
		case <-timer.C:
			t.Fatalf("no event within %v", testWait)
		}
	}
}

// expectEnd waits for the stream to end.
func (c *sseConn) expectEnd(t *testing.T) {
	t.Helper()
	timer := time.NewTimer(testWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return
			}
			if ev.name != "" {
				t.Fatalf("unexpected event %q before end of stream", ev.name)
			}
		case <-timer.C:
			t.Fatalf("stream did not end within %v", testWait)
		}
	}
}

func decode[T any](t *testing.T, ev sseEvent) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(ev.data), &v); err != nil {
		t.Fatalf("event %s data %q: %v", ev.name, ev.data, err)
	}
	return v
}
