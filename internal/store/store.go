package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/mevdschee/tqserver/internal/stats"
)

// SchemaVersion is the layout of the log this code reads and writes. A file
// with a higher version was written by a newer tqserver and is refused.
const SchemaVersion = 1

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero.
const DefaultTimeout = time.Second

var (
	logBucket  = []byte("log")
	metaBucket = []byte("meta")
	schemaKey  = []byte("schema")
)

// ErrLocked is wrapped by Open's error when another handle (normally the
// running server) holds the file lock for longer than Options.Timeout.
var ErrLocked = errors.New("locked by another process")

// Options configures Open.
type Options struct {
	// Timeout bounds the wait for the file lock; zero means DefaultTimeout.
	// bbolt would otherwise wait forever.
	Timeout time.Duration
	// ReadOnly takes a shared lock and never writes: the file must exist.
	ReadOnly bool
	// Recreated, when set, is called (once per event, from Append) after
	// the file was found deleted or replaced and was recreated at its path;
	// detail says what happened. The caller logs it loudly.
	Recreated func(detail string)
}

// Store is an open history log.
type Store struct {
	// mu is held for reading around every transaction and for writing while
	// a deleted log is recreated, which swaps db.
	mu        sync.RWMutex
	db        *bolt.DB
	file      fileID // the file db has open, to notice it being unlinked
	path      string
	readOnly  bool
	recreated func(string)

	// appendMu serialises Append from its transaction to the observers'
	// calls, so they see records in seq order. obsMu guards observers and
	// is held while they are called (see Observe).
	appendMu  sync.Mutex
	obsMu     sync.Mutex
	observers []*observer

	appendTime stats.Histogram // how long each Append took (appendtime.go)
}

// Open opens the log at path, creating it (and its directory) unless
// opts.ReadOnly. A file that does not exist opened read-only fails with an
// error wrapping fs.ErrNotExist.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create log directory: %w", err)
		}
	}
	// The header pages and the file length are checked with plain reads
	// first: bbolt maps the file and would fault on a page past its end.
	if err := precheck(path); err != nil {
		return nil, err
	}
	var db *bolt.DB
	var file *os.File
	err := guard(path, func() error {
		var err error
		// PreLoadFreelist reads the free list here, where a fault is caught,
		// rather than in the goroutine of the consistency check.
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly, PreLoadFreelist: true,
			OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
				f, err := os.OpenFile(name, flag, perm)
				file = f
				return f, err
			}})
		return err
	})
	if db == nil && file != nil && errors.Is(err, ErrDamaged) {
		// bbolt panicked inside Open: release the file and its lock (the
		// mapping cannot be undone from here).
		_ = file.Close()
	}
	if err != nil {
		if errors.Is(err, ErrDamaged) {
			return nil, err
		}
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%s: %w (waited %s)", path, ErrLocked, timeout)
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// Already names the file.
			return nil, fmt.Errorf("open log: %w", err)
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
			return nil, damaged(path, "%v", err)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Store{db: db, path: path, readOnly: opts.ReadOnly, recreated: opts.Recreated}
	if err := s.verify(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := guard(path, s.init); err != nil {
		_ = db.Close()
		return nil, err
	}
	if !s.readOnly {
		if s.file, err = statID(path); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return s, nil
}

// init checks the schema and, when writable, creates the buckets of a new log.
func (s *Store) init() error {
	fresh := false
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		fresh, err = s.checkSchema(tx)
		return err
	})
	if err != nil || !fresh || s.readOnly {
		// A read-only open of a file no writer has initialised yet reads as
		// an empty log.
		return err
	}
	// We hold the exclusive file lock, so the file is still as seen above.
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(metaBucket)
		if err != nil {
			return fmt.Errorf("%s: create meta bucket: %w", s.path, err)
		}
		if err := meta.Put(schemaKey, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return fmt.Errorf("%s: write schema version: %w", s.path, err)
		}
		if _, err := tx.CreateBucket(logBucket); err != nil {
			return fmt.Errorf("%s: create log bucket: %w", s.path, err)
		}
		return nil
	})
}

