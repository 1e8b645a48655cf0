// Package devreload implements tqserver's dev-mode browser live reload and
// build-error overlay.
//
// It owns three things:
//
//   - Hub: fans dev events (a worker was swapped, a build failed, a build was
//     fixed) out to every connected browser over server-sent events at
//     GET /__tqserver/events, and serves the client script at
//     GET /__tqserver/client.js. A browser that connects while a build is
//     broken receives that failure at once, so the overlay is shown on load.
//   - Local and Rewrite: dev mode only, plugged into the proxy engine
//     (proxy.Options.Local and .Rewrite). Local serves the two /__tqserver/
//     paths from the Hub; Rewrite leaves every worker response alone except
//     that 200 text/html GET responses without Content-Encoding or
//     Content-Range get <script src="/__tqserver/client.js" defer></script>
//     injected before </body> (else before </html>, else at the end), which
//     drops their Content-Length (the engine sends them chunked). The
//     injection is streaming: only a tail of at most six bytes that could
//     begin a closing tag is held back, and every other response (JSON, CSS,
//     images, event streams, errors, HEAD, upgrades) is byte-identical with
//     its Content-Length kept. Status codes are never changed; the overlay
//     is drawn only by the client script.
//   - ParseBuildErrors: turns Go compiler output into file:line:col errors.
//
// Concurrency: all Hub methods are safe for concurrent use. Reloaded,
// BuildFailed and BuildFixed never block on browsers: each stream has a
// bounded queue and a stream that falls behind is ended (the browser
// reconnects, receives the current state and reloads if it missed a reload).
// Events reach every stream in the order the methods were called. Close ends
// all streams, waits for their handlers to return (each write to a browser is
// bounded by a write deadline where the ResponseWriter supports one), and
// makes later ServeEvents calls answer 503. A BodyRewriter from
// Rewrite serves one response on one goroutine.
//
// The client script keeps a per-worker set of failures and shows them in a
// fixed div#tqserver-overlay (compiler text is set with textContent only). It
// reloads the page on "reload", and once after reconnecting to a server that
// restarted (a new Hub) or that reloaded while it was disconnected. It
// reconnects with exponential backoff (0.5 s up to 5 s).
//
// Note: each open page holds one HTTP/1.1 connection for its event stream;
// browsers allow six per host, so more than about five tabs of the same
// dev server share connections slowly.
package devreload
