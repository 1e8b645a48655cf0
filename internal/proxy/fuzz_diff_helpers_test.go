package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"sort"
	"strings"
)

// The oracle side of the differential fuzz targets (fuzz_diff_test.go):
// net/http's readers, driven the way net/http's server and Transport drive
// them, and the comparisons. Everything here is synchronous: no
// goroutines, no network.

// netServerRequest reads one request as net/http's server does:
// http.ReadRequest, then the checks (*conn).readRequest adds on top of it
// (net/http/server.go): HTTP/1.x only, Host required from HTTP/1.1 on,
// and a well-formed Host. br reads raw from its start; http.ReadRequest
// drops the Host fields from the header, so they are read from raw again
// with net/textproto, as (*conn).readRequest sees them.
func netServerRequest(raw string, br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	if req.ProtoMajor != 1 {
		return nil, errors.New("unsupported protocol version")
	}
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, fmt.Errorf("request line read by http.ReadRequest but not by textproto: %w", err)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("head read by http.ReadRequest but not by textproto: %w", err)
	}
	hosts, haveHost := mh["Host"]
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && req.Method != "CONNECT" {
		return nil, errors.New("missing required Host header")
	}
	if len(hosts) == 1 && !netValidHost(hosts[0]) {
		return nil, errors.New("malformed Host header")
	}
	return req, nil
}

// netValidHost is httpguts.ValidHostHeader (golang.org/x/net, vendored in
// the standard library and not importable): the bytes any part of a Host
// may hold.
func netValidHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && !strings.ContainsRune("!$%&'()*+,-.:;=[]_~", rune(c)) {
			return false
		}
	}
	return true
}

// consumed is how many bytes of a message of total bytes a reader took
// from src through br.
func consumed(total int, src *strings.Reader, br *bufio.Reader) int {
	return total - src.Len() - br.Buffered()
}

// ownedRequestFields are the request fields the engine deliberately does
// not forward as they came (framing, routing, hop-by-hop, and the
// forwarding fields it sets fresh at the edge); every other field must
// reach the worker unchanged.
var ownedRequestFields = []string{
	"Host", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Trailer", "Upgrade",
	"Expect", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
}

// ownedResponseFields are the response fields the engine reads and frames
// itself instead of passing them on as fields.
var ownedResponseFields = []string{
	"Transfer-Encoding", "Connection", "Te", "Trailer", "Upgrade", "Keep-Alive",
	"Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
}

// droppedTrailerFields are the trailer fields the engine does not pass on
// (RFC 9110 §6.5.1: fields that frame, route or authenticate a message).
var droppedTrailerFields = append([]string{
	"Content-Type", "Content-Encoding", "Content-Range", "Authorization", "Set-Cookie", "Cookie",
	"Cache-Control", "Max-Forwards",
}, ownedRequestFields...)

// fieldsHeader groups the engine's fields by canonical name, values in
// order, skipping those skip reports.
func fieldsHeader(fs []field, skip func(k []byte) bool) http.Header {
	h := http.Header{}
	for _, f := range fs {
		if skip != nil && skip(f.k) {
			continue
		}
		k := http.CanonicalHeaderKey(string(f.k))
		h[k] = append(h[k], string(f.v))
	}
	return h
}

// trailerHeader parses the engine's passed-on trailer ("name: value\r\n"
// lines) into a header.
func trailerHeader(b []byte) (http.Header, error) {
	h := http.Header{}
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte("\r\n"))
		if !ok {
			return nil, fmt.Errorf("trailer line %q without CRLF", line)
		}
		k, v, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			return nil, fmt.Errorf("trailer line %q without \": \"", line)
		}
		ck := http.CanonicalHeaderKey(string(k))
		h[ck] = append(h[ck], string(v))
		b = rest
	}
	return h, nil
}