// checkSchema reports whether the file is new (no buckets at all) and refuses
// one that is not a complete log of a schema this code understands. Buckets
// are only ever created together, so anything in between is not ours or was
// tampered with; recreating a lost log bucket would reuse sequence numbers.
func (s *Store) checkSchema(tx *bolt.Tx) (fresh bool, err error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return false, fmt.Errorf("%s: not a tqserver log (no schema version)", s.path)
		}
		return true, nil
	}
	v := meta.Get(schemaKey)
	if v == nil {
		return false, fmt.Errorf("%s: not a tqserver log (no schema version)", s.path)
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil || n == 0 {
		return false, fmt.Errorf("%s: unreadable schema version %q", s.path, v)
	}
	if n > SchemaVersion {
		return false, fmt.Errorf("%s: schema version %d is newer than this tqserver understands (%d)", s.path, n, SchemaVersion)
	}
	if tx.Bucket(logBucket) == nil {
		return false, fmt.Errorf("%s: log bucket missing", s.path)
	}
	return false, nil
}

// Path is the file the store was opened from, as given to Open.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil // released (handoff.go)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("%s: close: %w", s.path, err)
	}
	return nil
}

// view and update run one transaction on the current file, turning a fault
// on a damaged page into an error.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return s.released()
	}
	return guard(s.path, func() error { return s.db.View(fn) })
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return s.released()
	}
	return guard(s.path, func() error { return s.db.Update(fn) })
}

// Append writes r as the next record in its own fsync'd transaction. It sets
// r.Seq to the next sequence number, stamps r.Time with the current time when
// it is zero and stores it in UTC. When Append fails, r is left as it was and
// no sequence number is consumed.
//
// Before writing, Append checks that the path still names the file it has
// open; a log deleted or replaced behind its back is recreated first (see
// recreate), so records never go to a file nobody will read again.
func (s *Store) Append(r *Record) error {
	if r == nil {
		return fmt.Errorf("%s: append: nil record", s.path)
	}
	if err := s.AppendAll([]*Record{r}); err != nil {
		return fmt.Errorf("%s: append %s record: %w", s.path, r.Event, errors.Unwrap(err))
	}
	return nil
}

// AppendAll writes rs in one fsync'd transaction: all of them, in order,
// or none (then every record is left as it was and no sequence number is
// consumed). It is how the supervisor writes one step's records before
// performing any of its effects.
func (s *Store) AppendAll(rs []*Record) error {
	if len(rs) == 0 {
		return nil
	}
	old := make([]Record, len(rs))
	now := time.Now()
	for i, r := range rs {
		if r == nil {
			return fmt.Errorf("%s: append: nil record", s.path)
		}
		old[i] = *r
		if r.Time.IsZero() {
			r.Time = now
		}
		r.Time = r.Time.UTC()
	}
	defer s.timeAppend(time.Now())
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	recreated, err := s.ensureFile()
	if recreated != nil {
		// Committed to the new file even if this append then fails.
		s.notify(*recreated)
	}
	if err == nil {
		err = s.update(func(tx *bolt.Tx) error {
			for _, r := range rs {
				if err := put(tx, r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		for i, r := range rs {
			*r = old[i]
		}
		return fmt.Errorf("%s: append %d record(s) from %s: %w", s.path, len(rs), rs[0].Event, err)
	}
	for _, r := range rs {
		s.notify(*r)
	}
	return nil
}

// put assigns r the bucket's next sequence and stores it.
func put(tx *bolt.Tx, r *Record) error {
	b := tx.Bucket(logBucket)
	if b == nil {
		return errors.New("log bucket missing")
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	r.Seq = seq
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put(seqKey(seq), v)
}

// LastSeq is the seq of the newest record, 0 for an empty log.
func (s *Store) LastSeq() (uint64, error) {
	var last uint64
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(logBucket)
		if b == nil {
			return nil
		}
		k, _ := b.Cursor().Last()
		if k == nil {
			return nil
		}
		seq, err := keySeq(k)
		if err != nil {
			return fmt.Errorf("%s: %w", s.path, err)
		}
		last = seq
		return nil
	})
	return last, err
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

func keySeq(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("malformed key %x in log bucket", k)
	}
	return binary.BigEndian.Uint64(k), nil
}
