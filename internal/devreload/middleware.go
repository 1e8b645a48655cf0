package devreload

import (
	"bufio"
	"mime"
	"net"
	"net/http"
	"strings"
)

// ScriptTag is what Middleware injects into HTML pages.
const ScriptTag = `<script src="` + ScriptPath + `" defer></script>`

// Middleware serves the Hub's paths and injects ScriptTag into HTML pages
// served by next (see the package documentation for the exact rules).
// It is meant for dev mode only.
func Middleware(next http.Handler, h *Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case EventsPath:
			h.ServeEvents(w, r)
			return
		case ScriptPath:
			h.ServeScript(w, r)
			return
		}
		if r.Method != http.MethodGet || isUpgrade(r) {
			next.ServeHTTP(w, r)
			return
		}
		iw := &injectWriter{rw: w}
		next.ServeHTTP(iw, r)
		iw.finish()
	})
}

func isUpgrade(r *http.Request) bool {
	if r.Header.Get("Upgrade") == "" {
		return false
	}
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

func isHTML(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
	}
	return strings.EqualFold(strings.TrimSpace(mt), "text/html")
}

// The closing tags the script is injected before, lower case.
var closeTags = [...]string{"</body>", "</html>"}

// injectWriter streams a response through, injecting ScriptTag into HTML.
// The decision is taken when the header is sent: from WriteHeader, or from
// the first Write (or Flush) when the handler did not call it. If a 200 has
// no Content-Type yet, the decision waits for the first Write, which it
// sniffs the way net/http would.
type injectWriter struct {
	rw          http.ResponseWriter
	pendingCode int // WriteHeader(200) held until the first Write (no Content-Type yet)
	decided     bool
	inject      bool
	injected    bool
	hijacked    bool
	wroteBody   bool
	tail        []byte // held-back bytes that may start a closing tag
	buf         []byte // scratch: tail + current write
}

func (iw *injectWriter) Header() http.Header { return iw.rw.Header() }

// Unwrap lets http.ResponseController reach the underlying writer
// (deadlines, full duplex).
func (iw *injectWriter) Unwrap() http.ResponseWriter { return iw.rw }

func (iw *injectWriter) WriteHeader(code int) {
	switch {
	case iw.decided:
		iw.rw.WriteHeader(code) // superfluous; net/http reports it
	case iw.pendingCode != 0:
		// superfluous while held: the first call wins, like net/http
	case code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols:
		iw.rw.WriteHeader(code) // informational; the real header follows
	case code == http.StatusOK && !hasKey(iw.rw.Header(), "Content-Type"):
		iw.pendingCode = code
	default:
		iw.decide(code, nil)
	}
}

func hasKey(h http.Header, key string) bool {
	_, ok := h[key]
	return ok
}

// decide sends the header, choosing whether to inject. sniff is the first
// body write, used to fill in a missing Content-Type as net/http would.
func (iw *injectWriter) decide(code int, sniff []byte) {
	iw.decided = true
	h := iw.rw.Header()
	if code == http.StatusOK && len(sniff) > 0 && !hasKey(h, "Content-Type") &&
		!hasKey(h, "Content-Encoding") && !hasKey(h, "Transfer-Encoding") {
		h.Set("Content-Type", http.DetectContentType(sniff))
	}
	enc := h.Get("Content-Encoding")
	iw.inject = code == http.StatusOK &&
		isHTML(h.Get("Content-Type")) &&
		(enc == "" || strings.EqualFold(enc, "identity")) &&
		h.Get("Content-Range") == ""
	if iw.inject {
		h.Del("Content-Length") // the length changes
	}
	iw.rw.WriteHeader(code)
}

func (iw *injectWriter) decideNow(sniff []byte) {
	code := iw.pendingCode
	if code == 0 {
		code = http.StatusOK
	}
	iw.decide(code, sniff)
}

func (iw *injectWriter) Write(p []byte) (int, error) {
	if !iw.decided {
		iw.decideNow(p)
	}
	if !iw.inject || iw.injected {
		return iw.rw.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	iw.wroteBody = true
	data := append(append(iw.buf[:0], iw.tail...), p...)
	iw.buf = data
	iw.tail = iw.tail[:0]
	if i := indexCloseTag(data); i >= 0 {
		iw.injected = true
		if err := writeAll(iw.rw, data[:i], []byte(ScriptTag), data[i:]); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	keep := partialCloseTag(data)
	iw.tail = append(iw.tail, data[len(data)-keep:]...)
	if out := data[:len(data)-keep]; len(out) > 0 {
		if _, err := iw.rw.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func writeAll(w http.ResponseWriter, parts ...[]byte) error {
	for _, b := range parts {
		if len(b) == 0 {
			continue
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// FlushError sends the header (if not yet sent) and everything written so
// far, except a held-back partial closing tag, to the client.
func (iw *injectWriter) FlushError() error {
	if iw.hijacked {
		return http.ErrHijacked
	}
	if !iw.decided {
		iw.decideNow(nil)
	}
	return http.NewResponseController(iw.rw).Flush()
}

// Flush implements http.Flusher.
func (iw *injectWriter) Flush() { _ = iw.FlushError() }

// Hijack passes through to the underlying writer (WebSocket upgrades).
func (iw *injectWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(iw.rw).Hijack()
	if err == nil {
		iw.hijacked = true
	}
	return c, brw, err
}

// finish completes the response after the handler returned: it sends a
// held header and, when no closing tag was seen, appends the script.
func (iw *injectWriter) finish() {
	if iw.hijacked {
		return
	}
	if !iw.decided {
		if iw.pendingCode == 0 {
			return // nothing written: net/http sends its default 200
		}
		iw.decideNow(nil)
	}
	if iw.inject && !iw.injected && iw.wroteBody {
		iw.injected = true
		_ = writeAll(iw.rw, iw.tail, []byte(ScriptTag)) // the client is gone if this fails
	}
}

// indexCloseTag returns the index of the first closing body or html tag in
// b (ASCII case-insensitive), or -1.
func indexCloseTag(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '<' {
			continue
		}
		for _, t := range closeTags {
			if len(b)-i >= len(t) && equalFoldASCII(b[i:i+len(t)], t) {
				return i
			}
		}
	}
	return -1
}

// partialCloseTag returns the length of the longest suffix of b that is a
// proper prefix of a closing tag: bytes that must wait for the next write.
func partialCloseTag(b []byte) int {
	for k := min(len(b), len(closeTags[0])-1); k > 0; k-- {
		s := b[len(b)-k:]
		for _, t := range closeTags {
			if equalFoldASCII(s, t[:k]) {
				return k
			}
		}
	}
	return 0
}

// equalFoldASCII reports whether b equals the lower-case ASCII string lower,
// ignoring ASCII case.
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
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
