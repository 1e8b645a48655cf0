package logs

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/testrig"
)

// Without logs.dir, lines stay on stderr and workers only get their limit.
func TestOpenWithoutDir(t *testing.T) {
	var stderr bytes.Buffer
	s, err := Open(t.TempDir(), config.ModeProd, config.Default().Logs, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := s.Server()
	l.Info().Msg("hello")
	if !strings.Contains(stderr.String(), `"message":"hello"`) {
		t.Errorf("stderr = %q", stderr.String())
	}
	cfg := config.Default()
	cfg.Logs.WorkerLinesPerSecond, cfg.Logs.WorkerBurst = 7, 9
	o := Output(cfg, "index", "index-1")
	if o.Lines != nil || o.LinesPerSecond != 7 || o.Burst != 9 {
		t.Errorf("Output = %+v, want limit 7/9 and no file", o)
	}
}

// With logs.dir, the server's lines go to stderr and server.log, each
// worker's lines to {worker}.log, and every file rotates within
// max_size_mb × (max_files+1).
func TestOpenWithDirRotates(t *testing.T) {
	root := t.TempDir()
	c := config.Logs{Dir: "logs", MaxSizeMB: 1, MaxFiles: 2, WorkerLinesPerSecond: 0, WorkerBurst: 1}
	var stderr bytes.Buffer
	s, err := Open(root, config.ModeDev, c, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := filepath.Join(root, "logs")
	if s.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
	}
	sl := s.Server()
	sl.Info().Str("k", "v").Msg("server line")
	if !strings.Contains(stderr.String(), "server line") || strings.Contains(stderr.String(), `"message"`) {
		t.Errorf("dev stderr should have the console line: %q", stderr.String())
	}
	cfg := config.Default()
	cfg.Logs = c
	o := Output(cfg, "api", "api-3")
	if o.Lines == nil || o.LinesPerSecond != 0 {
		t.Fatalf("Output = %+v, want a file logger and no limit", o)
	}
	line := strings.Repeat("x", 1000)
	for range 6 << 10 { // ~6 MiB: rotates several times
		o.Lines.Info().Str("stream", "stdout").Msg(line)
	}
	// Another instance of the same worker shares the file.
	o2 := Output(cfg, "api", "api-4")
	o2.Lines.Info().Msg("second instance")
	srv, err := os.ReadFile(filepath.Join(dir, ServerFile))
	if err != nil || !strings.Contains(string(srv), `"message":"server line"`) || !strings.Contains(string(srv), `"k":"v"`) {
		t.Errorf("server.log = %q, %v", srv, err)
	}
	cur, err := os.ReadFile(filepath.Join(dir, "api.log"))
	if err != nil || !strings.Contains(string(cur), `"instance":"api-4"`) || !strings.Contains(string(cur), `"worker":"api"`) {
		t.Errorf("api.log lacks the second instance's line: %v", err)
	}
	testrig.WaitFor(t, 10*time.Second, "rotated api logs to be pruned to max_files", func() bool {
		var total int64
		n := 0
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "api") {
				if fi, err := e.Info(); err == nil {
					total += fi.Size()
					n++
				}
			}
		}
		return n == 3 && total <= c.LimitBytes()
	})
}

// An unusable logs.dir is a one-line error naming it.
func TestOpenBadDir(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(root, config.ModeProd, config.Logs{Dir: "file/logs", MaxSizeMB: 1, MaxFiles: 1}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "logs.dir file/logs") {
		t.Errorf("Open = %v, want an error naming logs.dir", err)
	}
}

// Every duration in a log line carries its unit in the key (took_ms,
// delay_ms): zerolog's Dur writes a bare number under whatever key it is
// given. This walks the module's non-test Go files for .Dur( calls.
// internal/supervisor is being rewritten (issue 12) and may not be edited
// on this branch: its calls are listed, not failed.
func TestNoUnitlessDurationFields(t *testing.T) {
	root, err := testrig.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || n == "vendor" || (strings.HasPrefix(n, ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Dur" || len(call.Args) != 2 {
				return true
			}
			key := "?"
			if lit, ok := call.Args[0].(*ast.BasicLit); ok {
				key, _ = strconv.Unquote(lit.Value)
			}
			msg := rel + ":" + strconv.Itoa(fset.Position(call.Pos()).Line) + ": .Dur(" + strconv.Quote(key) +
				"): log durations as Int64(\"" + strings.TrimSuffix(key, "_ms") + "_ms\", d.Milliseconds())"
			if strings.HasPrefix(filepath.ToSlash(rel), "internal/supervisor/") {
				t.Logf("left for the supervisor rewrite: %s", msg)
			} else {
				t.Error(msg)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
