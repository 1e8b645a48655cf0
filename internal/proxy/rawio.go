package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a socket through its syscall.RawConn with raw
// system calls. The sockets are non-blocking, so a read or write returns at
// once (or EAGAIN, and the RawConn waits in the poller, deadlines included,
// exactly like net.Conn). What it saves is the runtime's system call
// bookkeeping: net.Conn's Read and Write go through syscall.Syscall, which
// hands the P off when the call takes longer than a scheduler tick — on
// this kind of virtual machine a loopback write that wakes the peer often
// does, and the hand-off (sysmon retaking the P, starting another M, the
// futex wake-ups) was a measurable share of the proxy's CPU.
//
// One rawIO serves one connection. Reads must not run concurrently with
// each other, nor writes with each other (a read and a write may); the
// proxy's connections are used that way (see frontConn and workerConn).
// The callbacks are made once, so a read or write allocates nothing.
type rawIO struct {
	c  net.Conn
	rc syscall.RawConn

	rbuf []byte
	rn   int
	rerr syscall.Errno
	rfn  func(fd uintptr) bool

	wbuf []byte
	wn   int
	werr syscall.Errno
	wfn  func(fd uintptr) bool
	// progress, when set, runs when a write that made progress must wait
	// for the rest: a timeout between progress moves its deadline then.
	progress func()
	moved    bool
}

// socketIO returns a rawIO for a socket, nil for anything else (in-memory
// pipes in tests), which is then read and written directly.
func socketIO(c net.Conn) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{c: c, rc: rc}
	r.rfn = r.readFD
	r.wfn = r.writeFD
	return r
}

func (r *rawIO) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case 0:
			r.rn, r.rerr = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait in the poller, then try again
		default:
			r.rn, r.rerr = 0, e
			return true
		}
	}
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf = p
	err := r.rc.Read(r.rfn)
	r.rbuf = nil
	if err != nil {
		return 0, err // closed, or the read deadline passed
	}
	if r.rerr != 0 {
		return 0, r.opError("read", r.rerr)
	}
	if r.rn == 0 {
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *rawIO) writeFD(fd uintptr) bool {
	for len(r.wbuf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[0])), uintptr(len(r.wbuf)))
		switch e {
		case 0:
			r.wn += int(n)
			r.wbuf = r.wbuf[n:]
			r.moved = true
		case syscall.EINTR:
		case syscall.EAGAIN:
			if r.moved && r.progress != nil {
				r.moved = false
				r.progress()
			}
			return false // the send buffer is full: wait until writable
		default:
			r.werr = e
			return true
		}
	}
	return true
}

func (r *rawIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wbuf, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.wfn)
	n := r.wn
	r.wbuf = nil
	if err != nil {
		return n, err // closed, or the write deadline passed
	}
	if r.werr != 0 {
		return n, r.opError("write", r.werr)
	}
	return n, nil
}

func (r *rawIO) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}
