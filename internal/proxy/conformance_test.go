package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The proxy's adversarial conformance suite (issue 15): raw bytes over TCP
// to the real engine on 127.0.0.1, in front of a worker that misbehaves on
// purpose (conformance_rig_test.go). After every probe a fresh client sends
// an innocent request with its own markers and must get its own answer
// (cfSetup).

// ---- 1. A worker's stray bytes reach nobody.

// cfStray is what a confused worker writes after it has answered: a whole
// response that would hand someone else's session to the next client.
const cfStray = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: session=VICTIM\r\nContent-Length: 17\r\n\r\nSTRAY-FOR-NOBODY!"

func TestConformanceStrayWorkerBytes(t *testing.T) {
	const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	const chunkedAnswer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
	headAnswer := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(cfStray)) + "\r\n\r\n"
	cases := []struct {
		name   string
		method string
		answer string
		late   time.Duration // from the answer to the stray bytes; 0: one write
		idle   time.Duration // the worker connection's idle age when the next client comes
	}{
		{"full-response-50ms-late", "GET", okAnswer, 50 * time.Millisecond, 0},
		{"full-response-50ms-late-idle-1.2s", "GET", okAnswer, 50 * time.Millisecond, 1200 * time.Millisecond},
		{"body-after-204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", 50 * time.Millisecond, 0},
		{"body-after-304", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n", 50 * time.Millisecond, 0},
		{"body-after-HEAD-answer", "HEAD", headAnswer, 50 * time.Millisecond, 0},
		{"body-longer-than-content-length", "GET", okAnswer, 0, 0},
		{"body-longer-than-content-length-idle-1.2s", "GET", okAnswer, 0, 1200 * time.Millisecond},
		{"after-chunked-terminator", "GET", chunkedAnswer, 50 * time.Millisecond, 0},
		{"after-chunked-terminator-idle-1.2s", "GET", chunkedAnswer, 50 * time.Millisecond, 1200 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			strayed := make(chan struct{})
			var once sync.Once
			addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
				if tc.late == 0 {
					c.send(tc.answer + cfStray)
				} else {
					c.send(tc.answer)
					if !c.pause(tc.late) {
						return false
					}
					c.send(cfStray)
				}
				once.Do(func() { close(strayed) })
				return true
			}, cfRelaxed)
			c := cfDial(t, addr)
			c.send(tc.method + " /victim HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
			resp, err := c.final(tc.method, 5*time.Second)
			if err != nil {
				t.Fatalf("the request itself: %v", err)
			}
			extra, err := c.closedWithin(2 * time.Second)
			if all := append(resp.Raw, extra...); bytes.Contains(all, []byte("STRAY")) || err != nil {
				t.Errorf("the requesting client got %s (%v), want only its answer and the close", cfShow(all), err)
			}
			recvCf(t, "the worker's stray bytes", strayed)
			if tc.idle > 0 {
				time.Sleep(tc.idle) // the scenario: how long the worker connection idles
			}
			cfInnocent(t, addr)
		})
	}
}

