package store

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func intp(n int) *int { return &n }

func TestDecodeRecordRoundTrip(t *testing.T) {
	recs := []Record{
		{Seq: 1, Time: time.Date(2026, 11, 24, 10, 30, 0, 123456789, time.UTC), Event: "server_start"},
		{
			Seq: 12, Time: time.Date(2026, 11, 24, 10, 30, 0, 0, time.UTC),
			Worker: "index", Instance: "index-4", From: "starting", To: "healthy",
			Event: "health_ok", Reason: "binary_changed", PID: 4242, Port: 9003, StartTicks: 1 << 40,
			Route: "/",
		},
		{
			Seq: 1<<64 - 1, Time: time.Date(2026, 11, 24, 10, 30, 1, 5, time.UTC),
			Worker: "api_users", Instance: "api_users-9", From: "healthy", To: "stopped",
			Event: "exited", Reason: "crashed", PID: 1<<31 - 1, ExitCode: intp(-1), Signal: "SIGSEGV",
			Detail: "panic: boom \"quoted\" <tag> & ünïcode\n\tgoroutine 1 [running]:\n\x01",
		},
		{Seq: 3, Time: time.Date(2026, 11, 24, 10, 30, 0, 0, time.UTC), Event: "exited", ExitCode: intp(0)},
	}
	for _, want := range recs {
		b, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var r Record
		if !newScanDecoder().fast(b, &r) {
			t.Errorf("fast path declined what json.Marshal wrote: %s", b)
		}
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\ngot  %+v\nwant %+v", b, got, want)
		}
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{``, "unexpected end of JSON input"},
		{`{"seq":17,"time":"2026-11-24T10:30:00Z","worker":"ind`, "unexpected end of JSON input"},
		{`{"seq":17,"time":"2026-11-24T10:30:00Z"} {}`, "invalid character '{' after top-level value"},
		{`{"seq":17,"time":"2026-11-24T10:30:00Z",}`, "invalid character '}' looking for beginning of object key string"},
		{`{"seq":-1,"time":"2026-11-24T10:30:00Z"}`, "json: cannot unmarshal number -1 into Go struct field Record.seq of type uint64"},
		{`{"seq":1.5,"time":"2026-11-24T10:30:00Z"}`, "json: cannot unmarshal number 1.5 into Go struct field Record.seq of type uint64"},
		{`{"seq":18446744073709551616,"time":"2026-11-24T10:30:00Z"}`, "json: cannot unmarshal number 18446744073709551616 into Go struct field Record.seq of type uint64"},
		{`{"seq":17,"time":"yesterday"}`, `parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"`},
		{`{"seq":17,"time":"2026-11-24T10:30:00Z","pid":"7"}`, "json: cannot unmarshal string into Go struct field Record.pid of type int"},
		{`{"seq":17}`, "missing time"},
		{`{"time":"2026-11-24T10:30:00Z"}`, "missing seq"},
		{`{"seq":0,"time":"2026-11-24T10:30:00Z"}`, "missing seq"},
		{`null`, "missing seq"},
		{`[1]`, "json: cannot unmarshal array into Go value of type store.Record"},
	}
	for _, c := range cases {
		_, err := DecodeRecord([]byte(c.in))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s:\ngot  %v\nwant %s", c.in, err, c.want)
		}
	}
}

// TestDecodeRecordAgreesWithEncodingJSON covers the inputs the fast path must
// either get exactly right or decline.
func TestDecodeRecordAgreesWithEncodingJSON(t *testing.T) {
	for _, in := range decodeSeeds {
		checkDecode(t, []byte(in))
	}
}

