package proxy

import (
	"syscall"
	"unsafe"
)

// sockIdle peeks at an idle socket without blocking: a connection the worker
// closed (EOF or reset) or that holds unasked-for bytes is not reusable.
func sockIdle(rc syscall.RawConn) bool {
	idle := false
	err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		_ = n // 0 is EOF, 1 is unasked-for data: neither is idle
		idle = errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && idle
}
