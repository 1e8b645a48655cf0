package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// unitKeys reads a systemd unit's Key=Value lines (the last of a key wins).
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

// deploy/tqserver.service is a Type=notify unit whose reload is `tqserver
// reload`, that lets the server stop its own workers (KillMode=mixed), and
// whose stop timeout covers drain + grace with the defaults. systemd itself
// accepts it (when systemd-analyze is installed).
func TestSystemdUnit(t *testing.T) {
	repo, err := testrig.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(repo, "deploy", "tqserver.service")
	kv := unitKeys(t, unit)
	for k, want := range map[string]string{"Type": "notify", "KillMode": "mixed", "KillSignal": "SIGTERM", "NotifyAccess": "main"} {
		if kv[k] != want {
			t.Errorf("%s: %s=%q, want %q", unit, k, kv[k], want)
		}
	}
	start, reload := strings.Fields(kv["ExecStart"]), strings.Fields(kv["ExecReload"])
	if len(start) < 2 || start[1] != "serve" || len(reload) < 2 || reload[0] != start[0] || reload[1] != "reload" {
		t.Errorf("%s: ExecStart=%q ExecReload=%q, want `BIN serve …` and `BIN reload …`", unit, kv["ExecStart"], kv["ExecReload"])
	}
	stop, err := time.ParseDuration(kv["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("%s: TimeoutStopSec=%q: %v", unit, kv["TimeoutStopSec"], err)
	}
	cfg, err := config.Load(t.TempDir()) // the defaults
	if err != nil {
		t.Fatal(err)
	}
	need := time.Duration(cfg.Workers.DrainTimeoutMs+cfg.Workers.ShutdownGracePeriodMs) * time.Millisecond
	if stop < need+5*time.Second {
		t.Errorf("%s: TimeoutStopSec=%s does not cover drain_timeout_ms + shutdown_grace_period_ms (%s) with a margin", unit, stop, need)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("TQ_REQUIRE_TOOLS") != "" {
			t.Fatal("TQ_REQUIRE_TOOLS is set but systemd-analyze is not installed")
		}
		t.Skip("systemd-analyze not installed (apt-get install -y systemd): the unit's syntax is not checked")
	}
	// Verify a copy whose binary exists (the unit names /opt/tqserver).
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "tqserver.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(b), "/opt/tqserver/server/bin/tqserver", tqBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", copyPath).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
