package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
)

// The engine's HTTP/1.1 grammar (RFC 9110, RFC 9112), shared by both sides:
// the request head a client sends, the response head a worker sends, and the
// chunked framing of either's body. Every rule is fail-closed: whatever is
// not exactly what the grammar allows is an error, never a guess. In
// particular a line must end in CRLF (a bare LF or a bare CR is refused at
// once, RFC 9112 §2.2 lets a recipient do so), no field value holds a
// control byte other than HTAB, obs-fold is refused, no whitespace may sit
// between a field name and its colon, and the framing headers must be
// single and unambiguous.

// httpError is a refusal of a client's request: the status to answer (the
// connection is closed after it) and why, for the log.
type httpError struct {
	code   int
	reason string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.code, e.reason) }

func badRequest(format string, args ...any) error {
	return &httpError{code: http.StatusBadRequest, reason: fmt.Sprintf(format, args...)}
}

// Errors about the bytes a worker or a client sent.
var (
	errBareLF        = errors.New("line ends in a bare LF")
	errBareCR        = errors.New("bare CR")
	errLineTooLong   = errors.New("line too long")
	errHeadTooLarge  = errors.New("head too large")
	errTooManyFields = errors.New("too many header fields")
)

const (
	// maxFields bounds the header (and trailer) fields of one message.
	maxFields = 256
	// maxChunkLine bounds a chunk-size line with its extensions.
	maxChunkLine = 4 << 10
	// maxChunkSize keeps chunk arithmetic far from overflow.
	maxChunkSize = 1 << 62
)

// Byte classes.
const (
	clsToken  = 1 << iota // RFC 9110 tchar
	clsTarget             // allowed in a request-target (besides '%' escapes)
	clsValue              // allowed in a field value: HTAB, SP, VCHAR, obs-text
)

var byteClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if alnum || c < 128 && c != 0 && bytesContain("!#$%&'*+-.^_`|~", byte(c)) {
			t[c] |= clsToken
		}
		// Visible ASCII but '#' (a fragment never reaches a server).
		if 0x21 <= c && c <= 0x7e && c != '#' {
			t[c] |= clsTarget
		}
		if c == '\t' || 0x20 <= c && c != 0x7f {
			t[c] |= clsValue
		}
	}
	return t
}()

func bytesContain(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if byteClass[c]&clsToken == 0 {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// readLine reads one CRLF-terminated line from br and appends it, without
// the CRLF, to dst. A line longer than limit (counting what dst already
// holds), a bare LF, or a CR anywhere but before the LF is an error.
func readLine(br *bufio.Reader, dst []byte, limit int) ([]byte, error) {
	start := len(dst)
	for {
		frag, err := br.ReadSlice('\n')
		dst = append(dst, frag...)
		if len(dst) > limit {
			return dst, errLineTooLong
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return dst, err
		}
		break
	}
	line := dst[start:]
	n := len(line)
	if n < 2 || line[n-2] != '\r' {
		return dst, errBareLF
	}
	line = line[:n-2]
	for _, c := range line {
		if c == '\r' {
			return dst, errBareCR
		}
	}
	return dst[:len(dst)-2], nil
}

// field is one header or trailer field line, name and value as views into
// the message's head buffer (value without surrounding whitespace).
type field struct{ k, v []byte }

// parseField splits a field line into name and value, refusing obs-fold,
// whitespace before the colon, a name that is not a token, and a value with
// a control byte (NUL, CR, LF and DEL included) other than HTAB.
func parseField(line []byte) (field, error) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		return field{}, errors.New("obs-fold (a line starting with whitespace)")
	}
	n := 0
	for n < len(line) && byteClass[line[n]]&clsToken != 0 {
		n++
	}
	if n == 0 || n == len(line) || line[n] != ':' {
		return field{}, fmt.Errorf("malformed field line %q", truncate(line))
	}
	v := line[n+1:]
	for _, c := range v {
		if byteClass[c]&clsValue == 0 {
			return field{}, fmt.Errorf("control byte %#x in the value of %q", c, line[:n])
		}
	}
	return field{k: line[:n], v: trimOWS(v)}, nil
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// tokens yields the comma-separated elements of a list value, trimmed;
// empty elements are skipped (RFC 9110 §5.6.1).
func tokens(v []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			i := 0
			for i < len(v) && v[i] != ',' {
				i++
			}
			t := trimOWS(v[:i])
			if i < len(v) {
				i++
			}
			v = v[i:]
			if len(t) > 0 && !yield(t) {
				return
			}
		}
	}
}

