package proxy

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// staticRoot builds {root}/workers with an index worker that has public/ and
// private/, including symlinks that try to leave public/.
func staticRoot(t *testing.T) string {
	t.Helper()
	workers := filepath.Join(t.TempDir(), "workers")
	pub := filepath.Join(workers, "index", "public")
	priv := filepath.Join(workers, "index", "private")
	for _, d := range []string{filepath.Join(pub, "css"), filepath.Join(pub, "sub"), priv, filepath.Join(workers, "api_users", "private")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(pub, "hello.txt"):       "hello, static\n",
		filepath.Join(pub, "css", "site.css"): "body{color:red}\n",
		filepath.Join(pub, "%2e%2e"):          "a file literally named %2e%2e\n",
		filepath.Join(priv, "secret"):         "TOP SECRET\n",
	}
	for name, content := range files {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"inside-link": "hello.txt",
		"secret-link": "../private/secret",
		"private-dir": "../private",
		"passwd-link": "/etc/passwd",
		"abs-secret":  filepath.Join(priv, "secret"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(pub, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(pub, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return workers
}

func staticProxy(t *testing.T, opts Options) (srv string, workerHits *atomic.Int64) {
	t.Helper()
	workerHits = &atomic.Int64{}
	_, addr := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		workerHits.Add(1)
		io.WriteString(w, "from worker")
	})
	opts.Logger, _ = testLogger(t)
	p := New(opts)
	p.Swap(table(Route{Prefix: "/", Worker: "index", Backend: NewBackend("index", "index-1", addr, 0)}))
	return startProxy(t, p).URL, workerHits
}

func TestStaticServesFiles(t *testing.T) {
	workers := staticRoot(t)
	url, hits := staticProxy(t, Options{WorkersDir: workers, StaticEnabled: true, StaticPrefix: "/static", CacheMaxAge: 3600})
	c := newClient(t)

	resp, body := get(t, c, url+"/static/index/hello.txt")
	if resp.StatusCode != http.StatusOK || body != "hello, static\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	for k, want := range map[string]string{
		"Cache-Control":  "public, max-age=3600",
		"Content-Type":   "text/plain; charset=utf-8",
		"Content-Length": "14",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	lastMod := resp.Header.Get("Last-Modified")
	if _, err := http.ParseTime(lastMod); err != nil {
		t.Errorf("Last-Modified %q: %v", lastMod, err)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Error("no ETag")
	}

	if resp, body := get(t, c, url+"/static/index/css/site.css"); resp.StatusCode != http.StatusOK ||
		body != "body{color:red}\n" || resp.Header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("css: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// A symlink that stays inside public/ is fine.
	if resp, body := get(t, c, url+"/static/index/inside-link"); resp.StatusCode != http.StatusOK || body != "hello, static\n" {
		t.Errorf("inside symlink: %d %q", resp.StatusCode, body)
	}
	// Double encoding stays literal: this is the file named "%2e%2e".
	if resp, body := get(t, c, url+"/static/index/%252e%252e"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "literally") {
		t.Errorf("literal %%2e%%2e: %d %q", resp.StatusCode, body)
	}

	t.Run("conditional", func(t *testing.T) {
		for hdr, val := range map[string]string{"If-Modified-Since": lastMod, "If-None-Match": etag} {
			req, _ := http.NewRequest(http.MethodGet, url+"/static/index/hello.txt", nil)
			req.Header.Set(hdr, val)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotModified {
				t.Errorf("%s: status %d, want 304", hdr, resp.StatusCode)
			}
		}
	})
	t.Run("head", func(t *testing.T) {
		resp, err := c.Head(url + "/static/index/hello.txt")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != 14 || resp.Header.Get("Cache-Control") == "" {
			t.Errorf("HEAD: %d length %d", resp.StatusCode, resp.ContentLength)
		}
	})
	t.Run("range", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, url+"/static/index/hello.txt", nil)
		req.Header.Set("Range", "bytes=7-12")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusPartialContent || string(body) != "static" ||
			resp.Header.Get("Content-Range") != "bytes 7-12/14" {
			t.Errorf("range: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Range"), body)
		}
	})
	t.Run("other methods", func(t *testing.T) {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			req, _ := http.NewRequest(m, url+"/static/index/hello.txt", strings.NewReader("x"))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: %d Allow %q", m, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
	})
	if n := hits.Load(); n != 0 {
		t.Errorf("static requests reached the worker %d times", n)
	}
}

