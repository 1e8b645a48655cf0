package store

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// benchRecords returns n records shaped like a real history: transitions of a
// few workers' instances with the occasional server-level record.
func benchRecords(n int) []Record {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	workers := []string{"index", "api_users", "api_orders", "admin"}
	steps := [][2]string{{"", "starting"}, {"starting", "starting"}, {"starting", "healthy"}, {"healthy", "draining"}, {"draining", "stopped"}}
	events := []string{"start", "spawned", "health_ok", "drain", "exited"}
	recs := make([]Record, n)
	for i := range recs {
		w := workers[i%len(workers)]
		step := (i / len(workers)) % len(steps)
		r := Record{
			Time:     t0.Add(time.Duration(i) * 37 * time.Millisecond),
			Worker:   w,
			Instance: fmt.Sprintf("%s-%d", w, i/(len(workers)*len(steps))+1),
			From:     steps[step][0],
			To:       steps[step][1],
			Event:    events[step],
			Reason:   "binary_changed",
			PID:      40000 + i,
			Port:     9000 + i%1000,
		}
		if step == 0 {
			r.Route = "/" + w
		}
		if step > 0 {
			r.StartTicks = uint64(8800000 + i)
		}
		if step == 4 {
			r.ExitCode = intp(0)
		}
		if i%97 == 0 {
			r = Record{Time: r.Time, Event: "config_reload", Reason: "config_changed", Detail: "config/server.yaml changed"}
		}
		recs[i] = r
	}
	return recs
}

// BenchmarkScan reads a 100k record log; ns/record is the number to watch
// (history over a million records should stay under a second).
func BenchmarkScan(b *testing.B) {
	s := openT(b, dbPath(b), Options{})
	const n = 100_000
	fill(b, s, benchRecords(n))
	for _, f := range []Filter{{}, {Worker: "index"}, {Limit: 1000}} {
		b.Run(fmt.Sprintf("worker=%q,limit=%d", f.Worker, f.Limit), func(b *testing.B) {
			b.ReportAllocs()
			examined := n
			if f.Limit > 0 {
				examined = f.Limit
			}
			for b.Loop() {
				count := 0
				if err := s.Scan(f, func(Record) error { count++; return nil }); err != nil {
					b.Fatal(err)
				}
				if count == 0 {
					b.Fatal("nothing scanned")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(examined), "ns/record")
		})
	}
}

// BenchmarkAppend is one fsync'd transaction per record.
func BenchmarkAppend(b *testing.B) {
	s := openT(b, dbPath(b), Options{})
	recs := benchRecords(1)
	for b.Loop() {
		r := recs[0]
		r.Time = time.Time{}
		if err := s.Append(&r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRecord compares the decoder with plain encoding/json.
func BenchmarkDecodeRecord(b *testing.B) {
	recs := benchRecords(64)
	vals := make([][]byte, len(recs))
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
		v, err := json.Marshal(recs[i])
		if err != nil {
			b.Fatal(err)
		}
		vals[i] = v
	}
	b.Run("store", func(b *testing.B) {
		b.ReportAllocs()
		d := newScanDecoder()
		var r Record
		i := 0
		for b.Loop() {
			if err := d.decode(vals[i%len(vals)], &r); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var r Record
			if err := json.Unmarshal(vals[i%len(vals)], &r); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
