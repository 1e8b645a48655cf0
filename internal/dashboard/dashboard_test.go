package dashboard

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	return w.Result()
}

// The page inlines its script and style, and the CSP names exactly their
// hashes: a page whose script does not match its policy would be blank.
func TestPageScriptAndStyleMatchTheirCSPHashes(t *testing.T) {
	resp := get(t, "GET", "/", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	html := string(body)
	policy := resp.Header.Get("Content-Security-Policy")
	for _, slot := range []string{"/*STYLE*/", "/*DATA*/", "/*VIEW*/"} {
		if strings.Contains(html, slot) {
			t.Errorf("slot %s was not filled in", slot)
		}
	}
	for _, c := range []struct {
		tag string
		n   int
	}{{"script", 2}, {"style", 1}} {
		m := regexp.MustCompile(`(?s)<`+c.tag+`>(.*?)</`+c.tag+`>`).FindAllStringSubmatch(html, -1)
		if len(m) != c.n {
			t.Fatalf("want %d inline <%s>, found %d", c.n, c.tag, len(m))
		}
		var hashes []string
		for _, body := range m {
			if len(body[1]) < 1000 {
				t.Fatalf("<%s> was not filled in: %.80q", c.tag, body[1])
			}
			sum := sha256.Sum256([]byte(body[1]))
			hashes = append(hashes, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		}
		// Exactly these hashes: no other script or style may run.
		want := c.tag + "-src " + strings.Join(hashes, " ") + ";"
		if !strings.Contains(policy+";", want) {
			t.Errorf("CSP %q lacks %q", policy, want)
		}
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(policy, want) {
			t.Errorf("CSP %q lacks %q", policy, want)
		}
	}
	if strings.Contains(html, "http://") || strings.Contains(html, "https://") {
		t.Errorf("the page names an external URL; it must load nothing from elsewhere")
	}
}

func TestOnlyTheRootPathIsThePage(t *testing.T) {
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/", 200},
		{"HEAD", "/", 200},
		{"GET", "/index.html", 404},
		{"GET", "/favicon.ico", 404},
		{"GET", "/v1/nope", 404},
		{"POST", "/", 405},
	} {
		if got := get(t, c.method, c.path, nil).StatusCode; got != c.code {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, got, c.code)
		}
	}
}

func TestPageRevalidatesWithItsETag(t *testing.T) {
	resp := get(t, "GET", "/", nil)
	tag := resp.Header.Get("ETag")
	if tag == "" {
		t.Fatal("no ETag")
	}
	if got := get(t, "GET", "/", map[string]string{"If-None-Match": tag}).StatusCode; got != http.StatusNotModified {
		t.Fatalf("If-None-Match with the ETag: status %d, want 304", got)
	}
}
