package devreload

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writesHandler answers with the given status, headers and body writes.
func writesHandler(status int, hdr map[string]string, writes ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		if status != 0 {
			w.WriteHeader(status)
		}
		for _, s := range writes {
			if _, err := io.WriteString(w, s); err != nil {
				return
			}
		}
	})
}

// serveRecorded answers one request for /page from h through the engine.
func serveRecorded(t *testing.T, h http.Handler, method string) *http.Response {
	t.Helper()
	srv := newDevServer(t, h, NewHub())
	req, _ := http.NewRequest(method, srv.URL+"/page", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRewriteInjectsIntoHTML(t *testing.T) {
	const page = "<!doctype html><html><body><h1>Hi</h1></body></html>"
	const want = "<!doctype html><html><body><h1>Hi</h1>" + ScriptTag + "</body></html>"
	tests := []struct {
		name   string
		ct     string
		writes []string
		want   string
	}{
		{"one write", "text/html; charset=utf-8", []string{page}, want},
		{"no charset", "text/html", []string{page}, want},
		{"mixed-case media type", "Text/HTML; charset=UTF-8", []string{page}, want},
		{"tag split across writes", "text/html", []string{"<html><body>x</bo", "dy></html>"},
			"<html><body>x" + ScriptTag + "</body></html>"},
		{"tag split after <", "text/html", []string{"<html><body>x<", "/body></html>"},
			"<html><body>x" + ScriptTag + "</body></html>"},
		{"upper case", "text/html", []string{"<HTML><BODY>x</BODY></HTML>"},
			"<HTML><BODY>x" + ScriptTag + "</BODY></HTML>"},
		{"mixed case split", "text/html", []string{"<p>x</B", "oDy>"}, "<p>x" + ScriptTag + "</BoDy>"},
		{"only the first tag", "text/html", []string{"<body>a</body>b</body></html>"},
			"<body>a" + ScriptTag + "</body>b</body></html>"},
		{"no body tag: before </html>", "text/html", []string{"<html><p>x</p></HTML>"},
			"<html><p>x</p>" + ScriptTag + "</HTML>"},
		{"no closing tags: appended", "text/html", []string{"<p>fragment", "</bo"},
			"<p>fragment</bo" + ScriptTag},
		{"near misses are not tags", "text/html", []string{"</bod></bodyx></htm>"},
			"</bod></bodyx></htm>" + ScriptTag},
		{"empty body gets nothing", "text/html", nil, ""},
		{"no content type: sniffed as HTML", "", []string{"<!DOCTYPE html><html><body>s</body></html>"},
			"<!DOCTYPE html><html><body>s" + ScriptTag + "</body></html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.ct != "" {
				hdr["Content-Type"] = tt.ct
			}
			hdr["Content-Length"] = strconv.Itoa(len(strings.Join(tt.writes, "")))
			if tt.ct == "" {
				delete(hdr, "Content-Length")
			}
			resp := serveRecorded(t, writesHandler(200, hdr, tt.writes...), http.MethodGet)
			if got := readBody(t, resp); got != tt.want {
				t.Errorf("body\n got %q\nwant %q", got, tt.want)
			}
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
			if len(tt.writes) > 0 {
				if cl := resp.Header.Get("Content-Length"); cl != "" {
					t.Errorf("Content-Length %q kept on injected HTML", cl)
				}
			}
			if tt.ct == "" && resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
				t.Errorf("sniffed Content-Type = %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

// Every split of a page into two or three writes gives the same result.
func TestRewriteInjectsAtEverySplit(t *testing.T) {
	const page = "<html><head></head><body><p>hello</p></BODY></html>\n"
	want := strings.Replace(page, "</BODY>", ScriptTag+"</BODY>", 1)
	for i := 0; i <= len(page); i++ {
		for j := i; j <= len(page); j++ {
			resp := serveRecorded(t, writesHandler(0, map[string]string{"Content-Type": "text/html"},
				page[:i], page[i:j], page[j:]), http.MethodGet)
			if got := readBody(t, resp); got != want {
				t.Fatalf("split %d,%d: got %q", i, j, got)
			}
		}
	}
	// And one byte per write.
	writes := strings.Split(page, "")
	if got := readBody(t, serveRecorded(t, writesHandler(200, map[string]string{"Content-Type": "text/html"}, writes...), http.MethodGet)); got != want {
		t.Fatalf("byte-wise: got %q", got)
	}
}

func TestRewriteLeavesOtherResponsesAlone(t *testing.T) {
	const html = "<html><body>x</body></html>"
	png := "\x89PNG\r\n\x1a\n</body></html>\x00\x01"
	tests := []struct {
		name   string
		method string
		status int
		hdr    map[string]string
		body   string
	}{
		{"json", "GET", 200, map[string]string{"Content-Type": "application/json"}, `{"html":"</body>"}`},
		{"css", "GET", 200, map[string]string{"Content-Type": "text/css; charset=utf-8"}, "body{}/*</body>*/"},
		{"event stream", "GET", 200, map[string]string{"Content-Type": "text/event-stream"}, "data: </body>\n\n"},
		{"image", "GET", 200, map[string]string{"Content-Type": "image/png"}, png},
		{"sniffed non-HTML", "GET", 200, nil, "plain text </body>"},
		{"404 html", "GET", 404, map[string]string{"Content-Type": "text/html"}, html},
		{"500 html", "GET", 500, map[string]string{"Content-Type": "text/html; charset=utf-8"}, html},
		{"206 html", "GET", 206, map[string]string{"Content-Type": "text/html", "Content-Range": "bytes 0-26/100"}, html},
		{"200 with content-range", "GET", 200, map[string]string{"Content-Type": "text/html", "Content-Range": "bytes 0-26/27"}, html},
		{"gzip html", "GET", 200, map[string]string{"Content-Type": "text/html", "Content-Encoding": "gzip"}, "\x1f\x8b</body>"},
		{"head html", "HEAD", 200, map[string]string{"Content-Type": "text/html"}, html},
		{"post html", "POST", 200, map[string]string{"Content-Type": "text/html"}, html},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{"Content-Length": strconv.Itoa(len(tt.body)), "ETag": `"v1"`}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			resp := serveRecorded(t, writesHandler(tt.status, hdr, tt.body), tt.method)
			want := tt.body
			if tt.method == http.MethodHead {
				want = "" // a HEAD answer has none, on the wire
			}
			if got := readBody(t, resp); got != want {
				t.Errorf("body changed\n got %q\nwant %q", got, want)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got, want := resp.Header.Get("Content-Length"), strconv.Itoa(len(tt.body)); got != want {
				t.Errorf("Content-Length %q, want %q", got, want)
			}
		})
	}
}

// A streamed HTML page reaches the client chunk by chunk: the handler does
// not finish until the client has read its first chunk.
func TestRewriteStreamsAndFlushes(t *testing.T) {
	for _, tc := range []struct{ ct, first, rest, want string }{
		{"text/html", "<!doctype html><html><body><p>first chunk</p>\n", "<p>second</p></body></html>",
			"<!doctype html><html><body><p>first chunk</p>\n<p>second</p>" + ScriptTag + "</body></html>"},
		{"text/event-stream", "data: first chunk\n\n", "data: second\n\n", "data: first chunk\n\ndata: second\n\n"},
	} {
		t.Run(tc.ct, func(t *testing.T) {
			gotFirst := make(chan struct{})
			handlerErr := make(chan string, 1)
			srv := newDevServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ct)
				io.WriteString(w, tc.first)
				if err := http.NewResponseController(w).Flush(); err != nil {
					handlerErr <- "flush: " + err.Error()
					return
				}
				select {
				case <-gotFirst:
				case <-time.After(testWait):
					handlerErr <- "the client never received the first chunk"
					return
				}
				io.WriteString(w, tc.rest)
				handlerErr <- ""
			}), NewHub())
			defer srv.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 2*testWait)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/", nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			buf := make([]byte, len(tc.first))
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				t.Fatalf("reading first chunk: %v", err)
			}
			if string(buf) != tc.first {
				t.Fatalf("first chunk %q", buf)
			}
			close(gotFirst)
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if msg := <-handlerErr; msg != "" {
				t.Fatal(msg)
			}
			if got := string(buf) + string(rest); got != tc.want {
				t.Fatalf("body\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// hijackEcho upgrades the connection by hijacking it and echoes one line.
func hijackEcho(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html") // must not matter
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			http.Error(w, err.Error(), 500)
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(testWait))
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		brw.WriteString("echo " + line)
		brw.Flush()
	})
}

func dialUpgrade(t *testing.T, addr, path string, upgradeHeaders bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testWait))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if upgradeHeaders {
		req += "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "echo ping\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
}