func TestStaticRejects(t *testing.T) {
	workers := staticRoot(t)
	url, hits := staticProxy(t, Options{WorkersDir: workers, StaticEnabled: true, StaticPrefix: "/static", CacheMaxAge: 60})
	addr := strings.TrimPrefix(url, "http://")
	targets := []string{
		"/static/index/../private/secret",
		"/static/index/%2e%2e/private/secret",
		"/static/index/%2E%2E/private/secret",
		"/static/index/..%2fprivate/secret",
		"/static/index/%2e%2e%2fprivate%2fsecret",
		"/static/index/%252e%252e/private/secret",
		"/static/index/..%5cprivate%5csecret",
		"/static/index/%5c..%5cprivate%5csecret",
		"/static/index/hello.txt%00",
		"/static/index/hello.txt%00.png",
		"/static/../workers",
		"/static/../workers/index/private/secret",
		"/static/index/../../index/private/secret",
		"/static/index/./hello.txt",
		"/static/index//hello.txt",
		"/static//etc/passwd",
		"/static/%2fetc/passwd",
		"/static/index/%2fetc%2fpasswd",
		"/static/index/secret-link",
		"/static/index/abs-secret",
		"/static/index/passwd-link",
		"/static/index/private-dir/secret",
		"/static/index/private/secret",
		"/static/index/fifo",
		"/static/index/sub",
		"/static/index/sub/",
		"/static/index/css",
		"/static/index/",
		"/static/index",
		"/static/",
		"/static",
		"/static/Index/hello.txt",
		"/static/_index/hello.txt",
		"/static/nope/hello.txt",
		"/static/api_users/anything",
		"/static/index/missing.txt",
	}
	for _, target := range targets {
		resp, body := rawRequest(t, addr, http.MethodGet, target)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", target, resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != "" {
			t.Errorf("%s: redirected to %q", target, loc)
		}
		if strings.Contains(body, "SECRET") || strings.Contains(body, "root:") || strings.Contains(body, "hello") {
			t.Errorf("%s: leaked %q", target, body)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("static requests reached the worker %d times", n)
	}
}

func TestStaticPrefixAndDisabled(t *testing.T) {
	workers := staticRoot(t)
	c := newClient(t)

	url, hits := staticProxy(t, Options{WorkersDir: workers, StaticEnabled: true, StaticPrefix: "/assets/", CacheMaxAge: 60})
	resp, body := get(t, c, url+"/assets/index/hello.txt")
	if resp.StatusCode != http.StatusOK || body != "hello, static\n" || resp.Header.Get("Cache-Control") != "public, max-age=60" {
		t.Errorf("custom prefix: %d %q %q", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
	}
	// Not on a segment boundary: an ordinary worker route.
	if _, body := get(t, c, url+"/assetsx/index/hello.txt"); body != "from worker" || hits.Load() != 1 {
		t.Errorf("/assetsx went to static: %q", body)
	}
	if _, body := get(t, c, url+"/static/index/hello.txt"); body != "from worker" || hits.Load() != 2 {
		t.Errorf("/static with prefix /assets: %q", body)
	}

	url, hits = staticProxy(t, Options{WorkersDir: workers, StaticEnabled: false})
	if _, body := get(t, c, url+"/static/index/hello.txt"); body != "from worker" || hits.Load() != 1 {
		t.Errorf("static disabled: %q", body)
	}
}

func TestStaticSeesRedeploy(t *testing.T) {
	workers := staticRoot(t)
	url, _ := staticProxy(t, Options{WorkersDir: workers, StaticEnabled: true})
	c := newClient(t)
	if resp, _ := get(t, c, url+"/static/index/new.txt"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d before deploy", resp.StatusCode)
	}
	// Replace public/ as a deploy would: build aside, rename into place.
	pub := filepath.Join(workers, "index", "public")
	next := pub + ".next"
	if err := os.MkdirAll(next, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(next, "new.txt"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(workers, "index", "public.old")
	if err := os.Rename(pub, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, pub); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, c, url+"/static/index/new.txt"); resp.StatusCode != http.StatusOK || body != "v2" {
		t.Errorf("after deploy: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, c, url+"/static/index/hello.txt"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("old file still served after deploy: %d", resp.StatusCode)
	}
}