// parseLength parses a Content-Length value: 1*DIGIT, nothing else (no
// sign, no list, no whitespace inside), at most 18 digits.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// foldEq reports whether b equals lower, a lower-case ASCII string, ignoring
// ASCII case.
func foldEq(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func foldEqBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Field names the engine treats specially, on either side.
const (
	hdrPlain = iota
	hdrHost
	hdrContentLength
	hdrTransferEncoding
	hdrConnection
	hdrTE
	hdrTrailer
	hdrUpgrade
	hdrExpect
	hdrDate
	hdrKeepAlive
	hdrProxyHop // Proxy-Connection, Proxy-Authenticate, Proxy-Authorization
	hdrForwarded
)

// headerKind classifies a field name case-insensitively without allocating.
func headerKind(k []byte) int {
	switch len(k) {
	case 2:
		if foldEq(k, "te") {
			return hdrTE
		}
	case 4:
		if foldEq(k, "host") {
			return hdrHost
		}
		if foldEq(k, "date") {
			return hdrDate
		}
	case 6:
		if foldEq(k, "expect") {
			return hdrExpect
		}
	case 7:
		if foldEq(k, "upgrade") {
			return hdrUpgrade
		}
		if foldEq(k, "trailer") {
			return hdrTrailer
		}
	case 9:
		if foldEq(k, "forwarded") {
			return hdrForwarded
		}
	case 10:
		if foldEq(k, "connection") {
			return hdrConnection
		}
		if foldEq(k, "keep-alive") {
			return hdrKeepAlive
		}
	case 14:
		if foldEq(k, "content-length") {
			return hdrContentLength
		}
	case 15:
		if foldEq(k, "x-forwarded-for") {
			return hdrForwarded
		}
	case 16:
		if foldEq(k, "x-forwarded-host") {
			return hdrForwarded
		}
		if foldEq(k, "proxy-connection") {
			return hdrProxyHop
		}
	case 17:
		if foldEq(k, "transfer-encoding") {
			return hdrTransferEncoding
		}
		if foldEq(k, "x-forwarded-proto") {
			return hdrForwarded
		}
	case 18:
		if foldEq(k, "proxy-authenticate") {
			return hdrProxyHop
		}
	case 19:
		if foldEq(k, "proxy-authorization") {
			return hdrProxyHop
		}
	}
	return hdrPlain
}

// framingOnly reports whether a trailer field must not be passed on:
// fields that frame, route or authenticate a message never come in a
// trailer (RFC 9110 §6.5.1).
func framingOnly(k []byte) bool {
	switch headerKind(k) {
	case hdrPlain, hdrDate:
		return foldEq(k, "content-type") || foldEq(k, "content-encoding") || foldEq(k, "content-range") ||
			foldEq(k, "authorization") || foldEq(k, "set-cookie") || foldEq(k, "cookie") ||
			foldEq(k, "cache-control") || foldEq(k, "max-forwards")
	}
	return true
}

// transferCoding checks a Transfer-Encoding value: nil when it is exactly
// "chunked"; a 501 for a well-formed list of codings the engine does not
// implement; a 400 for anything else.
func transferCoding(v []byte) error {
	if foldEq(v, "chunked") {
		return nil
	}
	n := 0
	for t := range tokens(v) {
		if !isToken(t) {
			return badRequest("malformed Transfer-Encoding %q", truncate(v))
		}
		n++
	}
	if n == 0 {
		return badRequest("empty Transfer-Encoding")
	}
	return &httpError{code: http.StatusNotImplemented, reason: fmt.Sprintf("Transfer-Encoding %q is not implemented (only chunked)", truncate(v))}
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// checkTrailerDecl checks a Trailer field value: a list of field names,
// none of which may frame the message (RFC 9110 §6.6.2; net/http refuses
// these too).
func checkTrailerDecl(v []byte) error {
	for t := range tokens(v) {
		if !isToken(t) {
			return fmt.Errorf("malformed Trailer %q", truncate(v))
		}
		switch headerKind(t) {
		case hdrContentLength, hdrTransferEncoding, hdrTrailer:
			return fmt.Errorf("Trailer declares %q", t)
		}
	}
	return nil
}

// validAuthority checks a Host value or an absolute-form authority:
// host [ ":" port ], host an IPv6 literal in brackets or a registered name
// (letters, digits, "-._~!$&'()*+,;=", no escapes), port digits.
func validAuthority(a []byte) bool {
	host, port := a, []byte(nil)
	if len(a) > 0 && a[0] == '[' {
		end := bytes.IndexByte(a, ']')
		if end < 0 {
			return false
		}
		ip, err := netip.ParseAddr(string(a[1:end]))
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return false // an IP literal is an IPv6 address (RFC 3986 §3.2.2)
		}
		host, port = a[:end+1], a[end+1:]
		if len(port) > 0 {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
		}
	} else {
		if i := bytes.IndexByte(a, ':'); i >= 0 {
			host, port = a[:i], a[i+1:]
		}
		for _, c := range host {
			alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
			if !alnum && !bytesContain("-._~!$&'()*+,;=", c) {
				return false
			}
		}
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
