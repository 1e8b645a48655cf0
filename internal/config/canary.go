package config

import (
	"fmt"
	"math"

	"github.com/goccy/go-yaml/ast"
)

// Canary is workers.default.canary (or a workers.paths entry's): a new
// binary first serves WeightPercent of its worker's requests beside the old
// instances for DurationMs; then the proxy's counters decide. It fails when
// its share of 5xx answers is above MaxErrorRate (0..1), or its p99 latency
// is above MaxP99Ratio times the old instances' (0: not compared). A zero
// WeightPercent turns canaries off.
type Canary struct {
	WeightPercent int
	DurationMs    int
	MaxErrorRate  float64
	MaxP99Ratio   float64
}

// Enabled reports whether deploys of the worker go through a canary.
func (c Canary) Enabled() bool { return c.WeightPercent > 0 && c.DurationMs > 0 }

// DefaultCanary is the canary block's defaults once the key is given.
func DefaultCanary() Canary {
	return Canary{WeightPercent: 10, DurationMs: 60000, MaxErrorRate: 0.01, MaxP99Ratio: 2}
}

// canaryField reads a canary block; keys left out keep DefaultCanary's
// values, `canary: null` or `weight_percent: 0` turns it off.
func canaryField(dst **Canary) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		c := DefaultCanary()
		if isNull(e.value) {
			c = Canary{}
			*dst = &c
			return nil
		}
		err := d.section(path, e, map[string]fieldFunc{
			"weight_percent": func(d *fileDecoder, p string, e entry) error {
				v, err := d.intValue(p, e, 0, 100)
				c.WeightPercent = int(v)
				return err
			},
			"duration_ms": func(d *fileDecoder, p string, e entry) error {
				v, err := d.intValue(p, e, 1, maxInt32)
				c.DurationMs = int(v)
				return err
			},
			"max_error_rate": floatField(&c.MaxErrorRate, 0, 1),
			"max_p99_ratio":  floatField(&c.MaxP99Ratio, 0, 1e6),
		})
		if err == nil {
			*dst = &c
		}
		return err
	}
}

// floatField reads a number (integer or decimal) in [min, max].
func floatField(dst *float64, min, max float64) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		var v float64
		switch n := e.value.(type) {
		case *ast.IntegerNode:
			switch x := n.Value.(type) {
			case int64:
				v = float64(x)
			case uint64:
				v = float64(x)
			}
		case *ast.FloatNode:
			v = n.Value
		default:
			return d.typeErr(path, e, "a number")
		}
		if math.IsNaN(v) || v < min || v > max {
			return d.errf(e.line, "%s: %s", path, fmt.Sprintf("must be between %g and %g, got %g", min, max, v))
		}
		*dst = v
		return nil
	}
}
