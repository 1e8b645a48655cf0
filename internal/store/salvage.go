package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

// CheckResult describes a log that passed Check.
type CheckResult struct {
	Records     int
	First, Last uint64 // seq of the oldest and newest record; 0 when empty
}

// Check opens the log at path read-only, checks its pages (as Open does)
// and decodes every record. A problem is an error wrapping ErrDamaged.
func Check(path string, timeout time.Duration) (CheckResult, error) {
	var res CheckResult
	s, err := Open(path, Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return res, err
	}
	defer s.Close()
	d := newScanDecoder()
	var r Record
	err = s.chunks(nil, func(k, v []byte) error {
		if err := s.decodeKV(d, k, v, &r); err != nil {
			return err
		}
		if res.First == 0 {
			res.First = r.Seq
		}
		res.Last = r.Seq
		res.Records++
		return nil
	}, func() error { return nil })
	if err != nil && !errors.Is(err, ErrDamaged) {
		err = damaged(path, "%s", strings.TrimPrefix(err.Error(), path+": "))
	}
	return res, err
}

// SalvageResult says what Salvage kept.
type SalvageResult struct {
	Kept int
	// Lost counts the seqs up to LastSeq of which no readable copy was
	// found. Records after the last seq the damaged file still showed are
	// not counted: nothing is left to count them by.
	Lost    uint64
	LastSeq uint64
	// Conflicts counts seqs found with two different contents (a write that
	// failed and was retried); the later one was kept.
	Conflicts int
	// Moved is where the damaged file now is.
	Moved string
}

// Salvage rebuilds the log at path from whatever of it can be read: it reads
// every page of the file with plain I/O (no mapping, so no fault), keeps each
// record that decodes and sits under its own seq (also copies left in pages
// bbolt had freed, which is how records of a destroyed page can survive),
// and writes them, keeping their seq, into a fresh file. The next seq and
// the instance numbering continue from the highest the file still showed.
// The damaged file is moved aside to path.damaged-<UTC time>. It fails
// without changing anything when another process (a running server) holds
// the file's lock.
func Salvage(path string, now time.Time) (SalvageResult, error) {
	var res SalvageResult
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return res, fmt.Errorf("salvage: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return res, fmt.Errorf("salvage %s: %w (stop the server first)", path, ErrLocked)
	}
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("salvage: %w", err)
	}
	sc := salvageScan{recs: map[uint64]salvaged{}, conflicts: map[uint64]bool{}, floors: map[string]uint64{}, d: newScanDecoder()}
	ps := int64(os.Getpagesize())
	if m, err := readMeta(f, fi.Size()); err == nil || m.pageSize != 0 {
		ps = int64(m.pageSize)
	}
	page := make([]byte, ps)
	for off := int64(0); off+pageHeaderSize <= fi.Size(); off += ps {
		n, err := f.ReadAt(page, off)
		if err != nil && n < pageHeaderSize {
			break
		}
		p := page[:n]
		if binary.NativeEndian.Uint16(p[8:]) != leafPageFlag {
			continue
		}
		if over := binary.NativeEndian.Uint32(p[12:]); over > 0 {
			// A leaf with overflow pages: read it whole, as far as the file
			// goes. Records are small; a leaf claiming more than maxLeaf is
			// garbage, and reading it would cost time and memory for nothing.
			if (int64(over)+1)*ps > maxLeaf {
				continue
			}
			size := min((int64(over)+1)*ps, fi.Size()-off)
			big := make([]byte, size)
			m, _ := f.ReadAt(big, off)
			p = big[:m]
		}
		sc.leaf(p)
	}
	res.Conflicts = len(sc.conflicts)

	seqList := make([]uint64, 0, len(sc.recs))
	for seq := range sc.recs {
		seqList = append(seqList, seq)
	}
	slices.Sort(seqList)
	res.Kept = len(seqList)
	res.LastSeq = sc.bucketSeq
	if len(seqList) > 0 {
		res.LastSeq = max(res.LastSeq, seqList[len(seqList)-1])
	}
	res.Lost = res.LastSeq - uint64(res.Kept)
	res.Moved = freeName(fmt.Sprintf("%s.damaged-%s", path, now.UTC().Format("20060102T150405Z")))

	tmp := path + ".salvaging"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("salvage: %w", err)
	}
	nw, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: DefaultTimeout})
	if err != nil {
		return res, fmt.Errorf("salvage: %w", err)
	}
	c := newCopier(nw)
	write := func() error {
		for _, seq := range seqList {
			if err := c.add(seqKey(seq), sc.recs[seq].v); err != nil {
				return err
			}
		}
		if err := c.flush(); err != nil {
			return err
		}
		for w, n := range sc.floors {
			c.floor(w, n)
		}
		note := fmt.Sprintf("salvaged from %s: kept %d records, lost %d of seq 1..%d", filepath.Base(res.Moved), res.Kept, res.Lost, res.LastSeq)
		if res.LastSeq == 0 {
			note = fmt.Sprintf("salvaged from %s: nothing in it was readable", filepath.Base(res.Moved))
		}
		if res.Conflicts > 0 {
			note += fmt.Sprintf("; %d seqs had two different copies, the later was kept", res.Conflicts)
		}
		return c.finish(res.LastSeq, &Record{Time: now.UTC(), Event: sm.EventLogSalvaged, Detail: note})
	}
	if err := write(); err != nil {
		_ = nw.Close()
		_ = os.Remove(tmp)
		return res, fmt.Errorf("salvage: write %s: %w", tmp, err)
	}
	if err := nw.Close(); err != nil {
		_ = os.Remove(tmp)
		return res, fmt.Errorf("salvage: %w", err)
	}
	if err := os.Rename(path, res.Moved); err != nil {
		_ = os.Remove(tmp)
		return res, fmt.Errorf("salvage: move the damaged file aside: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, fmt.Errorf("salvage: the damaged file is at %s, but the new log could not be put in its place: %w", res.Moved, err)
	}
	syncDir(filepath.Dir(path))
	return res, nil
}