// decodeSeeds are the corner cases the fast path could get wrong; they also
// seed FuzzDecodeRecord.
var decodeSeeds = []string{
	`{"seq":12,"time":"2026-11-24T10:30:00.123456789Z","worker":"index","instance":"index-4","from":"starting","to":"healthy","event":"health_ok","reason":"binary_changed","pid":4242,"port":9003}`,
	` { "seq" : 1 , "time" : "2026-11-24T10:30:00+01:00" } ` + "\n",
	`{"seq":1,"time":"2026-11-24T10:30:00Z","SEQ":2}`,                          // case-folded key
	`{"seq":1,"time":"2026-11-24T10:30:00Z","seq":2}`,                          // duplicate key
	`{"seq":1,"time":"2026-11-24T10:30:00Z","exit_code":3,"exit_code":null}`,   // null resets a pointer
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":null,"time":null}`,        // null leaves others
	`{"seq":1,"time":"2026-11-24T10:30:00Z","extra":{"a":[1,2,{"b":null}]}}`,   // unknown field
	`{"seq":1,"time":"2026-11-24T10:30:00Z","detail":"a\u0000b\ud83d\ude00c"}`, // escapes
	`{"seq":1,"time":"2026-11-24T10:30:00Z","detail":"\ud83d"}`,                // lone surrogate
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":"\xff\xfe"}`,              // invalid UTF-8
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":"ünï"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":"a` + "\t" + `b"}`, // raw control character
	`{"seq":1,"time":"2026-11-24T10:30:00Z","w\u006frker":"index"}`,     // escaped key
	`{"seq":01,"time":"2026-11-24T10:30:00Z"}`,
	`{"seq":1e3,"time":"2026-11-24T10:30:00Z"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","pid":-0}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","pid":-9223372036854775808}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","pid":9223372036854775808}`,
	`{"seq":18446744073709551615,"time":"2026-11-24T10:30:00Z"}`,
	`{"seq":1,"time":"\u0032026-11-24T10:30:00Z"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00.Z"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","time":"2026-11-24T10:30:01Z"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":"x\"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":"x\\"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":"x"}x`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":nul}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z","worker":true}`,
	`{"seq":true,"time":"2026-11-24T10:30:00Z"}`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z"`,
	`{"seq":1,"time":"2026-11-24T10:30:00Z",`,
	`{"seq":1,,"time":"2026-11-24T10:30:00Z"}`,
	`{}`,
	`{"seq":1 "time":"2026-11-24T10:30:00Z"}`,
	`"seq"`,
	"\xef\xbb\xbf{}",
}

// checkDecode asserts DecodeRecord's contract on one input: it agrees with
// encoding/json plus the seq/time check, and what it accepts survives a round
// trip.
func checkDecode(t *testing.T, b []byte) {
	t.Helper()
	var ref Record
	refErr := json.Unmarshal(b, &ref)

	var fast Record
	if newScanDecoder().fast(b, &fast) {
		if refErr != nil {
			t.Fatalf("%q: fast path accepted what encoding/json refuses: %v", b, refErr)
		}
		if !reflect.DeepEqual(fast, ref) {
			t.Fatalf("%q: fast path\n%+v\nencoding/json\n%+v", b, fast, ref)
		}
	}

	got, err := DecodeRecord(b)
	wantOK := refErr == nil && ref.Seq != 0 && !ref.Time.IsZero()
	if (err == nil) != wantOK {
		t.Fatalf("%q: DecodeRecord error %v; encoding/json error %v, record %+v", b, err, refErr, ref)
	}
	if err != nil {
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("%q: error is not one line: %q", b, err)
		}
		return
	}
	if !reflect.DeepEqual(got, ref) {
		t.Fatalf("%q: DecodeRecord\n%+v\nencoding/json\n%+v", b, got, ref)
	}
	again, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("%q: re-encoding %+v: %v", b, got, err)
	}
	back, err := DecodeRecord(again)
	if err != nil {
		t.Fatalf("%q: re-encoded as %s, which does not decode: %v", b, again, err)
	}
	if !back.Time.Equal(got.Time) {
		t.Fatalf("%q: time %v came back as %v", b, got.Time, back.Time)
	}
	back.Time, got.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(back, got) {
		t.Fatalf("%q: round trip\n%+v\nbecame\n%+v", b, got, back)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}
