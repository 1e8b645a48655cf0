package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestForWorkerMerging(t *testing.T) {
	c := mustLoad(t, map[string]string{ServerFile: `workers:
  default:
    go_max_procs: 1
    max_requests: 0
    env:
      A: default
      B: default
  paths:
    "/":
      read_timeout_seconds: 5
    "/api":
      go_max_procs: 2
      max_requests: 5000
      env: {B: api, C: api}
    "/api/users":
      max_requests: 10
      env: {C: users}
`})
	def := c.Workers.Default
	for _, tc := range []struct {
		route string
		procs int
		maxR  int64
		read  int
		env   map[string]string
	}{
		{"/", 1, 0, 5, map[string]string{"A": "default", "B": "default"}},
		{"/apix", 1, 0, 5, map[string]string{"A": "default", "B": "default"}},
		{"/ap", 1, 0, 5, map[string]string{"A": "default", "B": "default"}},
		{"/api", 2, 5000, 5, map[string]string{"A": "default", "B": "api", "C": "api"}},
		{"/api/orders", 2, 5000, 5, map[string]string{"A": "default", "B": "api", "C": "api"}},
		{"/api/users", 2, 10, 5, map[string]string{"A": "default", "B": "api", "C": "users"}},
		{"/api/users/7", 2, 10, 5, map[string]string{"A": "default", "B": "api", "C": "users"}},
		{"/api/usersx", 2, 5000, 5, map[string]string{"A": "default", "B": "api", "C": "api"}},
	} {
		s := c.ForWorker(tc.route)
		if s.GoMaxProcs != tc.procs || s.MaxRequests != tc.maxR || s.ReadTimeoutSeconds != tc.read ||
			!reflect.DeepEqual(s.Env, tc.env) {
			t.Errorf("ForWorker(%q) = %+v", tc.route, s)
		}
		// Untouched keys keep the default.
		if s.HealthTimeoutMs != def.HealthTimeoutMs || s.IdleTimeoutSeconds != def.IdleTimeoutSeconds {
			t.Errorf("ForWorker(%q) changed keys no entry sets", tc.route)
		}
	}
	// The result is a copy.
	s := c.ForWorker("/api")
	s.Env["A"] = "changed"
	if c.Workers.Default.Env["A"] != "default" || c.ForWorker("/api").Env["A"] != "default" {
		t.Fatal("ForWorker result shares its Env map with the Config")
	}
}

func TestForWorkerWithoutPaths(t *testing.T) {
	c := Default()
	if s := c.ForWorker("/anything"); !s.Equal(DefaultWorkerSettings()) {
		t.Fatalf("got %+v", s)
	}
	c.Workers.Paths = nil
	c.Workers.Default.Env = nil
	if s := c.ForWorker("/"); s.Env == nil {
		t.Fatal("Env is nil")
	}
}

func TestRouteHasPrefix(t *testing.T) {
	for _, tc := range []struct {
		route, prefix string
		want          bool
	}{
		{"/", "/", true}, {"/a", "/", true}, {"/api", "/api", true}, {"/api/x", "/api", true},
		{"/apix", "/api", false}, {"/ap", "/api", false}, {"/", "/api", false},
		{"/api/users/1", "/api/users", true}, {"/api/usersx", "/api/users", false},
	} {
		if got := RouteHasPrefix(tc.route, tc.prefix); got != tc.want {
			t.Errorf("RouteHasPrefix(%q, %q) = %v", tc.route, tc.prefix, got)
		}
	}
}

