package config

import (
	"testing"
)

func TestExpandText(t *testing.T) {
	env := map[string]string{"A": "alpha", "B": "beta", "EMPTY": "", "PORT": "9090", "DOLLAR": "$x"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct{ in, want string }{
		{"a: ${A}", "a: alpha"},
		{"a: ${UNSET}", "a: "},
		{"a: ${UNSET:-dflt}", "a: dflt"},
		{"a: ${EMPTY:-dflt}", "a: dflt"},
		{"a: ${A:-dflt}", "a: alpha"},
		{"a: ${UNSET:-}", "a: "},
		{"a: ${UNSET:-${B}}", "a: beta"},
		{"a: ${UNSET:-${UNSET2:-deep}}", "a: deep"},
		{"a: ${UNSET:-x${B}y}", "a: xbetay"},
		{"a: ${UNSET:-a:-b}", "a: a:-b"},
		{"a: ${UNSET:-{x}}", "a: {x}"},
		{"a: ${A}${B}", "a: alphabeta"},
		{"a: $$", "a: $"},
		{"a: $${A}", "a: ${A}"},
		{"a: $$$$", "a: $$"},
		{"a: $$${A}", "a: $alpha"},
		{"a: ${UNSET:-$$}", "a: $"},
		{"a: $A $ $x", "a: $A $ $x"},
		{"a: $", "a: $"},
		{"a: ${DOLLAR}", "a: $x"}, // values are not expanded again
		{"port: ${PORT:-8080}", "port: 9090"},
		// Per-worker variables stay for ExpandWorkerVars.
		{"b: ${WORKER_BASE}/p", "b: ${WORKER_BASE}/p"},
		{"b: ${WORKER_NAME} ${WORKER_ROUTE} ${WORKER_PORT}", "b: ${WORKER_NAME} ${WORKER_ROUTE} ${WORKER_PORT}"},
		{"b: ${WORKER_PORT:-9000}", "b: ${WORKER_PORT:-9000}"},
		{"b: ${WORKER_PORT:-${PORT}}", "b: ${WORKER_PORT:-9090}"},
		{"b: ${A:-${WORKER_BASE}}", "b: alpha"},
		{"b: ${UNSET:-${WORKER_BASE}}", "b: ${WORKER_BASE}"},
		{"b: $${WORKER_BASE}", "b: $${WORKER_BASE}"}, // escape kept for ExpandWorkerVars
		// Full-line comments are never expanded; other lines are.
		{"# ${A} ${unterminated\n  # ${\nx: ${A} # ${B}\n", "# ${A} ${unterminated\n  # ${\nx: alpha # beta\n"},
		{"a: 1\r\nb: ${A}\r\n", "a: 1\r\nb: alpha\r\n"},
	} {
		got, line, msg := expandText(tc.in, lookup)
		if msg != "" {
			t.Errorf("%q: error at line %d: %s", tc.in, line, msg)
			continue
		}
		if got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestExpandTextErrors(t *testing.T) {
	lookup := func(k string) (string, bool) { return "", false }
	for _, tc := range []struct {
		in   string
		line int
		msg  string
	}{
		{"a: 1\nb: ${A\n", 2, "unterminated ${ (missing })"},
		{"a: ${A:-x", 1, "unterminated ${ (missing })"},
		{"a: ${A:-${B}\nc: }", 1, "unterminated ${ (missing })"},
		{"\n\n\na: ${", 4, "unterminated ${ (missing })"},
		{"a: ${}", 1, "empty variable name in ${}"},
		{"a: ${-x}", 1, "invalid variable name in ${-x}…}: want [A-Za-z_][A-Za-z0-9_]*"},
		{"a: ${A:?err}", 1, "unsupported expansion ${A:?err}…}: only ${VAR} and ${VAR:-default}"},
		{"a: ${A:-${}}", 1, "empty variable name in ${}"},
		{"a: ${WORKER_BASE:-${}}", 1, "empty variable name in ${}"},
	} {
		_, line, msg := expandText(tc.in, lookup)
		if line != tc.line || msg != tc.msg {
			t.Errorf("%q: got line %d %q, want line %d %q", tc.in, line, msg, tc.line, tc.msg)
		}
	}
}

// Expansion happens on the text, so a number from the environment is an
// integer to YAML.
func TestExpansionYieldsTypedValues(t *testing.T) {
	t.Setenv("TQ_TEST_PORT", "")
	c := mustLoad(t, map[string]string{ServerFile: "server:\n  port: ${TQ_TEST_PORT:-8181}\n"})
	if c.Server.Port != 8181 {
		t.Fatalf("port = %d", c.Server.Port)
	}
	t.Setenv("TQ_TEST_PORT", "8282")
	t.Setenv("TQ_TEST_ON", "false")
	c = mustLoad(t, map[string]string{ServerFile: "server:\n  port: ${TQ_TEST_PORT:-8181}\n  static:\n    enabled: ${TQ_TEST_ON}\n"})
	if c.Server.Port != 8282 || c.Server.Static.Enabled {
		t.Fatalf("port = %d, static.enabled = %v", c.Server.Port, c.Server.Static.Enabled)
	}
}

func TestWorkerVarsLeftInPlaceAtLoad(t *testing.T) {
	t.Setenv("WORKER_BASE", "/from/process/env") // must not be used at load
	t.Setenv("TQ_TEST_HOME", "/home/x")
	c := mustLoad(t, map[string]string{ServerFile: `workers:
  default:
    env:
      BASE: ${WORKER_BASE}
      DATA: "${WORKER_BASE}/private/${WORKER_NAME}"
      ROUTE: ${WORKER_ROUTE}
      PORT2: ${WORKER_PORT:-${TQ_TEST_HOME}}
      LIT: $${WORKER_NAME}
      MONEY: "$$5"
`})
	env := c.Workers.Default.Env
	want := map[string]string{
		"BASE":  "${WORKER_BASE}",
		"DATA":  "${WORKER_BASE}/private/${WORKER_NAME}",
		"ROUTE": "${WORKER_ROUTE}",
		"PORT2": "${WORKER_PORT:-/home/x}",
		"LIT":   "$${WORKER_NAME}",
		"MONEY": "$5",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env[%s] = %q, want %q", k, env[k], v)
		}
	}
	got := c.ForWorker("/api").ExpandedEnv(map[string]string{
		"WORKER_BASE": "/srv/app/workers/api", "WORKER_NAME": "api", "WORKER_ROUTE": "/api", "WORKER_PORT": "",
	})
	wantExpanded := map[string]string{
		"BASE":  "/srv/app/workers/api",
		"DATA":  "/srv/app/workers/api/private/api",
		"ROUTE": "/api",
		"PORT2": "/home/x",
		"LIT":   "${WORKER_NAME}",
		"MONEY": "$5",
	}
	for k, v := range wantExpanded {
		if got[k] != v {
			t.Errorf("expanded env[%s] = %q, want %q", k, got[k], v)
		}
	}
}

func TestExpandWorkerVars(t *testing.T) {
	vars := map[string]string{"WORKER_BASE": "/w/index", "WORKER_NAME": "index", "WORKER_ROUTE": "/", "WORKER_PORT": "9001", "EXTRA": "e"}
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"${WORKER_BASE}/public", "/w/index/public"},
		{"${WORKER_NAME}@${WORKER_PORT}${WORKER_ROUTE}", "index@9001/"},
		{"${WORKER_PORT:-1}", "9001"},
		{"${EXTRA}", "e"},                           // keys of vars count too
		{"${OTHER}", "${OTHER}"},                    // other names are left alone
		{"${OTHER:-x}", "${OTHER:-x}"},              // with their defaults
		{"$${WORKER_NAME}", "${WORKER_NAME}"},       // escape
		{"$${WORKER_NAME:-a}", "${WORKER_NAME:-a}"}, // escape keeps the whole reference
		{"$$5", "$$5"},                              // load already turned $$ into $
		{"${WORKER_BASE", "${WORKER_BASE"},          // malformed: unchanged
		{"$", "$"},
		{"a$b", "a$b"},
	} {
		if got := ExpandWorkerVars(tc.in, vars); got != tc.want {
			t.Errorf("ExpandWorkerVars(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Defaults apply when a variable is missing or empty, and nest.
	sparse := map[string]string{"WORKER_NAME": ""}
	for _, tc := range []struct{ in, want string }{
		{"${WORKER_NAME:-anon}", "anon"},
		{"${WORKER_PORT:-${WORKER_NAME:-x}}", "x"},
		{"${WORKER_PORT}", ""},
		{"${WORKER_BASE:-$${WORKER_NAME}}", "${WORKER_NAME}"},
	} {
		if got := ExpandWorkerVars(tc.in, sparse); got != tc.want {
			t.Errorf("ExpandWorkerVars(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
