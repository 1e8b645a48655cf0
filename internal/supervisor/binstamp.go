package supervisor

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mevdschee/tqserver/internal/layout"
)

// binStamp identifies one version of a worker binary (CONTRACT.md §11). The
// stat fields decide whether the content must be read at all: when size,
// mtime, inode and ctime all equal the running binary's, the bytes are taken
// as the same. Otherwise sum decides: equal bytes never restart, different
// bytes always do, whatever the mtime says.
type binStamp struct {
	exists bool
	size   int64
	mtime  int64
	dev    uint64
	ino    uint64
	ctime  int64
	hashed bool     // sum is known
	sum    [32]byte // sha256 of the content
}

// statBin stats path; the content is not read.
func statBin(path string) binStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return binStamp{}
	}
	return binStampOf(fi)
}

func binStampOf(fi os.FileInfo) binStamp {
	if !fi.Mode().IsRegular() {
		return binStamp{}
	}
	b := binStamp{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		b.dev, b.ino = uint64(st.Dev), st.Ino
		b.ctime = st.Ctim.Nano()
	}
	return b
}

// sameStat reports whether b and o have the same size, mtime, inode and
// ctime: then no hash is needed to call them the same content.
func (b binStamp) sameStat(o binStamp) bool {
	return b.exists && o.exists && b.size == o.size && b.mtime == o.mtime &&
		b.dev == o.dev && b.ino == o.ino && b.ctime == o.ctime
}

// sameContent reports whether b (hashed) holds the bytes of o.
func (b binStamp) sameContent(o binStamp) bool {
	return b.hashed && o.hashed && b.sum == o.sum
}

func (b binStamp) hex() string { return hex.EncodeToString(b.sum[:]) }

// hashBin stats and hashes path, both through one open file, so the stamp's
// stat and sum describe the same inode even when path is replaced meanwhile.
func hashBin(path string) (binStamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return binStamp{}, fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return binStamp{}, fmt.Errorf("hash %s: %w", path, err)
	}
	b := binStampOf(fi)
	if !b.exists {
		return b, fmt.Errorf("%s: not a regular file", path)
	}
	sum, err := hashReader(f)
	if err != nil {
		return b, fmt.Errorf("hash %s: %w", path, err)
	}
	b.sum, b.hashed = sum, true
	return b, nil
}

// hashFile returns the sha256 of the file at path.
func hashFile(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	return hashReader(f)
}

func hashReader(r io.Reader) ([32]byte, error) {
	var sum [32]byte
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// runningSum is the sha256 of the program one of pids runs, read through
// /proc/PID/exe: the file it was started from, even after bin/NAME has been
// replaced. The stamps taken at start are not hashed (hashing every binary
// would delay the start); this is how their content is known when it is
// first needed.
func runningSum(pids []int) ([32]byte, bool) {
	for _, pid := range pids {
		if sum, err := hashFile(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			return sum, true
		}
	}
	return [32]byte{}, false
}

// verifyBinary decides whether b, the hashed content of the binary at path,
// may be started (CONTRACT.md §11): it must match path.sha256 when that
// file exists, and be a complete executable.
func verifyBinary(path string, b binStamp) error {
	if err := verifyChecksum(path, b); err != nil {
		return err
	}
	return checkExecutable(path)
}

// verifyChecksum checks b against path.sha256 when that file exists. The
// file holds the hex digest alone, or one line as sha256sum prints it
// ("HEX  name" or "HEX *name"); anything else is rejected, not guessed at.
func verifyChecksum(path string, b binStamp) error {
	sumFile := layout.ChecksumOf(path)
	data, err := os.ReadFile(sumFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", sumFile, err)
	}
	want, err := parseSHA256File(data)
	if err != nil {
		return fmt.Errorf("%s: %w; write the hex digest alone or as sha256sum prints it", sumFile, err)
	}
	if got := b.hex(); got != want {
		return fmt.Errorf("%s: sha256 %s does not match %s (%s); deploy the matching pair", path, got[:12], filepath.Base(sumFile), want[:12])
	}
	return nil
}

// parseSHA256File returns the lower-case digest of a .sha256 file.
func parseSHA256File(data []byte) (string, error) {
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "", errors.New("is empty")
	}
	if len(lines) > 1 {
		return "", fmt.Errorf("has %d lines, want one digest", len(lines))
	}
	fields := strings.Fields(lines[0])
	d := strings.ToLower(fields[0])
	if len(d) != sha256.Size*2 {
		return "", fmt.Errorf("%q is not a sha256 hex digest (want 64 hex digits)", shorten(fields[0]))
	}
	if _, err := hex.DecodeString(d); err != nil {
		return "", fmt.Errorf("%q is not a sha256 hex digest (want 64 hex digits)", shorten(fields[0]))
	}
	return d, nil
}

func shorten(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}

// checkExecutable rejects what cannot be a whole program: an empty file, one
// without an execute bit, and an ELF file whose segments or sections end
// beyond its size (a copy cut short). A "#!" script is accepted as is.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%s is empty (0 bytes): not a complete executable", path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable (mode %v); chmod +x it", path, fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if bytes.HasPrefix(magic, []byte("#!")) {
		return nil
	}
	if !bytes.Equal(magic, []byte(elf.ELFMAG)) {
		return fmt.Errorf("%s is neither an ELF executable nor a #! script (%d bytes): not a complete executable", path, fi.Size())
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("%s is not a complete ELF executable (%d bytes): %w", path, fi.Size(), err)
	}
	size := fi.Size()
	for _, p := range ef.Progs {
		if end := p.Off + p.Filesz; p.Filesz > 0 && end > uint64(size) {
			return fmt.Errorf("%s is truncated: a segment ends at byte %d of %d", path, end, size)
		}
	}
	for _, s := range ef.Sections {
		if end := s.Offset + s.FileSize; s.Type != elf.SHT_NOBITS && s.FileSize > 0 && end > uint64(size) {
			return fmt.Errorf("%s is truncated: section %s ends at byte %d of %d", path, s.Name, end, size)
		}
	}
	return nil
}
