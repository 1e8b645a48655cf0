package config

import (
	"errors"
	"strings"
	"testing"
)

// Every error is one line "file:line: message" with the line of the key or
// value at fault.
func TestErrors(t *testing.T) {
	t.Setenv("TQ_TEST_BAD_MODE", "staging")
	t.Setenv("TQ_TEST_MULTILINE", "a\nb")
	for _, tc := range []struct {
		name, file, src, want string
	}{
		{"unknown key", ServerFile, "server:\n  port: 8080\n  prot: 1\n",
			`config/server.yaml:3: unknown key "prot"`},
		{"unknown top-level key", ServerFile, "# c\nserverr:\n  port: 1\n",
			`config/server.yaml:2: unknown key "serverr"`},
		{"unknown nested key", ServerFile, "server:\n  static:\n    enabled: true\n    cache: 1\n",
			`config/server.yaml:4: unknown key "cache"`},
		{"deployment key in server file", ServerFile, "deployment:\n  mode: dev\n",
			`config/server.yaml:1: unknown key "deployment"`},
		{"unknown key in paths entry", ServerFile, "workers:\n  paths:\n    /api:\n      go_max_proc: 2\n",
			`config/server.yaml:4: unknown key "go_max_proc"`},
		{"unknown key in deployment", DeploymentFile, "deployment:\n  dev:\n    timestamp_check:\n      enabled: true\n",
			`config/deployment.yaml:3: unknown key "timestamp_check"`},
		{"string for int", ServerFile, "server:\n  port: abc\n",
			`config/server.yaml:2: server.port: expected an integer, got string "abc"`},
		{"quoted int", ServerFile, "server:\n\n  port: \"8080\"\n",
			`config/server.yaml:3: server.port: expected an integer, got string "8080"`},
		{"float for int", ServerFile, "workers:\n  startup_delay_ms: 7.5\n",
			`config/server.yaml:2: workers.startup_delay_ms: expected an integer, got float 7.5`},
		{"bool for int", ServerFile, "workers:\n  default:\n    max_requests: true\n",
			`config/server.yaml:3: workers.default.max_requests: expected an integer, got boolean true`},
		{"string for bool", ServerFile, "server:\n  static:\n    enabled: yes\n",
			`config/server.yaml:3: server.static.enabled: expected true or false, got string "yes"`},
		{"mapping for scalar", ServerFile, "server:\n  port:\n    a: 1\n",
			`config/server.yaml:2: server.port: expected an integer, got mapping`},
		{"scalar for section", ServerFile, "server: 8080\n",
			`config/server.yaml:1: server: expected a mapping, got integer 8080`},
		{"scalar for list", DeploymentFile, "deployment:\n  dev:\n    file_watcher:\n      watch_patterns: \"*.go\"\n",
			`config/deployment.yaml:4: deployment.dev.file_watcher.watch_patterns: expected a list of strings, got string "*.go"`},
		{"list item type", ServerFile, "workers:\n  discovery:\n    include_patterns:\n      - a\n      - [b]\n",
			`config/server.yaml:5: workers.discovery.include_patterns[1]: expected a string, got sequence`},
		{"list for string", ServerFile, "workers:\n  workers_dir: [a]\n",
			`config/server.yaml:2: workers.workers_dir: expected a string, got sequence`},
		{"top level not a mapping", ServerFile, "- a\n",
			`config/server.yaml:1: expected a mapping with the keys server, workers, proxy and logs, got sequence`},
		{"overflow", ServerFile, "workers:\n  default:\n    max_requests: 99999999999999999999\n",
			`config/server.yaml:3: workers.default.max_requests: 99999999999999999999 is out of range`},
		{"port zero", ServerFile, "server:\n  port: 0\n",
			`config/server.yaml:2: server.port: must be between 1 and 65535, got 0`},
		{"port too big", ServerFile, "server:\n  port: 70000\n",
			`config/server.yaml:2: server.port: must be between 1 and 65535, got 70000`},
		{"negative delay", ServerFile, "workers:\n  restart_delay_ms: -1\n",
			`config/server.yaml:2: workers.restart_delay_ms: must be >= 0, got -1`},
		{"hold too long", ServerFile, "proxy:\n  hold_ms: 60001\n",
			`config/server.yaml:2: proxy.hold_ms: must be between 0 and 60000, got 60001`},
		{"empty hold queue", ServerFile, "proxy:\n  hold_queue: 0\n",
			`config/server.yaml:2: proxy.hold_queue: must be between 1 and 1048576, got 0`},
		{"negative timeout", ServerFile, "server:\n  read_timeout_seconds: -5\n",
			`config/server.yaml:2: server.read_timeout_seconds: must be >= 0, got -5`},
		{"huge delay", ServerFile, "workers:\n  drain_timeout_ms: 9999999999\n",
			`config/server.yaml:2: workers.drain_timeout_ms: must be <= 2147483647, got 9999999999`},
		{"port range reversed", ServerFile, "workers:\n  port_range_start: 9500\n  port_range_end: 9400\n",
			`config/server.yaml:3: workers.port_range_end (9400) must be >= workers.port_range_start (9500)`},
		{"port range start above default end", ServerFile, "workers:\n  port_range_start: 10500\n",
			`config/server.yaml:2: workers.port_range_end (9999) must be >= workers.port_range_start (10500)`},
		{"server port in worker range", ServerFile, "server:\n  port: 9005\n",
			`config/server.yaml:2: server.port 9005 lies inside the worker port range 9000..9999`},
		{"worker range covers server port", ServerFile, "workers:\n  port_range_start: 8000\n",
			`config/server.yaml:2: server.port 8080 lies inside the worker port range 8000..9999`},
		{"health threshold zero", ServerFile, "workers:\n  default:\n    health_failure_threshold: 0\n",
			`config/server.yaml:3: workers.default.health_failure_threshold: must be >= 1, got 0`},
		{"health timeout zero", ServerFile, "workers:\n  paths:\n    /api:\n      health_timeout_ms: 0\n",
			`config/server.yaml:4: workers.paths["/api"].health_timeout_ms: must be >= 1, got 0`},
		{"negative go_max_procs", ServerFile, "workers:\n  default:\n    go_max_procs: -1\n",
			`config/server.yaml:3: workers.default.go_max_procs: must be >= 0, got -1`},
		{"negative max_requests", ServerFile, "workers:\n  default:\n    max_requests: -1\n",
			`config/server.yaml:3: workers.default.max_requests: must be >= 0, got -1`},
		{"parallel builds zero", DeploymentFile, "deployment:\n  prod:\n    build:\n      parallel_builds: 0\n",
			`config/deployment.yaml:4: deployment.prod.build.parallel_builds: must be >= 1, got 0`},
		{"min_instances zero", ServerFile, "workers:\n  default:\n    min_instances: 0\n    max_instances: 2\n",
			`config/server.yaml:3: workers.default.min_instances: must be between 1 and 64, got 0`},
		{"max_instances too big", ServerFile, "workers:\n  paths:\n    /api:\n      max_instances: 65\n",
			`config/server.yaml:4: workers.paths["/api"].max_instances: must be between 1 and 64, got 65`},
		{"instances too big", ServerFile, "workers:\n  default:\n    instances: 65\n",
			`config/server.yaml:3: workers.default.instances: must be between 1 and 64, got 65`},
		{"min_instances not an integer", ServerFile, "workers:\n  default:\n    min_instances: two\n",
			`config/server.yaml:3: workers.default.min_instances: expected an integer, got string "two"`},
		{"scale target zero", ServerFile, "workers:\n  default:\n    scale_target_inflight: 0\n",
			`config/server.yaml:3: workers.default.scale_target_inflight: must be >= 1, got 0`},
		{"scale target float", ServerFile, "workers:\n  paths:\n    /api:\n      scale_target_inflight: 2.5\n",
			`config/server.yaml:4: workers.paths["/api"].scale_target_inflight: expected an integer, got float 2.5`},
		{"negative scale down delay", ServerFile, "workers:\n  default:\n    scale_down_after_ms: -1\n",
			`config/server.yaml:3: workers.default.scale_down_after_ms: must be >= 0, got -1`},
		{"instances with min_instances", ServerFile, "workers:\n  default:\n    instances: 2\n    min_instances: 1\n    max_instances: 3\n",
			`config/server.yaml:4: workers.default: instances (a fixed count) and min_instances (autoscaling) cannot both be set; use one or the other`},
		{"instances with max_instances in paths", ServerFile, "workers:\n  paths:\n    /api:\n      max_instances: 3\n      instances: 2\n",
			`config/server.yaml:4: workers.paths["/api"]: instances (a fixed count) and max_instances (autoscaling) cannot both be set; use one or the other`},
		{"min above max", ServerFile, "workers:\n  default:\n    min_instances: 4\n    max_instances: 2\n",
			`config/server.yaml:3: workers.default: min_instances (4) must be <= max_instances (2)`},
		{"min above the default max", ServerFile, "workers:\n  default:\n    min_instances: 2\n",
			`config/server.yaml:3: workers.default: min_instances (2) must be <= max_instances (1, the default)`},
		{"max below inherited min", ServerFile, "workers:\n  default:\n    min_instances: 3\n    max_instances: 6\n  paths:\n    /api:\n      max_instances: 2\n",
			`config/server.yaml:7: workers.paths["/api"]: min_instances (3, from workers.default.min_instances) must be <= max_instances (2)`},
		{"max below inherited fixed count", ServerFile, "workers:\n  paths:\n    /:\n      instances: 4\n    /api:\n      max_instances: 3\n",
			`config/server.yaml:6: workers.paths["/api"]: min_instances (4, from workers.paths["/"].instances) must be <= max_instances (3)`},
		{"min above max of a shorter prefix", ServerFile, "workers:\n  paths:\n    /api/users:\n      min_instances: 5\n    /api:\n      max_instances: 4\n    /zzz:\n      min_instances: 9\n",
			`config/server.yaml:4: workers.paths["/api/users"]: min_instances (5) must be <= max_instances (4, from workers.paths["/api"].max_instances)`},
		{"two bad ranges: the first in the file", ServerFile, "workers:\n  paths:\n    /b:\n      min_instances: 3\n    /a:\n      min_instances: 2\n",
			`config/server.yaml:4: workers.paths["/b"]: min_instances (3) must be <= max_instances (1, the default)`},
		{"admin_listen without a port", ServerFile, "server:\n  admin_listen: localhost\n",
			`config/server.yaml:2: server.admin_listen: want host:port (127.0.0.1:8081) or "" for no admin listener, got "localhost"`},
		{"admin_listen port out of range", ServerFile, "server:\n  admin_listen: 127.0.0.1:0\n",
			`config/server.yaml:2: server.admin_listen: port "0" of "127.0.0.1:0": want a number 1..65535`},
		{"bad deployment mode", DeploymentFile, "deployment:\n  mode: production\n",
			`config/deployment.yaml:2: deployment.mode: must be "dev" or "prod", got "production"`},
		{"bad server mode after expansion", ServerFile, "server:\n  deployment_mode: ${TQ_TEST_BAD_MODE}\n",
			`config/server.yaml:2: server.deployment_mode: must be "dev" or "prod", got "staging"`},
		{"bad trigger", ServerFile, "workers:\n  timestamp_check:\n    trigger: mtime\n",
			`config/server.yaml:3: workers.timestamp_check.trigger: must be "sighup", got "mtime"`},
		{"bad prod trigger", DeploymentFile, "deployment:\n  prod:\n    timestamp_check:\n      trigger: poll\n",
			`config/deployment.yaml:4: deployment.prod.timestamp_check.trigger: must be "sighup", got "poll"`},
		{"bad discovery mode", ServerFile, "workers:\n  discovery:\n    mode: consul\n",
			`config/server.yaml:3: workers.discovery.mode: must be "filesystem", got "consul"`},
		{"bad mem limit", ServerFile, "workers:\n  default:\n    go_mem_limit: 512MB\n",
			`config/server.yaml:3: workers.default.go_mem_limit: invalid memory limit "512MB": want bytes with an optional B, KiB, MiB, GiB or TiB suffix, e.g. 512MiB`},
		{"bad mem limit in paths", ServerFile, "workers:\n  paths:\n    /api:\n      go_max_procs: 2\n      go_mem_limit: lots\n",
			`config/server.yaml:5: workers.paths["/api"].go_mem_limit: invalid memory limit "lots": want bytes with an optional B, KiB, MiB, GiB or TiB suffix, e.g. 512MiB`},
		{"paths key without slash", ServerFile, "workers:\n  paths:\n    /ok:\n      go_max_procs: 2\n    api:\n      go_max_procs: 2\n",
			`config/server.yaml:5: workers.paths: route prefix "api" must start with "/"`},
		{"paths key trailing slash", ServerFile, "workers:\n  paths:\n    /api/:\n      go_max_procs: 2\n",
			`config/server.yaml:3: workers.paths: route prefix "/api/" must not end with "/"`},
		{"paths key empty segment", ServerFile, "workers:\n  paths:\n    /a//b: {}\n",
			`config/server.yaml:3: workers.paths: route prefix "/a//b" has an empty segment`},
		{"paths not a mapping", ServerFile, "workers:\n  paths: [/api]\n",
			`config/server.yaml:2: workers.paths: expected a mapping of route prefix to settings, got sequence`},
		{"bad env name", ServerFile, "workers:\n  default:\n    env:\n      OK: 1\n      1BAD: x\n",
			`config/server.yaml:5: workers.default.env: invalid environment variable name "1BAD": want [A-Za-z_][A-Za-z0-9_]*`},
		{"env value not scalar", ServerFile, "workers:\n  default:\n    env:\n      A: [x]\n",
			`config/server.yaml:4: workers.default.env["A"]: expected a string, got sequence`},
		{"empty dir", ServerFile, "workers:\n  workers_dir: \"\"\n",
			`config/server.yaml:2: workers.workers_dir: must not be empty`},
		{"url prefix", ServerFile, "server:\n  static:\n    url_prefix: static\n",
			`config/server.yaml:3: server.static.url_prefix: must start with "/", got "static"`},
		{"bad glob", DeploymentFile, "deployment:\n  dev:\n    file_watcher:\n      watch_patterns:\n        - ok/*.go\n        - \"bad/[.go\"\n",
			`config/deployment.yaml:6: deployment.dev.file_watcher.watch_patterns[1]: invalid pattern "bad/[.go": unclosed [`},
		{"binary path without name", DeploymentFile, "binaries:\n  path: bin/app\n",
			`config/deployment.yaml:2: binaries.path: must contain {worker_name}, got "bin/app"`},
		{"unknown placeholder", DeploymentFile, "binaries:\n  format: \"{name}\"\n",
			`config/deployment.yaml:2: binaries.format: unknown placeholder "{name}": only {worker_name}`},
		{"tab indentation", ServerFile, "server:\n\tport: 8080\n",
			`config/server.yaml:2: tab in indentation; YAML indents with spaces only`},
		{"tab after spaces", ServerFile, "server:\n  port: 8080\n  \tread_timeout_seconds: 1\n",
			`config/server.yaml:3: tab in indentation; YAML indents with spaces only`},
		{"unclosed flow", ServerFile, "server:\n  port: 8080\nworkers: [\n",
			`config/server.yaml:3: sequence end token ']' not found`},
		{"unclosed quote", ServerFile, "server:\n  static:\n    url_prefix: \"/x\n",
			`config/server.yaml:3: could not find end character of double-quoted text`},
		{"duplicate key", ServerFile, "server:\n  port: 1\n  port: 2\n",
			`config/server.yaml:3: duplicate key "port" (first on line 2)`},
		{"bad indentation", ServerFile, "server:\n  port: 8080\n   read_timeout_seconds: 1\n",
			`config/server.yaml:2: mapping value is not allowed in this context`},
		{"two documents", ServerFile, "server:\n  port: 8081\n---\nserver:\n  port: 8082\n",
			`config/server.yaml:4: more than one YAML document; a config file holds one`},
		{"unknown alias", ServerFile, "workers:\n  default: *nope\n",
			`config/server.yaml:2: unknown alias *nope`},
		{"bad merge", ServerFile, "workers:\n  default:\n    <<: 5\n",
			`config/server.yaml:3: << must merge a mapping or a sequence of mappings, got integer 5`},
		{"unsupported tag", ServerFile, "server:\n  port: !!binary AAAA\n",
			`config/server.yaml:2: unsupported tag "!!binary"`},
		{"str tag makes a string", ServerFile, "server:\n  port: !!str 8080\n",
			`config/server.yaml:2: server.port: expected an integer, got string "8080"`},
		{"unterminated ${", ServerFile, "server:\n  port: 8080\n  deployment_mode: ${DEPLOYMENT_MODE\n",
			`config/server.yaml:3: unterminated ${ (missing })`},
		{"unterminated ${ in default", DeploymentFile, "# ${ in a comment is fine\ndeployment:\n  mode: ${A:-${B}\n",
			`config/deployment.yaml:3: unterminated ${ (missing })`},
		{"empty ${}", ServerFile, "server:\n  port: ${}\n",
			`config/server.yaml:2: empty variable name in ${}`},
		{"bad variable name", ServerFile, "\n\nserver:\n  port: ${1X}\n",
			`config/server.yaml:4: invalid variable name in ${1X}…}: want [A-Za-z_][A-Za-z0-9_]*`},
		{"unsupported expansion", ServerFile, "server:\n  port: ${PORT-80}\n",
			`config/server.yaml:2: unsupported expansion ${PORT-80}…}: only ${VAR} and ${VAR:-default}`},
		{"value with newline", ServerFile, "server:\n  static:\n    url_prefix: /${TQ_TEST_MULTILINE}\n",
			`config/server.yaml:3: environment variable TQ_TEST_MULTILINE contains a line break; it cannot be expanded into YAML`},
		{"worker var in int field", ServerFile, "server:\n  port: ${WORKER_PORT}\n",
			`config/server.yaml:2: server.port: expected an integer, got string "${WORKER_PORT}"`},
		{"invalid utf-8", ServerFile, "server:\n  static:\n    url_prefix: /\xff\n",
			`config/server.yaml:3: invalid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(writeRoot(t, map[string]string{tc.file: tc.src}))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Error("a Config came back with the error")
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != tc.file {
				t.Errorf("not an *Error for %s: %#v", tc.file, err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("multi-line error: %q", err.Error())
			}
		})
	}
}

// A bad deployment.yaml is reported even when server.yaml is fine, and the
// first bad file wins.
func TestErrorNamesTheRightFile(t *testing.T) {
	_, err := Load(writeRoot(t, map[string]string{
		ServerFile:     "server:\n  port: 8081\n",
		DeploymentFile: "deployment:\n  mode: x\n",
	}))
	if err == nil || !strings.HasPrefix(err.Error(), "config/deployment.yaml:2: ") {
		t.Fatalf("err = %v", err)
	}
}
