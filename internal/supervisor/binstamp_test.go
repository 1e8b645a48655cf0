package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckExecutable(t *testing.T) {
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	elfBytes, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		mode os.FileMode
		want string // "" = accepted
	}{
		{"elf", elfBytes, 0o755, ""},
		{"script", []byte("#!/bin/sh\necho hi\n"), 0o755, ""},
		{"empty", nil, 0o755, "empty"},
		{"not executable", elfBytes, 0o644, "not executable"},
		{"cut short", elfBytes[:len(elfBytes)/2], 0o755, "complete"},
		{"header only", elfBytes[:64], 0o755, "complete"},
		{"three bytes", []byte("\x7fEL"), 0o755, "neither"},
		{"text", []byte("hello world\n"), 0o755, "neither"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
		if err := os.WriteFile(p, c.data, c.mode); err != nil {
			t.Fatal(err)
		}
		err := checkExecutable(p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: rejected: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

// discover only stats (a no-op reload reads no binary); a touch changes
// the stat and not the content, a rename of other bytes both.
func TestBinStamps(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "w", "bin", "w")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("content 1"), 0o755); err != nil {
		t.Fatal(err)
	}
	found, _, err := discover(workersAt(dir))
	if err != nil {
		t.Fatal(err)
	}
	if st := found["w"].stamp.bin; !st.exists || st.hashed || st.ino == 0 || st.ctime == 0 {
		t.Fatalf("discover stamp %+v: want stat fields only", st)
	}
	first, err := hashBin(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !first.sameStat(found["w"].stamp.bin) {
		t.Fatal("hashBin and discover disagree on the stat")
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(bin, later, later); err != nil {
		t.Fatal(err)
	}
	touched, err := hashBin(bin)
	if err != nil {
		t.Fatal(err)
	}
	if touched.sameStat(first) || !touched.sameContent(first) {
		t.Fatal("touch: want a new stat and the same content")
	}
	if err := os.WriteFile(bin+".new", []byte("content 2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bin, later, later); err != nil {
		t.Fatal(err)
	}
	replaced, err := hashBin(bin)
	if err != nil {
		t.Fatal(err)
	}
	if replaced.sameStat(touched) || replaced.sameContent(touched) {
		t.Fatal("same size and mtime, other bytes: want a new stat (inode) and new content")
	}
}
