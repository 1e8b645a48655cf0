package supervisor

import (
	"net"
	"sync"
	"testing"

	"github.com/mevdschee/tqserver/internal/proxy"
)

// testFront is the proxy engine serving px on 127.0.0.1, as tqserver
// serves it.
type testFront struct {
	URL    string
	srv    *proxy.Server
	served chan error
	once   sync.Once
}

func newFront(t testing.TB, px *proxy.Proxy) *testFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &testFront{URL: "http://" + ln.Addr().String(), srv: proxy.NewServer(px, proxy.ServerOptions{}), served: make(chan error, 1)}
	go func() { f.served <- f.srv.Serve(ln) }()
	return f
}

// Close closes every connection and waits for the server to stop.
func (f *testFront) Close() {
	f.once.Do(func() {
		f.srv.Close()
		<-f.served
	})
}
