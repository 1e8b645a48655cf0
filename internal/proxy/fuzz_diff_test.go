package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

// Differential fuzzing of the engine's HTTP/1.1 readers against net/http's
// (the readers behind the workers and most clients). Whatever the engine
// accepts, net/http must accept and read the same way: same method, target,
// Host, framing, fields, body bytes, trailers, and the same end of the
// message (a disagreement about where a message ends is request
// smuggling). Where the engine refuses what net/http accepts, that is the
// engine being stricter, which is allowed (docs/architecture.md, "Proof:
// fuzzing", lists the kinds). The helpers are in fuzz_diff_helpers_test.go.

// fuzzXFF is the X-Forwarded-For line the engine adds for a client.
const fuzzXFF = "X-Forwarded-For: 192.0.2.1\r\n"

// readOurRequest reads a request head the way the engine's server does;
// n is the head's length (where the body starts).
func readOurRequest(raw string) (r *request, n int, err error) {
	src := strings.NewReader(raw)
	br := bufio.NewReaderSize(src, clientReadBuf)
	head, err := readRequestHead(br, nil, defaultMaxHeaderBytes)
	if err != nil {
		return nil, 0, err
	}
	r = new(request)
	if err := parseRequest(head, r); err != nil {
		return nil, 0, err
	}
	return r, consumed(len(raw), src, br), nil
}

// originTarget is the origin-form of net/http's RequestURI: itself, or for
// an absolute-form target what follows the authority ("/" when empty).
func originTarget(uri string) string {
	if strings.HasPrefix(uri, "/") {
		return uri
	}
	_, rest, _ := strings.Cut(uri, "://")
	i := strings.IndexAny(rest, "/?")
	if i < 0 {
		return "/"
	}
	if rest[i] == '?' {
		return "/" + rest[i:]
	}
	return rest[i:]
}

func FuzzRequestHead(f *testing.F) {
	for _, s := range requestHeadSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		defer failOnPanic(t, raw)
		r, n, err := readOurRequest(raw)
		if err != nil {
			return // the engine may be stricter than net/http
		}
		src := strings.NewReader(raw)
		br := bufio.NewReader(src)
		req, err := netServerRequest(raw, br)
		if err != nil {
			t.Fatalf("engine accepts request %q; net/http's server refuses it: %v", raw, err)
		}
		if m := consumed(len(raw), src, br); m != n {
			t.Fatalf("request %q: the engine's head ends after byte %d, net/http's after byte %d", raw, n, m)
		}
		if req.Method != r.method {
			t.Fatalf("request %q: engine reads method %q, net/http %q", raw, r.method, req.Method)
		}
		if got := originTarget(req.RequestURI); got != string(r.target) {
			t.Fatalf("request %q: engine reads target %q, net/http %q", raw, r.target, got)
		}
		// An absolute-form target with an empty path means "/" (RFC 9112
		// §3.2.2); url.URL leaves the path empty.
		if p := req.URL.Path; p != string(r.path) && !(p == "" && req.URL.Host != "" && string(r.path) == "/") {
			t.Fatalf("request %q: engine routes path %q, net/http's URL.Path is %q", raw, r.path, p)
		}
		if req.Host != string(r.host) {
			t.Fatalf("request %q: engine reads Host %q, net/http %q", raw, r.host, req.Host)
		}
		checkRequestFraming(t, fmt.Sprintf("request %q", raw), r.length, req)
		if req.Close != r.close {
			t.Fatalf("request %q: engine reads close=%v, net/http %v", raw, r.close, req.Close)
		}
		ours := fieldsHeader(r.fields, nil)
		if d := headerDiff(ours, without(req.Header, ours, ownedRequestFields)); d != "" {
			t.Fatalf("request %q: fields differ: %s", raw, d)
		}
		checkForwarded(t, raw, r)
	})
}

// checkRequestFraming compares the engine's body length (-1 chunked) with
// net/http's reading of a request's framing.
func checkRequestFraming(t *testing.T, what string, length int64, req *http.Request) {
	t.Helper()
	chunked := slices.Equal(req.TransferEncoding, []string{"chunked"})
	switch {
	case length < 0 && (!chunked || req.ContentLength != -1):
		t.Fatalf("%s: engine reads a chunked body, net/http Transfer-Encoding %q, length %d", what, req.TransferEncoding, req.ContentLength)
	case length >= 0 && (len(req.TransferEncoding) > 0 || req.ContentLength != length):
		t.Fatalf("%s: engine reads a %d-byte body, net/http Transfer-Encoding %q, length %d", what, length, req.TransferEncoding, req.ContentLength)
	}
}

