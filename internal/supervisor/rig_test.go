package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// rig runs a Supervisor in-process on a real store under root/var for one
// test, and shuts both down when the test ends.
type rig struct {
	t    *testing.T
	root string
	sup  *Supervisor
	st   *store.Store
	logs *testrig.Buffer
	done chan error
}

// startRig starts the supervisor; setup, when not nil, adjusts it first.
func startRig(t *testing.T, root, mode string, cfg *config.Config, px *proxy.Proxy, setup func(*Supervisor)) *rig {
	t.Helper()
	st, err := store.Open(filepath.Join(root, "var", "tqserver.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, root: root, st: st, logs: &testrig.Buffer{}, done: make(chan error, 1)}
	r.sup = New(Options{Root: root, Mode: mode, Config: cfg, Store: st, Proxy: px, Logger: zerolog.New(r.logs)})
	if setup != nil {
		setup(r.sup)
	}
	go func() { r.done <- r.sup.Run() }()
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	r.sup.Send(events.Shutdown{})
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Error(err)
		}
	case <-time.After(30 * time.Second):
		r.t.Error("supervisor did not stop")
	}
	r.st.Close()
}

// waitFor polls cond until it holds, failing the test after a minute.
func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	waitLogged(r.t, 60*time.Second, what, r.logs, cond)
}

// waitLogged polls cond every 5ms (the supervisor reacts in-process, so
// shorter than testrig.PollInterval) until it holds, failing the test with
// the supervisor's log after timeout.
func waitLogged(t testing.TB, timeout time.Duration, what string, logs fmt.Stringer, cond func() bool) {
	t.Helper()
	if err := testrig.Poll(timeout, 5*time.Millisecond, what, func() (bool, string) { return cond(), "" }); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
}

// writeServerYAML writes root/config/server.yaml.
func writeServerYAML(t testing.TB, root, yaml string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "config", "server.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}