// recvCf waits for ch with a deadline.
func recvCf(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// ---- 2. A broken chunked body smuggles nothing.

func TestConformanceBrokenChunkedSmuggling(t *testing.T) {
	const hidden = "GET /HIDDEN-ADMIN HTTP/1.1\r\nHost: test.local\r\n\r\n"
	bodies := []struct{ name, body string }{
		// The size line ends in a bare LF; the hidden request is the chunk's data.
		{"hidden-in-chunk-data", strconv.FormatInt(int64(len(hidden)), 16) + "\n" + hidden + "\r\n0\r\n\r\n"},
		// The size line ends in a bare LF; the hidden request follows the terminator.
		{"hidden-after-terminator", "5\nhello\r\n0\r\n\r\n" + hidden},
	}
	for _, target := range []string{"/upload?x={}", "/upload"} {
		for _, b := range bodies {
			t.Run(strings.Trim(target, "/")+"/"+b.name, func(t *testing.T) {
				addr, w := cfSetup(t, nil, cfRelaxed)
				c := cfDial(t, addr)
				c.send("POST " + target + " HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n" + b.body)
				c.expectRejected("POST", true, 400)
				if w.sawTarget("HIDDEN-ADMIN") || w.received("HIDDEN-ADMIN") {
					t.Errorf("the hidden request reached the worker; it received %+v", w.requests())
				}
			})
		}
	}
}

// ---- 3. Content-Length with Transfer-Encoding, and codings the proxy
// cannot frame: refused, and the bytes after the body never become a
// request.

func TestConformanceLengthAndTransferEncoding(t *testing.T) {
	const payload = "0\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: test.local\r\n\r\n"
	n := strconv.Itoa(len(payload))
	cases := []struct{ name, fields string }{
		{"length-then-chunked", "Content-Length: " + n + "\r\nTransfer-Encoding: chunked\r\n"},
		{"chunked-then-length", "Transfer-Encoding: chunked\r\nContent-Length: " + n + "\r\n"},
		{"length-and-tab-chunked", "Content-Length: " + n + "\r\nTransfer-Encoding:\tchunked\r\n"},
		{"chunked-and-length-0", "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"},
		{"length-and-folded-chunked", "Content-Length: " + n + "\r\nTransfer-Encoding:\r\n chunked\r\n"},
		{"folded-chunked", "Transfer-Encoding:\r\n chunked\r\n"},
		{"chunked-inside-folded-line", "X-Pad: a\r\n Transfer-Encoding: chunked\r\n"},
		{"identity", "Transfer-Encoding: identity\r\n"},
		{"gzip-chunked", "Transfer-Encoding: gzip, chunked\r\n"},
		{"chunked-chunked", "Transfer-Encoding: chunked, chunked\r\n"},
		{"two-chunked-lines", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, w := cfSetup(t, nil, cfRelaxed)
			c := cfDial(t, addr)
			c.send("POST /upload HTTP/1.1\r\nHost: test.local\r\n" + tc.fields + "\r\n" + payload)
			c.expectRejected("POST", false, 400, 501)
			if got := w.requests(); len(got) > 0 {
				t.Errorf("the worker received %+v, want nothing (the proxy refuses)", got)
			}
			if w.sawTarget("SMUGGLED") {
				t.Errorf("the bytes after the body reached the worker as a request")
			}
		})
	}
}

// ---- 4. Streams are bounded between progress, not in total.

func TestConformanceStreamingTimeouts(t *testing.T) {
	const steps, every = 15, 200 * time.Millisecond // 3 s against 1 s timeouts
	t.Run("server-sent-events", func(t *testing.T) {
		addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
			if !c.send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n") {
				return false
			}
			for i := range steps {
				ev := fmt.Sprintf("data: %d\n\n", i)
				if !c.send(fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev)) || !c.pause(every) {
					return false
				}
			}
			return c.send("0\r\n\r\n")
		}, cfTight)
		c := cfDial(t, addr)
		c.send("GET /events HTTP/1.1\r\nHost: test.local\r\n\r\n")
		resp, err := c.final("GET", 10*time.Second)
		var want strings.Builder
		for i := range steps {
			fmt.Fprintf(&want, "data: %d\n\n", i)
		}
		if err != nil || resp.Code != 200 || string(resp.Body) != want.String() {
			t.Errorf("event stream: %v, got %d %s, want every event and the terminator", err, resp.Code, cfShow(resp.Body))
		}
	})
	t.Run("slow-download", func(t *testing.T) {
		const piece = 200 << 10
		addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
			if !c.send("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(steps*piece) + "\r\n\r\n") {
				return false
			}
			buf := make([]byte, piece)
			for i := range steps {
				cfPattern(int64(i*piece), buf)
				if _, err := c.Write(buf); err != nil || !c.pause(every) {
					return false
				}
			}
			return true
		}, cfTight)
		c := cfDial(t, addr)
		c.send("GET /download HTTP/1.1\r\nHost: test.local\r\n\r\n")
		resp, err := c.final("GET", 10*time.Second)
		want := make([]byte, steps*piece)
		cfPattern(0, want)
		if err != nil || resp.Code != 200 || !bytes.Equal(resp.Body, want) {
			t.Errorf("slow download: %v, got %d and %d of %d bytes", err, resp.Code, len(resp.Body), len(want))
		}
	})
	for _, chunked := range []bool{false, true} {
		name := "slow-upload-length"
		if chunked {
			name = "slow-upload-chunked"
		}
		t.Run(name, func(t *testing.T) {
			const piece = 1 << 10
			addr, _ := cfSetup(t, nil, cfTight)
			c := cfDial(t, addr)
			body := make([]byte, steps*piece)
			cfPattern(0, body)
			framing := "Content-Length: " + strconv.Itoa(len(body))
			if chunked {
				framing = "Transfer-Encoding: chunked"
			}
			c.send("POST /upload HTTP/1.1\r\nHost: test.local\r\n" + framing + "\r\n\r\n")
			var werr error
			for i := 0; i < steps && werr == nil; i++ {
				p := string(body[i*piece : (i+1)*piece])
				if chunked {
					p = fmt.Sprintf("%x\r\n%s\r\n", piece, p)
				}
				if werr = c.write(p); werr == nil {
					time.Sleep(every) // the scenario: a slow client
				}
			}
			if chunked && werr == nil {
				werr = c.write("0\r\n\r\n")
			}
			resp, err := c.final("POST", 5*time.Second)
			if want := cfEchoAnswer("POST", "/upload", body); werr != nil || err != nil || resp.Code != 200 || string(resp.Body) != want {
				t.Errorf("slow upload: write %v, read %v, got %d %s, want the worker's 200 %q", werr, err, resp.Code, cfShow(resp.Raw), want)
			}
		})
	}
}

