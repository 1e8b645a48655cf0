package proxy

import (
	"syscall"
	"unsafe"
)

// Socket states seen by peek.
const (
	sockIdle   = iota // open, nothing to read
	sockData          // bytes nobody asked for are waiting
	sockClosed        // the peer closed or reset it, or it failed
)

// peekFD looks at the socket without blocking or consuming; made once per
// connection (peekFn) so a checkout allocates nothing.
func (wc *workerConn) peekFD(fd uintptr) bool {
	var b [1]byte
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK:
		wc.peeked = sockIdle
	case errno == 0 && n > 0:
		wc.peeked = sockData
	default:
		wc.peeked = sockClosed
	}
	return true
}

// sockState peeks at an idle connection's socket.
func (wc *workerConn) sockState() int {
	if wc.raw.Read(wc.peekFn) != nil {
		return sockClosed
	}
	return wc.peeked
}
