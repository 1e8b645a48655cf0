package core

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	base, max := 100*time.Millisecond, 30*time.Second
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for n, w := range want {
		if got := backoff(base, max, n); got != w*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want %v", n, got, w*time.Millisecond)
		}
	}
	if got := backoff(base, max, 1000); got != max {
		t.Errorf("backoff(1000) = %v, want the cap", got)
	}
	if got := backoff(0, 0, 3); got <= 0 {
		t.Errorf("zero base must still wait: %v", got)
	}
}