func TestConformanceStalls(t *testing.T) {
	const grace = 1500 * time.Millisecond // over the 1 s timeouts: scheduling, -race
	t.Run("client-stalls-mid-head", func(t *testing.T) {
		addr, _ := cfSetup(t, nil, cfTight)
		c := cfDial(t, addr)
		c.send("GET /probe HTTP/1.1\r\nHost: test.local\r\n")
		cfExpectCutOff(t, c, cfTight.Header+grace)
	})
	t.Run("client-stalls-mid-body", func(t *testing.T) {
		addr, _ := cfSetup(t, nil, cfTight)
		c := cfDial(t, addr)
		c.send("POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10000\r\n\r\n" + strings.Repeat("x", 1000))
		cfExpectCutOff(t, c, cfTight.Read+grace)
	})
	t.Run("client-stops-reading", func(t *testing.T) {
		const size = 32 << 20 // more than the socket buffers on both sides hold
		addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
			if !c.send("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n") {
				return false
			}
			buf := make([]byte, 256<<10)
			for off := 0; off < size; off += len(buf) {
				cfPattern(int64(off), buf)
				if _, err := c.Write(buf); err != nil {
					return false
				}
			}
			return true
		}, cfTight)
		c := cfDial(t, addr)
		c.send("GET /big HTTP/1.1\r\nHost: test.local\r\n\r\n")
		time.Sleep(cfTight.Write + grace) // the scenario: a client that reads nothing
		resp, err := c.final("GET", 10*time.Second)
		if !errors.Is(err, errCfCut) {
			t.Errorf("a client that stopped reading for %v: %v after %d of %d body bytes, want the response cut",
				cfTight.Write+grace, err, len(resp.Body), size)
		}
	})
	t.Run("worker-stalls-mid-body", func(t *testing.T) {
		addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
			c.send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: 1\r\n")
			c.pause(4 * time.Second) // the scenario: a worker that goes silent
			return false
		}, cfTight)
		c := cfDial(t, addr)
		start := time.Now()
		c.send("GET /events HTTP/1.1\r\nHost: test.local\r\n\r\n")
		resp, err := c.final("GET", 10*time.Second)
		if d := time.Since(start); !errors.Is(err, errCfCut) || d > cfTight.Write+grace {
			t.Errorf("a worker silent for 4s mid-response: %v after %v (%s), want the response cut within %v",
				err, d.Round(time.Millisecond), cfShow(resp.Raw), cfTight.Write+grace)
		}
	})
}

// cfExpectCutOff checks that the engine ends a stalled request within d:
// at most an error status, then the close.
func cfExpectCutOff(t *testing.T, c *cfConn, d time.Duration) {
	t.Helper()
	start := time.Now()
	got, err := c.closedWithin(d)
	if err != nil {
		t.Errorf("a stalled client: %v (got %s), want the connection closed within %v", err, cfShow(got), d)
		return
	}
	if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 4")) {
		t.Errorf("a stalled client got %s, want an error status or nothing", cfShow(got))
	}
	t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
}

// ---- 5. Bare LF heads, malformed chunked bodies, bad worker heads and
// trailers.

