package config

import (
	"path/filepath"
	"testing"
)

// Layout carries the configured directories and patterns into the layout;
// an explicit empty include_patterns stays empty instead of falling back to
// the default.
func TestLayout(t *testing.T) {
	root := writeRoot(t, map[string]string{ServerFile: `
server:
  static:
    dev_root: assets
workers:
  workers_dir: apps
  discovery:
    include_patterns: []
`})
	c, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	lay := c.Layout(root)
	if lay.WorkersDir() != filepath.Join(root, "apps") || lay.StaticDir() != filepath.Join(root, "assets") {
		t.Errorf("workers %q, static %q", lay.WorkersDir(), lay.StaticDir())
	}
	if got := lay.IncludePatterns(); len(got) != 0 {
		t.Errorf("include_patterns: [] gave %q", got)
	}
	d := Default().Layout(root)
	if d.WorkersDir() != filepath.Join(root, "workers") || d.StaticDir() != filepath.Join(root, "workers") ||
		len(d.IncludePatterns()) != 1 || d.IncludePatterns()[0] != "*/src/main.go" {
		t.Errorf("defaults: workers %q, static %q, include %q", d.WorkersDir(), d.StaticDir(), d.IncludePatterns())
	}
	if d.ServerConfig() != filepath.Join(root, ServerFile) || d.DeploymentConfig() != filepath.Join(root, DeploymentFile) {
		t.Errorf("config files %q %q", d.ServerConfig(), d.DeploymentConfig())
	}
}
