package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mevdschee/tqserver/internal/store"
	"github.com/mevdschee/tqserver/internal/supervisor"
)

// Printer prints history records as JSON lines or an aligned table.
type Printer struct {
	w    io.Writer
	json bool
	enc  *json.Encoder
	tw   *tabwriter.Writer
	rows int
}

// NewPrinter writes to w; asJSON selects JSON lines.
func NewPrinter(w io.Writer, asJSON bool) *Printer {
	p := &Printer{w: w, json: asJSON}
	if asJSON {
		p.enc = json.NewEncoder(w)
	} else {
		p.tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(p.tw, "SEQ\tTIME\tWORKER\tINSTANCE\tTRANSITION\tEVENT\tREASON\tPID\tPORT\tDETAIL")
	}
	return p
}

// Print writes one record.
func (p *Printer) Print(r store.Record) error {
	if p.json {
		return p.enc.Encode(r)
	}
	p.rows++
	tr := "-"
	if r.To != "" {
		from := r.From
		if from == "" {
			from = "·"
		}
		tr = from + "→" + r.To
	}
	detail := r.Detail
	if r.ExitCode != nil {
		detail = strings.TrimSpace(fmt.Sprintf("exit %d %s", *r.ExitCode, detail))
	} else if r.Signal != "" {
		detail = strings.TrimSpace(r.Signal + " " + detail)
	}
	detail = strings.ReplaceAll(detail, "\n", " ⏎ ")
	if len(detail) > 120 {
		detail = detail[:117] + "..."
	}
	_, err := fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq,
		r.Time.Local().Format("2006-01-02 15:04:05.000"), dash(r.Worker), dash(r.Instance), tr,
		r.Event, dash(r.Reason), num(r.PID), num(r.Port), detail)
	return err
}

// Close flushes the table.
func (p *Printer) Close() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func num(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// PrintStatus prints a status as JSON or a short table.
func PrintStatus(w io.Writer, st *supervisor.Status, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	state := "running"
	if !st.Running {
		state = "not running (last recorded state)"
	}
	fmt.Fprintf(w, "server: %s", state)
	if st.PID != 0 && st.Running {
		fmt.Fprintf(w, ", pid %d", st.PID)
	}
	if st.Mode != "" {
		fmt.Fprintf(w, ", mode %s", st.Mode)
	}
	if st.Listen != "" {
		fmt.Fprintf(w, ", listen %s", st.Listen)
	}
	if st.At != nil {
		fmt.Fprintf(w, ", as of %s", st.At.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tROUTE\tINSTANCE\tSTATE\tPID\tPORT\tSINCE")
	for _, ws := range st.Workers {
		if len(ws.Instances) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\n", ws.Name, ws.Route)
		}
		for _, in := range ws.Instances {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ws.Name, ws.Route, in.Instance, in.State,
				num(in.PID), num(in.Port), in.Since.Local().Format("2006-01-02 15:04:05"))
		}
	}
	return tw.Flush()
}
