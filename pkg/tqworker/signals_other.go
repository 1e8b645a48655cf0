//go:build !unix

package tqworker

import "os"

// Without SIGUSR1 there is no reload signal; tqserver targets Unix.
var (
	stopSignals   = []os.Signal{os.Interrupt}
	reloadSignals []os.Signal
)
