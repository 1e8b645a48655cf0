package store

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	sm "github.com/mevdschee/tqserver/internal/statemachine"
)

var update = flag.Bool("update", false, "rewrite testdata/replay/*.golden.json")

// goldenJSON is what a replay golden file holds: the registry, or the error.
func goldenJSON(g *Registry, err error) []byte {
	var v any = g
	if err != nil {
		v = map[string]string{"error": err.Error()}
	}
	b, mErr := json.MarshalIndent(v, "", "  ")
	if mErr != nil {
		panic(mErr)
	}
	return append(b, '\n')
}

func replayFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "replay", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no replay logs: %v", err)
	}
	return files
}

// TestReplayGolden replays each testdata/replay/NAME.jsonl and compares the
// registry (or the error) with NAME.golden.json. -update rewrites them.
func TestReplayGolden(t *testing.T) {
	for _, file := range replayFiles(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".jsonl")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ReplayJSONL(bytes.NewReader(in), time.Time{})
			got := goldenJSON(g, err)
			golden := strings.TrimSuffix(file, ".jsonl") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, rErr := os.ReadFile(golden)
			if rErr != nil {
				t.Fatalf("%v (run go test -update to create it)", rErr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("replay of %s differs from %s:\n%s", file, golden, got)
			}
			if err != nil {
				return
			}
			// The same records in a real log replay to the same registry.
			s := openT(t, dbPath(t), Options{})
			loadJSONL(t, s, in)
			fromStore, err := Replay(s, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if got := goldenJSON(fromStore, nil); !bytes.Equal(got, want) {
				t.Fatalf("Replay of the stored log differs from %s:\n%s", golden, got)
			}
		})
	}
}

// loadJSONL appends every record of a JSONL log, checking Append gives them
// the seqs they had.
func loadJSONL(t *testing.T, s *Store, in []byte) {
	t.Helper()
	var recs []Record
	for line := range bytes.Lines(in) {
		r, err := DecodeRecord(line)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	want := seqs(recs)
	fill(t, s, recs)
	for i, r := range recs {
		if r.Seq != want[i] {
			t.Fatalf("test log is not numbered 1..n: record %d stored as %d", want[i], r.Seq)
		}
	}
}

// TestReplayGoldenFacts spells out what the golden files must show, so a
// careless -update cannot bless a wrong registry.
func TestReplayGoldenFacts(t *testing.T) {
	type live struct{ instance, state string }
	cases := []struct {
		file    string
		live    []live
		max     map[string]uint64
		lastSeq uint64
	}{
		{"startup", []live{{"api_users-1", "healthy"}, {"index-1", "healthy"}}, map[string]uint64{"index": 1, "api_users": 1}, 7},
		{"binary_changed", []live{{"index-2", "healthy"}}, map[string]uint64{"index": 2}, 10},
		{"crash_backoff", []live{{"api-3", "healthy"}}, map[string]uint64{"api": 3}, 13},
		{"rollback", []live{{"index-1", "healthy"}}, map[string]uint64{"index": 2}, 9},
		{"server_crash", []live{{"api-2", "healthy"}, {"index-3", "healthy"}}, map[string]uint64{"index": 3, "api": 2}, 20},
		{"interleaved", nil, map[string]uint64{"index": 2, "api_users": 1}, 22},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "replay", c.file+".jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			g, err := ReplayJSONL(f, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			var got []live
			for _, in := range g.Live() {
				got = append(got, live{in.Instance, in.State})
				if in.PID == 0 || in.Port == 0 || in.StartTicks == 0 || in.Route == "" {
					t.Errorf("%s lacks pid/port/start ticks/route: %+v", in.Instance, in)
				}
			}
			if !reflect.DeepEqual(got, c.live) {
				t.Errorf("live = %v, want %v", got, c.live)
			}
			if !reflect.DeepEqual(g.MaxInstance, c.max) {
				t.Errorf("max instance = %v, want %v", g.MaxInstance, c.max)
			}
			if g.LastSeq != c.lastSeq {
				t.Errorf("last seq = %d, want %d", g.LastSeq, c.lastSeq)
			}
			for name, in := range g.Instances {
				if n, ok := instanceNumber(in.Worker, name); !ok || n > g.MaxInstance[in.Worker] {
					t.Errorf("%s (worker %s) not counted in max instance %v", name, in.Worker, g.MaxInstance)
				}
			}
		})
	}
}