// checkForwarded reads the head the engine forwards for r with net/http's
// server: it must be accepted and read as the engine meant it.
func checkForwarded(t *testing.T, raw string, r *request) {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	writeRequestHead(bw, r, []byte(fuzzXFF), r.length)
	bw.Flush()
	fwd := out.String()
	req, err := netServerRequest(fwd, bufio.NewReader(strings.NewReader(fwd)))
	if err != nil {
		t.Fatalf("request %q: net/http refuses the head the engine forwards, %q: %v", raw, fwd, err)
	}
	if req.Method != r.method || req.RequestURI != string(r.target) || req.Host != string(r.host) {
		t.Fatalf("request %q: forwarded %q reads as %s %s Host %q, not %s %s Host %q",
			raw, fwd, req.Method, req.RequestURI, req.Host, r.method, r.target, r.host)
	}
	if req.URL.Path != string(r.path) {
		t.Fatalf("request %q: forwarded %q: the worker's URL.Path %q, the engine routed %q", raw, fwd, req.URL.Path, r.path)
	}
	checkRequestFraming(t, fmt.Sprintf("request %q forwarded as %q", raw, fwd), r.length, req)
	if req.Close {
		t.Fatalf("request %q: forwarded %q asks the worker to close", raw, fwd)
	}
	ours := fieldsHeader(r.fields, func(k []byte) bool { return r.named(k) })
	if d := headerDiff(ours, without(req.Header, ours, ownedRequestFields)); d != "" {
		t.Fatalf("request %q: forwarded %q: fields differ: %s", raw, fwd, d)
	}
	want := map[string][]string{
		"X-Forwarded-For":   {"192.0.2.1"},
		"X-Forwarded-Host":  {string(r.host)},
		"X-Forwarded-Proto": {"http"},
	}
	if r.teTrail {
		want["Te"] = []string{"trailers"}
	}
	if r.upgrade != nil {
		want["Upgrade"] = []string{string(r.upgrade)}
		want["Connection"] = []string{"Upgrade"}
	}
	for k, v := range want {
		if !slices.Equal(req.Header[k], v) {
			t.Fatalf("request %q: forwarded %q: %s is %q, want %q", raw, fwd, k, req.Header[k], v)
		}
	}
	if r.trailer != nil {
		if got, want := headerNames(req.Trailer), listNames(string(r.trailer)); !slices.Equal(got, want) {
			t.Fatalf("request %q: forwarded %q: net/http expects trailers %q, the engine declared %q", raw, fwd, got, want)
		}
	}
}

// failOnPanic, deferred, turns a panic on input into a failure of that
// input, so the package's other tests still run.
func failOnPanic(t *testing.T, input string) {
	if p := recover(); p != nil {
		t.Fatalf("panic on input %s: %v\n%s", short(input), p, debug.Stack())
	}
}

// short quotes b for a failure message, the middle of a long one left out.
func short[T string | []byte](b T) string {
	const keep = 120
	if len(b) <= 2*keep {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q...(%d bytes)...%q", b[:keep], len(b)-2*keep, b[len(b)-keep:])
}

// chunkedRequestHead and chunkedResponseHead frame the fuzzed bodies.
const (
	chunkedRequestHead  = "POST /upload HTTP/1.1\r\nHost: h\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n"
	chunkedResponseHead = "HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n"
	nextRequest         = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
	nextResponse        = "HTTP/1.1 204 No Content\r\n\r\n"
)

func FuzzRequestBody(f *testing.F) {
	for _, s := range chunkedBodySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		defer failOnPanic(t, body)
		diffChunked(t, chunkedRequestHead, nextRequest, body, false)
	})
}

func FuzzResponseBody(f *testing.F) {
	for _, s := range chunkedBodySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		defer failOnPanic(t, body)
		diffChunked(t, chunkedResponseHead, nextResponse, body, true)
	})
}

