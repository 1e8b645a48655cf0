package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Filter selects records. Zero fields select everything.
type Filter struct {
	// Worker keeps records of this worker only (exact match).
	Worker string
	// Since and Until bound Time, both inclusive.
	Since, Until time.Time
	// Limit > 0 keeps the newest Limit matching records (like journalctl -n);
	// they are still delivered oldest first.
	Limit int
	// AfterSeq > 0 keeps records with a greater seq only (a reader resuming
	// after the last record it has); the scan starts there.
	AfterSeq uint64
}

func (f Filter) match(r *Record) bool {
	if r.Seq <= f.AfterSeq {
		return false
	}
	if f.Worker != "" && r.Worker != f.Worker {
		return false
	}
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && r.Time.After(f.Until) {
		return false
	}
	return true
}

// scanChunk is how many records one read transaction examines. Short
// transactions keep a long history read from blocking a writer that needs to
// grow the file (bbolt remaps only when no read transaction is open).
const scanChunk = 4096

// Scan calls fn for each record matching f, oldest first, and stops at the
// first error: fn's own error is returned as is; a record that does not
// decode stops the scan with an error naming the file and its seq. fn runs
// outside any transaction and may call Append; records appended during a
// scan without a Limit may or may not be delivered.
//
// Time bounds are checked on every record rather than assumed from key order,
// so a wall-clock step backwards cannot hide records.
func (s *Store) Scan(f Filter, fn func(Record) error) error {
	if f.Limit > 0 {
		recs, err := s.newest(f)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	d := newScanDecoder()
	buf := make([]Record, 0, 256)
	return s.chunks(f.start(), func(k, v []byte) error {
		buf = append(buf, Record{})
		r := &buf[len(buf)-1]
		if err := s.decodeKV(d, k, v, r); err != nil {
			return err
		}
		if !f.match(r) {
			buf = buf[:len(buf)-1]
		}
		return nil
	}, func() error {
		for _, r := range buf {
			if err := fn(r); err != nil {
				return err
			}
		}
		buf = buf[:0]
		return nil
	})
}

// start is the key a scan for f starts at; nil is the first record.
func (f Filter) start() []byte {
	if f.AfterSeq == 0 {
		return nil
	}
	return seqKey(f.AfterSeq + 1)
}

// chunks walks the log oldest first, from the key start (nil: the first
// record), in read transactions of scanChunk records: visit sees each key
// and value inside the transaction (the bytes are valid only there), and
// flush runs after each transaction, outside it.
func (s *Store) chunks(start []byte, visit func(k, v []byte) error, flush func() error) error {
	next := start // key to resume at; nil starts at the first record
	for {
		done := false
		err := s.view(func(tx *bolt.Tx) error {
			b := tx.Bucket(logBucket)
			if b == nil {
				done = true
				return nil
			}
			c := b.Cursor()
			var k, v []byte
			if next == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(next)
			}
			for n := 0; k != nil; k, v = c.Next() {
				if n == scanChunk {
					next = append(next[:0], k...)
					return nil
				}
				n++
				if err := visit(k, v); err != nil {
					return err
				}
			}
			done = true
			return nil
		})
		if err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// newest walks back from the last record collecting the newest f.Limit
// matches, and returns them oldest first.
func (s *Store) newest(f Filter) ([]Record, error) {
	var out []Record
	d := newScanDecoder()
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(logBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < f.Limit; k, v = c.Prev() {
			if f.AfterSeq > 0 {
				if seq, err := keySeq(k); err == nil && seq <= f.AfterSeq {
					break // older still: none can match
				}
			}
			out = append(out, Record{})
			r := &out[len(out)-1]
			if err := s.decodeKV(d, k, v, r); err != nil {
				return err
			}
			if !f.match(r) {
				out = out[:len(out)-1]
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(out)
	return out, nil
}

// decodeKV decodes one stored record into *r and checks it is the one its
// key says.
func (s *Store) decodeKV(d *decoder, k, v []byte, r *Record) error {
	seq, err := keySeq(k)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	if err := d.decode(v, r); err != nil {
		return fmt.Errorf("%s: record %d: %w", s.path, seq, err)
	}
	if r.Seq != seq {
		return fmt.Errorf("%s: record %d: holds seq %d", s.path, seq, r.Seq)
	}
	return nil
}

// Records returns the records matching f, oldest first.
func (s *Store) Records(f Filter) ([]Record, error) {
	var out []Record
	err := s.Scan(f, func(r Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// ScanJSON writes each record matching f as its stored JSON, one per line,
// oldest first — the `history --json` format — without re-encoding: records
// are decoded only to filter and validate them. The bytes are those Append
// stored with json.Marshal of the Record, so they equal what encoding the
// decoded Record would give.
func (s *Store) ScanJSON(f Filter, w io.Writer) error {
	if f.Limit > 0 {
		recs, err := s.newest(f)
		if err != nil {
			return err
		}
		for i := range recs {
			b, err := json.Marshal(&recs[i])
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
		return nil
	}
	d := newScanDecoder()
	// AfterSeq needs no check per record: the scan starts after it.
	all := f.Worker == "" && f.Since.IsZero() && f.Until.IsZero()
	var out []byte
	var r Record
	return s.chunks(f.start(), func(k, v []byte) error {
		if all {
			// Nothing to filter: check the record is the one its key names
			// and is whole (Append writes it in one transaction), without
			// decoding it.
			if err := s.checkRaw(k, v); err != nil {
				return err
			}
		} else {
			r = Record{}
			if err := s.decodeKV(d, k, v, &r); err != nil {
				return err
			}
			if !f.match(&r) {
				return nil
			}
		}
		out = append(out, v...)
		out = append(out, '\n')
		return nil
	}, func() error {
		_, err := w.Write(out)
		out = out[:0]
		return err
	})
}

// checkRaw verifies, without decoding, that v is a whole JSON object that
// starts with the seq its key k names, as json.Marshal of a Record writes it.
func (s *Store) checkRaw(k, v []byte) error {
	seq, err := keySeq(k)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	var want [32]byte
	p := strconv.AppendUint(append(want[:0], `{"seq":`...), seq, 10)
	p = append(p, ',')
	if !bytes.HasPrefix(v, p) || v[len(v)-1] != '}' {
		return fmt.Errorf("%s: record %d: not a whole record", s.path, seq)
	}
	return nil
}
