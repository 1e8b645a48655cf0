package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
)

// request is one parsed client request head. Its byte slices alias the
// head buffer it was read into, which stays untouched until the request is
// done.
type request struct {
	method   string // a constant for the common methods, else a copy
	target   []byte // origin-form target forwarded to the worker (path?query)
	rawPath  []byte // target up to '?'
	path     []byte // rawPath percent-decoded (aliases rawPath without '%')
	host     []byte
	http10   bool
	fields   []field  // end-to-end fields, in order, names as sent
	connOpts [][]byte // Connection options other than close, keep-alive, upgrade
	length   int64    // body length; -1 chunked; 0 none
	close    bool     // the client asked to close (or HTTP/1.0 without keep-alive)
	expect   bool     // Expect: 100-continue with a body
	upgrade  []byte   // the Upgrade value when Connection names upgrade
	trailer  []byte   // the Trailer value (declared request trailers)
	teTrail  bool     // TE names trailers
	pathBuf  []byte   // scratch for the decoded path
}

var commonMethods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}

// readRequestHead reads a request head (request line, fields, empty line)
// from br into buf and returns it. The header timeout is the caller's
// (a read deadline); limit bounds the whole head.
func readRequestHead(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	buf = buf[:0]
	for lines := 0; ; lines++ {
		start := len(buf)
		var err error
		buf, err = readLine(br, buf, limit)
		if err != nil {
			switch err {
			case errLineTooLong:
				if lines == 0 {
					return buf, &httpError{code: http.StatusRequestURITooLong, reason: "request line too long"}
				}
				return buf, errHeadTooLarge
			case errBareLF, errBareCR:
				return buf, badRequest("%v in the request head", err)
			}
			if err == io.EOF && start > 0 {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		if len(buf) == start {
			if lines == 0 {
				return buf, badRequest("empty request line")
			}
			return buf, nil
		}
		if lines > maxFields {
			return buf, errTooManyFields
		}
		buf = append(buf, '\n') // a separator the parser splits on
	}
}

// parseRequest parses a head read by readRequestHead into r. The error is
// an *httpError with the status to answer.
func parseRequest(head []byte, r *request) error {
	*r = request{fields: r.fields[:0], connOpts: r.connOpts[:0], pathBuf: r.pathBuf[:0]}
	line, rest, _ := bytes.Cut(head, []byte{'\n'})

	// request-line = method SP request-target SP HTTP-version
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return badRequest("malformed request line %q", truncate(line))
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return badRequest("malformed request line %q", truncate(line))
	}
	sp2 += sp1 + 1
	method, target, version := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	if !isToken(method) {
		return badRequest("malformed method %q", truncate(method))
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		r.http10 = true
	default:
		if len(version) == 8 && string(version[:5]) == "HTTP/" && '0' <= version[5] && version[5] <= '9' &&
			version[6] == '.' && '0' <= version[7] && version[7] <= '9' {
			return &httpError{code: http.StatusHTTPVersionNotSupported, reason: "version " + string(version)}
		}
		return badRequest("malformed version %q", truncate(version))
	}
	r.method = ""
	for _, m := range commonMethods {
		if string(method) == m {
			r.method = m
			break
		}
	}
	if r.method == "" {
		r.method = string(method)
	}
	if r.method == "CONNECT" {
		return &httpError{code: http.StatusMethodNotAllowed, reason: "CONNECT is not served"}
	}

	var authority []byte
	if len(target) == 0 {
		return badRequest("empty request target")
	}
	for _, c := range target {
		if byteClass[c]&clsTarget == 0 {
			return badRequest("byte %#x in the request target", c)
		}
	}
	if target[0] != '/' {
		// absolute-form (RFC 9112 §3.2.2): its authority replaces Host.
		var ok bool
		authority, target, ok = splitAbsolute(target)
		if !ok {
			return badRequest("request target %q is neither origin- nor absolute-form", truncate(line[sp1+1:sp2]))
		}
	}
	r.target = target
	r.rawPath = target
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		r.rawPath = target[:q]
	}
	for i := 0; i < len(target); i++ {
		if target[i] == '%' && (i+2 >= len(target) || !isHex(target[i+1]) || !isHex(target[i+2])) {
			return badRequest("malformed percent-escape in the request target")
		}
	}

	haveHost, haveLength, chunked := false, false, false
	var expect []byte
	var connUpgrade, keepAlive bool
	var upgrade []byte
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte{'\n'})
		f, err := parseField(l)
		if err != nil {
			return badRequest("%v", err)
		}
		switch headerKind(f.k) {
		case hdrPlain, hdrDate:
			r.fields = append(r.fields, f)
		case hdrHost:
			if haveHost {
				return badRequest("more than one Host")
			}
			haveHost = true
			if !validAuthority(f.v) {
				return badRequest("malformed Host %q", truncate(f.v))
			}
			r.host = f.v
		case hdrContentLength:
			if haveLength {
				return badRequest("more than one Content-Length")
			}
			n, ok := parseLength(f.v)
			if !ok {
				return badRequest("malformed Content-Length %q", truncate(f.v))
			}
			haveLength = true
			r.length = n
		case hdrTransferEncoding:
			if chunked {
				return badRequest("more than one Transfer-Encoding")
			}
			if err := transferCoding(f.v); err != nil {
				return err
			}
			chunked = true
		case hdrConnection:
			for t := range tokens(f.v) {
				switch {
				case !isToken(t):
					return badRequest("malformed Connection %q", truncate(f.v))
				case foldEq(t, "close"):
					r.close = true
				case foldEq(t, "keep-alive"):
					keepAlive = true
				case foldEq(t, "upgrade"):
					connUpgrade = true
				default:
					r.connOpts = append(r.connOpts, t)
				}
			}
		case hdrTE:
			for t := range tokens(f.v) {
				if foldEq(t, "trailers") {
					r.teTrail = true
				}
			}
		case hdrTrailer:
			if err := checkTrailerDecl(f.v); err != nil {
				return badRequest("%v", err)
			}
			r.trailer = f.v
		case hdrUpgrade:
			upgrade = f.v
		case hdrExpect:
			if expect != nil {
				return &httpError{code: http.StatusExpectationFailed, reason: "more than one Expect"}
			}
			expect = f.v
		}
	}
	if haveLength && chunked {
		return badRequest("both Content-Length and Transfer-Encoding")
	}
	if chunked && r.http10 {
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	}
	if !haveHost && !r.http10 {
		return badRequest("no Host") // also with an absolute-form target (RFC 9112 §3.2)
	}
	if authority != nil {
		r.host = authority
	}
	if chunked {
		r.length = -1
	}
	if r.http10 && !keepAlive {
		r.close = true
	}
	if expect != nil {
		if !foldEq(expect, "100-continue") {
			return &httpError{code: http.StatusExpectationFailed, reason: "unsupported expectation"}
		}
		r.expect = r.length != 0 && !r.http10
	}
	if connUpgrade && upgrade != nil && !r.http10 {
		r.upgrade = upgrade
	}
	if !chunked {
		r.trailer = nil
	}
	return r.decodePath()
}