// diffChunked reads body (after head) with the engine's chunkedReader and
// with net/http. If the engine accepts it, net/http must read the same
// data and trailer fields and stop at the same byte; and the body as the
// engine re-frames it must read back the same through both.
func diffChunked(t *testing.T, head, next, body string, isResponse bool) {
	t.Helper()
	ours := ourChunked(body)
	if ours.err != nil {
		if !isFraming(ours.err) && ours.err != io.ErrUnexpectedEOF {
			t.Fatalf("body %s: engine fails with %v, neither a framing error nor an unexpected EOF", short(body), ours.err)
		}
		return // the engine may be stricter than net/http
	}
	theirs := netChunked(head, body, isResponse)
	if theirs.err != nil {
		t.Fatalf("engine accepts chunked body %s (data %s, %d bytes consumed); net/http refuses it: %v",
			short(body), short(ours.data), ours.consumed, theirs.err)
	}
	if !bytes.Equal(ours.data, theirs.data) {
		t.Fatalf("body %s: engine reads data %s, net/http %s", short(body), short(ours.data), short(theirs.data))
	}
	if ours.consumed != theirs.consumed {
		t.Fatalf("body %s: the engine's body ends after byte %d, net/http's after byte %d: the next message starts at %s for one, %s for the other",
			short(body), ours.consumed, theirs.consumed, short(body[ours.consumed:]), short(body[theirs.consumed:]))
	}
	for k, v := range ours.trailer {
		if !slices.Equal(theirs.trailer[k], v) {
			t.Fatalf("body %s: trailer %s: engine passes on %q, net/http reads %q", short(body), k, v, theirs.trailer[k])
		}
	}
	for k, v := range theirs.trailer {
		if _, ok := ours.trailer[k]; !ok && !slices.Contains(droppedTrailerFields, k) {
			t.Fatalf("body %s: trailer %s: net/http reads %q, the engine drops it", short(body), k, v)
		}
	}

	enc := string(reencode(ours))
	for _, rd := range []struct {
		name string
		res  chunkedResult
	}{
		{"net/http", netChunked(head, enc+next, isResponse)},
		{"the engine", ourChunked(enc + next)},
	} {
		got := rd.res
		switch {
		case got.err != nil:
			t.Fatalf("body %s re-framed by the engine as %s: %s refuses it: %v", short(body), short(enc), rd.name, got.err)
		case !bytes.Equal(got.data, ours.data):
			t.Fatalf("body %s re-framed as %s: %s reads data %s, want %s", short(body), short(enc), rd.name, short(got.data), short(ours.data))
		case got.consumed != len(enc):
			t.Fatalf("body %s re-framed as %s: %s stops after %d bytes, not at the next message", short(body), short(enc), rd.name, got.consumed)
		}
		if d := headerDiff(ours.trailer, got.trailer); d != "" {
			t.Fatalf("body %s re-framed as %s: trailers differ (%s): %s", short(body), short(enc), rd.name, d)
		}
	}
}

func FuzzResponseHead(f *testing.F) {
	for _, s := range responseHeadSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		defer failOnPanic(t, raw)
		var resp respHead
		src := strings.NewReader(raw)
		br := bufio.NewReaderSize(src, 8<<10)
		if _, err := readResponseHead(br, nil, &resp); err != nil {
			return // the engine may be stricter than net/http
		}
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			nsrc := strings.NewReader(raw)
			nbr := bufio.NewReader(nsrc)
			nr, err := http.ReadResponse(nbr, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("engine accepts response %q; net/http refuses it (to a %s): %v", raw, method, err)
			}
			if n, m := consumed(len(raw), src, br), consumed(len(raw), nsrc, nbr); n != m {
				t.Fatalf("response %q: the engine's head ends after byte %d, net/http's after byte %d", raw, n, m)
			}
			checkResponse(t, raw, method, &resp, nr)
		}
	})
}

// checkResponse compares the engine's reading of a response head to a
// request with method with net/http's.
func checkResponse(t *testing.T, raw, method string, resp *respHead, nr *http.Response) {
	t.Helper()
	if nr.StatusCode != resp.code {
		t.Fatalf("response %q: engine reads status %d, net/http %d", raw, resp.code, nr.StatusCode)
	}
	if chunked := slices.Equal(nr.TransferEncoding, []string{"chunked"}); chunked != resp.chunked {
		t.Fatalf("response %q to %s: engine reads chunked=%v, net/http Transfer-Encoding %q", raw, method, resp.chunked, nr.TransferEncoding)
	}
	// The body as forward.go decides it: none, chunked, a length, or up to
	// the close; and whether the connection stays open after it.
	noBody := method == http.MethodHead || bodiless(resp.code)
	closeDelimited := !noBody && !resp.chunked && resp.length < 0
	var wantLength int64
	switch {
	case method == http.MethodHead:
		wantLength = resp.length // net/http reports the Content-Length of a HEAD
	case noBody:
		wantLength = 0
	default:
		wantLength = resp.length
	}
	if nr.ContentLength != wantLength {
		t.Fatalf("response %q to %s: engine reads length %d, net/http %d", raw, method, wantLength, nr.ContentLength)
	}
	if wantClose := !resp.keepAlive || closeDelimited; nr.Close != wantClose {
		t.Fatalf("response %q to %s: engine closes the connection after it: %v, net/http: %v", raw, method, wantClose, nr.Close)
	}
	ours := fieldsHeader(resp.fields, nil)
	if d := headerDiff(ours, without(nr.Header, ours, ownedResponseFields)); d != "" {
		t.Fatalf("response %q: fields differ: %s", raw, d)
	}
	if resp.trailer != nil {
		if got, want := headerNames(nr.Trailer), listNames(string(resp.trailer)); !slices.Equal(got, want) {
			t.Fatalf("response %q: net/http expects trailers %q, the engine passes on the declaration %q", raw, got, want)
		}
	}
}
