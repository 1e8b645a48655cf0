package config

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// WorkerVars are the variables left in place by Load and expanded per worker
// by ExpandWorkerVars.
var WorkerVars = []string{"WORKER_BASE", "WORKER_NAME", "WORKER_ROUTE", "WORKER_PORT"}

func isWorkerVar(name string) bool {
	for _, w := range WorkerVars {
		if name == w {
			return true
		}
	}
	return false
}

// ref is one parsed ${NAME} or ${NAME:-default}.
type ref struct {
	name   string
	def    string // raw default text, unexpanded
	hasDef bool
	end    int // index just past the closing '}'
}

// scanRef parses the reference starting at s[i] == '$', s[i+1] == '{'. A
// reference never spans lines. The default runs to the '}' that balances the
// opening one, counting nested "${" and skipping "$$" pairs.
func scanRef(s string, i int) (ref, string) {
	j := i + 2
	start := j
	for j < len(s) && isNameByte(s[j], j == start) {
		j++
	}
	r := ref{name: s[start:j]}
	if j >= len(s) || s[j] == '\n' {
		return r, "unterminated ${ (missing })"
	}
	if r.name == "" {
		if s[j] == '}' {
			return r, "empty variable name in ${}"
		}
		return r, fmt.Sprintf("invalid variable name in ${%s…}: want [A-Za-z_][A-Za-z0-9_]*", clip(lineRest(s, start), 20))
	}
	if s[j] == '}' {
		r.end = j + 1
		return r, ""
	}
	if !strings.HasPrefix(s[j:], ":-") {
		return r, fmt.Sprintf("unsupported expansion ${%s%s…}: only ${VAR} and ${VAR:-default}", r.name, clip(lineRest(s, j), 10))
	}
	j += 2
	defStart := j
	depth := 1
	for j < len(s) && s[j] != '\n' {
		switch {
		case s[j] == '$' && j+1 < len(s) && s[j+1] == '$':
			// An escaped reference still balances its braces.
			if j+2 < len(s) && s[j+2] == '{' {
				depth++
				j += 3
			} else {
				j += 2
			}
			continue
		case s[j] == '$' && j+1 < len(s) && s[j+1] == '{':
			depth++
			j += 2
			continue
		case s[j] == '}':
			depth--
			if depth == 0 {
				r.def, r.hasDef, r.end = s[defStart:j], true, j+1
				return r, ""
			}
		}
		j++
	}
	return r, "unterminated ${ (missing })"
}

func isNameByte(c byte, first bool) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
}

func lineRest(s string, i int) string {
	if k := strings.IndexByte(s[i:], '\n'); k >= 0 {
		return s[i : i+k]
	}
	return s[i:]
}

// clip shortens s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// expandText expands the whole file text before it is parsed. Full-line
// comments are copied unchanged. The returned error carries the 1-based line.
func expandText(src string, lookup func(string) (string, bool)) (string, int, string) {
	var out strings.Builder
	out.Grow(len(src))
	line := 1
	for len(src) > 0 {
		l := src
		rest := ""
		if k := strings.IndexByte(src, '\n'); k >= 0 {
			l, rest = src[:k+1], src[k+1:]
		}
		if t := strings.TrimLeft(l, " \t"); strings.HasPrefix(t, "#") || !strings.Contains(l, "$") {
			out.WriteString(l)
		} else {
			x, msg := expandLine(l, lookup)
			if msg != "" {
				return "", line, msg
			}
			out.WriteString(x)
		}
		src = rest
		line++
	}
	return out.String(), 0, ""
}

// expandLine expands one line with the load-time rules: $$ is a literal $
// (kept as $$ before an escaped worker variable, for ExpandWorkerVars), worker
// variables stay in place with their defaults expanded, every other reference
// is replaced by its value.
func expandLine(s string, lookup func(string) (string, bool)) (string, string) {
	var out strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			out.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			if i+2 < len(s) && s[i+2] == '{' {
				if r, msg := scanRef(s, i+1); msg == "" && isWorkerVar(r.name) {
					out.WriteString(s[i:r.end])
					i = r.end
					continue
				}
			}
			out.WriteByte('$')
			i += 2
		case '{':
			r, msg := scanRef(s, i)
			if msg != "" {
				return "", msg
			}
			var def string
			if r.hasDef {
				// Expanded even when unused so that its mistakes surface.
				if def, msg = expandLine(r.def, lookup); msg != "" {
					return "", msg
				}
			}
			if isWorkerVar(r.name) {
				out.WriteString("${" + r.name)
				if r.hasDef {
					out.WriteString(":-" + def)
				}
				out.WriteByte('}')
			} else {
				v, _ := lookup(r.name)
				if strings.ContainsAny(v, "\r\n") {
					return "", fmt.Sprintf("environment variable %s contains a line break; it cannot be expanded into YAML", r.name)
				}
				if v == "" && r.hasDef {
					v = def
				}
				out.WriteString(v)
			}
			i = r.end
		default:
			out.WriteByte('$')
			i++
		}
	}
	return out.String(), ""
}

// ExpandWorkerVars expands, in a string taken from a loaded Config, the
// per-worker variables ${WORKER_BASE}, ${WORKER_NAME}, ${WORKER_ROUTE} and
// ${WORKER_PORT} (and any other name that is a key of vars) from vars, with
// the same syntax as load-time expansion: ${NAME:-default} uses default when
// the value is missing or empty, and $${NAME} is the literal text ${NAME}.
// Anything else, including malformed references, is left unchanged.
func ExpandWorkerVars(s string, vars map[string]string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	known := func(name string) bool {
		if isWorkerVar(name) {
			return true
		}
		_, ok := vars[name]
		return ok
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			out.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			if i+2 < len(s) && s[i+2] == '{' {
				if r, msg := scanRef(s, i+1); msg == "" && known(r.name) {
					out.WriteString(s[i+1 : r.end])
					i = r.end
					continue
				}
			}
		case '{':
			if r, msg := scanRef(s, i); msg == "" && known(r.name) {
				v := vars[r.name]
				if v == "" && r.hasDef {
					v = ExpandWorkerVars(r.def, vars)
				}
				out.WriteString(v)
				i = r.end
				continue
			}
		}
		out.WriteByte('$')
		i++
	}
	return out.String()
}
