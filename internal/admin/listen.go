package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// TCPOptions configure the admin TCP listener (CONTRACT.md §9).
type TCPOptions struct {
	// Addr is host:port; "" means no listener.
	Addr string
	// Explicit: Addr was configured (server.admin_listen), so an address
	// that cannot be bound is an error rather than a warning.
	Explicit bool
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// every path but /healthz. TokenSource names where it came from.
	Token, TokenSource string
	// Dashboard serves GET / (and what it links below /); Metrics serves
	// GET /metrics. Either nil answers 404.
	Dashboard, Metrics http.Handler
}

// tokenCookie carries the token for a browser, which cannot add a header
// to the dashboard's page loads and its EventSource.
const tokenCookie = "tqserver_admin_token"

// ListenTCP binds o.Addr by §9's rules. It returns no listener and no error
// when Addr is "", and no listener with a warning (log it) when the default
// address is taken. A non-loopback address without a token, or an explicit
// address that cannot be bound, is an error naming the key and what to do.
func ListenTCP(o TCPOptions) (ln net.Listener, warning string, err error) {
	if o.Addr == "" {
		return nil, "", nil
	}
	if !IsLoopback(o.Addr) && o.Token == "" {
		return nil, "", fmt.Errorf("server.admin_listen %s is not a loopback address and no token is set: set server.admin_token or TQ_ADMIN_TOKEN, or listen on 127.0.0.1", o.Addr)
	}
	ln, err = net.Listen("tcp", o.Addr)
	if err == nil {
		return ln, "", nil
	}
	if !o.Explicit && errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Sprintf("admin listener off: the default address %s is taken (another app root on this host?); set server.admin_listen to a free address, or \"\" to silence this", o.Addr), nil
	}
	what := "server.admin_listen"
	if !o.Explicit {
		what += " (default)"
	}
	return nil, "", fmt.Errorf("%s %s: %w (set another address, or \"\" for no admin listener)", what, o.Addr, unwrapOp(err))
}

// unwrapOp drops the "listen tcp ADDR: bind:" prefixes of net.OpError and
// os.SyscallError: the message already names the address.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sc *os.SyscallError
	if errors.As(err, &sc) && sc.Err != nil {
		err = sc.Err
	}
	return err
}

// IsLoopback reports whether addr (host:port) listens on loopback only:
// an IP in 127.0.0.0/8 or ::1, or the name localhost. An empty host (every
// interface), 0.0.0.0 and any other name are not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TCPHandler is what the admin TCP listener serves: api (Handler) under
// /healthz and /v1/, the dashboard at /, metrics at /metrics; with a token
// every path but /healthz needs it, and cross-origin browser requests that
// change state (POST from another site's page) are refused.
func TCPHandler(api http.Handler, o TCPOptions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", api)
	mux.Handle("/v1/", viaTCP(api))
	notFound := http.NotFoundHandler()
	dash, metrics := o.Dashboard, o.Metrics
	if dash == nil {
		dash = notFound
	}
	if metrics == nil {
		metrics = notFound
	}
	mux.Handle("/", getOnly(dash))
	mux.Handle("/metrics", getOnly(metrics))
	var h http.Handler = mux
	if o.Token != "" {
		h = requireToken(o.Token, h)
	}
	return http.NewCrossOriginProtection().Handler(h)
}

// tcpKey marks a request that came through the TCP listener (the dashboard
// or an API client) rather than the socket (the CLI): reloads say which.
type tcpKey struct{}

func viaTCP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tcpKey{}, true)))
	})
}

// source names what asked for a reload: "admin" through the TCP listener,
// "reload" through the socket (`tqserver reload`).
func source(r *http.Request) string {
	if r.Context().Value(tcpKey{}) != nil {
		return "admin"
	}
	return "reload"
}

// getOnly answers 405 to methods other than GET and HEAD.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// requireToken answers 401 to a request without the token, except on
// /healthz. The token comes as "Authorization: Bearer TOKEN" or in the
// cookie that GET /?token=TOKEN sets (for the dashboard in a browser).
// Comparisons are of SHA-256 digests in constant time.
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	ok := func(got string) bool {
		d := sha256.Sum256([]byte(got))
		return got != "" && subtle.ConstantTimeCompare(d[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/" && r.Method == http.MethodGet && r.URL.Query().Has("token") {
			if !ok(r.URL.Query().Get("token")) {
				unauthorized(w)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: r.URL.Query().Get("token"), Path: "/",
				HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			http.Redirect(w, r, "/", http.StatusSeeOther) // the token leaves the address bar
			return
		}
		auth := r.Header.Get("Authorization")
		if bearer, found := strings.CutPrefix(auth, "Bearer "); found && ok(strings.TrimSpace(bearer)) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && ok(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		unauthorized(w)
	})
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="tqserver admin"`)
	http.Error(w, "401 unauthorized: send Authorization: Bearer TOKEN (server.admin_token or TQ_ADMIN_TOKEN)", http.StatusUnauthorized)
}

// serve runs an HTTP server for h on ln. stop ends open event streams,
// waits up to two seconds for other requests, then closes what is left.
func serve(ln net.Listener, h http.Handler) (stop func()) {
	base, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return func() {
		cancel() // request contexts end: /v1/events streams return
		ctx, cancelWait := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancelWait()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-done
	}
}

// ServeTCP serves h on the admin TCP listener ln until stop.
func ServeTCP(ln net.Listener, h http.Handler) (stop func()) { return serve(ln, h) }
