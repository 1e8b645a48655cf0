package tqworker

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultTemplatePattern is the glob LoadTemplates uses for an empty pattern.
const DefaultTemplatePattern = "private/views/*.html"

// Templates is an html/template set loaded from one or more globs under
// Base(). Each file becomes a template named by its base name ("index.html"),
// and every template can call the others, so partials and layouts can live in
// a second glob. Reload parses the files again and swaps the whole set in one
// atomic store; Execute always uses a complete set, old or new.
type Templates struct {
	patterns []string // absolute globs
	set      atomic.Pointer[template.Template]
	reloadMu sync.Mutex // serializes Reload so an older parse never replaces a newer one
}

// LoadTemplates parses the files matched by pattern and any further patterns,
// each relative to Base() ("" means DefaultTemplatePattern). A pattern that
// leaves Base(), matches no file, or names a file whose base name another
// matched file already has is an error, as is any parse error.
func LoadTemplates(pattern string, more ...string) (*Templates, error) {
	t := &Templates{}
	for _, p := range append([]string{pattern}, more...) {
		if p == "" {
			p = DefaultTemplatePattern
		}
		abs, err := PathErr(p)
		if err != nil {
			return nil, fmt.Errorf("tqworker: load templates: %w", err)
		}
		t.patterns = append(t.patterns, abs)
	}
	set, err := t.parse()
	if err != nil {
		return nil, err
	}
	t.set.Store(set)
	return t, nil
}

func (t *Templates) parse() (*template.Template, error) {
	var files []string
	seen := make(map[string]string)
	for _, p := range t.patterns {
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("tqworker: templates %s: %w", p, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("tqworker: templates %s: pattern matches no files", p)
		}
		sort.Strings(matches)
		for _, m := range matches {
			name := filepath.Base(m)
			if prev, dup := seen[name]; dup {
				return nil, fmt.Errorf("tqworker: templates: %s and %s have the same name %q", prev, m, name)
			}
			seen[name] = m
			files = append(files, m)
		}
	}
	set, err := template.ParseFiles(files...)
	if err != nil {
		return nil, fmt.Errorf("tqworker: parse templates: %w", err)
	}
	return set, nil
}

// Reload parses the files again and, only if that succeeds, replaces the set
// in use. On error the previous set stays in use and the error is returned.
func (t *Templates) Reload() error {
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	set, err := t.parse()
	if err != nil {
		return fmt.Errorf("%w (keeping the previous templates)", err)
	}
	t.set.Store(set)
	return nil
}

// Names returns the names of the templates in the current set, sorted.
func (t *Templates) Names() []string {
	return templateNames(t.set.Load())
}

func templateNames(set *template.Template) []string {
	var names []string
	for _, tpl := range set.Templates() {
		if tpl.Name() != "" {
			names = append(names, tpl.Name())
		}
	}
	sort.Strings(names)
	return names
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Execute renders the template called name with data into w. It renders into
// a buffer first, so on error nothing has been written to w and an HTTP
// handler can still send a 500.
func (t *Templates) Execute(w io.Writer, name string, data any) error {
	set := t.set.Load()
	if set.Lookup(name) == nil {
		return fmt.Errorf("tqworker: execute template %q: no such template (have %s)", name, strings.Join(templateNames(set), ", "))
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			bufPool.Put(buf)
		}
	}()
	if err := set.ExecuteTemplate(buf, name, data); err != nil {
		return fmt.Errorf("tqworker: execute template %q: %w", name, err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("tqworker: write template %q: %w", name, err)
	}
	return nil
}
