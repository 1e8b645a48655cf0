//go:build !linux

package proxy

import "syscall"

// sockIdle cannot peek without blocking here; a stale connection is caught
// by the retry of idempotent requests instead.
func sockIdle(syscall.RawConn) bool { return true }
