// Package chromiumtest starts Debian's headless Chromium for browser tests
// (chromedp) and waits on pages. Test-only; each call belongs to one test.
package chromiumtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Path is where Debian's chromium package installs the browser.
const Path = "/usr/bin/chromium"

// New starts headless Chromium for t, or skips t when it is missing (unless
// TQ_REQUIRE_CHROMIUM is set, as in CI: then it fails). The flags keep the
// browser off the network, which this machine's closed network requires.
// The returned context bounds the test's use of the browser.
func New(t testing.TB) context.Context {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		if os.Getenv("TQ_REQUIRE_CHROMIUM") != "" {
			t.Fatalf("TQ_REQUIRE_CHROMIUM is set but %s is unusable: %v", Path, err)
		}
		t.Skipf("skipping browser test: %s not found (apt-get install -y chromium; set TQ_REQUIRE_CHROMIUM=1 to make this a failure)", Path)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1024, 768),
		chromedp.UserDataDir(t.TempDir()),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // waits for the browser process to exit
	})
	// Start the browser on a context without a timeout (a timeout on the
	// first Run would bound the browser's life); bound the test separately.
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting %s: %v", Path, err)
	}
	ctx, cancel := context.WithTimeout(browserCtx, 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// WaitJS waits up to timeout until the JavaScript expression is true in the
// page. The page may reload meanwhile (which aborts a running
// chromedp.Poll), so it polls again in the new page until the deadline.
func WaitJS(t testing.TB, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
			chromedp.WithPollingTimeout(time.Until(deadline)),
			chromedp.WithPollingInterval(20*time.Millisecond)))
		if err == nil && ok {
			return
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	t.Fatalf("timed out after %s waiting for %s (%s): %v", timeout, what, expr, lastErr)
}

// Eval evaluates expr in the page and returns its value.
func Eval[T any](t testing.TB, ctx context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}
