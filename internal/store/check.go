package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is wrapped by every error about a log file whose pages cannot
// be read as a whole: cut short, overwritten, or with both header pages
// destroyed.
var ErrDamaged = errors.New("log file is damaged")

// DamagedError says which file is damaged, how, and what to do about it.
type DamagedError struct {
	Path    string
	Problem string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("%s is damaged (%s): stop the server if it runs, then run `tqserver log salvage` to copy its readable records into a new log", e.Path, e.Problem)
}

func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

func damaged(path, format string, args ...any) error {
	return &DamagedError{Path: path, Problem: fmt.Sprintf(format, args...)}
}

// The parts of bbolt's file format the checks below read with plain file
// I/O, before anything is memory-mapped: a file cut short would otherwise
// fault inside bbolt on the first access past its end. Layout (native byte
// order): a 16-byte page header (id u64, flags u16, count u16, overflow u32);
// in pages 0 and 1 it is followed by the meta (magic u32, version u32,
// page size u32, flags u32, root bucket {root u64, sequence u64}, freelist
// u64, pgid u64, txid u64, checksum u64), the checksum being FNV-64a of the
// 56 bytes before it.
const (
	pageHeaderSize = 16
	metaSize       = 64
	metaSumOffset  = 56
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)

	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01
)

// diskMeta is one valid meta page.
type diskMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high water mark: pages [0, pgid) are in use or free
	txid     uint64
}

// parseMeta reads the meta of a page starting at b; ok is false when it is
// not a valid meta page.
func parseMeta(b []byte) (m diskMeta, ok bool) {
	if len(b) < pageHeaderSize+metaSize {
		return m, false
	}
	mb := b[pageHeaderSize : pageHeaderSize+metaSize]
	ne := binary.NativeEndian
	if ne.Uint32(mb[0:]) != boltMagic || ne.Uint32(mb[4:]) != boltVersion {
		return m, false
	}
	h := fnv.New64a()
	h.Write(mb[:metaSumOffset])
	if h.Sum64() != ne.Uint64(mb[metaSumOffset:]) {
		return m, false
	}
	m = diskMeta{
		pageSize: ne.Uint32(mb[8:]),
		root:     ne.Uint64(mb[16:]),
		freelist: ne.Uint64(mb[32:]),
		pgid:     ne.Uint64(mb[40:]),
		txid:     ne.Uint64(mb[48:]),
	}
	return m, m.pageSize >= 512 && m.pageSize <= 1<<16 && m.pageSize&(m.pageSize-1) == 0
}

// readMeta picks the meta bbolt would use (the valid one with the higher
// txid) from the file f of the given size, reading it with plain I/O.
func readMeta(f io.ReaderAt, size int64) (diskMeta, error) {
	var head [pageHeaderSize + metaSize]byte
	var metas []diskMeta
	if _, err := f.ReadAt(head[:], 0); err == nil {
		if m, ok := parseMeta(head[:]); ok {
			metas = append(metas, m)
		}
	}
	// Page 1 sits one page in: the page size is meta 0's when it is
	// readable, else the usual ones.
	offsets := []int64{int64(os.Getpagesize()), 4096, 16384, 65536}
	if len(metas) > 0 {
		offsets = []int64{int64(metas[0].pageSize)}
	}
	for _, off := range offsets {
		if _, err := f.ReadAt(head[:], off); err != nil {
			continue
		}
		if m, ok := parseMeta(head[:]); ok && int64(m.pageSize) == off {
			metas = append(metas, m)
			break
		}
	}
	if len(metas) == 0 {
		return diskMeta{}, errors.New("both header pages are unreadable")
	}
	m := metas[0]
	if len(metas) == 2 && metas[1].txid > m.txid {
		m = metas[1]
	}
	ps := uint64(m.pageSize)
	switch {
	case m.pgid < 2 || m.root >= m.pgid || (m.freelist != noFreelist && m.freelist >= m.pgid):
		return m, fmt.Errorf("header page names pages past its end (root %d, freelist %d, %d pages)", m.root, m.freelist, m.pgid)
	case m.pgid > uint64(size)/ps:
		return m, fmt.Errorf("cut short: %d bytes, but its pages need %d", size, m.pgid*ps)
	}
	return m, nil
}

