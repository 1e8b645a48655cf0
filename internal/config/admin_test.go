package config

import "testing"

// server.admin_listen: unset (or empty) is the default and not explicit;
// "" turns the listener off; any value given counts as explicit.
func TestAdminListen(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		addr       string
		set        bool
	}{
		{"no file", "", DefaultAdminListen, false},
		{"key without a value", "server:\n  admin_listen:\n", DefaultAdminListen, false},
		{"off", "server:\n  admin_listen: \"\"\n", "", true},
		{"the default's value, given", "server:\n  admin_listen: 127.0.0.1:8081\n", DefaultAdminListen, true},
		{"every interface", "server:\n  admin_listen: \":9100\"\n", ":9100", true},
		{"IPv6 loopback", "server:\n  admin_listen: \"[::1]:9100\"\n", "[::1]:9100", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{}
			if tc.yaml != "" {
				files[ServerFile] = tc.yaml
			}
			c := mustLoad(t, files)
			if c.Server.AdminListen != tc.addr || c.Server.AdminListenSet != tc.set {
				t.Fatalf("admin_listen %q (set %v), want %q (set %v)", c.Server.AdminListen, c.Server.AdminListenSet, tc.addr, tc.set)
			}
		})
	}
}

// $TQ_ADMIN_TOKEN wins over server.admin_token; an empty variable does not.
func TestAdminToken(t *testing.T) {
	cfg := Default()
	cfg.Server.AdminToken = "from-file"
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == AdminTokenEnv {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name, env string
		c         *Config
		want, src string
	}{
		{"env wins", "from-env", cfg, "from-env", "environment variable TQ_ADMIN_TOKEN"},
		{"empty env: the file", "", cfg, "from-file", "server.admin_token in config/server.yaml"},
		{"neither", "", Default(), "", ""},
		{"env without files", "e", nil, "e", "environment variable TQ_ADMIN_TOKEN"},
	} {
		tok, src := AdminToken(env(tc.env), tc.c)
		if tok != tc.want || src != tc.src {
			t.Errorf("%s: got %q from %q, want %q from %q", tc.name, tok, src, tc.want, tc.src)
		}
	}
}
