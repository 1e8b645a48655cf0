package testrig

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// PollInterval is how often WaitFor calls its condition: short enough not
// to slow a test down, long enough not to spin a shared machine.
const PollInterval = 10 * time.Millisecond

// Poll calls cond every interval until it reports true or timeout has
// passed. cond also says what it saw; on timeout the error names what was
// awaited and the last thing seen.
func Poll(timeout, interval time.Duration, what string, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if seen == "" {
				return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
			}
			return fmt.Errorf("timed out after %s waiting for %s (last: %s)", timeout, what, seen)
		}
		time.Sleep(interval) // poll interval, not synchronization
	}
}

// WaitFor polls cond every PollInterval until it holds, failing the test
// after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitEvery(t, timeout, PollInterval, what, cond)
}

// WaitEvery is WaitFor polling every interval: in-process state changes in
// microseconds, and a test of it may poll faster than one of a process.
func WaitEvery(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Poll(timeout, interval, what, func() (bool, string) { return cond(), "" }); err != nil {
		t.Fatal(err)
	}
}

// Buffer is a bytes.Buffer that several goroutines may write and read: a
// process's stdout and stderr, a logger's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