// without returns a copy of h without the names in drop, and without the
// Cache-Control net/http invents for "Pragma: no-cache" when ours has no
// Cache-Control (fixPragmaCacheControl in net/http).
func without(h, ours http.Header, drop []string) http.Header {
	out := http.Header{}
	for k, vv := range h {
		if !slices.Contains(drop, k) {
			out[k] = vv
		}
	}
	if p := ours["Pragma"]; len(p) > 0 && p[0] == "no-cache" && ours["Cache-Control"] == nil &&
		slices.Equal(out["Cache-Control"], []string{"no-cache"}) {
		delete(out, "Cache-Control")
	}
	return out
}

// headerDiff describes how got differs from want ("" when equal): names
// compared canonically, values exactly and in order.
func headerDiff(want, got http.Header) string {
	var names []string
	for k := range want {
		names = append(names, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		if !slices.Equal(want[k], got[k]) {
			fmt.Fprintf(&b, "%s: engine %q, net/http %q; ", k, want[k], got[k])
		}
	}
	return b.String()
}

// listNames splits a field-name list (a Trailer value) the way net/http
// does: comma-separated, trimmed, empty elements skipped, canonicalized.
func listNames(v string) []string {
	var out []string
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.Trim(e, " \t"); e != "" {
			out = append(out, http.CanonicalHeaderKey(e))
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func headerNames(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// chunkedResult is what a reader made of a chunked body.
type chunkedResult struct {
	data     []byte
	pieces   [][]byte    // the engine's reads, one chunk each when re-encoded
	trailer  http.Header // the engine: the fields it passes on; net/http: all it read
	rawTrail []byte      // the engine's trailer lines, for writeLastChunk
	consumed int         // bytes of the body taken from the stream
	err      error
}

// ourChunked reads body (the bytes after a head) with the engine's
// chunkedReader, the way the engine does (an 8 KiB bufio.Reader), in reads
// of a size that varies with the input.
func ourChunked(body string) chunkedResult {
	src := strings.NewReader(body)
	br := bufio.NewReaderSize(src, 8<<10)
	var cr chunkedReader
	cr.reset(br)
	buf := make([]byte, 1+len(body)%13)
	var res chunkedResult
	for i := 0; i <= len(body)+2; i++ {
		n, err := cr.Read(buf)
		if n > 0 {
			res.data = append(res.data, buf[:n]...)
			res.pieces = append(res.pieces, bytes.Clone(buf[:n]))
		}
		if err == io.EOF {
			res.rawTrail = bytes.Clone(cr.trailer)
			res.trailer, res.err = trailerHeader(cr.trailer)
			res.consumed = consumed(len(body), src, br)
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		if n == 0 {
			res.err = errors.New("chunkedReader.Read returned no data and no error")
			return res
		}
	}
	res.err = fmt.Errorf("chunkedReader did not end after %d reads of a %d-byte body", len(body)+3, len(body))
	return res
}

// netChunked reads head+body with net/http (http.ReadRequest, or
// http.ReadResponse for a GET when isResponse) and the whole body;
// consumed counts the body bytes its reader took.
func netChunked(head, body string, isResponse bool) chunkedResult {
	raw := head + body
	src := strings.NewReader(raw)
	br := bufio.NewReader(src)
	var rc io.ReadCloser
	var trailer func() http.Header
	if isResponse {
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			return chunkedResult{err: fmt.Errorf("head: %w", err)}
		}
		rc, trailer = resp.Body, func() http.Header { return resp.Trailer }
	} else {
		req, err := netServerRequest(raw, br)
		if err != nil {
			return chunkedResult{err: fmt.Errorf("head: %w", err)}
		}
		rc, trailer = req.Body, func() http.Header { return req.Trailer }
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		return chunkedResult{data: data, err: err}
	}
	res := chunkedResult{data: data, trailer: http.Header{}, consumed: consumed(len(raw), src, br) - len(head)}
	for k, vv := range trailer() {
		if vv != nil { // declared in Trailer but never sent
			res.trailer[k] = vv
		}
	}
	return res
}

// reencode frames r's data and trailer the way the engine forwards a
// chunked body: one writeChunk per read, then writeLastChunk.
func reencode(r chunkedResult) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	for _, p := range r.pieces {
		writeChunk(bw, p)
	}
	writeLastChunk(bw, r.rawTrail)
	bw.Flush()
	return out.Bytes()
}
