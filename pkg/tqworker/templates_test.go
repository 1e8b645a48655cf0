package tqworker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func render(t *testing.T, tpl *Templates, name string, data any) string {
	t.Helper()
	var b strings.Builder
	if err := tpl.Execute(&b, name, data); err != nil {
		t.Fatalf("Execute(%q): %v", name, err)
	}
	return b.String()
}

func TestTemplatesLoadExecuteReload(t *testing.T) {
	base := t.TempDir()
	t.Setenv(EnvBase, base)
	view := filepath.Join(base, "private/views/page.html")
	writeFile(t, view, `{{template "header" .}}<p>v1 {{.}}</p>`)
	writeFile(t, filepath.Join(base, "private/templates/base.html"), `{{define "header"}}<h1>H</h1>{{end}}`)

	tpl, err := LoadTemplates("", "private/templates/*.html")
	if err != nil {
		t.Fatal(err)
	}
	if got := render(t, tpl, "page.html", "<x>"); got != "<h1>H</h1><p>v1 &lt;x&gt;</p>" {
		t.Fatalf("render = %q (want escaped html with the partial)", got)
	}

	writeFile(t, view, `<p>v2</p>`)
	if err := tpl.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := render(t, tpl, "page.html", nil); got != "<p>v2</p>" {
		t.Fatalf("after Reload render = %q, want v2", got)
	}

	// A parse error keeps the set that was working.
	writeFile(t, view, `<p>{{if}}broken</p>`)
	if err := tpl.Reload(); err == nil {
		t.Fatal("Reload of a broken template returned nil")
	}
	if got := render(t, tpl, "page.html", nil); got != "<p>v2</p>" {
		t.Fatalf("after failed Reload render = %q, want the old v2", got)
	}

	// So does a file set that no longer matches.
	if err := os.Remove(view); err != nil {
		t.Fatal(err)
	}
	if err := tpl.Reload(); err == nil {
		t.Fatal("Reload with no matching files returned nil")
	}
	if got := render(t, tpl, "page.html", nil); got != "<p>v2</p>" {
		t.Fatalf("after failed Reload render = %q, want the old v2", got)
	}

	writeFile(t, view, `<p>v3</p>`)
	if err := tpl.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := render(t, tpl, "page.html", nil); got != "<p>v3</p>" {
		t.Fatalf("render = %q, want v3", got)
	}
}

func TestTemplatesExecuteWritesNothingOnError(t *testing.T) {
	base := t.TempDir()
	t.Setenv(EnvBase, base)
	writeFile(t, filepath.Join(base, "private/views/a.html"), `<p>before</p>{{.Missing.Field}}<p>after</p>`)
	tpl, err := LoadTemplates("private/views/*.html")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tpl.Execute(&b, "a.html", map[string]any{"Missing": 42}); err == nil {
		t.Fatal("Execute with a bad field returned nil")
	}
	if b.Len() != 0 {
		t.Fatalf("Execute wrote %q despite failing", b.String())
	}
	if err := tpl.Execute(&b, "nope.html", nil); err == nil || !strings.Contains(err.Error(), "a.html") {
		t.Fatalf("Execute of an unknown template: %v (want an error listing a.html)", err)
	}
}

func TestLoadTemplatesErrors(t *testing.T) {
	base := t.TempDir()
	t.Setenv(EnvBase, base)
	writeFile(t, filepath.Join(base, "private/views/a.html"), `a`)
	writeFile(t, filepath.Join(base, "private/other/a.html"), `a`)
	writeFile(t, filepath.Join(base, "private/bad/b.html"), `{{end}}`)

	if _, err := LoadTemplates("../*.html"); !errors.Is(err, ErrOutsideBase) {
		t.Errorf("escaping pattern: %v, want ErrOutsideBase", err)
	}
	if _, err := LoadTemplates("private/none/*.html"); err == nil {
		t.Error("pattern without matches: nil error")
	}
	if _, err := LoadTemplates("private/views/*.html", "private/other/*.html"); err == nil || !strings.Contains(err.Error(), "same name") {
		t.Errorf("duplicate names: %v", err)
	}
	if _, err := LoadTemplates("private/bad/*.html"); err == nil {
		t.Error("parse error: nil error")
	}
	if _, err := LoadTemplates("private/[/*.html"); err == nil {
		t.Error("malformed glob: nil error")
	}
}

// Execute from many goroutines while Reload swaps the set; the race detector
// checks the swap, and every render must be one complete version.
func TestTemplatesConcurrentExecuteAndReload(t *testing.T) {
	base := t.TempDir()
	t.Setenv(EnvBase, base)
	view := filepath.Join(base, "private/views/p.html")
	writeFile(t, view, `old`)
	tpl, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var b strings.Builder
				if err := tpl.Execute(&b, "p.html", nil); err != nil {
					errs <- err.Error()
					return
				}
				if s := b.String(); s != "old" && s != "new" {
					errs <- "partial render " + s
					return
				}
			}
		})
	}
	for i := range 50 {
		content := "old"
		if i%2 == 0 {
			content = "new"
		}
		writeFile(t, view, content)
		if err := tpl.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
