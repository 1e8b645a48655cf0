package supervisor

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/proxy"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// With a port range of one port that another process holds, the worker's
// start is recorded as ports_exhausted (naming the range), retried with
// backoff, and succeeds on that port once it is free (fault 11).
func TestPortRangeExhaustedIsRecordedAndRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := true
	defer func() {
		if held {
			ln.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	root := t.TempDir()
	buildTestWorker(t, root, "index")
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = port, port
	cfg.Workers.RestartDelayMs = 20
	cfg.Workers.RestartBackoffMaxMs = 100
	r := startRig(t, root, "prod", cfg, proxy.New(proxy.Options{}), nil)

	exhausted := func() []store.Record {
		recs, err := r.st.Records(store.Filter{Worker: "index"})
		if err != nil {
			t.Fatal(err)
		}
		var out []store.Record
		for _, rec := range recs {
			if rec.Event == sm.EventPortsExhausted {
				out = append(out, rec)
			}
		}
		return out
	}
	waitLogged(t, 15*time.Second, "repeated ports_exhausted records", r.logs, func() bool { return len(exhausted()) >= 3 })
	want := fmt.Sprintf("port_range_start..port_range_end (%d..%d) is exhausted", port, port)
	for _, rec := range exhausted() {
		if rec.Reason != sm.ReasonStartup || rec.Instance != "" || !strings.Contains(rec.Detail, want) {
			t.Fatalf("ports_exhausted record %+v: want reason startup, no instance, detail containing %q", rec, want)
		}
	}
	if st := r.sup.Status(); len(st.Workers) != 1 || len(st.Workers[0].Instances) != 0 {
		t.Fatalf("an instance exists without a port: %+v", st)
	}
	if !strings.Contains(r.logs.String(), `"message":"no free port"`) {
		t.Fatalf("port exhaustion not logged:\n%s", r.logs.String())
	}

	ln.Close()
	held = false
	r.waitFor("index healthy on the freed port", func() bool {
		for _, w := range r.sup.Status().Workers {
			for _, in := range w.Instances {
				if in.State == "healthy" && in.Port == port {
					return true
				}
			}
		}
		return false
	})
	recs, err := r.st.Records(store.Filter{Worker: "index"})
	if err != nil {
		t.Fatal(err)
	}
	if starts := count(recs, func(rec store.Record) bool { return rec.Event == "start" }); starts != 1 {
		t.Fatalf("want 1 start record (refused starts use no instance name), got %d", starts)
	}
}

func count(recs []store.Record, pred func(store.Record) bool) int {
	n := 0
	for _, r := range recs {
		if pred(r) {
			n++
		}
	}
	return n
}
