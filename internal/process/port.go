package process

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// PortFree reports whether 127.0.0.1:port can be bound right now.
func PortFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// ports is the round-robin cursor shared by all FreePort calls, so that a
// new instance gets a port its predecessor did not just use.
var ports portCursor

// FreePort returns the next port in start..end, after the one it returned
// last, that inUse does not claim and that can be bound on 127.0.0.1.
// inUse may be nil.
func FreePort(start, end int, inUse func(int) bool) (int, error) {
	return ports.next(start, end, inUse, PortFree)
}

type portCursor struct {
	mu   sync.Mutex
	last int
}

func (c *portCursor) next(start, end int, inUse, bindable func(int) bool) (int, error) {
	if start < 1 || end > 65535 || start > end {
		return 0, fmt.Errorf("invalid port range %d-%d", start, end)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := end - start + 1
	first := 0
	if c.last >= start && c.last < end {
		first = c.last - start + 1
	}
	for i := range n {
		port := start + (first+i)%n
		if inUse != nil && inUse(port) {
			continue
		}
		if !bindable(port) {
			continue
		}
		c.last = port
		return port, nil
	}
	return 0, fmt.Errorf("no free port in range %d-%d", start, end)
}