// splitAbsolute splits an absolute-form target "http://authority/path?q"
// into its authority and origin-form rest ("/" when the path is empty).
func splitAbsolute(t []byte) (authority, rest []byte, ok bool) {
	i := bytes.Index(t, []byte("://"))
	if i <= 0 || !(foldEq(t[:i], "http") || foldEq(t[:i], "https")) {
		return nil, nil, false
	}
	t = t[i+3:]
	j := 0
	for j < len(t) && t[j] != '/' && t[j] != '?' {
		j++
	}
	authority = t[:j]
	if len(authority) == 0 || !validAuthority(authority) {
		return nil, nil, false
	}
	rest = t[j:]
	if len(rest) == 0 || rest[0] == '?' {
		rest = append([]byte{'/'}, rest...)
	}
	return authority, rest, true
}

// decodePath sets r.path, the percent-decoded path that routes the
// request (as url.URL.Path would on the worker).
func (r *request) decodePath() error {
	r.path = r.rawPath
	if bytes.IndexByte(r.rawPath, '%') < 0 {
		return nil
	}
	buf := r.pathBuf[:0]
	for j := 0; j < len(r.rawPath); j++ {
		c := r.rawPath[j]
		if c == '%' {
			c = unhex(r.rawPath[j+1])<<4 | unhex(r.rawPath[j+2])
			j += 2
		}
		buf = append(buf, c)
	}
	r.pathBuf = buf
	r.path = buf
	return nil
}

// named reports whether the request's Connection header named field k.
func (r *request) named(k []byte) bool {
	for _, t := range r.connOpts {
		if foldEqBytes(t, k) {
			return true
		}
	}
	return false
}

// writeRequestHead writes r to the worker: request line in origin form,
// Host kept, hop-by-hop fields dropped (the Connection options too),
// X-Forwarded-* set fresh, and the body framed by the proxy itself.
func writeRequestHead(bw *bufio.Writer, r *request, xff []byte, bodyMode int64) {
	bw.WriteString(r.method)
	bw.WriteByte(' ')
	bw.Write(r.target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.Write(r.host)
	bw.WriteString("\r\n")
	for _, f := range r.fields {
		if len(r.connOpts) > 0 && r.named(f.k) {
			continue
		}
		bw.Write(f.k)
		bw.WriteString(": ")
		bw.Write(f.v)
		bw.WriteString("\r\n")
	}
	if r.teTrail {
		bw.WriteString("Te: trailers\r\n")
	}
	if r.upgrade != nil {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.Write(r.upgrade)
		bw.WriteString("\r\n")
	}
	if r.trailer != nil {
		bw.WriteString("Trailer: ")
		bw.Write(r.trailer)
		bw.WriteString("\r\n")
	}
	bw.Write(xff)
	bw.WriteString("X-Forwarded-Host: ")
	bw.Write(r.host)
	bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	switch {
	case bodyMode > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), bodyMode, 10))
		bw.WriteString("\r\n")
	case bodyMode < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.method == http.MethodPost || r.method == http.MethodPut || r.method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
}
