package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The value checks of config keys: each returns "" for a good value or
// what is wrong with it.

func nonEmpty(s string) string {
	if s == "" {
		return "must not be empty"
	}
	return ""
}

func oneOf(allowed ...string) check {
	return func(s string) string {
		for _, a := range allowed {
			if s == a {
				return ""
			}
		}
		return fmt.Sprintf("must be %s, got %q", quoteList(allowed), s)
	}
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func checkMode(s string) string {
	if s == "" || s == ModeDev || s == ModeProd {
		return ""
	}
	return fmt.Sprintf("must be %q or %q, got %q", ModeDev, ModeProd, s)
}

func checkURLPrefix(s string) string {
	if !strings.HasPrefix(s, "/") {
		return fmt.Sprintf("must start with \"/\", got %q", s)
	}
	return ""
}

// checkPattern accepts the glob syntax of path.Match (** is two *s there).
func checkPattern(s string) string {
	if s == "" {
		return "pattern must not be empty"
	}
	if msg := globSyntax(s); msg != "" {
		return fmt.Sprintf("invalid pattern %q: %s", s, msg)
	}
	return ""
}

func globSyntax(p string) string {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			if i+1 >= len(p) {
				return "trailing backslash"
			}
			i++
		case '[':
			j := i + 1
			if j < len(p) && p[j] == '^' {
				j++
			}
			if j < len(p) && p[j] == ']' { // "[]" is not an empty class in path.Match
				return "empty character class"
			}
			for j < len(p) && p[j] != ']' {
				if p[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(p) {
				return "unclosed ["
			}
			i = j
		}
	}
	return ""
}

// checkGoMemLimit accepts what the Go runtime accepts in GOMEMLIMIT: "off" or
// a byte count with an optional B, KiB, MiB, GiB or TiB suffix.
func checkGoMemLimit(s string) string {
	if s == "" || s == "off" {
		return ""
	}
	if _, ok := parseByteCount(s); !ok {
		return fmt.Sprintf("invalid memory limit %q: want bytes with an optional B, KiB, MiB, GiB or TiB suffix, e.g. 512MiB", s)
	}
	return ""
}

// parseByteCount mirrors runtime.parseByteCount (Go 1.19+).
func parseByteCount(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	last := s[len(s)-1]
	if last >= '0' && last <= '9' {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n >= 0
	}
	if last != 'B' || len(s) < 2 {
		return 0, false
	}
	if c := s[len(s)-2]; c >= '0' && c <= '9' {
		n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
		return n, err == nil && n >= 0
	} else if c != 'i' {
		return 0, false
	}
	if len(s) < 4 {
		return 0, false
	}
	var m uint64
	switch s[len(s)-3] {
	case 'K':
		m = 1 << 10
	case 'M':
		m = 1 << 20
	case 'G':
		m = 1 << 30
	case 'T':
		m = 1 << 40
	default:
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-3], 10, 64)
	if err != nil || n < 0 || uint64(n) > math.MaxInt64/m {
		return 0, false
	}
	return n * int64(m), true
}

func checkPathsKey(s string) string {
	switch {
	case !strings.HasPrefix(s, "/"):
		return fmt.Sprintf("route prefix %q must start with \"/\"", s)
	case s != "/" && strings.HasSuffix(s, "/"):
		return fmt.Sprintf("route prefix %q must not end with \"/\"", s)
	case strings.Contains(s, "//"):
		return fmt.Sprintf("route prefix %q has an empty segment", s)
	}
	return ""
}

func checkBinaryPath(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if !strings.Contains(s, workerNamePlaceholder) {
		return fmt.Sprintf("must contain %s, got %q", workerNamePlaceholder, s)
	}
	return checkPlaceholders(s)
}

func checkBinaryFormat(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if strings.Contains(s, "/") {
		return fmt.Sprintf("must be a file name, without \"/\", got %q; binaries.path places the binary", s)
	}
	return checkPlaceholders(s)
}

func checkPlaceholders(s string) string {
	rest := strings.ReplaceAll(s, workerNamePlaceholder, "")
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		end := strings.IndexByte(rest[i:], '}')
		ph := rest[i:]
		if end >= 0 {
			ph = rest[i : i+end+1]
		}
		return fmt.Sprintf("unknown placeholder %q: only %s", ph, workerNamePlaceholder)
	}
	return ""
}

// checkWarmupURL accepts an origin-form path: "/", then no spaces, no
// control bytes, no "#" and no "//" authority.
func checkWarmupURL(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		return fmt.Sprintf("warm-up URL %q must be a path starting with a single /", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '#' {
			return fmt.Sprintf("warm-up URL %q has a space, control byte or # at %d", s, i)
		}
	}
	return ""
}
