package statemachine

import (
	"errors"
	"testing"
)

// legal is the whole transition table written out by hand; every pair not in
// it must be refused.
var legal = map[[2]string]string{
	{Starting, Spawned}:      Starting,
	{Starting, HealthOK}:     Healthy,
	{Starting, HealthFailed}: Stopped,
	{Starting, StartFailed}:  Stopped,
	{Starting, Exited}:       Stopped,
	{Starting, Stop}:         Stopped,
	{Starting, Reap}:         Stopped,
	{Healthy, Drain}:         Draining,
	{Healthy, Exited}:        Stopped,
	{Healthy, Reap}:          Stopped,
	{Draining, Exited}:       Stopped,
	{Draining, Stop}:         Stopped,
	{Draining, Reap}:         Stopped,
}

func TestEveryTransition(t *testing.T) {
	count := 0
	for _, state := range States() {
		for _, ev := range Events() {
			want, ok := legal[[2]string{state, ev}]
			m := New(state)
			from, to, err := m.Fire(ev)
			if from != state {
				t.Errorf("%s/%s: from = %q", state, ev, from)
			}
			next, nerr := Next(state, ev)
			if ok {
				count++
				if err != nil || to != want || m.State() != want {
					t.Errorf("%s --%s--> got %q, %v; want %q", state, ev, to, err, want)
				}
				if nerr != nil || next != want {
					t.Errorf("Next(%s,%s) = %q, %v; want %q", state, ev, next, nerr, want)
				}
				continue
			}
			if !errors.Is(err, ErrIllegal) || m.State() != state || to != state {
				t.Errorf("%s --%s--> should be illegal, got %q, %v (state now %q)", state, ev, to, err, m.State())
			}
			if !errors.Is(nerr, ErrIllegal) {
				t.Errorf("Next(%s,%s) should be illegal, got %q", state, ev, next)
			}
		}
	}
	if count != len(legal) {
		t.Fatalf("table has %d legal transitions, test expects %d", count, len(legal))
	}
}

func TestLifecycles(t *testing.T) {
	paths := [][]string{
		{Spawned, HealthOK, Drain, Exited},
		{Spawned, HealthFailed},
		{StartFailed},
		{Spawned, HealthOK, Exited},
		{Spawned, Stop},
		{Spawned, HealthOK, Drain, Stop},
	}
	for _, p := range paths {
		m := New(Starting)
		for _, ev := range p {
			if _, _, err := m.Fire(ev); err != nil {
				t.Fatalf("%v: %v", p, err)
			}
		}
		if m.State() != Stopped {
			t.Fatalf("%v ends in %s", p, m.State())
		}
		// Stopped is final.
		for _, ev := range Events() {
			if _, _, err := m.Fire(ev); err == nil {
				t.Fatalf("stopped accepted %s", ev)
			}
		}
	}
}
