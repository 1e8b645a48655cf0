package devreload

import (
	"regexp"
	"strconv"
	"strings"
)

// BuildError is one compiler diagnostic.
type BuildError struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"` // 0 when the compiler gave no column
	Message string `json:"message"`
}

// errorLine matches "path:line:col: message" and "path:line: message".
// The path starts with a non-space, non-colon character, so headers such as
// "# example" and "go: ..." lines never match.
var errorLine = regexp.MustCompile(`^([^\s:#][^:]*):(\d+)(?::(\d+))?: (.+)$`)

// ParseBuildErrors extracts the diagnostics from go build output, such as
// "./main.go:12:5: undefined: foo". Tab-indented continuation lines (for
// example the "have"/"want" lines of a type error) are appended to the
// message of the diagnostic they follow. Lines that are not diagnostics are
// ignored. It never returns nil.
func ParseBuildErrors(output string) []BuildError {
	errs := []BuildError{}
	prev := false // the previous line was a diagnostic (or its continuation)
	for line := range strings.Lines(output) {
		line = strings.TrimRight(line, "\r\n")
		if m := errorLine.FindStringSubmatch(line); m != nil {
			ln, err := strconv.Atoi(m[2])
			if err == nil {
				col := 0
				if m[3] != "" {
					col, _ = strconv.Atoi(m[3])
				}
				errs = append(errs, BuildError{File: m[1], Line: ln, Col: col, Message: m[4]})
				prev = true
				continue
			}
		}
		if prev && strings.HasPrefix(line, "\t") && strings.TrimSpace(line) != "" {
			last := &errs[len(errs)-1]
			last.Message += "\n" + strings.TrimSpace(line)
			continue
		}
		prev = false
	}
	return errs
}