func TestConformanceBareLFHead(t *testing.T) {
	cases := []struct{ name, head string }{
		{"all-bare-lf", "GET /probe?id=%s HTTP/1.1\nHost: test.local\nCookie: session=%s\nConnection: close\n\n"},
		{"one-bare-lf", "GET /probe?id=%s HTTP/1.1\r\nHost: test.local\nCookie: session=%s\r\nConnection: close\r\n\r\n"},
		{"bare-lf-request-line", "GET /probe?id=%s HTTP/1.1\nHost: test.local\r\nCookie: session=%s\r\nConnection: close\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := cfSetup(t, nil, cfRelaxed)
			c := cfDial(t, addr)
			id, sid := rand.Text(), rand.Text()
			c.send(fmt.Sprintf(tc.head, id, sid))
			resp, err := c.final("GET", time.Second)
			switch {
			case err != nil:
				t.Errorf("no answer within 1s: %v", err)
				return
			case resp.Code == 400:
			case resp.Code == 200 && string(resp.Body) == cfProbeAnswer(id, sid):
			default:
				t.Errorf("answered %s, want 400 or its own answer", cfShow(resp.Raw))
			}
			if extra, err := c.closedWithin(time.Second); err != nil || len(extra) > 0 {
				t.Errorf("after the answer: %s (%v), want the close", cfShow(extra), err)
			}
		})
	}
}

func TestConformanceMalformedChunkedBody(t *testing.T) {
	cases := []struct{ name, body string }{
		{"bad-hex", "zz\r\nhello\r\n0\r\n\r\n"},
		{"hex-prefix", "0x5\r\nhello\r\n0\r\n\r\n"},
		{"missing-crlf-after-data", "5\r\nhelloXX0\r\n\r\n"},
		{"size-overflow", "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"},
		{"chunk-ext-bare-cr", "5;a=b\rc\r\nhello\r\n0\r\n\r\n"},
		{"trailer-with-nul", "5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"},
		{"trailer-with-bare-cr", "5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := cfSetup(t, nil, cfRelaxed)
			c := cfDial(t, addr)
			c.send("POST /upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n" + tc.body)
			c.expectRejected("POST", false, 400)
		})
	}
}

func TestConformanceBadWorkerHead(t *testing.T) {
	cases := []struct{ name, rest string }{
		{"nul-in-value", "X-Evil: a\x00EVIL\r\nContent-Length: 2\r\n\r\nok"},
		{"cr-in-value", "X-Evil: a\rEVIL\r\nContent-Length: 2\r\n\r\nok"},
		{"bare-lf-in-value", "X-Evil: a\nX-Injected: EVIL\r\nContent-Length: 2\r\n\r\nok"},
		{"nul-in-name", "X-E\x00vil: EVIL\r\nContent-Length: 2\r\n\r\nok"},
		{"obs-fold", "X-Evil: a\r\n EVIL\r\nContent-Length: 2\r\n\r\nok"},
		{"space-before-colon", "X-Evil : EVIL\r\nContent-Length: 2\r\n\r\nok"},
		{"two-content-lengths", "Content-Length: 2\r\nContent-Length: 6\r\n\r\nokEVIL"},
		{"length-and-chunked", "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
				c.send("HTTP/1.1 200 OK\r\n" + tc.rest)
				return false
			}, cfRelaxed)
			c := cfDial(t, addr)
			c.send("GET /bad HTTP/1.1\r\nHost: test.local\r\n\r\n")
			resp, err := c.final("GET", 5*time.Second)
			if err != nil || resp.Code != 502 || bytes.Contains(resp.Raw, []byte("EVIL")) {
				t.Errorf("a malformed worker head: %v, got %s, want a 502 of the proxy's own", err, cfShow(resp.Raw))
			}
		})
	}
}

func TestConformanceBadWorkerTrailer(t *testing.T) {
	cases := []struct{ name, trailer string }{
		{"nul-in-value", "X-T: a\x00EVIL\r\n"},
		{"cr-in-value", "X-T: a\rEVIL\r\n"},
		{"no-colon", "X-T EVIL\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
				c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\n" + tc.trailer + "\r\n")
				return false
			}, cfRelaxed)
			c := cfDial(t, addr)
			c.send("GET /trailer HTTP/1.1\r\nHost: test.local\r\nTE: trailers\r\n\r\n")
			resp, err := c.final("GET", 5*time.Second)
			// Cut before the terminating chunk; when nothing had gone out
			// yet, a 502 or a close without a response keep it out too.
			withheld := errors.Is(err, errCfCut) || errors.Is(err, errCfClosed) || err == nil && resp.Code == 502
			if !withheld || bytes.Contains(resp.Raw, []byte("EVIL")) {
				t.Errorf("a malformed worker trailer: %v, got %s, want the response cut before its terminating chunk", err, cfShow(resp.Raw))
			}
		})
	}
}

