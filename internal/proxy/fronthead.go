package proxy

import (
	"bufio"
)

// The front's request-head parser. It accepts only what it can forward
// exactly as the net/http path would, and leaves everything else to
// net/http: a head it refuses is never answered here, only handed over, so
// the parser may be as strict as it likes. FuzzFrontParse checks that what
// it accepts, http.ReadRequest reads the same way.

// frontReq is one parsed request head. Its byte slices alias the head
// buffer they were parsed from.
type frontReq struct {
	method     string // one of the constants below, never a copy
	target     []byte // request-target as received (origin form)
	rawPath    []byte // target up to '?'
	path       []byte // rawPath percent-decoded (aliases rawPath when it has no '%')
	host       []byte
	fields     []rfield // end-to-end headers, in order, names as sent
	connTokens [][]byte // Connection tokens other than close and keep-alive
	length     int64    // Content-Length; -1 chunked; 0 no body
	close      bool     // Connection: close
	teTrailers bool     // TE names trailers
	pathBuf    []byte   // scratch for the decoded path
}

type rfield struct{ k, v []byte }

var frontMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}

// Byte classes.
const (
	clsToken  = 1 << iota // RFC 9110 tchar
	clsTarget             // allowed in an origin-form target (besides '%' escapes)
	clsHost               // allowed in Host
	clsValue              // allowed in a header value
)

var byteClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if alnum || c < 128 && c != 0 && bytesContain("!#$%&'*+-.^_`|~", byte(c)) {
			t[c] |= clsToken
		}
		// validEncoded's set for paths (minus '[' and ']') plus '?', so
		// url.URL.EscapedPath gives the target back unchanged.
		if alnum || c < 128 && c != 0 && bytesContain("-._~!$&'()*+,;=:@/?%", byte(c)) {
			t[c] |= clsTarget
		}
		if alnum || c < 128 && c != 0 && bytesContain("-._:[]", byte(c)) {
			t[c] |= clsHost
		}
		if c == '\t' || 0x20 <= c && c < 0x7f {
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

// Request header names the parser treats specially.
const (
	reqPlain = iota
	reqHost
	reqContentLength
	reqTransferEncoding
	reqConnection
	reqTe
	reqDrop     // hop-by-hop or set by the proxy: not forwarded
	reqFallback // Upgrade, Expect, Trailer: net/http's business
)

// reqHeaderKind classifies a request header name case-insensitively.
func reqHeaderKind(k []byte) int {
	switch len(k) {
	case 2:
		if foldEq(k, "te") {
			return reqTe
		}
	case 4:
		if foldEq(k, "host") {
			return reqHost
		}
	case 6:
		if foldEq(k, "expect") {
			return reqFallback
		}
	case 7:
		if foldEq(k, "upgrade") || foldEq(k, "trailer") {
			return reqFallback
		}
	case 9:
		if foldEq(k, "forwarded") {
			return reqDrop
		}
	case 10:
		if foldEq(k, "connection") {
			return reqConnection
		}
		if foldEq(k, "keep-alive") {
			return reqDrop
		}
	case 14:
		if foldEq(k, "content-length") {
			return reqContentLength
		}
	case 15:
		if foldEq(k, "x-forwarded-for") {
			return reqDrop
		}
	case 16:
		if foldEq(k, "x-forwarded-host") || foldEq(k, "proxy-connection") {
			return reqDrop
		}
	case 17:
		if foldEq(k, "transfer-encoding") || foldEq(k, "x-forwarded-proto") {
			if k[0]|0x20 == 't' {
				return reqTransferEncoding
			}
			return reqDrop
		}
	case 18:
		if foldEq(k, "proxy-authenticate") {
			return reqDrop
		}
	case 19:
		if foldEq(k, "proxy-authorization") {
			return reqDrop
		}
	}
	return reqPlain
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

// parseFrontHead parses head, a complete request head ending in
// "\r\n\r\n", into r. It reports false for anything the front leaves to
// net/http (which then answers it, errors included).
func parseFrontHead(head []byte, r *frontReq) bool {
	*r = frontReq{fields: r.fields[:0], connTokens: r.connTokens[:0], pathBuf: r.pathBuf[:0]}
	b := head
	// Method.
	r.method = ""
	for _, m := range frontMethods {
		if len(b) > len(m) && string(b[:len(m)]) == m && b[len(m)] == ' ' {
			r.method = m
			b = b[len(m)+1:]
			break
		}
	}
	if r.method == "" {
		return false
	}
	// Target: origin form, a conservative byte set, valid escapes.
	i, q := 0, -1
	for ; i < len(b) && b[i] != ' '; i++ {
		c := b[i]
		if byteClass[c]&clsTarget == 0 {
			return false
		}
		switch c {
		case '?':
			if q < 0 {
				q = i
			}
		case '%':
			if i+2 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) {
				return false
			}
		}
	}
	if i == 0 || b[0] != '/' || i == len(b) {
		return false
	}
	r.target = b[:i]
	r.rawPath = r.target
	if q >= 0 {
		r.rawPath = r.target[:q]
		if reencodeQueries || !queryIsClean(string(r.target[q+1:])) {
			return false
		}
	}
	b = b[i:]
	const version = " HTTP/1.1\r\n"
	if len(b) < len(version) || string(b[:len(version)]) != version {
		return false
	}
	b = b[len(version):]
	// Header lines.
	haveLength, haveTE := false, false
	for {
		if len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
			break
		}
		// name ':' OWS value OWS CRLF
		n := 0
		for n < len(b) && byteClass[b[n]]&clsToken != 0 {
			n++
		}
		if n == 0 || n == len(b) || b[n] != ':' {
			return false
		}
		k := b[:n]
		e := n + 1
		for e < len(b) && byteClass[b[e]]&clsValue != 0 {
			e++
		}
		if e+1 >= len(b) || b[e] != '\r' || b[e+1] != '\n' {
			return false
		}
		v := trimOWS(b[n+1 : e])
		b = b[e+2:]
		switch reqHeaderKind(k) {
		case reqPlain:
			r.fields = append(r.fields, rfield{k, v})
		case reqHost:
			if r.host != nil || len(v) == 0 {
				return false
			}
			for _, c := range v {
				if byteClass[c]&clsHost == 0 {
					return false
				}
			}
			r.host = v
		case reqContentLength:
			if haveLength || len(v) == 0 || len(v) > 18 {
				return false
			}
			var x int64
			for _, c := range v {
				if c < '0' || c > '9' {
					return false
				}
				x = x*10 + int64(c-'0')
			}
			haveLength = true
			r.length = x
		case reqTransferEncoding:
			if haveTE || !foldEq(v, "chunked") {
				return false
			}
			haveTE = true
		case reqConnection:
			for t := range tokens(v) {
				switch {
				case foldEq(t, "close"):
					r.close = true
				case foldEq(t, "keep-alive"):
				case foldEq(t, "upgrade"):
					return false
				default:
					r.connTokens = append(r.connTokens, t)
				}
			}
		case reqTe:
			for t := range tokens(v) {
				if foldEq(t, "trailers") {
					r.teTrailers = true
				}
			}
		case reqFallback:
			return false
		}
	}
	if r.host == nil || haveLength && haveTE {
		return false
	}
	if haveTE {
		r.length = -1
	}
	// The decoded path routes, as url.URL.Path does on the net/http path.
	r.path = r.rawPath
	for j := 0; j < len(r.rawPath); j++ {
		if r.rawPath[j] != '%' {
			continue
		}
		buf := append(r.pathBuf, r.rawPath[:j]...)
		for ; j < len(r.rawPath); j++ {
			c := r.rawPath[j]
			if c == '%' {
				c = unhex(r.rawPath[j+1])<<4 | unhex(r.rawPath[j+2])
				j += 2
			}
			buf = append(buf, c)
		}
		r.pathBuf = buf
		r.path = buf
		break
	}
	return true
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

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// tokens yields the non-empty comma-separated elements of v, trimmed.
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

// named reports whether Connection named header k.
func (r *frontReq) named(k []byte) bool {
	for _, t := range r.connTokens {
		if len(t) == len(k) && foldEqBytes(t, k) {
			return true
		}
	}
	return false
}

func foldEqBytes(a, b []byte) bool {
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

// writeFrontRequestHead writes r to the worker as writeRequestHead writes
// an http.Request: hop-by-hop headers dropped, Host kept, X-Forwarded-*
// fresh, the body framed the same way.
func writeFrontRequestHead(bw *bufio.Writer, r *frontReq, xff []byte, hasBody bool) {
	bw.WriteString(r.method)
	bw.WriteByte(' ')
	bw.Write(r.target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.Write(r.host)
	bw.WriteString("\r\n")
	for _, f := range r.fields {
		if len(r.connTokens) > 0 && r.named(f.k) {
			continue
		}
		bw.Write(f.k)
		bw.WriteString(": ")
		bw.Write(f.v)
		bw.WriteString("\r\n")
	}
	if r.teTrailers {
		bw.WriteString("Te: trailers\r\n")
	}
	bw.Write(xff)
	bw.WriteString("X-Forwarded-Host: ")
	bw.Write(r.host)
	bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	writeFraming(bw, hasBody, r.length, r.method)
	bw.WriteString("\r\n")
}
