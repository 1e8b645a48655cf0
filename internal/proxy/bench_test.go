package proxy

import (
	"io"
	"net/http"
	"testing"

	"github.com/mevdschee/tqserver/internal/layout"
)

func benchTable() *Table {
	var routes []Route
	for _, name := range []string{"index", "api", "api_users", "api_orders", "api_users_admin", "blog", "blog_admin", "shop", "shop_cart", "docs"} {
		routes = append(routes, Route{Prefix: layout.Route(name), Worker: name})
	}
	return NewTable(routes)
}

func BenchmarkLookup(b *testing.B) {
	tb := benchTable()
	paths := []string{"/", "/api/users/7/posts", "/api/usersx", "/shop/cart/items/12", "/unknown/deep/path/with/many/segments", "/docs"}
	for b.Loop() {
		for _, p := range paths {
			tb.Lookup(p)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(paths)), "ns/lookup")
}

// BenchmarkProxy compares a hello-world worker reached directly with the
// same worker behind the proxy, one request at a time over keep-alive.
func BenchmarkProxy(b *testing.B) {
	backend, addr := startBackend(b, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})
	p := New(Options{})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	front := startProxy(b, p)
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	run := func(b *testing.B, url string) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatal(resp.Status)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.URL+"/hello") })
	b.Run("proxy", func(b *testing.B) { run(b, front.URL+"/hello") })
}

func BenchmarkCleanStaticPath(b *testing.B) {
	paths := []string{"/index/css/style.css", "/index/../private/x", "/api_users/swagger/index.html", "/index/%2e%2e/x"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		CleanStaticPath(paths[i%len(paths)])
	}
}

// BenchmarkEngine measures sequential keep-alive GETs of a hello-world
// worker through the engine, allocations included (the client's and the
// worker's count too: compare runs, not the absolute figure).
func BenchmarkEngine(b *testing.B) {
	_, addr := startBackend(b, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})
	p := New(Options{})
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	benchGets(b, startProxy(b, p).URL+"/hello", http.StatusOK)
}

// benchGets measures sequential keep-alive GETs of url, each answering want.
func benchGets(b *testing.B, url string, want int) {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			b.Fatal(resp.Status)
		}
	}
}

// BenchmarkEngineNoRoute measures sequential keep-alive GETs the engine
// answers itself with 404 (no route): the path that counts under worker "".
func BenchmarkEngineNoRoute(b *testing.B) {
	p := New(Options{})
	p.Swap(table(Route{Prefix: "/api", Worker: "api"}))
	benchGets(b, startProxy(b, p).URL+"/nowhere", http.StatusNotFound)
}
