package devreload

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mevdschee/tqserver/internal/proxy"
)

// devServer is dev mode as tqserver runs it: the proxy engine with the
// Hub's paths served locally and Rewrite on the responses of a worker
// (backend, an ordinary net/http server).
type devServer struct {
	URL    string
	client *http.Client
	close  func()
}

func (d *devServer) Client() *http.Client { return d.client }
func (d *devServer) Close()               { d.close() }

func newDevServer(t *testing.T, backend http.Handler, h *Hub) *devServer {
	t.Helper()
	return newDevServerLocal(t, backend, Local(h))
}

func newDevServerLocal(t *testing.T, backend http.Handler, local map[string]http.Handler) *devServer {
	t.Helper()
	worker := httptest.NewServer(backend)
	p := proxy.New(proxy.Options{Local: local, Rewrite: Rewrite})
	addr := worker.Listener.Addr().String()
	p.Swap(proxy.NewTable([]proxy.Route{{Prefix: "/", Worker: "w", Backend: proxy.NewBackend("w", "w-1", addr, 0)}}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(p, proxy.ServerOptions{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	d := &devServer{URL: "http://" + ln.Addr().String(), client: &http.Client{Transport: tr}}
	closed := false
	d.close = func() {
		if closed {
			return
		}
		closed = true
		tr.CloseIdleConnections()
		srv.Close()
		<-served
		p.CloseIdleConnections()
		worker.Close()
	}
	t.Cleanup(d.close)
	return d
}
