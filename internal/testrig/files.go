package testrig

import (
	"os"
	"testing"
)

// WriteAt overwrites len(b) bytes of the existing file path at off (a
// damaged page, a torn write), failing the test on any error.
func WriteAt(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
