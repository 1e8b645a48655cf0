package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/pkg/tqworker/tqworkertest"
)

const stylesheet = `<link rel="stylesheet" href="/static/index/css/style.css">`

func fetch(t *testing.T, w *tqworkertest.Worker, method, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, w.URL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, string(body)
}

func workerDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(tqworkertest.ModuleRoot(t), "workers", "index")
}

// TestIndex builds the worker once and runs it as tqserver would.
func TestIndex(t *testing.T) {
	bin := tqworkertest.Build(t, "./workers/index/src")
	t.Run("pages", func(t *testing.T) { testPages(t, bin) })
	t.Run("reload on SIGUSR1", func(t *testing.T) { testReload(t, bin) })
}

// The worker as shipped, run against the repository's own private/ files.
func testPages(t *testing.T, bin string) {
	dir := workerDir(t)
	w := tqworkertest.Start(t, bin, tqworkertest.Config{Base: dir, Name: "index", Route: "/", Mode: "prod"})

	resp, body := fetch(t, w, http.MethodGet, "/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d\n%s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	for _, want := range []string{
		"<!DOCTYPE html>", stylesheet, "Welcome to tqserver",
		"<code>index</code>", "pid " + strconv.Itoa(w.PID()), "badge-prod",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET / lacks %q", want)
		}
	}
	// What the page links to must exist in public/, where tqserver serves
	// /static/index/ from.
	for _, f := range []string{"public/css/style.css", "public/images/logo.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("linked asset missing: %v", err)
		}
	}

	if resp, body := fetch(t, w, http.MethodHead, "/"); resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD / = %d with %d body bytes", resp.StatusCode, len(body))
	}
	if resp, _ := fetch(t, w, http.MethodPost, "/"); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d Allow %q, want 405 GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}

	resp, body = fetch(t, w, http.MethodGet, "/no/such/page%3Cscript%3E")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET unknown path = %d", resp.StatusCode)
	}
	if !strings.Contains(body, "Page not found") || !strings.Contains(body, stylesheet) {
		t.Errorf("404 page is not the HTML page:\n%s", body)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "/no/such/page&lt;script&gt;") {
		t.Errorf("404 page does not show the path escaped:\n%s", body)
	}
	if resp, body := fetch(t, w, http.MethodGet, "/health"); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("GET /health = %d %q", resp.StatusCode, body)
	}

	if err := w.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st, err := w.Wait(10 * time.Second); err != nil || st.ExitCode() != 0 {
		t.Fatalf("after SIGTERM: %v %v", st, err)
	}
}

// SIGUSR1 picks up edited templates; a broken edit keeps the page working.
func testReload(t *testing.T, bin string) {
	dir := tqworkertest.CopyDir(t, workerDir(t))
	w := tqworkertest.Start(t, bin, tqworkertest.Config{Base: dir, Name: "index", Mode: "dev"})

	view := filepath.Join(dir, "private", "views", "index.html")
	orig, err := os.ReadFile(view)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "Freshly reloaded welcome"
	if _, body := fetch(t, w, http.MethodGet, "/"); strings.Contains(body, marker) {
		t.Fatal("marker present before the edit")
	}
	edited := strings.Replace(string(orig), "Welcome to tqserver", marker, 1)
	if edited == string(orig) {
		t.Fatal("template no longer contains the heading this test edits")
	}
	if err := os.WriteFile(view, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	tqworkertest.Eventually(t, 10*time.Second, "the edited template to be served", func() bool {
		_, body := fetch(t, w, http.MethodGet, "/")
		return strings.Contains(body, marker) && strings.Contains(body, "reloaded 1 time<")
	})

	if err := os.WriteFile(view, []byte(`{{template "header" .}}{{if}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	tqworkertest.Eventually(t, 10*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(w.Output(), "keeping the previous templates")
	})
	resp, body := fetch(t, w, http.MethodGet, "/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, marker) {
		t.Fatalf("after a broken edit GET / = %d, marker present %v", resp.StatusCode, strings.Contains(body, marker))
	}
	select {
	case <-w.Done():
		t.Fatal("worker exited during reloads")
	default:
	}
}
