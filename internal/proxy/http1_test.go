package proxy

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// Found by FuzzResponseHead: a status line of exactly 12 bytes ("HTTP/1.1
// 200", no reason) indexed past its end, and a worker could panic the
// connection's goroutine with it.
func TestResponseHeadShortStatusLine(t *testing.T) {
	var resp respHead
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 204\r\n\r\n"))
	if _, err := readResponseHead(br, nil, &resp); err != nil || resp.code != 204 {
		t.Fatalf("code %d, %v", resp.code, err)
	}
	for _, bad := range []string{"HTTP/1.1 20\r\n\r\n", "HTTP/1.1 200x\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n"} {
		if _, err := readResponseHead(bufio.NewReader(strings.NewReader(bad)), nil, &resp); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Found by the differential fuzzers: these are refused by net/http, so the
// engine must not let them through either.
func TestGrammarAgreesWithNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name, head string
	}{
		{"trailer declares Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n"},
		{"trailer declares Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x, transfer-encoding\r\n\r\n"},
		{"empty IP literal", "GET http://[]:/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"IPv4 in brackets", "GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n"},
		{"unclosed bracket", "GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"escape in the authority", "GET http://a%41b/ HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"escape in Host", "GET / HTTP/1.1\r\nHost: a%41b\r\n\r\n"},
		{"letters in the port", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n"},
		{"userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"},
	} {
		var r request
		head, err := readRequestHead(bufio.NewReader(strings.NewReader(tc.head)), nil, 1<<16)
		if err == nil {
			err = parseRequest(head, &r)
		}
		if err == nil {
			t.Errorf("%s: %q accepted", tc.name, tc.head)
		}
	}
	for _, ok := range []string{"a", "a:80", "[::1]:8080", "[::1]", "example.com", "a-b.c_d~e"} {
		if !validAuthority([]byte(ok)) {
			t.Errorf("Host %q refused", ok)
		}
	}
}

func readChunked(body string) ([]byte, error) {
	var cr chunkedReader
	cr.reset(bufio.NewReaderSize(strings.NewReader(body), 8<<10))
	return io.ReadAll(&cr)
}

// A chunked body may not carry unbounded framing for little data (net/http's
// rule: 16 bytes per chunk plus twice its data, 16 KiB beyond that), and a
// trailer section must end within 4 KiB.
func TestChunkedLimits(t *testing.T) {
	ext := ";e=" + strings.Repeat("x", 100)
	var many strings.Builder
	for range 400 {
		many.WriteString("1" + ext + "\r\nX\r\n")
	}
	if _, err := readChunked(many.String() + "0\r\n\r\n"); err == nil || !isFraming(err) {
		t.Fatalf("400 one-byte chunks with 100-byte extensions: %v", err)
	}
	var fine strings.Builder
	for range 400 {
		fine.WriteString("1\r\nX\r\n")
	}
	if data, err := readChunked(fine.String() + "0\r\n\r\n"); err != nil || len(data) != 400 {
		t.Fatalf("400 one-byte chunks: %d bytes, %v", len(data), err)
	}
	// Found by FuzzResponseBody: 16 hex digits overflowed to a negative
	// size, read as the last chunk.
	if _, err := readChunked("8000000000000000\r\n\r\n"); err == nil || !isFraming(err) {
		t.Fatalf("a size of 2^63: %v", err)
	}
	long := "0\r\nX-T: " + strings.Repeat("t", 4100) + "\r\n\r\n"
	if _, err := readChunked(long); err == nil || !isFraming(err) {
		t.Fatalf("a 4 KiB trailer: %v", err)
	}
}
