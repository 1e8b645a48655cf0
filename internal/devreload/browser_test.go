package devreload

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/chromiumtest"
	"github.com/mevdschee/tqserver/internal/testrig"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

func newBrowser(t *testing.T) context.Context { return chromiumtest.New(t) }

// pageServer serves an HTML page whose text can change, and a JSON
// endpoint, through the engine with a replaceable Hub (a "server restart").
type pageServer struct {
	srv     *devServer
	hub     atomic.Pointer[Hub]
	version atomic.Int64
}

const jsonBody = `{"ok":true,"html":"</body></html>","n":[1,2,3]}` + "\n"

func newPageServer(t *testing.T) *pageServer {
	ps := &pageServer{}
	ps.hub.Store(NewHub())
	ps.version.Store(1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><title>t</title></head><body><h1 id=\"content\">version %d</h1></body></html>", ps.version.Load())
	})
	mux.HandleFunc("GET /api/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(jsonBody)))
		w.Write([]byte(jsonBody))
	})
	ps.srv = newDevServerLocal(t, mux, map[string]http.Handler{
		EventsPath: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ps.hub.Load().ServeEvents(w, r) }),
		ScriptPath: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ps.hub.Load().ServeScript(w, r) }),
	})
	t.Cleanup(func() {
		ps.hub.Load().Close()
		ps.srv.Close()
	})
	return ps
}

// connected reports whether n event streams are open on h.
func streams(h *Hub) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.streams)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testrig.WaitFor(t, 15*time.Second, what, cond)
}

func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	chromiumtest.WaitJS(t, ctx, 15*time.Second, what, expr)
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	return chromiumtest.Eval[T](t, ctx, expr, opts...)
}

func TestBrowserOverlayAndReload(t *testing.T) {
	ctx := newBrowser(t)
	ps := newPageServer(t)

	var mu sync.Mutex
	var jsErrors []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			jsErrors = append(jsErrors, (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range jsErrors {
			t.Errorf("JavaScript exception: %s", e)
		}
	})
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	const overlay = chromedp.CSS("#tqserver-overlay")
	hasOverlay := `document.getElementById("tqserver-overlay") !== null`
	hub := ps.hub.Load()

	// (1) The page loads with no overlay and connects its event stream.
	do("load page", chromedp.Navigate(ps.srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#content")))
	waitJS(t, ctx, "the client script", `window.__tqserverDevReload === true`)
	waitFor(t, "the page's event stream", func() bool { return streams(hub) == 1 })
	if evalJS[bool](t, ctx, hasOverlay) {
		t.Fatal("overlay shown on a healthy page")
	}

	// (2) A build failure shows the overlay; compiler text is escaped.
	out := "# example\n./main.go:12:5: undefined: foo\n./main.go:13:1: <img src=x onerror=\"window.pwned=1\">\n"
	hub.BuildFailed("index", out)
	do("overlay visible", chromedp.WaitVisible(overlay))
	overlayText, err := chromedp.Run(ctx, chromedp.Text(overlay))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Build failed: index", "main.go:12:5", "undefined: foo", "# example", `<img src=x onerror="window.pwned=1">`} {
		if !strings.Contains(overlayText, want) {
			t.Errorf("overlay text lacks %q:\n%s", want, overlayText)
		}
	}
	if evalJS[bool](t, ctx, `window.pwned === 1 || document.querySelector("#tqserver-overlay img") !== null`) {
		t.Error("compiler output was interpreted as HTML")
	}
	if n := evalJS[int](t, ctx, `document.querySelectorAll("#tqserver-overlay .tqserver-error").length`); n != 2 {
		t.Errorf("overlay lists %d errors, want 2", n)
	}
	if !evalJS[bool](t, ctx, `(() => { const s = getComputedStyle(document.getElementById("tqserver-overlay")); return s.position === "fixed" && s.fontFamily.includes("monospace"); })()`) {
		t.Error("overlay is not a fixed monospace layer")
	}
	shot, err := chromedp.Run(ctx, chromedp.Screenshot(overlay))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("TQ_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shotPath := filepath.Join(dir, "devreload-overlay.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("overlay screenshot: %s (%d bytes)", shotPath, len(shot))
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("screenshot is only %v", b)
	}

	// (4) A page loaded while the failure is active shows it at once.
	do("reload while broken", chromedp.Reload(), chromedp.WaitVisible(overlay))
	if overlayText, err = chromedp.Run(ctx, chromedp.Text(overlay)); err != nil || !strings.Contains(overlayText, "main.go:12:5") {
		t.Errorf("overlay after load lacks the error (%v):\n%s", err, overlayText)
	}
	waitFor(t, "the reloaded page's event stream", func() bool { return streams(hub) == 1 })

	// (5) JSON fetched by the page through the same middleware is untouched.
	type fetchResult struct {
		Body   string `json:"body"`
		Status int    `json:"status"`
		Type   string `json:"type"`
		Length string `json:"length"`
	}
	fetched := evalJS[fetchResult](t, ctx, `fetch("/api/data").then(async r => ({body: await r.text(), status: r.status, type: r.headers.get("content-type"), length: r.headers.get("content-length")}))`, chromedp.EvalAwaitPromise)
	if want := (fetchResult{jsonBody, 200, "application/json", fmt.Sprint(len(jsonBody))}); fetched != want {
		t.Errorf("fetched JSON = %+v, want %+v", fetched, want)
	}

	// (3) Fixed, new content, swapped: the page reloads by itself.
	evalJS[chromedp.Void](t, ctx, `window.beforeReload = true`)
	hub.BuildFixed("index")
	waitJS(t, ctx, "overlay removed", `document.getElementById("tqserver-overlay") === null`)
	ps.version.Store(2)
	hub.Reloaded("index")
	waitJS(t, ctx, "reload with new content", `window.beforeReload === undefined && document.getElementById("content")?.textContent === "version 2" && window.__tqserverDevReload === true`)
	if evalJS[bool](t, ctx, hasOverlay) {
		t.Error("overlay present after the fix and reload")
	}

	// (6) The server restarts (a new Hub): the page reconnects and reloads once.
	waitFor(t, "the stream after reload", func() bool { return streams(hub) == 1 })
	evalJS[chromedp.Void](t, ctx, `window.beforeRestart = true`)
	ps.version.Store(3)
	next := NewHub()
	ps.hub.Store(next)
	hub.Close()
	waitJS(t, ctx, "reload after restart", `window.beforeRestart === undefined && document.getElementById("content")?.textContent === "version 3"`)
	waitFor(t, "one stream on the new hub", func() bool { return streams(next) == 1 })
}
