package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/testrig"
)

// fences are the fenced code blocks of a markdown text: language and body.
func fences(md string) [][2]string {
	var out [][2]string
	re := regexp.MustCompile("(?ms)^```([a-z]*)\n(.*?)^```$")
	for _, m := range re.FindAllStringSubmatch(md, -1) {
		out = append(out, [2]string{m[1], m[2]})
	}
	return out
}

// The worker example of docs/workers.md, as written: its Go code and the
// template files shown after it, built by `tqserver build` in an app root
// whose go.mod requires tqserver, served by a real server; an edited
// template is live after `tqserver reload` without a restart.
func TestWorkersDocExample(t *testing.T) {
	repo, err := testrig.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(repo, "docs", "workers.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(md)
	i := strings.Index(section, "## Writing a worker with tqworker")
	if i < 0 {
		t.Fatal("docs/workers.md has no section \"Writing a worker with tqworker\"")
	}
	section = section[i:]
	if j := strings.Index(section, "\n### API"); j > 0 {
		section = section[:j]
	}
	root := newRoot(t, fastConfigNoAdmin)
	fileName := regexp.MustCompile(`^\{\{/\* (workers/hello/\S+?):? .*\*/\}\}\n|^\{\{/\* (workers/hello/\S+) \*/\}\}\n`)
	var goCode string
	files := 0
	for _, f := range fences(section) {
		switch {
		case f[0] == "go" && goCode == "":
			goCode = f[1]
		case f[0] == "html":
			m := fileName.FindStringSubmatch(f[1])
			if m == nil {
				t.Fatalf("an html block of the example names no file in its first line:\n%s", f[1])
			}
			name := m[1] + m[2]
			writeFile(t, filepath.Join(root, name), f[1])
			files++
		}
	}
	if goCode == "" || files != 2 {
		t.Fatalf("docs/workers.md example: go code found %v, %d template files (want 2)", goCode != "", files)
	}
	writeFile(t, filepath.Join(root, "workers", "hello", "src", "main.go"), goCode)
	writeFile(t, filepath.Join(root, "workers", "hello", "public", "style.css"), "h1{color:teal}\n")
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/app\n\ngo 1.26\n\nrequire github.com/mevdschee/tqserver v0.0.0\n\nreplace github.com/mevdschee/tqserver => "+repo+"\n")
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "go.sum"), string(sum))
	// The example's module resolves from the module cache only: tqserver
	// from the repository, its requirements as the repository pins them.
	t.Setenv("GOFLAGS", "-mod=mod")
	t.Setenv("GOPROXY", "off")
	if out, errs, err := runCLI(t, "build", "--root", root, "hello"); err != nil {
		t.Fatalf("tqserver build hello: %v\n%s%s", err, out, errs)
	}

	s := startServer(t, root)
	waitBody(t, s.URL("/hello/"), "<h1>Hello from tqserver</h1>", 10*time.Second)
	code, body := get(t, s.URL("/hello")) // ServeMux redirects to /hello/
	if code != 200 || !strings.Contains(body, `<link rel="stylesheet" href="/static/hello/style.css">`) || !strings.Contains(body, "</body></html>") {
		t.Fatalf("GET /hello: %d %q", code, body)
	}
	if c, b := get(t, s.URL("/static/hello/style.css")); c != 200 || b != "h1{color:teal}\n" {
		t.Fatalf("GET /static/hello/style.css: %d %q", c, b)
	}
	before := s.status().Workers[0].Instances[0].Instance

	view := filepath.Join(root, "workers", "hello", "private", "views", "hello.html")
	writeFile(t, view, `{{template "header" .}}<h1>Edited</h1>{{template "footer" .}}`)
	out, errs, err := runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out, "hello: private/ changed; SIGUSR1 sent to") {
		t.Fatalf("tqserver reload after a template edit: %v\n%s%s", err, out, errs)
	}
	waitBody(t, s.URL("/hello/"), "<h1>Edited</h1>", 10*time.Second)
	if after := s.status().Workers[0].Instances[0].Instance; after != before {
		t.Fatalf("a template edit restarted the worker: %s → %s", before, after)
	}
}
