package watcher

import (
	"path/filepath"
	"testing"

	"github.com/mevdschee/tqserver/internal/events"
)

func TestIgnoredName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"main.go", false},
		{"go.mod", false},
		{"index.html.tmpl", false},
		{".env", false},
		{"main.go~", true},
		{".main.go.swp", true},
		{".main.go.swx", true},
		{".main.go.swo", true},
		{".swp", true},
		{"main.swp", false}, // not vim's naming (vim's swap files are hidden)
		{"4913", true},
		{"49130", false},
		{"main.go.tmp", true},
		{".#main.go", true},
		{"#main.go#", true},
		{"#", false},
		{"main.go___jb_tmp___", true},
		{"main.go___jb_old___", true},
	} {
		if got := ignoredName(tc.name); got != tc.want {
			t.Errorf("ignoredName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		kind events.ChangeKind
		name string
		want bool
	}{
		{events.SourceChanged, "page.html", true},
		{events.SourceChanged, "main.go", true},
		{events.PublicChanged, "style.css", true},
		{events.ConfigChanged, "server.yaml", true},
		{events.ConfigChanged, "server.yml", false},
		{events.ConfigChanged, "notes.txt", false},
		{events.ServerChanged, "main.go", true},
		{events.ServerChanged, "go.mod", true},
		{events.ServerChanged, "go.sum", true},
		{events.ServerChanged, "README.md", false},
	} {
		if got := counts(tc.kind, tc.name); got != tc.want {
			t.Errorf("counts(%v, %q) = %v, want %v", tc.kind, tc.name, got, tc.want)
		}
	}
}

func TestLocate(t *testing.T) {
	root := "/app"
	l := paths{root: root, workers: "/app/workers", config: "/app/config", server: []string{"/app"}}
	for _, tc := range []struct {
		path string
		want place
	}{
		{"/app/workers", place{area: areaTop}},
		{"/app/config", place{area: areaTop}},
		{"/app/workers/api", place{area: areaWorkers, worker: "api"}},
		{"/app/workers/.cache", place{}},
		{"/app/workers/api/src", place{area: areaWorker, worker: "api", entry: "src", kind: events.SourceChanged}},
		{"/app/workers/api/bin", place{area: areaWorker, worker: "api", entry: "bin"}},
		{"/app/workers/api/bin/api", place{}},
		{"/app/workers/api/src/main.go", place{area: areaTree, kind: events.SourceChanged, worker: "api"}},
		{"/app/workers/api/src/a/b/x.go", place{area: areaTree, kind: events.SourceChanged, worker: "api"}},
		{"/app/workers/api/src/.git/HEAD", place{}},
		{"/app/workers/api/public/.well-known/security.txt", place{area: areaTree, kind: events.PublicChanged, worker: "api"}},
		{"/app/workers/api/private/.well-known/x", place{}},
		{"/app/workers/api/private/k.pem", place{area: areaTree, kind: events.PrivateChanged, worker: "api"}},
		{"/app/config/server.yaml", place{area: areaConfig, kind: events.ConfigChanged}},
		{"/app/config/sub/x.yaml", place{}},
		{"/app/cmd/tqserver/main.go", place{area: areaServer, kind: events.ServerChanged}},
		{"/app/bin/tqserver", place{}},
		{"/app/.git/index", place{}},
		{"/elsewhere/x.go", place{}},
		{"/application/x.go", place{}},
	} {
		if got := l.locate(filepath.FromSlash(tc.path)); got != tc.want {
			t.Errorf("locate(%q) = %+v, want %+v", tc.path, got, tc.want)
		}
	}
}