// maxLeaf bounds the leaf pages Salvage reads: far above any real leaf of
// the log (a record is at most a few kilobytes of detail).
const maxLeaf = 64 << 20

type salvaged struct {
	v []byte
	t time.Time
}

// salvageScan collects what the leaf pages of a damaged file hold.
type salvageScan struct {
	recs      map[uint64]salvaged
	floors    map[string]uint64
	bucketSeq uint64 // the highest sequence any copy of the log bucket showed
	conflicts map[uint64]bool
	d         *decoder
}

// leaf reads the elements of one leaf page p (with its overflow), checking
// every offset against p: a damaged page yields nothing, never a fault.
func (sc *salvageScan) leaf(p []byte) {
	ne := binary.NativeEndian
	if len(p) < pageHeaderSize {
		return
	}
	count := int(ne.Uint16(p[10:]))
	for i := range count {
		e := pageHeaderSize + i*16
		if e+16 > len(p) {
			return
		}
		flags := ne.Uint32(p[e:])
		pos, ksize, vsize := int(ne.Uint32(p[e+4:])), int(ne.Uint32(p[e+8:])), int(ne.Uint32(p[e+12:]))
		ks := e + pos
		ve := ks + ksize + vsize
		if ks < e || ve < ks || ve > len(p) {
			continue
		}
		k, v := p[ks:ks+ksize], p[ks+ksize:ve]
		if flags&bucketLeafFlag != 0 {
			sc.bucket(k, v)
			continue
		}
		switch {
		case len(k) == 8:
			sc.record(binary.BigEndian.Uint64(k), v)
		case bytes.Equal(k, floorKey):
			var fl map[string]uint64
			if json.Unmarshal(v, &fl) == nil {
				for w, n := range fl {
					sc.floors[w] = max(sc.floors[w], n)
				}
			}
		}
	}
}

// bucket notes the sequence of a copy of the log bucket and reads the
// records of a bucket stored inline (a small log keeps its records there).
func (sc *salvageScan) bucket(name, v []byte) {
	if len(v) < 16 {
		return
	}
	if bytes.Equal(name, logBucket) {
		sc.bucketSeq = max(sc.bucketSeq, binary.NativeEndian.Uint64(v[8:]))
	}
	if binary.NativeEndian.Uint64(v) == 0 { // inline: a page follows
		inline := v[16:]
		if len(inline) >= pageHeaderSize && binary.NativeEndian.Uint16(inline[8:]) == leafPageFlag {
			sc.leaf(inline)
		}
	}
}

// record keeps v as seq's record when it decodes and names that seq.
func (sc *salvageScan) record(seq uint64, v []byte) {
	var r Record
	if seq == 0 || sc.d.decode(v, &r) != nil || r.Seq != seq {
		return
	}
	if n, ok := instanceNumber(r.Worker, r.Instance); ok {
		sc.floors[r.Worker] = max(sc.floors[r.Worker], n)
	}
	old, seen := sc.recs[seq]
	switch {
	case !seen:
	case bytes.Equal(old.v, v):
		return
	default:
		sc.conflicts[seq] = true
		if !r.Time.After(old.t) {
			return
		}
	}
	sc.recs[seq] = salvaged{v: append([]byte(nil), v...), t: r.Time}
}