// ---- 6. Other probes of the class.

func TestConformanceBadRequestBytes(t *testing.T) {
	const host = "Host: test.local\r\n"
	cases := []struct{ name, req string }{
		{"nul-in-target", "GET /bad\x00x HTTP/1.1\r\n" + host + "\r\n"},
		{"bare-cr-in-target", "GET /bad\rx HTTP/1.1\r\n" + host + "\r\n"},
		{"space-in-target", "GET /bad x HTTP/1.1\r\n" + host + "\r\n"},
		{"control-in-target", "GET /bad\x01x HTTP/1.1\r\n" + host + "\r\n"},
		{"del-in-target", "GET /bad\x7fx HTTP/1.1\r\n" + host + "\r\n"},
		{"tab-in-target", "GET /bad\tx HTTP/1.1\r\n" + host + "\r\n"},
		{"nul-in-field-name", "GET /bad HTTP/1.1\r\n" + host + "X-B\x00ad: 1\r\n\r\n"},
		{"nul-in-field-value", "GET /bad HTTP/1.1\r\n" + host + "X-Bad: a\x00b\r\n\r\n"},
		{"bare-cr-in-field-value", "GET /bad HTTP/1.1\r\n" + host + "X-Bad: a\rb\r\n\r\n"},
		{"space-before-colon", "GET /bad HTTP/1.1\r\n" + host + "X-Bad : 1\r\n\r\n"},
		{"space-in-field-name", "GET /bad HTTP/1.1\r\n" + host + "X Bad: 1\r\n\r\n"},
		{"no-host", "GET /bad HTTP/1.1\r\n\r\n"},
		{"two-hosts", "GET /bad HTTP/1.1\r\n" + host + "Host: other.local\r\n\r\n"},
		{"length-plus", "POST /bad HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\nhello"},
		{"length-minus", "POST /bad HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\nhello"},
		{"length-list", "POST /bad HTTP/1.1\r\n" + host + "Content-Length: 1,1\r\n\r\nh"},
		{"length-hex", "POST /bad HTTP/1.1\r\n" + host + "Content-Length: 0x5\r\n\r\nhello"},
		{"two-different-lengths", "POST /bad HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, w := cfSetup(t, nil, cfRelaxed)
			c := cfDial(t, addr)
			c.send(tc.req)
			c.expectRejected("GET", false, 400)
			if got := w.requests(); len(got) > 0 {
				t.Errorf("the worker received %+v, want nothing (the proxy refuses)", got)
			}
		})
	}
}

func TestConformanceAbsoluteForm(t *testing.T) {
	addr, w := cfSetup(t, nil, cfRelaxed)
	c := cfDial(t, addr)
	c.send("GET http://test.local/probe?id=abs1 HTTP/1.1\r\nHost: test.local\r\nCookie: session=s1\r\nConnection: close\r\n\r\n")
	resp, err := c.final("GET", 5*time.Second)
	switch {
	case err != nil:
		t.Fatalf("absolute-form target: %v", err)
	case resp.Code == 400:
		return
	case resp.Code != 200 || string(resp.Body) != cfProbeAnswer("abs1", "s1"):
		t.Errorf("absolute-form target: got %s, want 400 or its own answer", cfShow(resp.Raw))
	}
	for _, r := range w.requests() {
		if strings.Contains(r.Target, "abs1") && (r.Target != "/probe?id=abs1" || r.Host != "test.local") {
			t.Errorf("the worker got target %q host %q, want origin form /probe?id=abs1 and host test.local", r.Target, r.Host)
		}
	}
}

