package process

import (
	"net"
	"testing"
)

func TestPortCursor(t *testing.T) {
	all := func(int) bool { return true }
	var c portCursor
	next := func(start, end int, inUse, bindable func(int) bool) int {
		t.Helper()
		p, err := c.next(start, end, inUse, bindable)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Round-robin: a fresh instance gets a fresh port.
	for _, want := range []int{9000, 9001, 9002, 9000} {
		if got := next(9000, 9002, nil, all); got != want {
			t.Errorf("got %d, want %d", got, want)
		}
	}
	// Ports in use and ports someone else holds are skipped, wrapping around.
	inUse := func(p int) bool { return p == 9001 }
	notBound := func(p int) bool { return p != 9002 }
	if got := next(9000, 9003, inUse, notBound); got != 9003 {
		t.Errorf("got %d, want 9003", got)
	}
	if got := next(9000, 9003, inUse, notBound); got != 9000 {
		t.Errorf("got %d, want 9000 after wrapping", got)
	}
	// A different range starts at its beginning.
	if got := next(7000, 7010, nil, all); got != 7000 {
		t.Errorf("got %d, want 7000", got)
	}
	if _, err := c.next(9000, 9001, func(int) bool { return true }, all); err == nil {
		t.Error("no error when every port is in use")
	}
	for _, r := range [][2]int{{0, 10}, {10, 9}, {65535, 65536}} {
		if _, err := c.next(r[0], r[1], nil, all); err == nil {
			t.Errorf("range %v accepted", r)
		}
	}
}

func TestFreePortReal(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := l.Addr().(*net.TCPAddr).Port
	if PortFree(held) {
		t.Errorf("PortFree(%d) = true while it is bound", held)
	}
	if p, err := FreePort(held, held, nil); err == nil {
		t.Errorf("FreePort returned %d, bound by someone else", p)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !PortFree(held) {
		t.Errorf("PortFree(%d) = false after close", held)
	}
	if p, err := FreePort(held, held, func(p int) bool { return p == held }); err == nil {
		t.Errorf("FreePort returned %d, marked in use", p)
	}
	if p, err := FreePort(held, held, nil); err != nil || p != held {
		t.Errorf("FreePort = %d, %v; want %d", p, err, held)
	}
}
