package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/chromiumtest"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser end-to-end test drives the real tqserver binary in dev mode
// with a real headless Chromium: the build-error overlay appears in an open
// page, the page reloads itself after the fixed build is swapped in, and
// non-HTML responses and prod mode are left untouched.

// e2eBrowserWait bounds each wait on a build, swap or page change.
const e2eBrowserWait = 60 * time.Second

func newE2EBrowser(t *testing.T) context.Context { return chromiumtest.New(t) }

func e2eWaitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	chromiumtest.WaitJS(t, ctx, e2eBrowserWait, what, expr)
}

func e2eEvalJS[T any](t *testing.T, ctx context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	return chromiumtest.Eval[T](t, ctx, expr, opts...)
}

func TestBrowserDevOverlayAndReload(t *testing.T) {
	ctx := newE2EBrowser(t)

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
	const (
		hasOverlay = `document.getElementById("tqserver-overlay") !== null`
		noOverlay  = `document.getElementById("tqserver-overlay") === null`
		script     = `<script src="/__tqserver/client.js" defer></script>`
	)
	version := func(v string) string {
		return `document.getElementById("version")?.textContent === "` + v + `"`
	}

	// (1) A dev server builds worker index at b1; the page shows b1 and no
	// overlay, with the client script injected.
	root := newRoot(t, fastConfig)
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/devapp\n\ngo 1.22\n")
	src := filepath.Join(root, "workers", "index", "src", "main.go")
	writeFile(t, src, devSource(t, "b1"))
	s := startServerMode(t, root, "dev")
	waitBody(t, s.URL("/page"), `<h1 id="version">b1</h1>`, e2eBrowserWait)
	if code, body := get(t, s.URL("/page")); code != 200 || !strings.Contains(body, script) {
		t.Fatalf("dev /page: %d %q lacks %s", code, body, script)
	}
	if code, body := get(t, s.URL("/__tqserver/client.js")); code != 200 || !strings.Contains(body, "EventSource") {
		t.Fatalf("dev /__tqserver/client.js: %d %q", code, body)
	}
	do("load page", chromedp.Navigate(s.URL("/page")), chromedp.WaitVisible(chromedp.ID("version")))
	e2eWaitJS(t, ctx, "the client script", `window.__tqserverDevReload === true && `+version("b1"))
	if e2eEvalJS[bool](t, ctx, hasOverlay) {
		t.Fatal("overlay shown on a healthy page")
	}

	// (2) A syntax error: the open page shows the overlay by itself, with the
	// compiler's file:line:col and message, while b1 keeps serving.
	e2eEvalJS[chromedp.Void](t, ctx, `window.tqBeforeBreak = true`)
	writeFile(t, src, devSource(t, "b2")+"\nfunc broken( {\n")
	e2eWaitJS(t, ctx, "the build-error overlay", hasOverlay)
	if !e2eEvalJS[bool](t, ctx, `window.tqBeforeBreak === true`) {
		t.Fatal("the page was reloaded instead of showing the overlay in place")
	}
	overlayText, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("tqserver-overlay")))
	if err != nil {
		t.Fatalf("overlay text: %v", err)
	}
	for _, want := range []string{"Build failed: index", "main.go:", "syntax error"} {
		if !strings.Contains(overlayText, want) {
			t.Errorf("overlay text lacks %q:\n%s", want, overlayText)
		}
	}
	errItems := e2eEvalJS[[]string](t, ctx, `Array.from(document.querySelectorAll("#tqserver-overlay .tqserver-error"), e => e.textContent)`)
	itemRE := regexp.MustCompile(`main\.go:\d+:\d+: syntax error`)
	if len(errItems) == 0 || !itemRE.MatchString(errItems[0]) {
		t.Errorf("overlay errors %q: want one matching %s", errItems, itemRE)
	}
	if code, body := get(t, s.URL("/page")); code != 200 || !strings.Contains(body, `<h1 id="version">b1</h1>`) {
		t.Fatalf("during the failed build /page answered %d %q, want b1", code, body)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("TQ_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shotPath := filepath.Join(dir, "tqserver-dev-overlay.png")
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

	// (3) Fixed: the page reloads by itself, shows b3, and the overlay is gone.
	writeFile(t, src, devSource(t, "b3"))
	e2eWaitJS(t, ctx, "the page to reload itself with b3",
		`window.tqBeforeBreak === undefined && window.__tqserverDevReload === true && `+version("b3")+` && `+noOverlay)
	if code, body := get(t, s.URL("/page")); code != 200 || !strings.Contains(body, `<h1 id="version">b3</h1>`) {
		t.Fatalf("after the fix /page answered %d %q, want b3", code, body)
	}

	// (4) Non-HTML responses are untouched: JSON fetched by the page is
	// byte-identical to what a plain client gets, and text/plain has no script.
	fetched := e2eEvalJS[string](t, ctx, `fetch("/env").then(r => r.text())`, chromedp.EvalAwaitPromise)
	if strings.Contains(fetched, "__tqserver") {
		t.Errorf("JSON fetched by the page was modified: %q", fetched)
	}
	var env map[string]string
	if err := json.Unmarshal([]byte(fetched), &env); err != nil {
		t.Errorf("JSON fetched by the page does not decode: %v: %q", err, fetched)
	}
	if code, body := get(t, s.URL("/env")); code != 200 || body != fetched {
		t.Errorf("/env: Go client got %d %q, the page got %q", code, body, fetched)
	}
	if code, body := get(t, s.URL("/")); code != 200 || !strings.Contains(body, "b3 index") || strings.Contains(body, "__tqserver") {
		t.Errorf("dev text/plain /: %d %q", code, body)
	}

	// The dev server stops promptly although the page holds an event stream.
	s.signal(syscall.SIGTERM)
	if err := s.wait(30 * time.Second); err != nil {
		t.Fatalf("dev server exit: %v", err)
	}

	// (5) Prod mode never injects, and /__tqserver/ is an ordinary worker path.
	proot := newRoot(t, fastConfig)
	install(t, proot, "index", "p1", "normal")
	p := startServer(t, proot)
	waitBody(t, p.URL("/page"), `<h1 id="version">p1</h1>`, e2eBrowserWait)
	if code, body := get(t, p.URL("/page")); code != 200 || strings.Contains(body, "__tqserver") {
		t.Errorf("prod /page: %d %q", code, body)
	}
	code, body := get(t, p.URL("/__tqserver/client.js"))
	if code != 200 || strings.Contains(body, "EventSource") || !strings.Contains(body, "p1 index") || !strings.Contains(body, "path=/__tqserver/client.js") {
		t.Errorf("prod /__tqserver/client.js was not routed to the worker: %d %q", code, body)
	}
	do("load prod page", chromedp.Navigate(p.URL("/page")), chromedp.WaitVisible(chromedp.ID("version")))
	e2eWaitJS(t, ctx, "the prod page", version("p1"))
	if e2eEvalJS[bool](t, ctx, `window.__tqserverDevReload !== undefined || document.scripts.length !== 0`) {
		t.Error("prod page runs the dev client script")
	}
}
