package admin

import (
	"net"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8081": true, "127.3.4.5:1": true, "[::1]:8081": true, "localhost:8081": true, "LOCALHOST:1": true,
		"0.0.0.0:8081": false, ":8081": false, "[::]:8081": false, "10.0.0.1:8081": false,
		"example.com:8081": false, "[::ffff:10.0.0.1]:1": false, "127.0.0.1": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// §9's start rules, on real sockets.
func TestListenTCPRules(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()

	if ln, warn, err := ListenTCP(TCPOptions{}); ln != nil || warn != "" || err != nil {
		t.Fatalf("off: %v %q %v", ln, warn, err)
	}
	// The default address taken: a warning, no listener, no error.
	ln, warn, err := ListenTCP(TCPOptions{Addr: addr})
	if ln != nil || err != nil || !strings.Contains(warn, "the default address "+addr+" is taken") {
		t.Fatalf("default taken: %v %q %v", ln, warn, err)
	}
	// The same address set explicitly: an error.
	_, _, err = ListenTCP(TCPOptions{Addr: addr, Explicit: true})
	if err == nil || err.Error() != "server.admin_listen "+addr+`: address already in use (set another address, or "" for no admin listener)` {
		t.Fatalf("explicit taken: %v", err)
	}
	// Not loopback: refused without a token, before binding anything.
	for _, a := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		ln, _, err := ListenTCP(TCPOptions{Addr: a, Explicit: true})
		if ln != nil || err == nil || !strings.Contains(err.Error(), "not a loopback address and no token is set") {
			t.Fatalf("%s without a token: %v %v", a, ln, err)
		}
	}
	ln, warn, err = ListenTCP(TCPOptions{Addr: "0.0.0.0:0", Explicit: true, Token: "t"})
	if err != nil || warn != "" || ln == nil {
		t.Fatalf("0.0.0.0 with a token: %v %q %v", ln, warn, err)
	}
	ln.Close()
}
