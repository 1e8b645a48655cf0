package server

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// Main driven in-process, as cmd/tqserver drives it: Open, Run, a request
// through the proxy, a reload, Close; server_start and server_stop frame
// the log and Run returns nil.
func TestMainRunReloadClose(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(t.TempDir(), "testworker")
	testrig.BuildTestWorker(t, bin, "v1", "")
	if err := testrig.Install(root, "index", bin); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Server.AdminListen = "" // no TCP admin listener: tests run side by side
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 27000, 27999
	logs := &testrig.Buffer{}
	m, err := Open(Options{Root: root, Mode: "prod", Listen: "127.0.0.1:0", Config: cfg, Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- m.Run() }()
	get := func() string {
		resp, err := http.Get("http://" + m.Addr() + "/")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	testrig.WaitFor(t, 30*time.Second, "index serving v1", func() bool { return strings.HasPrefix(get(), "v1 ") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res := m.Reload(ctx, "test"); res.Error != "" || len(res.Changes) != 0 {
		t.Fatalf("reload with nothing changed: %+v", res)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close: %v\n%s", err, logs)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := m.Close(ctx); err != nil { // twice is fine
		t.Fatalf("second Close: %v", err)
	}
	st, err := store.Open(filepath.Join(root, "var", "tqserver.db"), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Records(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2 || recs[0].Event != "server_start" || recs[len(recs)-1].Event != "server_stop" {
		t.Fatalf("log not framed by server_start and server_stop: %+v", recs)
	}
}
