// Command testworker is the worker the tqworker tests build and run. Its
// behaviour is steered by environment variables so one binary covers every
// scenario:
//
//	TQTEST_DIR               directory for marker files (required)
//	TQTEST_SHUTDOWN_TIMEOUT  Options.ShutdownTimeout (Go duration)
//
// Endpoints: /env (the tqworker accessors as JSON), /reloads (the reload
// hook log), /hold (writes "started", waits for $TQTEST_DIR/release, writes
// "done"). GET /health fails while $TQTEST_DIR/unhealthy exists.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mevdschee/tqserver/pkg/tqworker"
)

func main() {
	dir := os.Getenv("TQTEST_DIR")
	if dir == "" {
		log.Fatal("TQTEST_DIR is not set")
	}
	var opts tqworker.Options
	if v := os.Getenv("TQTEST_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			log.Fatal(err)
		}
		opts.ShutdownTimeout = d
	}
	opts.Health = func() error {
		if _, err := os.Stat(filepath.Join(dir, "unhealthy")); err == nil {
			return errors.New("unhealthy marker present")
		}
		return nil
	}

	var mu sync.Mutex
	var reloads []string
	// Two hooks, so the test can see they run in registration order.
	tqworker.OnReload(func() { mu.Lock(); reloads = append(reloads, "a"); mu.Unlock() })
	tqworker.OnReload(func() { mu.Lock(); reloads = append(reloads, "b"); mu.Unlock() })

	mux := http.NewServeMux()
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{
			"name": tqworker.Name(), "route": tqworker.Route(), "mode": tqworker.Mode(),
			"base": tqworker.Base(), "addr": tqworker.Addr(), "path": tqworker.Path("private", "x.txt"),
		})
	})
	mux.HandleFunc("GET /reloads", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprint(w, strings.Join(reloads, ""))
	})
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "started")
		http.NewResponseController(w).Flush()
		for {
			if _, err := os.Stat(filepath.Join(dir, "release")); err == nil {
				break
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		fmt.Fprintln(w, "done")
	})
	if err := tqworker.Run(mux, opts); err != nil {
		log.Printf("run: %v", err)
		os.Exit(3)
	}
	log.Print("run returned nil")
}