func TestConformanceHTTP10(t *testing.T) {
	chunky := func(c *cfWorkerConn, r *http.Request) bool {
		return c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
	}
	t.Run("closes-by-default", func(t *testing.T) {
		addr, _ := cfSetup(t, nil, cfRelaxed)
		c := cfDial(t, addr)
		c.send("GET /probe?id=ten1 HTTP/1.0\r\nHost: test.local\r\nCookie: session=s1\r\n\r\n")
		resp, err := c.final("GET", 5*time.Second)
		if err != nil || resp.Code != 200 || string(resp.Body) != cfProbeAnswer("ten1", "s1") {
			t.Fatalf("HTTP/1.0: %v, got %s", err, cfShow(resp.Raw))
		}
		if extra, err := c.closedWithin(time.Second); err != nil || len(extra) > 0 {
			t.Errorf("HTTP/1.0 without keep-alive: after the answer %s (%v), want the close", cfShow(extra), err)
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		addr, _ := cfSetup(t, nil, cfRelaxed)
		c := cfDial(t, addr)
		for i := range 2 {
			id := "ka" + strconv.Itoa(i)
			c.send("GET /probe?id=" + id + " HTTP/1.0\r\nHost: test.local\r\nCookie: session=s1\r\nConnection: keep-alive\r\n\r\n")
			resp, err := c.final("GET", 5*time.Second)
			if err != nil || resp.Code != 200 || string(resp.Body) != cfProbeAnswer(id, "s1") {
				t.Fatalf("HTTP/1.0 keep-alive request %d: %v, got %s", i, err, cfShow(resp.Raw))
			}
			if !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") {
				// Not kept alive: then it must close.
				if extra, err := c.closedWithin(time.Second); err != nil || len(extra) > 0 {
					t.Errorf("HTTP/1.0 answer without keep-alive: after it %s (%v), want the close", cfShow(extra), err)
				}
				return
			}
		}
	})
	t.Run("no-chunked-to-1.0", func(t *testing.T) {
		addr, _ := cfSetup(t, chunky, cfRelaxed)
		c := cfDial(t, addr)
		c.send("GET /chunky HTTP/1.0\r\nHost: test.local\r\n\r\n")
		resp, err := c.final("GET", 5*time.Second)
		if err != nil || resp.Code != 200 || resp.Chunked || string(resp.Body) != "hello world" {
			t.Errorf("a chunked answer to HTTP/1.0: %v, got %s, want the body unchunked", err, cfShow(resp.Raw))
		}
	})
}

func TestConformanceHeaderTooLarge(t *testing.T) {
	addr, w := cfSetup(t, nil, cfRelaxed)
	c := cfDial(t, addr)
	var head strings.Builder
	head.WriteString("GET /big-head HTTP/1.1\r\nHost: test.local\r\n")
	line := "X-Pad: " + strings.Repeat("a", 8000) + "\r\n"
	for head.Len() < 1<<20+64<<10 {
		head.WriteString(line)
	}
	head.WriteString("\r\n")
	// The engine may answer and close before it has read everything.
	wrote := make(chan error, 1)
	go func() { wrote <- c.write(head.String()) }()
	c.expectRejected("GET", false, 431)
	c.nc.Close()
	<-wrote
	if w.sawTarget("big-head") {
		t.Errorf("the oversized request reached the worker")
	}
}

// A client that half-closes (FIN) after its request has hung up as far as
// the engine can tell (a full close looks the same on the wire): like nginx
// (499) and net/http, the engine abandons the request, drops the worker
// connection and closes; nothing is sent that belongs to anyone else.
func TestConformanceClientHalfClose(t *testing.T) {
	slow := func(c *cfWorkerConn, r *http.Request) bool {
		// The scenario: the worker takes a moment, long enough for the
		// engine to notice the half-close.
		return c.pause(150*time.Millisecond) && cfEcho(c, r)
	}
	for _, tc := range []struct{ name, req string }{
		{"get", "GET /slow?id=h1 HTTP/1.1\r\nHost: test.local\r\n\r\n"},
		{"post", "POST /slow?id=h2 HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := cfSetup(t, slow, cfRelaxed)
			c := cfDial(t, addr)
			c.send(tc.req)
			if err := c.nc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := c.closedWithin(5 * time.Second)
			if err != nil || len(got) != 0 {
				t.Errorf("a client that half-closed after its request: %v, got %s, want the connection closed with nothing sent", err, cfShow(got))
			}
		})
	}
}

