package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func rawOf(t *testing.T, c net.Conn) *rawIO {
	t.Helper()
	r := socketIO(c)
	if r == nil {
		t.Fatal("no raw I/O for a TCP socket")
	}
	return r
}

func TestRawIOReadWrite(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := rawOf(t, a), rawOf(t, b)
	// Reads wait in the poller until data arrives.
	got := make(chan []byte)
	go func() {
		buf := make([]byte, 64)
		n, err := rb.Read(buf)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- buf[:n]
	}()
	if n, err := ra.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("write = %d, %v", n, err)
	}
	if g := <-got; string(g) != "hello" {
		t.Fatalf("read %q", g)
	}
	if n, err := ra.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
	// EOF when the peer closes.
	b.Close()
	if _, err := io.ReadAll(ra); err != nil {
		t.Fatalf("ReadAll after the peer closed: %v", err)
	}
	if n, err := ra.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF = %d, %v", n, err)
	}
}

// A write larger than the socket buffers fills them (EAGAIN), waits in the
// poller and finishes as the peer reads: every byte arrives, in order.
func TestRawIOLargeWrite(t *testing.T) {
	a, b := tcpPair(t)
	ra := rawOf(t, a)
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		n, err := ra.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	b.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(io.LimitReader(b, int64(len(want))))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes, not what was written", len(got))
	}
}

// Deadlines set on the net.Conn apply to raw reads and writes, and so does
// Close from another goroutine.
func TestRawIODeadlinesAndClose(t *testing.T) {
	a, _ := tcpPair(t)
	ra := rawOf(t, a)
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := ra.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	// A write that cannot finish (the peer never reads) stops at its deadline.
	// (Long enough for a loaded machine to write something first.)
	a.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := ra.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= 64<<20 {
		t.Fatalf("write past its deadline = %d, %v", n, err)
	}
	a.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := ra.Read(make([]byte, 8))
		errc <- err
	}()
	time.AfterFunc(20*time.Millisecond, func() { a.Close() })
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read blocked in the poller did not end when the conn closed")
	}
}

// A reset by the peer is an error naming the operation and the errno.
func TestRawIOReset(t *testing.T) {
	a, b := tcpPair(t)
	ra := rawOf(t, a)
	b.(*net.TCPConn).SetLinger(0)
	b.Write([]byte("x"))
	b.Close() // RST
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	for err == nil {
		_, err = ra.Read(make([]byte, 8))
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %v (%T)", err, err)
	}
}
