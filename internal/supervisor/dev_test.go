package supervisor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mevdschee/tqserver/internal/builder"
	"github.com/mevdschee/tqserver/internal/config"
	"github.com/mevdschee/tqserver/internal/events"
	"github.com/mevdschee/tqserver/internal/proxy"
	"github.com/mevdschee/tqserver/internal/store"
)

// devWorkerSrc is a worker answering its version on / and 200 on /health;
// broken makes it fail to compile.
func devWorkerSrc(version string, broken bool) string {
	s := `package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "%s") })
	panic(http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil))
}
`
	s = fmt.Sprintf(s, version)
	if broken {
		s += "\nfunc broken() { undefinedName() }\n"
	}
	return s
}

type devRig struct{ *rig }

func newDevRig(t *testing.T) *devRig {
	t.Helper()
	return newDevRigWith(t, nil)
}

// newDevRigWith is newDevRig with setup run on the supervisor before Run.
func newDevRigWith(t *testing.T, setup func(*Supervisor)) *devRig {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/app\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &devRig{&rig{t: t, root: root}}
	r.write("v1", false)
	if res := builder.Build(context.Background(), filepath.Join(root, "workers", "app"), builder.Options{}); res.Err != nil {
		t.Fatalf("first build: %v\n%s", res.Err, res.Output)
	}
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 24000, 24999
	r.rig = startRig(t, root, "dev", cfg, proxy.New(proxy.Options{}), setup)
	r.waitBody("v1")
	return r
}

func (r *devRig) write(version string, broken bool) {
	r.t.Helper()
	p := filepath.Join(r.root, "workers", "app", "src", "main.go")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(devWorkerSrc(version, broken)), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// body asks the worker's healthy instance for /.
func (r *devRig) body() string {
	for _, w := range r.sup.Status().Workers {
		for _, in := range w.Instances {
			if in.State != "healthy" {
				continue
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", in.Port))
			if err != nil {
				return ""
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
	}
	return ""
}

func (r *devRig) waitBody(want string) {
	r.t.Helper()
	r.waitFor("the worker to answer "+want, func() bool { return r.body() == want })
}

// builds returns the build records, as "event detail" lines.
func (r *devRig) builds() []string {
	r.t.Helper()
	recs, err := r.st.Records(store.Filter{})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, rec := range recs {
		if strings.HasPrefix(rec.Event, "build_") {
			out = append(out, rec.Event+" "+rec.Detail)
		}
	}
	return out
}

func (r *devRig) send(ev events.FilesChanged) {
	ev.Kind, ev.Worker = events.SourceChanged, "app"
	r.sup.Send(ev)
}

// staged lists leftover build files in bin/.
func (r *devRig) staged() []string {
	entries, _ := os.ReadDir(filepath.Join(r.root, "workers", "app", "bin"))
	var out []string
	for _, e := range entries {
		if e.Name() != "app" {
			out = append(out, e.Name())
		}
	}
	return out
}

// A build begun on the early notice is used when the change settles with
// nothing newer: one build, recorded once, swapped in.
func TestDevTentativeBuildIsCommitted(t *testing.T) {
	r := newDevRig(t)
	r.write("v2", false)
	seen := time.Now()
	r.send(events.FilesChanged{Tentative: true, First: seen, Last: seen})
	// The final event of the same batch: no change after the notice.
	r.send(events.FilesChanged{First: seen, Last: seen})
	r.waitBody("v2")
	b := r.builds()
	if len(b) != 2 || !strings.HasPrefix(b[0], "build_started begun ") || !strings.HasPrefix(b[1], "build_ok built in ") {
		t.Fatalf("build records %q, want one build_started (begun early) and one build_ok", b)
	}
	r.waitFor("no staged file left", func() bool { return len(r.staged()) == 0 })
}

// A change after the early build began makes it stale: it is dropped
// unrecorded (even its compile error), and the settled source is built.
func TestDevTentativeBuildSupersededByLaterChange(t *testing.T) {
	r := newDevRig(t)
	r.write("v2", true) // broken mid-edit
	seen := time.Now()
	r.send(events.FilesChanged{Tentative: true, First: seen, Last: seen})
	// A reload is handled after the notice (one channel), so the early
	// build has begun before the next edit is made.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.sup.Reload(ctx, "test")
	r.write("v3", false)
	last := time.Now()
	r.send(events.FilesChanged{First: seen, Last: last})
	r.waitBody("v3")
	b := r.builds()
	if len(b) != 2 || b[0] != "build_started " || !strings.HasPrefix(b[1], "build_ok ") {
		t.Fatalf("build records %q, want one fresh build_started and one build_ok", b)
	}
	r.waitFor("no staged file left", func() bool { return len(r.staged()) == 0 })
}

// A tentative build that fails is reported once the change settles, and
// the running instance keeps serving.
func TestDevTentativeBuildFailureReportedOnSettle(t *testing.T) {
	r := newDevRig(t)
	r.write("v2", true)
	seen := time.Now()
	r.send(events.FilesChanged{Tentative: true, First: seen, Last: seen})
	r.waitFor("the early build to finish", func() bool {
		return strings.Contains(r.logs.String(), "early build finished")
	})
	if b := r.builds(); len(b) != 0 {
		t.Fatalf("tentative build recorded before the change settled: %q", b)
	}
	r.send(events.FilesChanged{First: seen, Last: seen})
	r.waitFor("build_failed", func() bool {
		b := r.builds()
		return len(b) == 2 && strings.HasPrefix(b[1], "build_failed ") && strings.Contains(b[1], "undefinedName")
	})
	if got := r.body(); got != "v1" {
		t.Fatalf("after a failed build the worker answers %q, want v1", got)
	}
	r.waitFor("no staged file left", func() bool { return len(r.staged()) == 0 })
}

// A dev worker whose first build fails has no binary; its route answers 503
// with Retry-After (never 404) until a build succeeds, and then serves.
func TestDevFirstBuildFailsAnswers503(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/app\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dr := &devRig{&rig{t: t, root: root}}
	dr.write("v1", true) // does not compile: no binary
	cfg := config.Default()
	cfg.Workers.PortRangeStart, cfg.Workers.PortRangeEnd = 24000, 24999
	px := proxy.New(proxy.Options{})
	front := newFront(t, px)
	defer front.Close()
	dr.rig = startRig(t, root, "dev", cfg, px, nil)
	get := func() (int, string) {
		resp, err := http.Get(front.URL + "/app/")
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After") + " " + string(b)
	}
	dr.waitFor("the status to list app", func() bool {
		for _, w := range dr.sup.Status().Workers {
			if w.Name == "app" {
				return true
			}
		}
		return false
	})
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "1") {
		t.Fatalf("a worker whose first build failed: got %d %q, want 503 with Retry-After", code, body)
	}
	dr.write("v2", false)
	dr.send(events.FilesChanged{First: time.Now(), Last: time.Now()})
	dr.waitFor("app to serve v2 through the proxy", func() bool { code, body := get(); return code == 200 && strings.HasSuffix(body, "v2") })
}
