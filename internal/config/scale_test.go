package config

import (
	"testing"
)

// instances, min_instances and max_instances merge as a range: "instances: N"
// is N..N, and min_instances / max_instances each move one end of the range
// they inherit.
func TestInstanceRangeMerging(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: `workers:
  default:
    min_instances: 2
    max_instances: 4
    scale_target_inflight: 5
    scale_down_after_ms: 1000
  paths:
    "/fixed":
      instances: 3
    "/fixed/grow":
      max_instances: 6
    "/more":
      max_instances: 10
      scale_target_inflight: 2
    "/less":
      min_instances: 1
      scale_down_after_ms: 0
`})
	for _, tc := range []struct {
		route                string
		n, lo, hi, target, d int
		scaled               bool
	}{
		{"/", 2, 2, 4, 5, 1000, true},
		{"/fixed", 3, 3, 3, 5, 1000, false},
		{"/fixed/grow", 3, 3, 6, 5, 1000, true},
		{"/more", 2, 2, 10, 2, 1000, true},
		{"/less", 1, 1, 4, 5, 0, true},
	} {
		s := c.ForWorker(tc.route)
		if s.Instances != tc.n || s.MinInstances != tc.lo || s.MaxInstances != tc.hi ||
			s.ScaleTargetInflight != tc.target || s.ScaleDownAfterMs != tc.d || s.Autoscaled() != tc.scaled {
			t.Errorf("ForWorker(%q) = instances %d, range %d..%d, target %d, down after %d, autoscaled %v",
				tc.route, s.Instances, s.MinInstances, s.MaxInstances, s.ScaleTargetInflight, s.ScaleDownAfterMs, s.Autoscaled())
		}
	}
	if d := DefaultWorkerSettings(); d.Instances != 1 || d.MinInstances != 1 || d.MaxInstances != 1 ||
		d.ScaleTargetInflight != 8 || d.ScaleDownAfterMs != 30000 || d.Autoscaled() || d.ScaleDownAfter().Seconds() != 30 {
		t.Errorf("built-in defaults: %+v", d)
	}
}

func TestClampInstances(t *testing.T) {
	fixed := DefaultWorkerSettings()
	fixed.Instances = 3 // set by hand, range left at 1..1: the fixed count wins
	scaled := DefaultWorkerSettings()
	scaled.MinInstances, scaled.MaxInstances = 2, 5
	for _, tc := range []struct {
		s       WorkerSettings
		n, want int
	}{
		{fixed, 1, 3}, {fixed, 7, 3}, {fixed, 3, 3},
		{scaled, 1, 2}, {scaled, 2, 2}, {scaled, 4, 4}, {scaled, 5, 5}, {scaled, 9, 5},
	} {
		if got := tc.s.ClampInstances(tc.n); got != tc.want {
			t.Errorf("range %d..%d (instances %d): ClampInstances(%d) = %d, want %d",
				tc.s.MinInstances, tc.s.MaxInstances, tc.s.Instances, tc.n, got, tc.want)
		}
	}
}

// Only the count may differ for EqualExceptScaling; anything else needs a
// restart.
func TestEqualExceptScaling(t *testing.T) {
	a := DefaultWorkerSettings()
	b := a.clone()
	b.Instances, b.MinInstances, b.MaxInstances, b.ScaleTargetInflight, b.ScaleDownAfterMs = 2, 2, 9, 3, 5
	if !a.EqualExceptScaling(b) || a.Equal(b) {
		t.Fatal("a change of the instance range alone counts as a restart")
	}
	b.GoMaxProcs++
	if a.EqualExceptScaling(b) {
		t.Fatal("go_max_procs change ignored")
	}
}
