//go:build !linux

package proxy

const (
	sockIdle = iota
	sockData
	sockClosed
)

func (wc *workerConn) peekFD(uintptr) bool { return true }

// sockState cannot peek without blocking here, so no idle connection is
// ever trusted: without the check, unsolicited bytes could answer the next
// request.
func (wc *workerConn) sockState() int { return sockClosed }
