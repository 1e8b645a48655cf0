package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fastConfigNoAdmin is fastConfig without the admin TCP listener, so that
// no test depends on 127.0.0.1:8081 being free.
const fastConfigNoAdmin = fastConfig + "server:\n  admin_listen: \"\"\n"

// fakeSystemd is a NOTIFY_SOCKET: it collects the datagrams a server sends.
type fakeSystemd struct {
	t    *testing.T
	conn *net.UnixConn
}

func listenNotify(t *testing.T, name string) *fakeSystemd {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeSystemd{t: t, conn: c}
}

// next is the next datagram, within timeout.
func (f *fakeSystemd) next(timeout time.Duration, what string) string {
	f.t.Helper()
	f.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	n, err := f.conn.Read(buf)
	if err != nil {
		f.t.Fatalf("waiting for %s from the server on NOTIFY_SOCKET: %v", what, err)
	}
	return string(buf[:n])
}

// expect reads the next datagram and checks that it has the state line
// want (e.g. "READY=1").
func (f *fakeSystemd) expect(want string, timeout time.Duration) map[string]string {
	f.t.Helper()
	msg := f.next(timeout, want)
	kv := map[string]string{}
	for _, l := range strings.Split(msg, "\n") {
		k, v, _ := strings.Cut(l, "=")
		kv[k] = v
	}
	k, v, _ := strings.Cut(want, "=")
	if kv[k] != v {
		f.t.Fatalf("notify message %q, want %s", msg, want)
	}
	return kv
}

// quiet checks that nothing more arrives for d.
func (f *fakeSystemd) quiet(d time.Duration) {
	f.t.Helper()
	f.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	if n, err := f.conn.Read(buf); err == nil {
		f.t.Fatalf("unexpected notify message %q", buf[:n])
	}
}

func monotonicNow(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

// Under systemd (Type=notify) the server says READY=1 once it serves,
// RELOADING=1 with MONOTONIC_USEC when a reload (SIGHUP or `tqserver
// reload`, which ExecReload runs) begins and READY=1 when it has ended,
// and STOPPING=1 when SIGTERM begins its shutdown. Its workers do not
// inherit NOTIFY_SOCKET.
func TestSystemdNotify(t *testing.T) {
	root := newRoot(t, fastConfigNoAdmin)
	install(t, root, "index", "v1", "normal")
	sock := filepath.Join(t.TempDir(), "notify.sock")
	sd := listenNotify(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	s := startServer(t, root)
	sd.expect("READY=1", 10*time.Second)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)

	pid := s.status().Workers[0].Instances[0].PID
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte("NOTIFY_SOCKET=")) {
		t.Errorf("worker pid %d inherited NOTIFY_SOCKET", pid)
	}

	// SIGHUP with a new binary: RELOADING=1 at once, READY=1 once the new
	// version serves.
	install(t, root, "index", "v2", "normal")
	before := monotonicNow(t)
	s.signal(syscall.SIGHUP)
	kv := sd.expect("RELOADING=1", 10*time.Second)
	usec, err := strconv.ParseInt(kv["MONOTONIC_USEC"], 10, 64)
	if err != nil || usec < before || usec > monotonicNow(t) {
		t.Fatalf("RELOADING=1 with MONOTONIC_USEC=%q, want CLOCK_MONOTONIC µs between %d and now", kv["MONOTONIC_USEC"], before)
	}
	sd.expect("READY=1", 30*time.Second)
	if c, b := get(t, s.URL("/")); c != 200 || !strings.HasPrefix(b, "v2 ") {
		t.Fatalf("READY=1 after the reload, but GET / = %d %q", c, b)
	}

	// ExecReload=tqserver reload: the same over the admin socket.
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Fatalf("tqserver reload: %v\n%s%s", err, out, errOut)
	}
	sd.expect("RELOADING=1", 5*time.Second)
	sd.expect("READY=1", 5*time.Second)

	s.signal(syscall.SIGTERM)
	sd.expect("STOPPING=1", 10*time.Second)
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatalf("server exit: %v", err)
	}
	sd.quiet(100 * time.Millisecond)
}

// NOTIFY_SOCKET=@name is a socket in the abstract namespace.
func TestSystemdNotifyAbstractSocket(t *testing.T) {
	root := newRoot(t, fastConfigNoAdmin)
	install(t, root, "index", "v1", "normal")
	name := fmt.Sprintf("@tqserver-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sd := listenNotify(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	startServer(t, root)
	sd.expect("READY=1", 10*time.Second)
}

// Under systemd a self-upgrade makes the new server the unit's main
// process: the old one (main until then) sends MAINPID= of the new one with
// READY=1, ending the reload; the new one notifies from then on.
func TestSystemdNotifyServerUpgrade(t *testing.T) {
	root := newRoot(t, fastConfigNoAdmin)
	install(t, root, "index", "v1", "normal")
	bin := tqBytes(t)
	deployServer(t, root, bin, 0o755)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	sd := listenNotify(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	s := startServer(t, root)
	sd.expect("READY=1", 10*time.Second)
	waitBody(t, s.URL("/"), "v1 index", 10*time.Second)

	deployServer(t, root, bin, 0o755)
	pid := reloadUpgrade(t, root)
	t.Cleanup(func() { stopServerPID(t, pid) })
	sd.expect("RELOADING=1", 5*time.Second)
	var kv map[string]string
	for i := 0; i < 3 && kv["MAINPID"] == ""; i++ {
		kv = sd.expect("READY=1", 5*time.Second) // the new server's, then the old one's with MAINPID
	}
	if kv["MAINPID"] != strconv.Itoa(pid) {
		t.Fatalf("MAINPID=%q, want the new server's pid %d", kv["MAINPID"], pid)
	}
	out, errOut, err := runCLI(t, "reload", "--root", root)
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Fatalf("tqserver reload: %v\n%s%s", err, out, errOut)
	}
	sd.expect("RELOADING=1", 5*time.Second)
	sd.expect("READY=1", 5*time.Second)
	stopServerPID(t, pid)
	sd.expect("STOPPING=1", 10*time.Second)
}
