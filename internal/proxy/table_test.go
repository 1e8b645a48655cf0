package proxy

import (
	"testing"
)

func TestLookup(t *testing.T) {
	tb := NewTable([]Route{
		{Prefix: "/", Worker: "index"},
		{Prefix: "/api", Worker: "api"},
		{Prefix: "/api/users", Worker: "api_users"},
		{Prefix: "/docs/", Worker: "docs"},
		{Prefix: "relative", Worker: "ignored"},
		{Prefix: "", Worker: "ignored"},
	})
	cases := []struct {
		path, worker string
	}{
		{"/", "index"},
		{"/x", "index"},
		{"/api", "api"},
		{"/api/", "api"},
		{"/api/x", "api"},
		{"/apix", "index"},
		{"/api/users", "api_users"},
		{"/api/users/", "api_users"},
		{"/api/users/7", "api_users"},
		{"/api/users/7/posts", "api_users"},
		{"/api/usersx", "api"},
		{"/api/usersx/7", "api"},
		{"/api//users", "api"},
		{"/docs", "index"}, // "/docs/" needs the slash
		{"/docs/", "docs"},
		{"/docs/a/b", "docs"},
		{"relative", ""},
		{"", ""},
		{"*", ""},
	}
	for _, c := range cases {
		rt, ok := tb.Lookup(c.path)
		if c.worker == "" {
			if ok {
				t.Errorf("Lookup(%q) = %q, want no match", c.path, rt.Worker)
			}
			continue
		}
		if !ok || rt.Worker != c.worker {
			t.Errorf("Lookup(%q) = %q, %v; want %q", c.path, rt.Worker, ok, c.worker)
		}
	}
}

func TestLookupWithoutRoot(t *testing.T) {
	tb := NewTable([]Route{{Prefix: "/api/users", Worker: "api_users"}})
	for path, want := range map[string]bool{
		"/": false, "/api": false, "/api/users": true, "/api/users/1": true, "/api/usersx": false,
	} {
		if _, ok := tb.Lookup(path); ok != want {
			t.Errorf("Lookup(%q) ok = %v, want %v", path, ok, want)
		}
	}
	var empty *Table
	if _, ok := empty.Lookup("/"); ok {
		t.Error("nil table matched")
	}
	if _, ok := NewTable(nil).Lookup("/"); ok {
		t.Error("empty table matched")
	}
}

func TestTableIsImmutable(t *testing.T) {
	routes := []Route{{Prefix: "/", Worker: "index"}, {Prefix: "/a", Worker: "a"}, {Prefix: "/a", Worker: "a2"}}
	tb := NewTable(routes)
	routes[0].Worker = "changed"
	if rt, _ := tb.Lookup("/"); rt.Worker != "index" {
		t.Errorf("table changed with its input slice: %q", rt.Worker)
	}
	if rt, _ := tb.Lookup("/a"); rt.Worker != "a2" {
		t.Errorf("duplicate prefix: got %q, want the last one", rt.Worker)
	}
	got := tb.Routes()
	if len(got) != 2 || got[0].Prefix != "/" || got[1].Prefix != "/a" {
		t.Fatalf("Routes() = %+v", got)
	}
	got[0].Worker = "changed"
	if rt, _ := tb.Lookup("/"); rt.Worker != "index" {
		t.Error("Routes() exposed the table's storage")
	}
}

func TestLookupAllocatesNothing(t *testing.T) {
	tb := benchTable()
	allocs := testing.AllocsPerRun(100, func() {
		tb.Lookup("/api/users/7/posts?ignored")
		tb.Lookup("/nothing/here/at/all")
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %v times per call", allocs)
	}
}

func TestPickLeastOutstanding(t *testing.T) {
	a, b, c := NewBackend("w", "w-1", "a", 0), NewBackend("w", "w-2", "b", 0), NewBackend("w", "w-3", "c", 0)
	rt, _ := NewTable([]Route{{Prefix: "/", Worker: "w", Backends: []*Backend{a, b, c}}}).Lookup("/")
	// Idle: requests rotate over all instances.
	seen := map[*Backend]int{}
	for i := 0; i < 30; i++ {
		seen[rt.Pick()]++
	}
	if seen[a] != 10 || seen[b] != 10 || seen[c] != 10 {
		t.Fatalf("idle picks not spread evenly: %d %d %d", seen[a], seen[b], seen[c])
	}
	// Loaded: the least busy one wins.
	a.inflight.Add(3)
	b.inflight.Add(1)
	c.inflight.Add(2)
	for i := 0; i < 10; i++ {
		if got := rt.Pick(); got != b {
			t.Fatalf("picked %s with %d in flight, want w-2", got.Instance, got.Inflight())
		}
	}
	// The single-backend shorthand still works, and no backend picks nil.
	one, _ := NewTable([]Route{{Prefix: "/", Backend: a}}).Lookup("/x")
	none, _ := NewTable([]Route{{Prefix: "/"}}).Lookup("/x")
	if one.Pick() != a || none.Pick() != nil {
		t.Fatal("shorthand / empty route")
	}
}
