package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mevdschee/tqserver/internal/layout"
)

func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Enough workers to take the parallel path.
	for i := 0; i < 100; i++ {
		mk(fmt.Sprintf("w%d/bin/w%d", i, i), "bin")
	}
	mk("index/bin/index", "bin")
	mk("index/public/css/a.css", "x")
	mk("srconly/src/main.go", "package main")
	mk("Bad/bin/Bad", "bin")
	mk("empty/README", "")
	mk(".hidden/bin/.hidden", "")
	found, warnings, err := discover(workersAt(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 101 {
		t.Fatalf("found %d workers, want 101", len(found))
	}
	idx := found["index"]
	if !idx.stamp.bin.exists || idx.stamp.public.count != 3 || idx.stamp.private.count != 0 {
		t.Fatalf("index stamp: %+v", idx.stamp)
	}
	w := strings.Join(warnings, "\n")
	for _, want := range []string{"srconly: skipped: no binary", "Bad: skipped: worker names", "empty: skipped: neither"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	// A change shows in the stamp; an unchanged tree stamps the same.
	again, _, _ := discover(workersAt(dir))
	if again["index"].stamp != idx.stamp {
		t.Fatal("unchanged tree stamped differently")
	}
	mk("index/public/css/b.css", "y")
	changed, _, _ := discover(workersAt(dir))
	if changed["index"].stamp.public == idx.stamp.public {
		t.Fatal("a new public file did not change the stamp")
	}
}

func BenchmarkDiscover1000(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < 1000; i++ {
		p := filepath.Join(dir, fmt.Sprintf("w%d", i), "bin", fmt.Sprintf("w%d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o755)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if f, _, _ := discover(workersAt(dir)); len(f) != 1000 {
			b.Fatal(len(f))
		}
	}
}

// workersAt is the layout whose workers directory is dir.
func workersAt(dir string) layout.Root {
	return layout.New(dir, layout.Options{WorkersDir: dir})
}
