package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Keys that follow workers.workers_dir when not written.
func TestKeysFollowWorkersDir(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: "workers:\n  workers_dir: apps\n"})
	if got := c.Workers.Discovery.WorkersDir; got != "apps" {
		t.Errorf("discovery.workers_dir = %q, want apps", got)
	}
	if got := c.Binaries.Path; got != "apps/{worker_name}/bin/{worker_name}" {
		t.Errorf("binaries.path = %q", got)
	}
	for _, r := range []Resources{c.Deployment.Dev.Resources, c.Deployment.Prod.Resources} {
		if r.BasePath != "apps" {
			t.Errorf("resources.base_path = %q, want apps", r.BasePath)
		}
	}
	if got, want := c.Deployment.Dev.FileWatcher.WatchPatterns, DefaultWatchPatterns("apps"); !reflect.DeepEqual(got, want) || want[0] != "apps/*/src/**" {
		t.Errorf("watch_patterns = %q, want %q", got, want)
	}
	if got := c.Layout("/r").Worker("x").Binary(); got != "/r/apps/x/bin/x" {
		t.Errorf("layout binary = %q", got)
	}

	// The deployment specification's discovery.workers_dir alone moves it too.
	c = mustLoad(t, map[string]string{ServerFile: "workers:\n  discovery:\n    workers_dir: apps\n"})
	if c.Workers.WorkersDir != "apps" || c.Layout("/r").WorkersDir() != "/r/apps" {
		t.Errorf("workers_dir = %q from discovery.workers_dir", c.Workers.WorkersDir)
	}
}

func TestBinariesPathAndFormat(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, path, format string
	}{
		{"path only", "binaries:\n  path: build/{worker_name}\n", "build/{worker_name}", "{worker_name}"},
		{"path only, other name", "binaries:\n  path: build/{worker_name}/app\n", "build/{worker_name}/app", "app"},
		{"format only", "binaries:\n  format: \"{worker_name}.bin\"\n", "workers/{worker_name}/bin/{worker_name}.bin", "{worker_name}.bin"},
		{"both agree", "binaries:\n  format: app\n  path: out/{worker_name}/app\n", "out/{worker_name}/app", "app"},
	} {
		c := mustLoad(t, map[string]string{DeploymentFile: tc.yaml})
		if c.Binaries.Path != tc.path || c.Binaries.Format != tc.format {
			t.Errorf("%s: path %q format %q, want %q %q", tc.name, c.Binaries.Path, c.Binaries.Format, tc.path, tc.format)
		}
	}
	c := mustLoad(t, map[string]string{DeploymentFile: "binaries:\n  path: build/{worker_name}\n"})
	if got := c.Layout("/r").Worker("api_users").Binary(); got != "/r/build/api_users" {
		t.Errorf("layout binary = %q, want /r/build/api_users", got)
	}
}

// Keys of the deployment specification accepted with their meaning.
func TestSeedDeploymentKeys(t *testing.T) {
	c := mustLoad(t, map[string]string{DeploymentFile: `deployment:
  mode: prod
  check_on_sighup: true
  on_file_change:
    - restart_server
    - restart_affected_worker
`})
	if !c.TimestampCheckEnabled(ModeProd) || !c.TimestampCheckEnabled(ModeDev) {
		t.Error("check_on_sighup: true turned the checks off")
	}
	c = mustLoad(t, map[string]string{DeploymentFile: "deployment:\n  check_on_sighup: false\n"})
	if c.TimestampCheckEnabled(ModeProd) || c.TimestampCheckEnabled(ModeDev) {
		t.Error("check_on_sighup: false left the checks on")
	}
}