// precheck checks the header pages of the file at path and that the file is
// as long as they say, without mapping it. A missing file passes: Open
// creates it (or reports it missing when read-only).
func precheck(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	if fi.Size() == 0 {
		// bbolt writes the header pages when it creates a file: an empty
		// one was cut to nothing (or never finished its first open).
		return damaged(path, "empty file")
	}
	m, err := readMeta(f, fi.Size())
	if err == nil {
		err = checkFreelist(f, m)
	}
	if err != nil {
		return damaged(path, "%v", err)
	}
	return nil
}

// checkFreelist checks the shape of the free list page m names, which bbolt
// reads while opening the file, trusting its counts: every page id it lists
// must lie within the file's pages and the list within its page.
func checkFreelist(f io.ReaderAt, m diskMeta) error {
	if m.freelist == noFreelist {
		return nil
	}
	ne := binary.NativeEndian
	ps := int64(m.pageSize)
	off := int64(m.freelist) * ps
	var h [pageHeaderSize + 8]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		return fmt.Errorf("free list page %d unreadable: %w", m.freelist, err)
	}
	if ne.Uint64(h[0:]) != m.freelist || ne.Uint16(h[8:]) != freelistPageFlag {
		return fmt.Errorf("free list page %d is not a free list", m.freelist)
	}
	over := uint64(ne.Uint32(h[12:]))
	first, count := uint64(0), uint64(ne.Uint16(h[10:]))
	if count == 0xFFFF {
		first, count = 1, ne.Uint64(h[pageHeaderSize:])
	}
	if m.freelist+over >= m.pgid || count > (over+1)*uint64(ps)/8 ||
		pageHeaderSize+(first+count)*8 > (over+1)*uint64(ps) {
		return fmt.Errorf("free list page %d holds %d ids in %d pages", m.freelist, count, over+1)
	}
	ids := make([]byte, count*8)
	if _, err := f.ReadAt(ids, off+pageHeaderSize+int64(first)*8); err != nil {
		return fmt.Errorf("free list page %d unreadable: %w", m.freelist, err)
	}
	for i := 0; i < len(ids); i += 8 {
		if id := ne.Uint64(ids[i:]); id < 2 || id >= m.pgid {
			return fmt.Errorf("free list names page %d, outside the file's %d pages", id, m.pgid)
		}
	}
	return nil
}

// guard runs fn so that a fault or panic while reading mapped pages (a log
// damaged after it was opened, or in a way the checks at open did not see)
// becomes an error naming the file instead of killing the process. It is the
// last line of defence; Open checks first.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(path, "reading its pages failed: %s", oneLine(fmt.Sprint(p)))
		}
	}()
	return fn()
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// verify walks every page of the log the way readers will: every key and
// value of both buckets is touched, keys must strictly increase, the log
// bucket's sequence must not be behind its last key (else Append would
// reuse a seq), and bbolt's own consistency check must pass. Record contents
// are not decoded here: a record that does not decode is reported, with its
// seq, by whatever reads it (and by Check).
func (s *Store) verify() error {
	return guard(s.path, func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(logBucket); b != nil {
				var prev []byte
				var sink byte
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if prev != nil && string(k) <= string(prev) {
						return damaged(s.path, "log keys out of order at %x", k)
					}
					prev = k
					if len(v) > 0 {
						sink ^= v[0] ^ v[len(v)-1]
					}
				}
				_ = sink
				if len(prev) == 8 {
					if last, _ := keySeq(prev); b.Sequence() < last {
						return damaged(s.path, "sequence %d is behind the last record %d", b.Sequence(), last)
					}
				}
			}
			// Drain the channel: its goroutine reads the transaction's pages
			// until it closes it.
			var first error
			for err := range tx.Check() {
				if first == nil {
					first = damaged(s.path, "%s", oneLine(err.Error()))
				}
			}
			return first
		})
	})
}
