package statemachine

import "testing"

// Every code is spelled once: no two reasons, and no two event names
// (transition or record events), share a string.
func TestCodesDistinct(t *testing.T) {
	reasons := Reasons()
	if len(reasons) != 14 {
		t.Errorf("%d reasons, CONTRACT.md §4 lists 14", len(reasons))
	}
	seen := map[string]bool{}
	for _, r := range reasons {
		if r == "" || seen[r] {
			t.Errorf("reason %q empty or listed twice", r)
		}
		seen[r] = true
	}
	evs := append(Events(), Start, EventServerStart, EventServerStop, EventConfigReloaded, EventConfigRejected,
		EventAssetsChanged, EventBinaryRejected, EventServerUpgradePending, EventBuildStarted, EventBuildOK,
		EventBuildFailed, EventPortsExhausted, EventLogRecreated, EventLogSalvaged)
	seen = map[string]bool{}
	for _, e := range evs {
		if e == "" || seen[e] {
			t.Errorf("event %q empty or used twice", e)
		}
		seen[e] = true
	}
}

func TestValidState(t *testing.T) {
	for _, s := range States() {
		if !ValidState(s) {
			t.Errorf("ValidState(%q) = false", s)
		}
	}
	for _, s := range []string{"", "start", "Healthy", "crashed", "stopped "} {
		if ValidState(s) {
			t.Errorf("ValidState(%q) = true", s)
		}
	}
}
