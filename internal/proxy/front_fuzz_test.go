package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// FuzzFrontParse checks that every head the front's parser accepts is one
// http.ReadRequest reads identically: same method, target, Host, framing,
// Connection: close, the same end-to-end headers, and a target that the
// net/http path would forward byte for byte.
func FuzzFrontParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a/b?c=d&e=%20 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 5\r\n\r\nhello",
		"PUT /x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: Chunked\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
		"GET /a%2Fb HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n",
		"GET /?q HTTP/1.1\r\nHost: [::1]:80\r\nUser-Agent:  spaced\t \r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		i := strings.Index(in, "\r\n\r\n")
		if i < 0 {
			return
		}
		head := []byte(in[:i+4])
		var r frontReq
		if !parseFrontHead(head, &r) {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("front accepted %q, net/http refused it: %v", head, err)
		}
		if req.Method != r.method || req.RequestURI != string(r.target) || req.ProtoMajor != 1 || req.ProtoMinor != 1 {
			t.Fatalf("%q: request line %s %s %s, front %s %s", head, req.Method, req.RequestURI, req.Proto, r.method, r.target)
		}
		if req.Host != string(r.host) {
			t.Fatalf("%q: host %q, front %q", head, req.Host, r.host)
		}
		if req.URL.Path != string(r.path) {
			t.Fatalf("%q: path %q, front %q", head, req.URL.Path, r.path)
		}
		fwd := req.URL.EscapedPath()
		if req.URL.ForceQuery || req.URL.RawQuery != "" {
			fwd += "?" + req.URL.RawQuery
		}
		if fwd != string(r.target) {
			t.Fatalf("%q: net/http forwards %q, front %q", head, fwd, r.target)
		}
		switch {
		case r.length < 0:
			if !slices.Equal(req.TransferEncoding, []string{"chunked"}) {
				t.Fatalf("%q: front chunked, net/http %v %d", head, req.TransferEncoding, req.ContentLength)
			}
		case req.ContentLength != r.length || len(req.TransferEncoding) != 0:
			t.Fatalf("%q: length %d, front %d", head, req.ContentLength, r.length)
		}
		if req.Close != r.close {
			t.Fatalf("%q: close %v, front %v", head, req.Close, r.close)
		}
		mine := http.Header{}
		for _, h := range r.fields {
			mine.Add(string(h.k), string(h.v))
		}
		for k, vv := range req.Header {
			switch k {
			case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Keep-Alive",
				"Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Forwarded",
				"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
				if _, ok := mine[k]; ok {
					t.Fatalf("%q: front forwards %s", head, k)
				}
				continue
			}
			if !slices.Equal(mine[k], vv) {
				t.Fatalf("%q: header %s %q, front %q", head, k, vv, mine[k])
			}
		}
		for k := range mine {
			if _, ok := req.Header[textproto.CanonicalMIMEHeaderKey(k)]; !ok {
				t.Fatalf("%q: front invented header %s", head, k)
			}
		}
	})
}