// Contradictions and keys prod cannot honour: one line naming the key,
// why, and what to write instead.
func TestRejectedKeys(t *testing.T) {
	for _, tc := range []struct {
		name, file, src string
		want            []string
	}{
		{"prod watcher on", DeploymentFile, "deployment:\n  prod:\n    file_watcher:\n      enabled: true\n",
			[]string{"config/deployment.yaml:4: deployment.prod.file_watcher.enabled: must be false: prod mode watches no files", "SIGHUP", "dev mode"}},
		{"prod watch_patterns", DeploymentFile, "deployment:\n  prod:\n    file_watcher:\n      watch_patterns: []\n",
			[]string{"config/deployment.yaml:4: deployment.prod.file_watcher.watch_patterns: not supported", "remove the key"}},
		{"prod debounce", DeploymentFile, "deployment:\n  prod:\n    file_watcher:\n      debounce_ms: 5\n",
			[]string{"config/deployment.yaml:4: deployment.prod.file_watcher.debounce_ms: not supported"}},
		{"prod resource watch", DeploymentFile, "deployment:\n  prod:\n    resources:\n      watch_resource_changes: true\n",
			[]string{"config/deployment.yaml:4: deployment.prod.resources.watch_resource_changes: must be false"}},
		{"discovery dir differs", ServerFile, "workers:\n  workers_dir: apps\n  discovery:\n    workers_dir: other\n",
			[]string{`config/server.yaml:4: workers.discovery.workers_dir ("other") differs from workers.workers_dir ("apps")`}},
		{"format disagrees with path", DeploymentFile, "binaries:\n  path: build/{worker_name}\n  format: x\n",
			[]string{`config/deployment.yaml:3: binaries.format ("x") must be the file name that binaries.path ("build/{worker_name}") ends in, "{worker_name}"`}},
		{"format with slash", DeploymentFile, "binaries:\n  format: a/{worker_name}\n",
			[]string{`config/deployment.yaml:2: binaries.format: must be a file name`}},
		{"binary in src", DeploymentFile, "binaries:\n  path: workers/{worker_name}/src/{worker_name}\n",
			[]string{`config/deployment.yaml:2: binaries.path ("workers/{worker_name}/src/{worker_name}") puts binaries in each worker's src/`}},
		{"binary in public", DeploymentFile, "binaries:\n  path: workers/{worker_name}/public/b\n",
			[]string{`puts binaries in each worker's public/, which is served`}},
		{"dev output_dir elsewhere", DeploymentFile, "deployment:\n  dev:\n    build:\n      output_dir: out\n",
			[]string{`config/deployment.yaml:4: deployment.dev.build.output_dir ("out") would put builds in workers/{worker_name}/out/, but the server runs binaries from workers/{worker_name}/bin/`, "set binaries.path to move binaries"}},
		{"prod output_dir elsewhere", DeploymentFile, "deployment:\n  prod:\n    build:\n      output_dir: dist\n",
			[]string{`deployment.prod.build.output_dir ("dist") would put builds in dist/{worker_name}/bin/`}},
		{"output_dir vs moved path", DeploymentFile, "deployment:\n  dev:\n    build:\n      output_dir: bin\nbinaries:\n  path: build/{worker_name}\n",
			[]string{`config/deployment.yaml:4: deployment.dev.build.output_dir ("bin")`, `runs binaries from build/`}},
		{"base_path elsewhere", DeploymentFile, "deployment:\n  dev:\n    resources:\n      base_path: res\n",
			[]string{`config/deployment.yaml:4: deployment.dev.resources.base_path ("res") must be the workers directory (workers.workers_dir, "workers")`, "remove base_path"}},
		{"on_file_change partial", DeploymentFile, "deployment:\n  on_file_change: [restart_affected_worker]\n",
			[]string{"config/deployment.yaml:2: deployment.on_file_change must list restart_server", "check_on_sighup: false"}},
		{"on_file_change unknown", DeploymentFile, "deployment:\n  on_file_change: [reboot]\n",
			[]string{`config/deployment.yaml:2: deployment.on_file_change[0]: must be "restart_server" or "restart_affected_worker", got "reboot"`}},
	} {
		_, err := Load(writeRoot(t, map[string]string{tc.file: tc.src}))
		if err == nil {
			t.Errorf("%s: loaded", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error has more than one line: %q", tc.name, err)
		}
	}

	// A moved workers directory with the example's default binaries.path
	// would leave every binary behind: said so, with the path to write.
	_, err := Load(writeRoot(t, map[string]string{
		ServerFile:     "workers:\n  workers_dir: apps\n",
		DeploymentFile: "binaries:\n  path: workers/{worker_name}/bin/{worker_name}\n",
	}))
	if err == nil || !strings.Contains(err.Error(), `binaries.path ("workers/{worker_name}/bin/{worker_name}") is under workers/, but workers.workers_dir is "apps"`) ||
		!strings.Contains(err.Error(), `"apps/{worker_name}/bin/{worker_name}"`) {
		t.Errorf("moved workers_dir: %v", err)
	}
}

// The shipped examples with only workers.workers_dir changed still load,
// and everything that follows it moves along.
func TestExamplesFollowAMovedWorkersDir(t *testing.T) {
	srv, err := os.ReadFile(filepath.Join("..", "..", "config", "server.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dep, err := os.ReadFile(filepath.Join("..", "..", "config", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(srv), "\n  workers_dir: \"workers\"\n", "\n  workers_dir: \"apps\"\n", 1)
	if moved == string(srv) {
		t.Fatal("config/server.yaml has no workers_dir line to change")
	}
	c := mustLoad(t, map[string]string{ServerFile: moved, DeploymentFile: string(dep)})
	if c.Binaries.Path != "apps/{worker_name}/bin/{worker_name}" || c.Workers.Discovery.WorkersDir != "apps" ||
		c.Deployment.Dev.Resources.BasePath != "apps" || c.Deployment.Dev.FileWatcher.WatchPatterns[0] != "apps/*/src/**" {
		t.Errorf("did not follow: binaries %q, discovery %q, base %q, patterns %q", c.Binaries.Path,
			c.Workers.Discovery.WorkersDir, c.Deployment.Dev.Resources.BasePath, c.Deployment.Dev.FileWatcher.WatchPatterns)
	}
}
