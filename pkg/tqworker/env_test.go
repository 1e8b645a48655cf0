package tqworker

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestEnvAccessors(t *testing.T) {
	base := filepath.Join(t.TempDir(), "api_users")
	t.Setenv(EnvBase, base)
	t.Setenv(EnvName, "")
	t.Setenv(EnvRoute, "")
	t.Setenv(EnvMode, "")
	t.Setenv(EnvPort, "")
	t.Setenv(EnvWorkerPort, "")

	if got := Base(); got != base {
		t.Errorf("Base() = %q, want %q", got, base)
	}
	if got := Name(); got != "api_users" {
		t.Errorf("Name() fallback = %q, want api_users", got)
	}
	if got := Route(); got != "/api/users" {
		t.Errorf("Route() fallback = %q, want /api/users", got)
	}
	if got := Mode(); got != "dev" {
		t.Errorf("Mode() fallback = %q, want dev", got)
	}
	if got := Addr(); got != "127.0.0.1:8080" {
		t.Errorf("Addr() fallback = %q", got)
	}

	t.Setenv(EnvWorkerPort, "9002")
	if got := Addr(); got != "127.0.0.1:9002" {
		t.Errorf("Addr() with TQ_WORKER_PORT = %q", got)
	}
	t.Setenv(EnvPort, "9001")
	if got := Addr(); got != "127.0.0.1:9001" {
		t.Errorf("Addr() with PORT = %q, PORT must win", got)
	}

	t.Setenv(EnvName, "index")
	if got := Route(); got != "/" {
		t.Errorf("Route() for index = %q, want /", got)
	}
	t.Setenv(EnvRoute, "/custom")
	t.Setenv(EnvMode, "prod")
	if Route() != "/custom" || Mode() != "prod" || Name() != "index" {
		t.Errorf("env not used: name %q route %q mode %q", Name(), Route(), Mode())
	}
}

func TestBaseFallsBackToWorkingDir(t *testing.T) {
	t.Setenv(EnvBase, "")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got := Base(); got != wd {
		t.Errorf("Base() = %q, want working dir %q", got, wd)
	}
}

func TestPathRejectsEscapes(t *testing.T) {
	base := t.TempDir()
	t.Setenv(EnvBase, base)

	ok := []struct {
		elem []string
		want string
	}{
		{nil, base},
		{[]string{"private", "views", "index.html"}, filepath.Join(base, "private/views/index.html")},
		{[]string{"private/config/../views/x.html"}, filepath.Join(base, "private/views/x.html")},
		{[]string{"a", "..", "b"}, filepath.Join(base, "b")},
		{[]string{"..foo"}, filepath.Join(base, "..foo")},
	}
	for _, c := range ok {
		got, err := PathErr(c.elem...)
		if err != nil || got != c.want {
			t.Errorf("PathErr(%q) = %q, %v; want %q", c.elem, got, err, c.want)
		}
		if p := Path(c.elem...); p != c.want {
			t.Errorf("Path(%q) = %q; want %q", c.elem, p, c.want)
		}
	}

	bad := [][]string{
		{".."},
		{"../other"},
		{"private", "..", "..", "etc", "passwd"},
		{"private/../../x"},
		{"/etc/passwd"},
		{"", "/etc"},
	}
	for _, elem := range bad {
		got, err := PathErr(elem...)
		if !errors.Is(err, ErrOutsideBase) || got != "" {
			t.Errorf("PathErr(%q) = %q, %v; want ErrOutsideBase", elem, got, err)
		}
		if p := Path(elem...); p != "" {
			t.Errorf("Path(%q) = %q; want \"\"", elem, p)
		}
	}
}