func TestReplayUntil(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "replay", "binary_changed.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	s := openT(t, dbPath(t), Options{})
	loadJSONL(t, s, in)
	recs, err := s.Records(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	// As of the record that made index-2 healthy, both instances serve.
	var at time.Time
	for _, r := range recs {
		if r.Instance == "index-2" && r.To == "healthy" {
			at = r.Time
		}
	}
	if at.IsZero() {
		t.Fatal("binary_changed.jsonl lost index-2's health_ok record")
	}
	fromStore, err := Replay(s, at)
	if err != nil {
		t.Fatal(err)
	}
	fromLines, err := ReplayJSONL(bytes.NewReader(in), at)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromStore, fromLines) {
		t.Fatalf("Replay and ReplayJSONL differ at %v:\n%s\n%s", at, goldenJSON(fromStore, nil), goldenJSON(fromLines, nil))
	}
	var live []string
	for _, in := range fromStore.Live() {
		live = append(live, in.Instance+"="+in.State)
	}
	if want := []string{"index-1=healthy", "index-2=healthy"}; !reflect.DeepEqual(live, want) {
		t.Fatalf("live at %v = %v, want %v", at, live, want)
	}
	if !fromStore.LastTime.Equal(at) {
		t.Fatalf("last time = %v, want %v", fromStore.LastTime, at)
	}
}

func TestApplyRefuses(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 30, 0, 0, time.UTC)
	rec := func(seq uint64, inst, from, to string) Record {
		w, _, _ := strings.Cut(inst, "-")
		return Record{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Worker: w, Instance: inst, From: from, To: to, Event: "e"}
	}
	base := []Record{
		rec(1, "index-1", "", "starting"),
		rec(2, "index-1", "starting", "healthy"),
		rec(3, "api-1", "", "starting"),
		rec(4, "api-1", "starting", "stopped"),
	}
	noWorker := rec(5, "index-2", "", "starting")
	noWorker.Worker = ""
	otherWorker := rec(5, "index-1", "healthy", "draining")
	otherWorker.Worker = "api"
	cases := []struct {
		r    Record
		want string
	}{
		{rec(4, "index-1", "healthy", "draining"), "record 4: seq does not follow 4"},
		{rec(0, "", "", ""), "record 0: seq does not follow 4"},
		{rec(5, "", "healthy", ""), `record 5: from "healthy" without to`},
		{rec(5, "", "", "starting"), "record 5: transition to starting without instance"},
		{noWorker, "record 5: transition of index-2 without worker"},
		{rec(5, "index-1", "healthy", "running"), `record 5: index-1: unknown state "running"`},
		{rec(5, "index-2", "", "healthy"), `record 5: index-2: first record goes from "" to "healthy", want from "" to starting`},
		{rec(5, "index-2", "starting", "healthy"), `record 5: index-2: first record goes from "starting" to "healthy", want from "" to starting`},
		{rec(5, "index-1", "starting", "healthy"), `record 5: index-1: from "starting", but it is healthy`},
		{rec(5, "index-1", "", "starting"), "record 5: index-1 starts again; instance names are never reused"},
		{rec(5, "api-1", "stopped", "starting"), "record 5: api-1 is already stopped"},
		{otherWorker, "record 5: index-1 belongs to worker index, not api"},
	}
	for _, c := range cases {
		g := NewRegistry()
		for _, r := range base {
			if err := g.Apply(r); err != nil {
				t.Fatal(err)
			}
		}
		before := goldenJSON(g, nil)
		err := g.Apply(c.r)
		if err == nil || err.Error() != c.want {
			t.Errorf("%+v:\ngot  %v\nwant %s", c.r, err, c.want)
		}
		if after := goldenJSON(g, nil); !bytes.Equal(before, after) {
			t.Errorf("%+v: refused record changed the registry:\n%s", c.r, after)
		}
	}
}

