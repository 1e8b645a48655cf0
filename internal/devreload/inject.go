package devreload

import (
	"mime"
	"net/http"
	"strings"

	"github.com/mevdschee/tqserver/internal/proxy"
)

// ScriptTag is what Rewrite injects into HTML pages.
const ScriptTag = `<script src="` + ScriptPath + `" defer></script>`

// Local is the Hub's paths, for the proxy engine to serve itself
// (proxy.Options.Local).
func Local(h *Hub) map[string]http.Handler {
	return map[string]http.Handler{
		EventsPath: http.HandlerFunc(h.ServeEvents),
		ScriptPath: http.HandlerFunc(h.ServeScript),
	}
}

// Rewrite is the proxy engine's body rewriter for dev mode
// (proxy.Options.Rewrite): it injects ScriptTag into a 200 text/html answer
// to a GET that has no Content-Encoding (but identity) and no Content-Range,
// and leaves every other response alone (nil).
func Rewrite(method string, code int, get func(string) string) proxy.BodyRewriter {
	if method != http.MethodGet || code != http.StatusOK || !isHTML(get("content-type")) ||
		get("content-range") != "" {
		return nil
	}
	if enc := get("content-encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil
	}
	return &injector{}
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

// injector streams one HTML body through, injecting ScriptTag before the
// first closing body or html tag, or at the end. Only a tail of at most six
// bytes that could begin a closing tag is held back between writes.
type injector struct {
	injected  bool
	wroteBody bool
	tail      []byte // held-back bytes that may start a closing tag
	buf       []byte // scratch: tail + current write
}

func (in *injector) Write(dst, p []byte) []byte {
	if in.injected {
		return append(dst, p...)
	}
	if len(p) == 0 {
		return dst
	}
	in.wroteBody = true
	data := append(append(in.buf[:0], in.tail...), p...)
	in.buf = data
	in.tail = in.tail[:0]
	if i := indexCloseTag(data); i >= 0 {
		in.injected = true
		dst = append(dst, data[:i]...)
		dst = append(dst, ScriptTag...)
		return append(dst, data[i:]...)
	}
	keep := partialCloseTag(data)
	in.tail = append(in.tail, data[len(data)-keep:]...)
	return append(dst, data[:len(data)-keep]...)
}

// Close ends the body: a held-back tail, and the script when no closing tag
// came (an empty body stays empty).
func (in *injector) Close(dst []byte) []byte {
	dst = append(dst, in.tail...)
	in.tail = in.tail[:0]
	if !in.injected && in.wroteBody {
		in.injected = true
		dst = append(dst, ScriptTag...)
	}
	return dst
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
