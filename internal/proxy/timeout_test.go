package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A worker that never answers must not hold the proxy's request forever.
func TestHungWorkerTimesOut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	log, _ := testLogger(t)
	p := New(Options{Logger: log, WorkerTimeout: 200 * time.Millisecond})
	p.Swap(NewTable([]Route{{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}}))
	srv := startProxy(t, p)
	start := time.Now()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "did not answer in time") {
		t.Fatalf("hung worker: %d %q", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}
