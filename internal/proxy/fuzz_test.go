package proxy

import (
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mevdschee/tqserver/internal/layout"
)

func FuzzCleanStaticPath(f *testing.F) {
	f.Add("/index/css/site.css")
	f.Fuzz(func(t *testing.T, raw string) {
		worker, rel, ok := CleanStaticPath(raw)
		if !ok {
			if worker != "" || rel != "" {
				t.Fatalf("rejected %q but returned %q, %q", raw, worker, rel)
			}
			return
		}
		if !layout.ValidName(worker) {
			t.Fatalf("%q: invalid worker %q accepted", raw, worker)
		}
		if rel == "" || strings.HasPrefix(rel, "/") || strings.ContainsAny(rel, "\\\x00") {
			t.Fatalf("%q: unsafe rel %q", raw, rel)
		}
		for seg := range strings.SplitSeq(rel, "/") {
			if seg == ".." || seg == "." || seg == "" {
				t.Fatalf("%q: rel %q has segment %q", raw, rel, seg)
			}
		}
		if path.Clean(rel) != rel || !filepath.IsLocal(rel) {
			t.Fatalf("%q: rel %q is not clean and local", raw, rel)
		}
		if "/"+worker+"/"+rel != raw {
			t.Fatalf("%q: split into %q and %q, which do not rebuild it", raw, worker, rel)
		}
	})
}

// lookupReference is the obvious O(routes) definition Lookup must agree with.
func lookupReference(prefixes []string, p string) (string, bool) {
	best, found := "", false
	for _, pre := range prefixes {
		if pre == "" || pre[0] != '/' || !strings.HasPrefix(p, pre) {
			continue
		}
		if len(p) != len(pre) && pre[len(pre)-1] != '/' && p[len(pre)] != '/' {
			continue
		}
		if !found || len(pre) > len(best) {
			best, found = pre, true
		}
	}
	return best, found
}

func FuzzLookup(f *testing.F) {
	f.Add("/api/users", "/api/users/7")
	fixed := []string{"/", "/api", "/api/users", "/docs/", "/a/b/c", "/a//b"}
	f.Fuzz(func(t *testing.T, prefix, p string) {
		prefixes := append(append([]string(nil), fixed...), prefix)
		routes := make([]Route, len(prefixes))
		for i, pre := range prefixes {
			routes[i] = Route{Prefix: pre, Worker: pre}
		}
		for _, tb := range []*Table{NewTable(routes), NewTable(routes[len(routes)-1:])} {
			var ps []string
			for _, r := range tb.Routes() {
				ps = append(ps, r.Prefix)
			}
			rt, ok := tb.Lookup(p)
			want, wantOK := lookupReference(ps, p)
			if ok != wantOK || rt.Prefix != want {
				t.Fatalf("Lookup(%q) with %q = %q, %v; want %q, %v", p, ps, rt.Prefix, ok, want, wantOK)
			}
			if ok && (!hasSegmentPrefix(p, rt.Prefix) || rt.Worker != rt.Prefix) {
				t.Fatalf("Lookup(%q) = %+v: not a segment-boundary prefix", p, rt)
			}
		}
	})
}
