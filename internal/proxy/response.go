package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
)

// maxResponseHead bounds a worker's response head.
const maxResponseHead = 256 << 10

var errMalformed = errors.New("malformed response from worker")

// respHead is one response head read from a worker. fields are the
// end-to-end fields in order (hop-by-hop ones and the framing headers left
// out), as views into the connection's head buffer: valid until the next
// head is read on that connection.
type respHead struct {
	code      int
	http10    bool
	length    int64 // -1 unknown
	chunked   bool
	keepAlive bool
	hasDate   bool
	gotBytes  bool     // anything at all was read for this response
	trailer   []byte   // the Trailer value, when chunked
	connOpts  [][]byte // Connection options: more fields to drop
	upgrade   []byte   // the Upgrade value (101 only)
	fields    []field
	spans     [][2]int // scratch: field line bounds in the head buffer
}

// named reports whether the response's Connection header named field k.
func (resp *respHead) named(k []byte) bool {
	for _, t := range resp.connOpts {
		if foldEqBytes(t, k) {
			return true
		}
	}
	return false
}

// get returns the value of the first field named k (lower case), or "".
func (resp *respHead) get(k string) string {
	for _, f := range resp.fields {
		if foldEq(f.k, k) && !resp.named(f.k) {
			return string(f.v)
		}
	}
	return ""
}

// readResponseHead reads one response head from br into resp, using buf
// as the head buffer (returned, possibly grown).
func readResponseHead(br *bufio.Reader, buf []byte, resp *respHead) ([]byte, error) {
	*resp = respHead{length: -1, fields: resp.fields[:0], connOpts: resp.connOpts[:0], spans: resp.spans[:0]}
	buf = buf[:0]
	line, err := readLine(br, buf, maxResponseHead)
	if len(line) > 0 || br.Buffered() > 0 {
		resp.gotBytes = true
	}
	if err != nil {
		return buf, headErr(err)
	}
	// status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
		len(line) > 12 && line[12] != ' ' {
		return line, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	code := 0
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return line, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
		}
		code = code*10 + int(d-'0')
	}
	for _, c := range line[min(len(line), 13):] {
		if byteClass[c]&clsValue == 0 {
			return line, fmt.Errorf("%w: control byte in the reason phrase", errMalformed)
		}
	}
	if code < 100 || code > 599 {
		return line, fmt.Errorf("%w: status %d", errMalformed, code)
	}
	resp.code = code
	resp.http10 = line[7] == '0'
	keepAlive := !resp.http10

	// Field lines go into buf one after another; their views stay valid
	// because buf only grows (it is sized up front for the limit).
	buf = line[:0]
	haveLength, sawClose := false, false
	spans := resp.spans
	for n := 0; ; n++ {
		start := len(buf)
		buf, err = readLine(br, buf, maxResponseHead)
		if err != nil {
			return buf, headErr(err)
		}
		if len(buf) == start {
			break
		}
		if n >= maxFields {
			return buf, fmt.Errorf("%w: %v", errMalformed, errTooManyFields)
		}
		spans = append(spans, [2]int{start, len(buf)})
	}
	resp.spans = spans
	for _, sp := range spans {
		f, err := parseField(buf[sp[0]:sp[1]])
		if err != nil {
			return buf, fmt.Errorf("%w: %v", errMalformed, err)
		}
		switch headerKind(f.k) {
		case hdrContentLength:
			n, ok := parseLength(f.v)
			if !ok || haveLength {
				return buf, fmt.Errorf("%w: Content-Length %q", errMalformed, truncate(f.v))
			}
			haveLength = true
			resp.length = n
			resp.fields = append(resp.fields, f)
		case hdrTransferEncoding:
			if resp.chunked || !foldEq(f.v, "chunked") {
				return buf, fmt.Errorf("%w: Transfer-Encoding %q", errMalformed, truncate(f.v))
			}
			resp.chunked = true
		case hdrConnection:
			for t := range tokens(f.v) {
				switch {
				case !isToken(t):
					return buf, fmt.Errorf("%w: Connection %q", errMalformed, truncate(f.v))
				case foldEq(t, "close"):
					sawClose = true
				case foldEq(t, "keep-alive"):
					if resp.http10 {
						keepAlive = true
					}
				case foldEq(t, "upgrade"):
				default:
					resp.connOpts = append(resp.connOpts, t)
				}
			}
		case hdrTrailer:
			if err := checkTrailerDecl(f.v); err != nil {
				return buf, fmt.Errorf("%w: %v", errMalformed, err)
			}
			resp.trailer = f.v
		case hdrUpgrade:
			resp.upgrade = f.v
		case hdrTE, hdrKeepAlive, hdrProxyHop:
		case hdrDate:
			resp.hasDate = true
			resp.fields = append(resp.fields, f)
		default:
			resp.fields = append(resp.fields, f)
		}
	}
	if resp.chunked && haveLength {
		return buf, fmt.Errorf("%w: both Content-Length and Transfer-Encoding", errMalformed)
	}
	if resp.chunked && resp.http10 {
		return buf, fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 response", errMalformed)
	}
	if resp.chunked {
		resp.length = -1
	} else {
		resp.trailer = nil
	}
	if resp.hasDate && len(resp.connOpts) > 0 && resp.named([]byte("Date")) {
		resp.hasDate = false
	}
	resp.keepAlive = keepAlive && !sawClose // close wins (RFC 9112 §9.3)
	return buf, nil
}

func headErr(err error) error {
	switch err {
	case errLineTooLong:
		return fmt.Errorf("%w: head larger than %d bytes", errMalformed, maxResponseHead)
	case errBareLF, errBareCR:
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return err
}

// bodiless reports whether a response with this status never has a body.
func bodiless(code int) bool {
	return code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
}
