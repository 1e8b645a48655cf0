package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The report: targets, the printed table and small formatting helpers.

func targets(r *report) []target {
	var ts []target
	add := func(name, value string, met *bool) { ts = append(ts, target{name, value, met}) }
	b := func(v bool) *bool { return &v }
	if r.ProxyOverNginx != nil {
		add("proxy/nginx >= 1.0", fmt.Sprintf("%.2f", *r.ProxyOverNginx), b(*r.ProxyOverNginx >= 1.0))
	} else {
		add("proxy/nginx >= 1.0", "not measured", nil)
	}
	if r.RestartFailed != nil {
		add("failed requests during restarts = 0", fmt.Sprint(*r.RestartFailed), b(*r.RestartFailed == 0))
	} else {
		add("failed requests during restarts = 0", "not measured", nil)
	}
	if r.RestartP99OverSteady != nil {
		add("restart p99 <= 2x steady p99", fmt.Sprintf("%.2fx", *r.RestartP99OverSteady), b(*r.RestartP99OverSteady <= 2))
	} else {
		add("restart p99 <= 2x steady p99", "not measured", nil)
	}
	if r.RSS20 != nil && r.RSSWorkersSmall == 20 {
		add("server RSS with 20 workers <= 30 MiB", fmt.Sprintf("%.1f MiB", *r.RSS20), b(*r.RSS20 <= 30))
	} else {
		add("server RSS with 20 workers <= 30 MiB", "not measured", nil)
	}
	if r.SighupMs1000 != nil && r.SighupWorkers == 1000 {
		add("SIGHUP check over 1,000 workers <= 20 ms", fmt.Sprintf("%.2f ms", *r.SighupMs1000), b(*r.SighupMs1000 <= 20))
	} else {
		add("SIGHUP check over 1,000 workers <= 20 ms", "not measured", nil)
	}
	if r.HistoryMs != nil && r.HistoryRecords == 1000000 {
		add("history over 1M records <= 1 s", fmt.Sprintf("%.0f ms", *r.HistoryMs), b(*r.HistoryMs <= 1000))
	} else {
		add("history over 1M records <= 1 s", "not measured", nil)
	}
	return ts
}

func printTable(w io.Writer, r *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	f := func(p *float64, format string) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf(format, *p)
	}
	fmt.Fprintf(tw, "tqbench: %d rounds x %s per phase, %d connections, %s, %d CPUs, nginx %s, load average %s -> %s\n\n",
		r.Rounds, time.Duration(r.PhaseSeconds*float64(time.Second)), r.Conns, r.GoVersion, r.CPUs, orDash(r.NginxVersion), r.LoadAvgStart, r.LoadAvgEnd)
	fmt.Fprintln(tw, "target\treq/s\tp50 ms\tp99 ms\t")
	fmt.Fprintf(tw, "direct\t%.0f\t%.3f\t%.3f\t\n", r.DirectRPS, r.DirectP50, r.DirectP99)
	fmt.Fprintf(tw, "proxy\t%.0f\t%.3f\t%.3f\t\n", r.ProxyRPS, r.ProxyP50, r.ProxyP99)
	fmt.Fprintf(tw, "nginx\t%s\t%s\t%s\t\n", f(r.NginxRPS, "%.0f"), f(r.NginxP50, "%.3f"), f(r.NginxP99, "%.3f"))
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "proxy/direct\t%.2f\n", r.ProxyOverDirect)
	fmt.Fprintf(tw, "proxy/nginx\t%s\n", f(r.ProxyOverNginx, "%.2f"))
	if r.RestartRequests != nil {
		fmt.Fprintf(tw, "restarts under load\t%d restarts, %d requests, %d failed\n", r.Restarts, *r.RestartRequests, *r.RestartFailed)
		fmt.Fprintf(tw, "p99 steady / restarting\t%.3f ms / %.3f ms (%.2fx)\n", *r.SteadyP99, *r.RestartP99, derefOr(r.RestartP99OverSteady))
		if r.BeforeSwapP99 != nil {
			fmt.Fprintf(tw, "p99 before / after swap\t%.3f ms (%d requests) / %.3f ms (%d requests)\n", *r.BeforeSwapP99, *r.BeforeSwapRequests, *r.AfterSwapP99, *r.AfterSwapRequests)
		}
	}
	if r.Instances > 0 {
		fmt.Fprintf(tw, "CPU-bound worker (go_max_procs 1, /work?n=%d)\t1 instance %.0f req/s (p99 %.1f ms), %d instances %.0f req/s (p99 %.1f ms, %.2fx), autoscaled 1..%d %.0f req/s (p99 %.1f ms, %.2fx; %s instances at the end, scaled up in %s ms); %d failed\n",
			r.WorkN, r.WorkRPS1, r.WorkP99Ms1, r.Instances, r.WorkRPSN, r.WorkP99MsN, derefOr(r.WorkNOver1), r.Instances, r.WorkRPSAuto, r.WorkP99MsAuto, derefOr(r.WorkAutoOver1),
			intOrDash(r.AutoInstances), f(r.AutoScaleUpMs, "%.0f"), r.WorkFailed)
	}
	fmt.Fprintf(tw, "server RSS, %d workers\t%s MiB\n", r.RSSWorkersSmall, f(r.RSS20, "%.1f"))
	fmt.Fprintf(tw, "server RSS, %d workers\t%s MiB\n", r.RSSWorkersLarge, f(r.RSS200, "%.1f"))
	fmt.Fprintf(tw, "no-op reload, %d workers\t%s ms (admin socket), %s ms (check in server log), %s ms (tqserver reload)\n", r.RSSWorkersLarge, f(r.SighupMs200, "%.2f"), f(r.SighupCheckMs200, "%.2f"), f(r.ReloadCmdMs200, "%.1f"))
	fmt.Fprintf(tw, "no-op reload, %d workers\t%s ms (admin socket), %s ms (check in server log), %s ms (tqserver reload); server RSS %s MiB\n", r.SighupWorkers, f(r.SighupMs1000, "%.2f"), f(r.SighupCheckMs1000, "%.2f"), f(r.ReloadCmdMs1000, "%.1f"), f(r.RSS1000, "%.1f"))
	fmt.Fprintf(tw, "history --json, %d records\t%s ms, log %s MiB\n", r.HistoryRecords, f(r.HistoryMs, "%.0f"), f(r.HistoryDBMiB, "%.1f"))
	fmt.Fprintln(tw)
	for _, t := range r.Targets {
		mark := "not measured"
		if t.Met != nil {
			mark = map[bool]string{true: "met", false: "NOT met"}[*t.Met]
		}
		fmt.Fprintf(tw, "target: %s\t%s\t%s\n", t.Name, t.Value, mark)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note: %s\n", n)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func intOrDash(p *int) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

func derefOr(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func numCPU() int { return runtime.NumCPU() }

// loadAvg is the 1, 5 and 15 minute load average: on a shared machine it
// says how much the figures were disturbed.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
