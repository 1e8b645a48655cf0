// Command hello is the minimal worker tqbench measures: plain net/http,
// GET /health answers 200 and every other path answers "hello <version>".
// GET /work?n=N first spins the CPU for N thousand rounds of a xorshift
// (about N µs), for the several-instances benchmark.
// The version is set at build time (-ldflags "-X main.version=v2") so the
// benchmark can tell which binary answered.
package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

var version = "dev"

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	body := []byte("hello " + version + "\n")
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		n = min(max(n, 0), 1_000_000)
		x := uint64(n) | 1
		for range n * 1000 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		w.Header().Set("Content-Type", "text/plain")
		// The result goes into the answer so the loop cannot be optimised away.
		w.Write([]byte("hello " + version + " " + strconv.FormatUint(x, 16) + "\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
