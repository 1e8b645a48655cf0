package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Error is a configuration problem. Its text is one line:
// "config/server.yaml:12: unknown key \"prot\"" (or "file: message" when no
// line applies, e.g. an unreadable file).
type Error struct {
	File string // relative to the root, e.g. "config/server.yaml"
	Line int    // 1-based; 0 when unknown
	Msg  string
}

func (e *Error) Error() string {
	// Messages quote file content; never let it break the one-line form.
	msg := oneLine(e.Msg)
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, msg)
	}
	return e.File + ": " + msg
}

// Load reads {root}/config/server.yaml and {root}/config/deployment.yaml
// (each optional), expands environment variables, applies defaults and
// validates. It returns a new Config, or an *Error and no Config.
func Load(root string) (*Config, error) {
	return load(root, os.LookupEnv)
}

func load(root string, lookup func(string) (string, bool)) (*Config, error) {
	c := Default()
	set := map[string]keyAt{}
	for _, f := range []struct {
		name   string
		decode func(*fileDecoder, *Config, ast.Node) error
	}{
		{ServerFile, decodeServerFile},
		{DeploymentFile, decodeDeploymentFile},
	} {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f.name)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, &Error{File: f.name, Msg: "cannot read: " + oneLine(err.Error())}
		}
		if err := parseInto(f.name, data, lookup, c, f.decode, set); err != nil {
			return nil, err
		}
		c.Files = append(c.Files, f.name)
	}
	if err := finish(c, set); err != nil {
		return nil, err
	}
	return c, nil
}

// parseInto expands, parses and decodes one file's data into c.
func parseInto(name string, data []byte, lookup func(string) (string, bool), c *Config,
	decode func(*fileDecoder, *Config, ast.Node) error, set map[string]keyAt) error {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		bad := len(data)
		for i := 0; i < len(data); {
			r, n := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n <= 1 {
				bad = i
				break
			}
			i += n
		}
		return &Error{File: name, Line: 1 + bytes.Count(data[:bad], []byte("\n")), Msg: "invalid UTF-8"}
	}
	text, line, msg := expandText(string(data), lookup)
	if msg != "" {
		return &Error{File: name, Line: line, Msg: msg}
	}
	body, err := parseYAML(name, text)
	if err != nil || body == nil {
		return err
	}
	d := &fileDecoder{file: name, anchors: map[string]ast.Node{}, lines: map[string]int{}, nulls: map[string]bool{}}
	ast.Walk(anchorCollector(d.anchors), body)
	if err := decode(d, c, body); err != nil {
		return err
	}
	for p, l := range d.lines {
		if !d.nulls[p] {
			set[p] = keyAt{file: name, line: l}
		}
	}
	return nil
}

// parseYAML parses text into the body of its only document (nil for an empty
// file or one holding only comments).
func parseYAML(name, text string) (body ast.Node, err error) {
	defer func() {
		// The parser has panicked on hostile input in the past; a config
		// file must never take the server down.
		if p := recover(); p != nil {
			body, err = nil, &Error{File: name, Msg: oneLine(fmt.Sprintf("YAML parser failed: %v", p))}
		}
	}()
	f, perr := parser.ParseBytes([]byte(text), 0)
	if perr != nil {
		return nil, yamlError(name, text, perr)
	}
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, ok := doc.Body.(*ast.DirectiveNode); ok {
			continue
		}
		if body != nil {
			return nil, &Error{File: name, Line: line(doc.Body), Msg: "more than one YAML document; a config file holds one"}
		}
		body = doc.Body
	}
	return body, nil
}

var (
	dupKeyRE = regexp.MustCompile(`^mapping key "(.*)" already defined at \[(\d+):\d+\]$`)
	posRE    = regexp.MustCompile(`^\[(\d+):(\d+)\] (.*)`)
)

// yamlError turns goccy's multi-line error (with a source excerpt) into one line.
func yamlError(name, text string, err error) error {
	e := &Error{File: name}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil {
			e.Line = tk.Position.Line
		}
	} else {
		first, _, _ := strings.Cut(err.Error(), "\n")
		e.Msg = first
		if m := posRE.FindStringSubmatch(first); m != nil {
			fmt.Sscan(m[1], &e.Line)
			e.Msg = m[3]
		}
	}
	if m := dupKeyRE.FindStringSubmatch(e.Msg); m != nil {
		e.Msg = fmt.Sprintf("duplicate key %q (first on line %s)", m[1], m[2])
	}
	lines := strings.Split(text, "\n")
	if e.Line > 0 && e.Line <= len(lines) {
		l := lines[e.Line-1]
		if ind := l[:len(l)-len(strings.TrimLeft(l, " \t"))]; strings.Contains(ind, "\t") {
			e.Msg = "tab in indentation; YAML indents with spaces only"
		}
	}
	if e.Line <= 0 || e.Line > len(lines)+1 {
		e.Line = 0
	}
	e.Msg = oneLine(e.Msg)
	return e
}

// oneLine makes s safe to print as (part of) a single line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	r := strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "\t", `\t`)
	s = r.Replace(s)
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func line(n ast.Node) int {
	if n == nil {
		return 0
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line
	}
	return 0
}

type anchorCollector map[string]ast.Node

func (a anchorCollector) Visit(n ast.Node) ast.Visitor {
	if an, ok := n.(*ast.AnchorNode); ok && an.Name != nil {
		a[scalarText(an.Name)] = an.Value
	}
	return a
}
