package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// floorKey, in the meta bucket, holds per worker the highest instance number
// of records that are not in this file (a recreated or salvaged log), as a
// JSON object: Replay starts its instance numbering from it, so a name is
// never reused even when the records that used it are gone.
var floorKey = []byte("instance_floor")

// fileID identifies one file, whatever its name.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no device and inode numbers")
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// ensureFile recreates the log when its path no longer names the file this
// store has open (deleted, or replaced by another file). One stat per append:
// next to the append's fsync it does not show (BenchmarkAppend). When it
// recreated the log it returns the log_recreated record it wrote there.
func (s *Store) ensureFile() (*Record, error) {
	if s.readOnly {
		return nil, nil
	}
	s.mu.RLock()
	want, released := s.file, s.db == nil
	s.mu.RUnlock()
	if released {
		return nil, s.released() // handoff.go: another server has the log
	}
	id, err := statID(s.path)
	if (err == nil && id == want) || (err != nil && !gone(err)) {
		// The same file; or the path cannot be examined (a permission
		// change on var/): keep appending to the file that is open rather
		// than fail a record over it.
		return nil, nil
	}
	s.mu.Lock()
	// Another append may have recreated it meanwhile.
	id, err = statID(s.path)
	if (err == nil && id == s.file) || (err != nil && !gone(err)) {
		s.mu.Unlock()
		return nil, nil
	}
	rec, err := s.recreate(err)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("recreate the deleted log: %w", err)
	}
	if s.recreated != nil {
		s.recreated(rec.Detail)
	}
	return rec, nil
}

// gone reports whether a stat error means nothing is at the path: the file
// or a directory above it was removed (or replaced by a plain file).
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// recreate writes a new log at s.path from the file s.db still has open (a
// deleted file stays readable while it is open): every record of it with its
// seq, the same next seq and instance numbering, and a log_recreated record
// saying what happened. A file found in its place is moved aside, not
// overwritten. The new file is built under a temporary name and renamed into
// place, so no reader sees it half-written. Called with s.mu held; returns
// the log_recreated record as stored.
func (s *Store) recreate(statErr error) (*Record, error) {
	what := "deleted"
	var aside string
	if statErr == nil {
		what = "replaced by another file"
		aside = freeName(fmt.Sprintf("%s.replaced-%s", s.path, time.Now().UTC().Format("20060102T150405Z")))
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return nil, err
	}
	tmp := s.path + ".recreating"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	nw, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: DefaultTimeout})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Record, error) {
		_ = nw.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	c := newCopier(nw)
	var lastSeq uint64
	var floors map[string]uint64
	copyErr := guard(s.path, func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(logBucket)
			if b == nil {
				return errors.New("log bucket missing")
			}
			lastSeq = b.Sequence()
			var err error
			if floors, err = readFloors(tx); err != nil {
				return err
			}
			cur := b.Cursor()
			for k, v := cur.First(); k != nil; k, v = cur.Next() {
				if err := c.add(k, v); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err := c.flush(); err != nil {
		return fail(err)
	}
	for w, n := range floors {
		c.floor(w, n)
	}
	lastSeq = max(lastSeq, c.last)
	note := fmt.Sprintf("%s was %s while the server ran; recreated with the %d records of the old file", s.path, what, c.n)
	if copyErr != nil || c.skipped > 0 {
		note += fmt.Sprintf(" that could be read (%d unreadable", c.skipped)
		if copyErr != nil {
			note += fmt.Sprintf("; %v", copyErr)
		}
		note += ")"
	}
	note += fmt.Sprintf(", which ended at seq %d; seq and instance numbering continue", lastSeq)
	if aside != "" {
		note += "; the file found in its place was moved to " + aside
	}
	rec := Record{Time: time.Now().UTC(), Event: sm.EventLogRecreated, Detail: note}
	if err := c.finish(lastSeq, &rec); err != nil {
		return fail(err)
	}
	if err := nw.Close(); err != nil {
		return fail(err)
	}
	if aside != "" {
		if err := os.Rename(s.path, aside); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fail(err)
	}
	syncDir(filepath.Dir(s.path))
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: DefaultTimeout})
	if err != nil {
		return nil, err
	}
	id, err := statID(s.path)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	_ = s.db.Close()
	s.db, s.file = db, id
	return &rec, nil
}

