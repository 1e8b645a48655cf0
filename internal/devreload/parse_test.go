package devreload

import (
	"reflect"
	"testing"
)

func TestParseBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		output string
		want   []BuildError
	}{
		{"empty", "", []BuildError{}},
		{"header only", "# example\n", []BuildError{}},
		{
			"relative with dot slash",
			"# example\n./main.go:12:5: undefined: foo\n",
			[]BuildError{{File: "./main.go", Line: 12, Col: 5, Message: "undefined: foo"}},
		},
		{
			"bare file name",
			"main.go:3:2: syntax error: unexpected newline, expected comma or )",
			[]BuildError{{File: "main.go", Line: 3, Col: 2, Message: "syntax error: unexpected newline, expected comma or )"}},
		},
		{
			"several files, CRLF, noise lines",
			"go: downloading example.com/x v1.0.0\r\n# example\r\n./a.go:1:1: first\r\n../lib/b.go:20:14: second: with colon\r\n/abs/path/c.go:7:1: third\r\n./a.go:9:3: too many errors\r\n",
			[]BuildError{
				{File: "./a.go", Line: 1, Col: 1, Message: "first"},
				{File: "../lib/b.go", Line: 20, Col: 14, Message: "second: with colon"},
				{File: "/abs/path/c.go", Line: 7, Col: 1, Message: "third"},
				{File: "./a.go", Line: 9, Col: 3, Message: "too many errors"},
			},
		},
		{
			"no column",
			"go.mod:3: unknown directive: foo\n",
			[]BuildError{{File: "go.mod", Line: 3, Col: 0, Message: "unknown directive: foo"}},
		},
		{
			"continuation lines join the previous error",
			"./main.go:8:9: cannot use x (variable of type int) as string value in return statement\n./main.go:10:2: missing return\n\thave (int)\n\twant (string)\nnot indented\n\tstray indented\n",
			[]BuildError{
				{File: "./main.go", Line: 8, Col: 9, Message: "cannot use x (variable of type int) as string value in return statement"},
				{File: "./main.go", Line: 10, Col: 2, Message: "missing return\nhave (int)\nwant (string)"},
			},
		},
		{"line number overflow is not a diagnostic", "a.go:99999999999999999999999:1: x\n", []BuildError{}},
		{"no message", "./main.go:12:5:\n", []BuildError{}},
		{"space in front is not a path", " ./main.go:12:5: x\n", []BuildError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseBuildErrors(tt.output)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseBuildErrors(%q)\n got %#v\nwant %#v", tt.output, got, tt.want)
			}
		})
	}
}