// Equal must compare every field: change each one in turn.
func TestWorkerSettingsEqual(t *testing.T) {
	a := DefaultWorkerSettings()
	a.Env = map[string]string{"K": "v"}
	if !a.Equal(a.clone()) {
		t.Fatal("a != copy of a")
	}
	x, y := DefaultWorkerSettings(), DefaultWorkerSettings()
	x.Env, y.Env = nil, map[string]string{}
	if !x.Equal(y) {
		t.Fatal("nil Env != empty Env")
	}
	typ := reflect.TypeOf(a)
	for i := 0; i < typ.NumField(); i++ {
		b := a.clone()
		f := reflect.ValueOf(&b).Elem().Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Map:
			b.Env["K"] = "other"
		case reflect.Slice:
			f.Set(reflect.Append(f, reflect.ValueOf("/x")))
		case reflect.Struct:
			f.Field(0).SetInt(f.Field(0).Int() + 1)
		default:
			t.Fatalf("field %s: kind %s not covered by this test", typ.Field(i).Name, f.Kind())
		}
		if a.Equal(b) || b.Equal(a) {
			t.Errorf("Equal ignores %s", typ.Field(i).Name)
		}
	}
}

func TestResolveMode(t *testing.T) {
	cfg := func(server, deployment string) *Config {
		c := Default()
		c.Server.DeploymentMode, c.Deployment.Mode = server, deployment
		return c
	}
	for _, tc := range []struct {
		name              string
		flag, tq, dm      string
		c                 *Config
		want, errContains string
	}{
		{"nothing set", "", "", "", nil, "dev", ""},
		{"defaults config", "", "", "", Default(), "dev", ""},
		{"deployment.mode", "", "", "", cfg("", "prod"), "prod", ""},
		{"server.deployment_mode beats deployment.mode", "", "", "", cfg("dev", "prod"), "dev", ""},
		{"DEPLOYMENT_MODE beats config", "", "", "prod", cfg("dev", "dev"), "prod", ""},
		{"TQ_MODE beats DEPLOYMENT_MODE", "", "dev", "prod", cfg("prod", "prod"), "dev", ""},
		{"flag beats all", "prod", "dev", "dev", cfg("dev", "dev"), "prod", ""},
		{"flag dev beats all", "dev", "prod", "prod", cfg("prod", "prod"), "dev", ""},
		{"bad flag", "staging", "", "", nil, "", `invalid deployment mode "staging" from --mode`},
		{"bad TQ_MODE", "", "Prod", "", nil, "", `invalid deployment mode "Prod" from environment variable TQ_MODE`},
		{"bad DEPLOYMENT_MODE", "", "", "x", nil, "", `invalid deployment mode "x" from environment variable DEPLOYMENT_MODE`},
		{"bad server.deployment_mode", "", "", "", cfg("x", "dev"), "", `from server.deployment_mode in config/server.yaml`},
		{"bad deployment.mode", "", "", "", cfg("", "y"), "", `from deployment.mode in config/deployment.yaml`},
		{"lower bad value is not consulted", "prod", "junk", "", nil, "prod", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"TQ_MODE": tc.tq, "DEPLOYMENT_MODE": tc.dm}
			got, err := ResolveMode(tc.flag, func(k string) string { return env[k] }, tc.c)
			if tc.errContains != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errContains) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errContains)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolveModeUsesProcessEnvByDefault(t *testing.T) {
	t.Setenv("TQ_MODE", "prod")
	if m, err := ResolveMode("", nil, nil); err != nil || m != "prod" {
		t.Fatalf("got %q, %v", m, err)
	}
}

func TestChangedKeys(t *testing.T) {
	a := DefaultWorkerSettings()
	b := a
	b.Env = map[string]string{"A": "1"}
	b.MaxRequests = 10
	b.GoMaxProcs = 2
	b.HealthTimeoutMs = 1
	got := strings.Join(a.ChangedKeys(b), ",")
	if got != "go_max_procs,max_requests,health_timeout_ms,env.A" {
		t.Fatalf("ChangedKeys = %s", got)
	}
	// Every key ChangedKeys can name is one a config file accepts.
	o := WorkerOverride{}
	fields := overrideFields(&o)
	v := reflect.TypeOf(a)
	for i := range v.NumField() {
		if name := v.Field(i).Name; name != "Env" {
			if _, ok := fields[snakeCase(name)]; !ok {
				t.Errorf("%s → %s is no config key", name, snakeCase(name))
			}
		}
	}
	if len(a.ChangedKeys(a)) != 0 {
		t.Fatal("no change, keys named")
	}
}
