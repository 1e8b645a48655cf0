package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzLoad writes the input as config/server.yaml: Load must not panic, an
// error must be one line naming the file, and a Config it returns must be
// valid.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{fullServer, "server:\n  port: ${PORT:-8080}\n", "a: &x [*x]\n"} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile(filepath.Join("..", "..", "config", "server.yaml")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		if err := os.Mkdir(filepath.Join(root, "config"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "config", "server.yaml"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(root)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, ServerFile+":") {
				t.Fatalf("error does not start with the file name: %q", msg)
			}
			if strings.ContainsAny(msg, "\n\r") || !utf8.ValidString(msg) {
				t.Fatalf("multi-line error: %q", msg)
			}
			if c != nil {
				t.Fatal("Config returned with an error")
			}
			return
		}
		w := c.Workers
		if c.Server.Port < 1 || c.Server.Port > 65535 || w.PortRangeStart < 1 || w.PortRangeStart > w.PortRangeEnd || w.PortRangeEnd > 65535 {
			t.Fatalf("invalid ports accepted: %d, %d..%d", c.Server.Port, w.PortRangeStart, w.PortRangeEnd)
		}
		if _, err := ResolveMode("", func(string) string { return "" }, c); err != nil {
			t.Fatalf("accepted config has an invalid mode: %v", err)
		}
		for k := range w.Paths {
			if checkPathsKey(k) != "" {
				t.Fatalf("invalid paths key accepted: %q", k)
			}
			s := c.ForWorker(k)
			if s.HealthFailureThreshold < 1 || s.HealthTimeoutMs < 1 || checkGoMemLimit(s.GoMemLimit) != "" ||
				s.MinInstances < 1 || s.MaxInstances < s.MinInstances || s.MaxInstances > 64 || s.Instances != s.MinInstances ||
				s.ScaleTargetInflight < 1 || s.ScaleDownAfterMs < 0 {
				t.Fatalf("invalid settings for %q: %+v", k, s)
			}
			for name := range s.Env {
				if !validEnvName(name) {
					t.Fatalf("invalid env name accepted: %q", name)
				}
			}
		}
	})
}
