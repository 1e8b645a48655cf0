// Command testworker is the worker the end-to-end tests build and run. Its
// behaviour is fixed at build time with -ldflags "-X main.version=... -X
// main.behaviour=..." so that replacing the binary changes what it answers.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	version   = "v0"
	behaviour = "normal" // normal | crash | crashlater | errors | slowroot | nohealth | orphan | spawnchild | setsidchild | setsidstubborn
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleeper" {
		// A grandchild: in the worker's process group (spawnchild) or in
		// its own session (setsidchild).
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(time.Hour)
		return
	}
	switch behaviour {
	case "crash":
		fmt.Fprintln(os.Stderr, "testworker: boom (crashing on purpose)")
		os.Exit(3)
	case "crashlater":
		// Healthy at first, then dead: a new binary that passes its health
		// gate and crashes soon after (automatic rollback).
		go func() {
			time.Sleep(700 * time.Millisecond)
			fmt.Fprintln(os.Stderr, "testworker: crashing after start (on purpose)")
			os.Exit(4)
		}()
	case "orphan":
		// Drop the parent-death signal, as if it had been lost: this worker
		// survives a kill -9 of the server, so the next start must reap it.
		syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, 0, 0)
	case "spawnchild":
		cmd := exec.Command(os.Args[0], "sleeper")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.WriteFile("child.pid", []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	case "setsidchild", "setsidstubborn":
		// A child that leaves the process group and the session, as a
		// daemonizing helper does; one line per instance in setsid.pids.
		// setsidstubborn also ignores SIGTERM: it stops only at SIGKILL.
		cmd := exec.Command(os.Args[0], "sleeper")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		f, err := os.OpenFile("setsid.pids", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintf(f, "%d\n", cmd.Process.Pid)
		f.Close()
	}
	port := os.Getenv("PORT")
	var reloads, served atomic.Int64
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			reloads.Add(1)
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if behaviour == "nohealth" {
			http.Error(w, "never healthy", http.StatusServiceUnavailable)
			return
		}
		if _, err := os.Stat("hangwarm"); err == nil && r.Header.Get("User-Agent") == "tqserver-warm" {
			<-r.Context().Done() // hold the proxy's warm-up (supervisor tests)
			return
		}
		if _, err := os.Stat("unhealthy"); err == nil {
			http.Error(w, "unhealthy file present", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
	mux.HandleFunc("/code", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("c"))
		if err != nil || code < 200 || code > 599 {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "slow done %s %s\n", version, os.Getenv("TQ_WORKER_NAME"))
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		env := map[string]string{}
		for _, k := range []string{"PORT", "TQ_WORKER_PORT", "TQ_WORKER_NAME", "TQ_WORKER_ROUTE", "TQ_WORKER_BASE", "TQ_MODE", "GOMAXPROCS", "GOMEMLIMIT", "GREETING", "BASE_COPY"} {
			if v, ok := os.LookupEnv(k); ok {
				env[k] = v
			}
		}
		wd, _ := os.Getwd()
		env["cwd"] = wd
		json.NewEncoder(w).Encode(env)
	})
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><title>%s</title></head><body><h1 id=\"version\">%s</h1></body></html>\n", version, version)
	})
	mux.HandleFunc("/flood", func(w http.ResponseWriter, r *http.Request) {
		// Write mib MiB of 100-byte lines to stdout as fast as the pipe
		// takes them, for at most ms milliseconds; answer what was written.
		mib, _ := strconv.ParseInt(r.URL.Query().Get("mib"), 10, 64)
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		line := []byte(fmt.Sprintf("%-99s\n", "flood "+version+" line"))
		buf := make([]byte, 0, 64<<10)
		for len(buf)+len(line) <= cap(buf) {
			buf = append(buf, line...)
		}
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		var n int64
		t0 := time.Now()
		for n < mib<<20 && time.Now().Before(end) {
			k, err := os.Stdout.Write(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		fmt.Fprintf(w, "%d %d\n", n, time.Since(t0).Milliseconds())
	})
	mux.HandleFunc("/reloads", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", reloads.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		switch behaviour {
		case "errors": // a binary that is healthy but fails real requests
			w.WriteHeader(http.StatusInternalServerError)
		case "slowroot": // a binary that is healthy but slow
			time.Sleep(40 * time.Millisecond)
		}
		fmt.Fprintf(w, "%s %s pid=%d n=%d path=%s xff=%s\n", version, os.Getenv("TQ_WORKER_NAME"), os.Getpid(), n, r.URL.RequestURI(), r.Header.Get("X-Forwarded-For"))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux}
	term := make(chan os.Signal, 1)
	if behaviour == "setsidstubborn" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	}
	go func() {
		<-term
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	fmt.Printf("testworker %s (%s) listening on %s\n", version, behaviour, port)
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