func TestApplyTracksProcess(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 30, 0, 0, time.UTC)
	g := NewRegistry()
	steps := []Record{
		{Seq: 3, Time: t0, Worker: "api_users", Instance: "api_users-7", To: "starting", Event: "start", Reason: "startup", Port: 9001, Route: "/api/users"},
		{Seq: 4, Time: t0.Add(time.Second), Worker: "api_users", Instance: "api_users-7", From: "starting", To: "starting", Event: "spawned", Reason: "startup", PID: 77, StartTicks: 123},
		// A server-level record between: only seq and time move.
		{Seq: 6, Time: t0.Add(2 * time.Second), Event: "config_reload", Reason: "config_changed"},
		{Seq: 9, Time: t0.Add(3 * time.Second), Worker: "api_users", Instance: "api_users-7", From: "starting", To: "healthy", Event: "health_ok", Reason: "startup", PID: 77},
	}
	for _, r := range steps {
		if err := g.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	want := &Instance{
		Instance: "api_users-7", Worker: "api_users", Route: "/api/users", State: "healthy", Reason: "startup",
		PID: 77, Port: 9001, StartTicks: 123, Since: t0.Add(3 * time.Second), Seq: 9,
	}
	if got := g.Instances["api_users-7"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if g.LastSeq != 9 || !g.LastTime.Equal(t0.Add(3*time.Second)) || g.MaxInstance["api_users"] != 7 {
		t.Fatalf("registry: last seq %d, last time %v, max %v", g.LastSeq, g.LastTime, g.MaxInstance)
	}
	// Since stays at the state change when a same-state record arrives.
	if err := g.Apply(Record{Seq: 10, Time: t0.Add(time.Hour), Worker: "api_users", Instance: "api_users-7", From: "healthy", To: "healthy", Event: "adopted", Reason: "server_upgrade", PID: 78}); err != nil {
		t.Fatal(err)
	}
	in := g.Instances["api_users-7"]
	if !in.Since.Equal(t0.Add(3*time.Second)) || in.PID != 78 || in.Reason != "server_upgrade" || in.Seq != 10 {
		t.Fatalf("after same-state record: %+v", in)
	}
}

func TestLiveOrder(t *testing.T) {
	g := NewRegistry()
	seq := uint64(0)
	for _, name := range []string{"index-10", "api-2", "index-9", "api-1", "index-2", "zeta-1"} {
		seq++
		w, _, _ := strings.Cut(name, "-")
		if err := g.Apply(Record{Seq: seq, Time: time.Unix(int64(seq), 0), Worker: w, Instance: name, To: "starting", Event: "start"}); err != nil {
			t.Fatal(err)
		}
	}
	seq++
	if err := g.Apply(Record{Seq: seq, Worker: "zeta", Instance: "zeta-1", From: "starting", To: "stopped", Event: "stop"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range g.Live() {
		got = append(got, in.Instance)
		in.State = "tampered"
	}
	if want := []string{"api-1", "api-2", "index-2", "index-9", "index-10"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("live = %v, want %v", got, want)
	}
	if g.Instances["index-2"].State != "starting" {
		t.Fatal("Live returned the registry's own instances, not copies")
	}
	if g.MaxInstance["index"] != 10 || g.MaxInstance["zeta"] != 1 {
		t.Fatalf("max instance = %v", g.MaxInstance)
	}
}

func TestReplayJSONLLines(t *testing.T) {
	good := `{"seq":1,"time":"2026-11-24T10:30:00Z","event":"server_start"}`
	cases := []struct{ in, want string }{
		{"", ""},
		{good + "\r\n\n  \n", ""},
		{good + "\n" + good + "\n", "line 2: record 1: seq does not follow 1"},
		{"\n" + good + "\n{\"seq\":2,\"time\":\"2026-11-24T10:30:01Z\",\"to\":\"star", "line 3: unexpected end of JSON input"},
		{good + "\n" + strings.Repeat("x", maxLine+1), fmt.Sprintf("line 2: longer than %d bytes", maxLine)},
	}
	for _, c := range cases {
		_, err := ReplayJSONL(strings.NewReader(c.in), time.Time{})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%.60q: got %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzReplayJSONL(f *testing.F) {
	for _, file := range replayFiles(f) {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ReplayJSONL(bytes.NewReader(b), time.Time{})
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error is not one line naming the line: %q", err)
			}
			return
		}
		for name, in := range g.Instances {
			if name != in.Instance || !sm.ValidState(in.State) || in.Seq == 0 || in.Seq > g.LastSeq || in.Worker == "" {
				t.Fatalf("inconsistent instance %s: %+v (last seq %d)", name, in, g.LastSeq)
			}
			if n, ok := instanceNumber(in.Worker, name); ok && n > g.MaxInstance[in.Worker] {
				t.Fatalf("%s not counted in max instance %v", name, g.MaxInstance)
			}
		}
		for _, in := range g.Live() {
			if in.State == sm.Stopped {
				t.Fatalf("live instance %s is stopped", in.Instance)
			}
		}
	})
}

// The server's own state at T follows its start and stop records
// (CONTRACT.md §8: status --at T shows running and pid as they were).
func TestReplayServerState(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	path := dbPath(t)
	s := openT(t, path, Options{})
	for i, r := range []Record{
		{Event: "server_start", Detail: "pid 100, mode prod, version v1, listen 127.0.0.1:8080"},
		{Worker: "index", Event: "build_ok"},
		{Event: "server_stop", Reason: "shutdown"},
		{Event: "server_start", Detail: "pid 200, mode dev, version v2, listen 127.0.0.1:9090"},
	} {
		r.Time = t0.Add(time.Duration(i+1) * time.Minute)
		if err := s.Append(&r); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		at   time.Duration
		want Server
	}{
		{30 * time.Second, Server{}},
		{90 * time.Second, Server{Running: true, PID: 100, Mode: "prod", Listen: "127.0.0.1:8080", Since: t0.Add(time.Minute)}},
		{150 * time.Second, Server{Running: true, PID: 100, Mode: "prod", Listen: "127.0.0.1:8080", Since: t0.Add(time.Minute)}},
		{210 * time.Second, Server{Since: t0.Add(3 * time.Minute)}},
		{300 * time.Second, Server{Running: true, PID: 200, Mode: "dev", Listen: "127.0.0.1:9090", Since: t0.Add(4 * time.Minute)}},
	} {
		g, err := Replay(s, t0.Add(c.at))
		if err != nil {
			t.Fatal(err)
		}
		if g.Server != c.want {
			t.Errorf("at +%s: got %+v, want %+v", c.at, g.Server, c.want)
		}
	}
}
