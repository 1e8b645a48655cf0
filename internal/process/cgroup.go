package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups is where instance cgroups live once EnableCgroups succeeded:
// dir is <the server's own cgroup>/tq-<hash of the app root>, rel the same
// path as /proc/PID/cgroup shows it ("0::" line).
type cgroups struct {
	dir, rel, hash string
}

var activeCgroups atomic.Pointer[cgroups]

// EnableCgroups puts every instance started from now on with a Spec.Mark
// (see Mark) in its own cgroup v2, <own cgroup>/tq-<root hash>/<instance>,
// created with the process (clone3 CLONE_INTO_CGROUP), so nothing it starts
// can leave it; stopping the instance writes cgroup.kill. It needs a
// cgroup2 hierarchy, write access to the server's own cgroup (root, or a
// delegated one) and cgroup.kill (Linux 5.14). It returns the directory
// used, or an error saying why cgroups cannot be used; the server then
// relies on the marker alone. Call it once, holding the app root's lock.
func EnableCgroups(root string) (string, error) {
	mount, own, err := ownCgroup()
	if err != nil {
		return "", err
	}
	hash := rootHash(root)
	rel := filepath.Join(own, "tq-"+hash)
	dir := filepath.Join(mount, rel)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		_ = os.Remove(dir)
		return "", fmt.Errorf("cgroup %s has no cgroup.kill (Linux 5.14 or later needed): %w", dir, err)
	}
	if err := unix.Access(filepath.Join(dir, "cgroup.procs"), unix.W_OK); err != nil {
		_ = os.Remove(dir)
		return "", fmt.Errorf("cgroup %s: cannot move processes in: %w", dir, err)
	}
	// Empty instance cgroups of a server that crashed; populated ones are
	// stopped by ReapMarked when the log replay finds their instance.
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				_ = unix.Rmdir(filepath.Join(dir, e.Name()))
			}
		}
	}
	activeCgroups.Store(&cgroups{dir: dir, rel: rel, hash: hash})
	return dir, nil
}

// DisableCgroups stops putting new instances in cgroups and removes the
// app's cgroup directory if no instance cgroup is left in it.
func DisableCgroups() {
	if cg := activeCgroups.Swap(nil); cg != nil {
		_ = unix.Rmdir(cg.dir)
	}
}

// ownCgroup finds the cgroup2 mount point and this process's cgroup path in
// it (from /proc/self/mountinfo and the "0::" line of /proc/self/cgroup).
func ownCgroup() (mount, own string, err error) {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	return parseOwnCgroup(cg, mi)
}

func parseOwnCgroup(cgroupFile, mountinfo []byte) (mount, own string, err error) {
	for _, l := range strings.Split(string(cgroupFile), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			own = p
		}
	}
	if !strings.HasPrefix(own, "/") || strings.HasSuffix(own, " (deleted)") {
		return "", "", errors.New("no cgroup v2 membership in /proc/self/cgroup")
	}
	for _, l := range strings.Split(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		fields, fs := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(fs) < 1 || fs[0] != "cgroup2" {
			continue
		}
		root, point := unescapeMount(fields[3]), unescapeMount(fields[4])
		path := own
		if root != "/" {
			rest, ok := strings.CutPrefix(own, root)
			if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
				continue // this mount does not show our cgroup
			}
			path = "/" + strings.TrimPrefix(rest, "/")
		}
		return point, path, nil
	}
	return "", "", errors.New("no cgroup2 file system mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// instanceCgroup is the cgroup directory (and /proc/PID/cgroup path) for
// mark, or "" when cgroups are off or mark is not one of this app root's.
func instanceCgroup(mark string) (dir, rel string) {
	cg := activeCgroups.Load()
	hash, inst, ok := strings.Cut(mark, "/")
	if cg == nil || !ok || hash != cg.hash || inst == "" || strings.ContainsAny(inst, "/\x00") || inst == "." || inst == ".." {
		return "", ""
	}
	return filepath.Join(cg.dir, inst), cg.rel + "/" + inst
}

// openCgroup creates the instance cgroup for mark and opens it for
// SysProcAttr.CgroupFD; fd is -1 when cgroups are off.
func openCgroup(mark string) (dir, rel string, fd int, err error) {
	dir, rel = instanceCgroup(mark)
	if dir == "" {
		return "", "", -1, nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", "", -1, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Rmdir(dir)
		return "", "", -1, fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	return dir, rel, fd, nil
}

// cgroupMembers opens every live process in the cgroup at dir (rel as
// /proc/PID/cgroup shows it). A PID counts only if, with its pidfd open,
// it is still alive (not exiting) and still in that cgroup.
func cgroupMembers(dir, rel string) []marked {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []marked
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		// A leader whose other threads are still exiting is listed but dying.
		if st, err := readStat(pid); err != nil || st.state == 'Z' || st.state == 'X' || cgroupOf(pid) != rel || exited(fd) {
			unix.Close(fd)
			continue
		}
		out = append(out, marked{pid: pid, fd: fd})
	}
	return out
}

// cgroupOf is pid's cgroup v2 path ("0::" line); a zombie keeps its own.
func cgroupOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if p, ok := bytes.CutPrefix(l, []byte("0::")); ok {
			return string(p)
		}
	}
	return ""
}

// killCgroup kills every process in the cgroup at dir (cgroup.kill), waits
// up to wait for it to empty and removes it. It returns how many processes
// it held.
func killCgroup(dir, rel string, wait time.Duration) (int, error) {
	ms := cgroupMembers(dir, rel)
	defer reapAndClose(ms)
	if err := writeKill(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // no such cgroup: nothing was ever in it
		}
		return len(ms), fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(wait)
	for populated(dir) {
		if time.Now().After(deadline) {
			return len(ms), fmt.Errorf("cgroup %s still populated %s after cgroup.kill", dir, wait)
		}
		time.Sleep(time.Millisecond) // cgroup.events could be polled; a kill takes about a millisecond
	}
	waitExited(ms, time.Until(deadline))
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
		return len(ms), fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return len(ms), nil
}

// populated reports whether the cgroup at dir has live processes.
func populated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	return err == nil && bytes.Contains(b, []byte("populated 1"))
}

func writeKill(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("1"))
	return errors.Join(err, f.Close())
}
