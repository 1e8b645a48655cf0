package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mevdschee/tqserver/internal/layout"
	sm "github.com/mevdschee/tqserver/internal/statemachine"
	"github.com/mevdschee/tqserver/internal/store"
)

// genHistory writes n records to root/var/tqserver.db. store.Open creates the
// file with its schema key and buckets; the records are then added in large
// transactions without fsync, in the layout store.Append writes (bucket
// "log", big-endian uint64 key from NextSequence, JSON of store.Record with
// Seq set). Appending them one by one through store.Append (one fsync'd
// transaction each) would take hours.
func genHistory(root string, n int) (string, error) {
	path := layout.New(root, layout.Options{}).DB()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		return "", err
	}
	if err := st.Close(); err != nil {
		return "", err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return "", err
	}
	defer db.Close()

	// A plausible mix: workers cycling through the lifecycle, as a busy
	// server's log would hold after a long time.
	workers := []string{"index", "api_users", "api_orders", "admin", "blog", "shop_cart", "search", "auth"}
	steps := []struct{ from, to, event, reason string }{
		{"", sm.Starting, sm.Start, sm.ReasonBinaryChanged},
		{sm.Starting, sm.Healthy, sm.HealthOK, sm.ReasonBinaryChanged},
		{sm.Healthy, sm.Draining, sm.Drain, sm.ReasonReplaced},
		{sm.Draining, sm.Stopped, sm.Exited, sm.ReasonReplaced},
	}
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const perTx = 50000
	for done := 0; done < n; {
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("log"))
			if b == nil {
				return fmt.Errorf("%s: log bucket missing", path)
			}
			for i := 0; i < perTx && done < n; i++ {
				seq, err := b.NextSequence()
				if err != nil {
					return err
				}
				k := done / len(steps) // one instance per 4 records
				w := workers[k%len(workers)]
				s := steps[done%len(steps)]
				r := store.Record{
					Seq:      seq,
					Time:     t.Add(time.Duration(done) * 37 * time.Millisecond),
					Worker:   w,
					Instance: fmt.Sprintf("%s-%d", w, k/len(workers)+1),
					From:     s.from,
					To:       s.to,
					Event:    s.event,
					Reason:   s.reason,
				}
				if s.to != sm.Starting {
					r.PID = 10000 + k%50000
					r.Port = 20000 + k%10000
					r.StartTicks = uint64(123456 + k)
				} else {
					r.Route = "/" + w
				}
				if s.to == sm.Stopped {
					code := 0
					r.ExitCode = &code
				}
				v, err := json.Marshal(&r)
				if err != nil {
					return err
				}
				if err := b.Put(binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq), v); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("generate history: %w", err)
		}
	}
	if err := db.Sync(); err != nil {
		return "", err
	}
	return path, nil
}

// timeHistory runs `tqserver history --json` over root (no server running)
// with its output to /dev/null, runs times, and returns the median wall time.
func timeHistory(bin, root string, runs int) (time.Duration, error) {
	var ds []time.Duration
	for range runs {
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, bin, "history", "--json", "--root", root)
		cmd.Stdout = devnull
		var stderr limitedBuf
		cmd.Stderr = &stderr
		t0 := time.Now()
		err = cmd.Run()
		d := time.Since(t0)
		cancel()
		devnull.Close()
		if err != nil {
			return 0, fmt.Errorf("tqserver history: %w: %s", err, stderr.String())
		}
		ds = append(ds, d)
	}
	return median(ds), nil
}

type limitedBuf struct{ b []byte }

func (l *limitedBuf) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuf) String() string { return string(l.b) }
