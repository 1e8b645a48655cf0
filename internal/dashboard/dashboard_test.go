package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The page is served at / only, as HTML that follows /v1/events.
func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(b), "new EventSource(\"/v1/events") || !strings.Contains(string(b), "/v1/status") {
		t.Fatalf("GET /: %d %q", resp.StatusCode, b)
	}
	resp, err = http.Get(srv.URL + "/nosuch.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("GET /nosuch.js: %d, want 404", resp.StatusCode)
	}
}
