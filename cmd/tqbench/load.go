package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram in microseconds: exact below 64 µs,
// then 64 sub-buckets per power of two (under 1.6 % error). One per
// connection, merged at the end, so recording takes no locks.
type hist struct {
	counts [64 * 64]uint64
	n      uint64
}

const subBits = 6

func bucketOf(us uint64) int {
	if us < 1<<subBits {
		return int(us)
	}
	e := bits.Len64(us) - subBits // ≥ 1
	return e<<subBits + int(us>>uint(e-1)) - 1<<subBits
}

// bucketValue is the upper bound of bucket i, in µs.
func bucketValue(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i >> subBits
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	return (m+1)<<uint(e-1) - 1
}

func (h *hist) record(d time.Duration) {
	us := uint64(d / time.Microsecond)
	i := bucketOf(us)
	if i >= len(h.counts) {
		i = len(h.counts) - 1
	}
	h.counts[i]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantileMs is the q-quantile in milliseconds (0 when empty).
func (h *hist) quantileMs(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return float64(bucketValue(i)) / 1000
		}
	}
	return float64(bucketValue(len(h.counts)-1)) / 1000
}

// result is what one load run produced.
type result struct {
	ok       uint64
	failed   uint64
	elapsed  time.Duration
	h        hist
	firstErr string
}

func (r *result) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r *result) add(o *result) {
	r.ok += o.ok
	r.failed += o.failed
	r.elapsed += o.elapsed
	r.h.merge(&o.h)
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
}

// load runs conns keep-alive HTTP/1.1 connections against addr, each a
// goroutine sending GET path and reading the whole response before the next
// one (no pipelining), until stop is closed or maxDur has passed. A request
// that fails (transport error, non-200 status, body not starting with
// "hello") counts as failed and the connection is re-dialled.
func load(addr, path string, conns int, maxDur time.Duration, stop <-chan struct{}) *result {
	return loadPhased(addr, path, conns, maxDur, stop, nil)[0]
}

// phases is how many phases loadPhased tells apart: steady, and the two
// halves of a restart (before and after the new instance takes traffic).
const phases = 3

// loadPhased is load with every request counted in the result of the phase
// (0 to phases-1) that *phase held when the request was sent; nil means
// phase 0. Elapsed is only set on the phase-0 result, as the whole run's
// length.
func loadPhased(addr, path string, conns int, maxDur time.Duration, stop <-chan struct{}, phase *atomic.Int32) [phases]*result {
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: tqbench\r\n\r\n")
	deadline := time.Now().Add(maxDur)
	var done atomic.Bool
	timer := time.AfterFunc(maxDur, func() { done.Store(true) })
	defer timer.Stop()
	if stop != nil {
		go func() {
			select {
			case <-stop:
				done.Store(true)
			case <-time.After(maxDur):
			}
		}()
	}
	if phase == nil {
		phase = new(atomic.Int32)
	}
	parts := make([][phases]*result, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range conns {
		rs := [phases]*result{{}, {}, {}}
		parts[c] = rs
		wg.Go(func() { runConn(addr, req, deadline, &done, phase, rs) })
	}
	wg.Wait()
	total := [phases]*result{{}, {}, {}}
	for _, p := range parts {
		for i := range phases {
			total[i].add(p[i])
		}
	}
	total[0].elapsed = time.Since(start)
	return total
}

// bodyWatch, when set, is closed by the first successful response whose
// body starts with want: the restart test learns that the new binary serves
// from its own load, without extra requests.
var bodyWatch atomic.Pointer[watch]

type watch struct {
	want   []byte
	seen   chan struct{}
	once   sync.Once
	onSeen func() // run once, by the load client that saw want first
}

// awaitBody installs a watch for want and returns its channel. onSeen, when
// not nil, runs in the load client that first sees want, before the channel
// closes: it can switch the load's phase without a scheduling delay.
func awaitBody(want string, onSeen func()) <-chan struct{} {
	w := &watch{want: []byte(want), seen: make(chan struct{}), onSeen: onSeen}
	bodyWatch.Store(w)
	return w.seen
}

func runConn(addr string, req []byte, deadline time.Time, done *atomic.Bool, phase *atomic.Int32, rs [phases]*result) {
	r := rs[0]
	var conn net.Conn
	var br *bufio.Reader
	fail := func(err error) {
		r.failed++
		if r.firstErr == "" {
			r.firstErr = err.Error()
		}
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for !done.Load() {
		r = rs[min(uint32(phase.Load()), phases-1)]
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				fail(err)
				// Do not spin on a refused port.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			conn = c
			br = bufio.NewReaderSize(conn, 4096)
		}
		// A per-request deadline keeps a hung peer from outliving the phase.
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		t0 := time.Now()
		if _, err := conn.Write(req); err != nil {
			fail(err)
			continue
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			fail(err)
			continue
		}
		var head [16]byte
		n, _ := io.ReadFull(resp.Body, head[:])
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat := time.Since(t0)
		if err != nil {
			fail(err)
			continue
		}
		if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(head[:n], []byte("hello")) {
			fail(fmt.Errorf("status %d body %q", resp.StatusCode, head[:n]))
			continue
		}
		if w := bodyWatch.Load(); w != nil && bytes.HasPrefix(head[:n], w.want) {
			w.once.Do(func() {
				if w.onSeen != nil {
					w.onSeen()
				}
				close(w.seen)
			})
		}
		r.ok++
		r.h.record(lat)
		if resp.Close {
			conn.Close()
			conn = nil
		}
		if time.Now().After(deadline) {
			break
		}
	}
}

// get fetches url once with a fresh connection and returns the body.
func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return string(b), nil
}