func TestConformanceWorkerHalfClose(t *testing.T) {
	addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
		c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		c.Conn.(interface{ CloseWrite() error }).CloseWrite()
		io.Copy(io.Discard, c.br) // until the engine closes its side
		return false
	}, cfRelaxed)
	c := cfDial(t, addr)
	c.send("GET /half HTTP/1.1\r\nHost: test.local\r\n\r\n")
	resp, err := c.final("GET", 5*time.Second)
	if !errors.Is(err, errCfCut) {
		t.Errorf("a worker that half-closed mid-response: %v, got %s, want the response cut", err, cfShow(resp.Raw))
	}
}

func TestConformancePipelinedBadMiddle(t *testing.T) {
	addr, w := cfSetup(t, nil, cfRelaxed)
	c := cfDial(t, addr)
	req := func(id string) string {
		return "GET /probe?id=" + id + " HTTP/1.1\r\nHost: test.local\r\nCookie: session=p\r\n\r\n"
	}
	c.send(req("pA") + req("pB") + "GET /probe?id=pBAD HTTP/1.1\r\nHost: test.local\r\nX-Bad: a\x00b\r\n\r\n" + req("pC"))
	for _, id := range []string{"pA", "pB"} {
		resp, err := c.final("GET", 5*time.Second)
		if err != nil || resp.Code != 200 || string(resp.Body) != cfProbeAnswer(id, "p") {
			t.Fatalf("pipelined request %s: %v, got %s", id, err, cfShow(resp.Raw))
		}
	}
	c.expectRejected("GET", false, 400)
	if w.sawTarget("pBAD") || w.sawTarget("pC") {
		t.Errorf("requests after the bad one reached the worker: %+v", w.requests())
	}
}

func TestConformanceExpectContinue(t *testing.T) {
	addr, _ := cfSetup(t, nil, cfRelaxed)
	c := cfDial(t, addr)
	c.send("POST /upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, err := c.read("POST", 5*time.Second)
	if err != nil || resp.Code != 100 {
		t.Fatalf("Expect: 100-continue: %v, got %s, want 100 Continue before the body is sent", err, cfShow(resp.Raw))
	}
	c.send("hello")
	resp, err = c.final("POST", 5*time.Second)
	if want := cfEchoAnswer("POST", "/upload", []byte("hello")); err != nil || resp.Code != 200 || string(resp.Body) != want {
		t.Errorf("Expect: 100-continue: %v, got %s, want the worker's %q", err, cfShow(resp.Raw), want)
	}
}

func TestConformanceUpgradeTunnel(t *testing.T) {
	addr, _ := cfSetup(t, func(c *cfWorkerConn, r *http.Request) bool {
		if !c.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello-from-worker\n") {
			return false
		}
		for range 10 {
			line, err := c.br.ReadString('\n')
			if err != nil {
				return false
			}
			if !c.send("echo:" + line) {
				return false
			}
		}
		return false
	}, cfRelaxed)
	c := cfDial(t, addr)
	c.send("GET /ws HTTP/1.1\r\nHost: test.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := c.final("GET", 5*time.Second)
	if err != nil || resp.Code != 101 {
		t.Fatalf("upgrade: %v, got %s, want 101", err, cfShow(resp.Raw))
	}
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	expect := func(want string) {
		t.Helper()
		if got, err := c.br.ReadString('\n'); err != nil || got != want {
			t.Fatalf("tunnel: got %q (%v), want %q", got, err, want)
		}
	}
	expect("hello-from-worker\n")
	for _, ping := range []string{"ping-1\n", "ping-2\n"} {
		c.send(ping)
		expect("echo:" + ping)
	}
}

// Dev mode runs the same engine with local handlers and a body rewriter:
// the attacks above fare no better there.
func TestConformanceDevMode(t *testing.T) {
	cfDev = true
	defer func() { cfDev = false }()
	t.Run("stray", TestConformanceStrayWorkerBytes)
	t.Run("smuggling", TestConformanceBrokenChunkedSmuggling)
	t.Run("cl-te", TestConformanceLengthAndTransferEncoding)
	t.Run("bare-lf", TestConformanceBareLFHead)
	t.Run("malformed-chunked", TestConformanceMalformedChunkedBody)
	t.Run("bad-worker-head", TestConformanceBadWorkerHead)
	t.Run("bad-worker-trailer", TestConformanceBadWorkerTrailer)
	t.Run("bad-request-bytes", TestConformanceBadRequestBytes)
}
