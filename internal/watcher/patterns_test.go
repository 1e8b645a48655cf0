package watcher

import (
	"os"
	"strings"
	"testing"

	"github.com/mevdschee/tqserver/internal/events"
)

func TestMatchSegs(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		prefix    bool
		want      bool
	}{
		{"workers/*/src/**/*.go", "workers/a/src/main.go", false, true},
		{"workers/*/src/**/*.go", "workers/a/src/x/y/z.go", false, true},
		{"workers/*/src/**/*.go", "workers/a/src/tmpl.html", false, false},
		{"workers/*/src/**", "workers/a/src", false, true}, // ** matches no directory too
		{"workers/*/src/**", "workers/a/src/deep/file.txt", false, true},
		{"config/*.yaml", "config/server.yaml", false, true},
		{"config/*.yaml", "config/sub/x.yaml", false, false},
		{"config/*.yaml", "config", false, false},
		{"config/*.yaml", "config", true, true}, // a directory that may hold matches
		{"workers/*/src/**/*.go", "workers/a", true, true},
		{"workers/*/src/**/*.go", "workers/a/public", true, false},
		{"cmd/**", "internal/x.go", false, false},
	} {
		if got := matchSegs(strings.Split(tc.pat, "/"), strings.Split(tc.name, "/"), tc.prefix); got != tc.want {
			t.Errorf("match(%q, %q, prefix %v) = %v, want %v", tc.pat, tc.name, tc.prefix, got, tc.want)
		}
	}
}

// Only changes matching watch_patterns count (issue 13: with only
// config/*.yaml listed, source edits still rebuilt).
func TestWatchPatternsLimitChanges(t *testing.T) {
	h := startOpts(t, func(o *Options) {
		o.Patterns = []string{"config/*.yaml", "server/src/**"}
	}, "workers/a/src/main.go", "workers/a/public/style.css", "config/server.yaml")
	writeFile(t, h.path("workers/a/src/main.go"), "package main // edited\n")
	writeFile(t, h.path("workers/a/src/new.go"), "package main\n")
	writeFile(t, h.path("config/server.yaml"), "server: {}\n")
	writeFile(t, h.path("workers/a/public/style.css"), "body{}") // resources: watch_resource_changes
	h.expect(h.ev(events.ConfigChanged, "", "config/server.yaml"),
		h.ev(events.PublicChanged, "a", "workers/a/public/style.css"))

	h = startOpts(t, func(o *Options) {
		o.Patterns = []string{"workers/*/src/**/*.go", "server/src/**"}
	}, "workers/a/src/main.go", "config/server.yaml")
	writeFile(t, h.path("workers/a/src/main.go"), "package main // edited\n")
	writeFile(t, h.path("workers/a/src/page.html"), "<p>")
	writeFile(t, h.path("config/server.yaml"), "server: {}\n")
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/main.go"))
}

// watch_resource_changes: false drops public/ and private/ changes only.
func TestIgnoreResources(t *testing.T) {
	h := startOpts(t, func(o *Options) { o.IgnoreResources = true },
		"workers/a/src/main.go", "workers/a/public/style.css", "workers/a/private/key.txt")
	writeFile(t, h.path("workers/a/public/style.css"), "body{}")
	writeFile(t, h.path("workers/a/private/key.txt"), "new")
	must(t, os.MkdirAll(h.path("workers/a/public/img"), 0o755))
	writeFile(t, h.path("workers/a/src/main.go"), "package main // edited\n")
	h.expect(h.ev(events.SourceChanged, "a", "workers/a/src/main.go"))
}
