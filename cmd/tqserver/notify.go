package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	app "github.com/mevdschee/tqserver/internal/server"
)

var _ app.Notifier = (*notifier)(nil)

// notifier speaks systemd's notify protocol (sd_notify(3)) for
// Type=notify units: one datagram per state change to the unix socket in
// $NOTIFY_SOCKET ("@name" is an abstract socket). Without NOTIFY_SOCKET it
// does nothing. No dependency: the protocol is a datagram of KEY=VALUE
// lines.
type notifier struct {
	addr *net.UnixAddr // nil: not run by systemd
	log  zerolog.Logger

	mu        sync.Mutex
	reloading int  // reloads in progress; RELOADING=1 on 0→1, READY=1 on 1→0
	stopping  bool // after STOPPING=1 no READY=1
	handed    bool // a new server is the main process: this one says nothing more
}

var _ app.HandOffNotifier = (*notifier)(nil)

// ChildEnv passes NOTIFY_SOCKET on to the new server of a self-upgrade.
func (n *notifier) ChildEnv() []string {
	if n.addr == nil {
		return nil
	}
	return []string{"NOTIFY_SOCKET=" + n.addr.Name}
}

// HandedOff makes the new server the unit's main process (MAINPID=, sent
// by this one, the main process until now, so NotifyAccess=main accepts
// it) and ends the reload span; from then on this process sends nothing.
func (n *notifier) HandedOff(pid int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.send(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=serving (upgraded: pid %d)", pid, pid))
	n.handed = true
}

// newNotifier reads NOTIFY_SOCKET and removes it from the environment, so
// that worker processes do not inherit it (systemd would ignore them with
// NotifyAccess=main, but a worker should not even try).
func newNotifier(log zerolog.Logger) *notifier {
	n := &notifier{log: log}
	path := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if path == "" {
		return n
	}
	// Go's unix sockets take a leading '@' as the abstract namespace.
	n.addr = &net.UnixAddr{Name: path, Net: "unixgram"}
	return n
}

// send writes one notify datagram; a failure is logged, never fatal (the
// service manager may be gone while the server still serves).
func (n *notifier) send(state string) {
	if n.addr == nil || n.handed {
		return
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err == nil {
		_, err = c.Write([]byte(state))
		c.Close()
	}
	if err != nil {
		n.log.Warn().Err(err).Str("notify_socket", n.addr.Name).Msg(fmt.Sprintf("could not notify the service manager (%q)", state))
	}
}

// Ready: the server serves.
func (n *notifier) Ready() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.send("READY=1\nSTATUS=serving")
}

// Stopping: the server begins its shutdown.
func (n *notifier) Stopping() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopping = true
	n.send("STOPPING=1\nSTATUS=stopping: draining in-flight requests")
}

// Reloading and Reloaded bracket one reload (SIGHUP, `tqserver reload`,
// which ExecReload runs, or POST /v1/reload); overlapping reloads are one
// RELOADING=1 … READY=1 span.
func (n *notifier) Reloading() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reloading++
	if n.reloading == 1 {
		n.send("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10))
	}
}

func (n *notifier) Reloaded() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reloading--
	if n.reloading == 0 && !n.stopping {
		n.send("READY=1\nSTATUS=serving")
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd compares
// with its own clock to tell this reload from an earlier one.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().UnixMicro() // never on Linux; keeps the field present
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}