func TestRewriteLeavesUpgradesAlone(t *testing.T) {
	srv := newDevServer(t, hijackEcho(t), NewHub())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	dialUpgrade(t, addr, "/ws", true)
}

// Through the engine in front of a worker (as tqserver runs dev mode): HTML
// from the worker is injected, JSON keeps its bytes and length, and
// WebSocket upgrades pass.
func TestRewriteBehindTheEngine(t *testing.T) {
	const html = "<html><body>backend</body></html>"
	const js = `{"a":[1,2,3],"s":"</body>"}`
	mux := http.NewServeMux()
	mux.Handle("/", writesHandler(200, map[string]string{"Content-Type": "text/html; charset=utf-8"}, html))
	mux.Handle("/api", writesHandler(200, map[string]string{"Content-Type": "application/json"}, js))
	mux.Handle("/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hijackEcho(t).ServeHTTP(w, r)
	}))
	front := newDevServer(t, mux, NewHub())
	defer front.Close()

	resp, err := front.Client().Get(front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readBody(t, resp), strings.Replace(html, "</body>", ScriptTag+"</body>", 1); got != want {
		t.Errorf("html: got %q, want %q", got, want)
	}
	resp, err = front.Client().Get(front.URL + "/api")
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != int64(len(js)) {
		t.Errorf("json Content-Length %d, want %d", resp.ContentLength, len(js))
	}
	if got := readBody(t, resp); !bytes.Equal([]byte(got), []byte(js)) {
		t.Errorf("json changed: %q", got)
	}
	dialUpgrade(t, strings.TrimPrefix(front.URL, "http://"), "/ws", true)
}
