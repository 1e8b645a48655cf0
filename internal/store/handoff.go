package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrReleased is returned by every read and append while the log is
// released (Release) and not yet taken back (Reacquire).
var ErrReleased = errors.New("log released to another server")

// Release closes the file and gives up its lock without closing the Store:
// a server self-upgrade hands the log to the new server this way (its
// open blocks on the lock until now, so the order of the records is the
// order of the servers). Until Reacquire, reads and appends fail with
// ErrReleased.
func (s *Store) Release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("%s: release: %w", s.path, err)
	}
	return nil
}

// Reacquire opens the file again after Release (the hand-off failed),
// waiting up to timeout for its lock.
func (s *Store) Reacquire(timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		return nil
	}
	var db *bolt.DB
	err := guard(s.path, func() error {
		var err error
		db, err = bolt.Open(s.path, 0o600, &bolt.Options{Timeout: timeout, PreLoadFreelist: true})
		return err
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("%s: take the log back: %w (waited %s)", s.path, ErrLocked, timeout)
		}
		return fmt.Errorf("%s: take the log back: %w", s.path, err)
	}
	id, err := statID(s.path)
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("%s: %w", s.path, err)
	}
	s.db, s.file = db, id
	return nil
}

// released is the error of a transaction while the log is released.
func (s *Store) released() error { return fmt.Errorf("%s: %w", s.path, ErrReleased) }
