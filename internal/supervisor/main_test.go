package supervisor

import (
	"testing"

	"go.uber.org/goleak"
)

// The supervisor's helper goroutines (health gates, probes, exit waiters,
// drain watchers, builds) must all end once Run has returned.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
