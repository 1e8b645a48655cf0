package config

import "time"

// Proxy is the "proxy" section of server.yaml: what the proxy does with a
// request whose route has no serving instance (start-up, crash restart,
// backoff, a dev build that failed).
type Proxy struct {
	// HoldMs: such a request waits up to this long for an instance before
	// it gets 503 with Retry-After; 0 answers 503 at once.
	HoldMs int
	// HoldQueue bounds the requests waiting per route; one more gets 503
	// at once.
	HoldQueue int
}

func defaultProxy() Proxy { return Proxy{HoldMs: 5000, HoldQueue: 1024} }

// Hold is proxy.hold_ms as a duration (0: requests are not held).
func (p Proxy) Hold() time.Duration { return time.Duration(p.HoldMs) * time.Millisecond }

func proxyFields(p *Proxy) map[string]fieldFunc {
	return map[string]fieldFunc{
		// A minute at most: a held request keeps a client connection and
		// a goroutine, and clients give up long before.
		"hold_ms":    intField(&p.HoldMs, 0, 60000),
		"hold_queue": intField(&p.HoldQueue, 1, 1<<20),
	}
}
