package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// Release hands the file and its lock to another opener (the new server);
// appends fail meanwhile; Reacquire waits for the lock and continues the
// sequence after what the other wrote.
func TestReleaseReacquire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tq.db")
	old, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Append(&Record{Event: "server_start"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open while held: %v, want ErrLocked", err)
	}
	if err := old.Release(); err != nil {
		t.Fatal(err)
	}
	if err := old.Append(&Record{Event: "lost"}); !errors.Is(err, ErrReleased) {
		t.Fatalf("append while released: %v, want ErrReleased", err)
	}
	if _, err := old.Records(Filter{}); !errors.Is(err, ErrReleased) {
		t.Fatalf("read while released: %v, want ErrReleased", err)
	}
	next, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("open after Release: %v", err)
	}
	if err := next.Append(&Record{Event: "server_start"}); err != nil {
		t.Fatal(err)
	}
	if err := old.Reacquire(50 * time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("Reacquire while the other holds it: %v, want ErrLocked", err)
	}
	next.Close()
	if err := old.Reacquire(time.Second); err != nil {
		t.Fatal(err)
	}
	r := &Record{Event: "server_upgrade_failed"}
	if err := old.Append(r); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 3 {
		t.Fatalf("seq after reacquire = %d, want 3", r.Seq)
	}
}