// freeName returns name, or name.N for the first N that does not exist, so
// a file moved aside never replaces an earlier one.
func freeName(name string) string {
	out := name
	for n := 1; n < 1000; n++ {
		if _, err := os.Lstat(out); errors.Is(err, fs.ErrNotExist) {
			break
		}
		out = fmt.Sprintf("%s.%d", name, n)
	}
	return out
}

// syncDir makes a rename in dir durable; a failure only weakens that.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// copier writes records, keeping their seq and bytes, into a new log in
// transactions of scanChunk records, and tracks the instance numbering.
type copier struct {
	db    *bolt.DB
	d     *decoder
	batch [][2][]byte
	n     int
	// skipped counts records left out because they did not decode.
	skipped int
	last    uint64
	floors  map[string]uint64
	err     error
}

func newCopier(db *bolt.DB) *copier {
	return &copier{db: db, d: newScanDecoder(), floors: map[string]uint64{}}
}

// add queues one record; k and v are copied. A record that does not decode
// or is not the one its key names is left out and counted in skipped.
func (c *copier) add(k, v []byte) error {
	seq, err := keySeq(k)
	var r Record
	if err == nil {
		err = c.d.decode(v, &r)
	}
	if err != nil || r.Seq != seq {
		c.skipped++
		return nil
	}
	if n, ok := instanceNumber(r.Worker, r.Instance); ok {
		c.floor(r.Worker, n)
	}
	c.batch = append(c.batch, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
	c.n++
	c.last = max(c.last, seq)
	if len(c.batch) == scanChunk {
		return c.flush()
	}
	return nil
}

func (c *copier) floor(worker string, n uint64) {
	if n > c.floors[worker] {
		c.floors[worker] = n
	}
}

// flush writes the queued records, creating the buckets on first use.
func (c *copier) flush() error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		b, err := createBuckets(tx)
		if err != nil {
			return err
		}
		for _, kv := range c.batch {
			if err := b.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	c.batch = c.batch[:0]
	return err
}

// finish sets the next seq after lastSeq, stores the instance floors and
// appends rec (given its seq) as the last record.
func (c *copier) finish(lastSeq uint64, rec *Record) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		b, err := createBuckets(tx)
		if err != nil {
			return err
		}
		if err := b.SetSequence(lastSeq); err != nil {
			return err
		}
		if len(c.floors) > 0 {
			v, err := json.Marshal(c.floors)
			if err != nil {
				return err
			}
			if err := tx.Bucket(metaBucket).Put(floorKey, v); err != nil {
				return err
			}
		}
		if rec == nil {
			return nil
		}
		return put(tx, rec)
	})
}

// createBuckets makes (or finds) the buckets of a new log.
func createBuckets(tx *bolt.Tx) (*bolt.Bucket, error) {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return nil, err
	}
	if err := meta.Put(schemaKey, []byte(strconv.Itoa(SchemaVersion))); err != nil {
		return nil, err
	}
	return tx.CreateBucketIfNotExists(logBucket)
}

// readFloors reads the instance floors of a log (nil when it has none).
func readFloors(tx *bolt.Tx) (map[string]uint64, error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return nil, nil
	}
	v := meta.Get(floorKey)
	if v == nil {
		return nil, nil
	}
	var f map[string]uint64
	if err := json.Unmarshal(v, &f); err != nil {
		return nil, fmt.Errorf("instance floors in the meta bucket: %w", err)
	}
	return f, nil
}

// instanceFloors is readFloors of the open log.
func (s *Store) instanceFloors() (map[string]uint64, error) {
	var f map[string]uint64
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		f, err = readFloors(tx)
		return err
	})
	if err != nil && !errors.Is(err, ErrDamaged) {
		err = fmt.Errorf("%s: %w", s.path, err)
	}
	return f, err
}
