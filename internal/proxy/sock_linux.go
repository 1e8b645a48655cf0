package proxy

import (
	"syscall"
	"unsafe"
)

// Socket states seen by sockState.
const (
	sockIdle   = iota // open, nothing to read
	sockData          // bytes nobody asked for are waiting
	sockClosed        // the peer closed or reset it, or it failed
)

// sockState peeks at an idle socket without blocking or consuming.
func sockState(rc syscall.RawConn) int {
	state := sockClosed
	err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK:
			state = sockIdle
		case errno == 0 && n > 0:
			state = sockData
		}
		return true
	})
	if err != nil {
		return sockClosed
	}
	return state
}
