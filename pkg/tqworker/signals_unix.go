//go:build unix

package tqworker

import (
	"os"
	"syscall"
)

var (
	stopSignals   = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	reloadSignals = []os.Signal{syscall.SIGUSR1}
)
