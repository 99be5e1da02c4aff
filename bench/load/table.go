package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// printTable prints one Markdown table of every case and proxy: medians
// over the rounds, except peak RSS (the highest), and delivery and errors
// (summed). ×base is the median of the ratios taken within each round.
func printTable(w io.Writer, o options, run []testCase, results map[string][][]result) {
	fmt.Fprintf(w, "%s, %s, %s, %s; wrk -t%d -c%d, %v × %d rounds; wrk on CPUs %q, servers on %q; traces_sample_rate %g\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.Version(), wrkVersion(o.wrk),
		o.threads, o.conns, o.duration, o.rounds, o.loadCPUs, o.serverCPUs, o.traces)
	fmt.Fprintln(w, "| case | proxy | req/s | × base | p50 ms | p99 ms | p99 × base | CPU µs/req | CPU × base | peak RSS MiB | delivered/expected | socket errors | wrong status |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range run {
		rounds := results[c.name]
		for k, p := range c.proxies {
			var rps, ratio, p50, p99, p99r, cpu, cpur []float64
			var rss, exp, del, sockErr, wrong int64
			for _, row := range rounds {
				r, b := row[k], row[0]
				rps = append(rps, r.rps())
				ratio = append(ratio, r.rps()/b.rps())
				p50 = append(p50, r.P50US/1e3)
				p99 = append(p99, r.P99US/1e3)
				p99r = append(p99r, r.P99US/b.P99US)
				if r.cpuUS > 0 {
					cpu = append(cpu, r.cpuUS/float64(r.Requests))
					if b.cpuUS > 0 {
						cpur = append(cpur, (r.cpuUS/float64(r.Requests))/(b.cpuUS/float64(b.Requests)))
					}
				}
				rss = max(rss, r.rssKiB)
				exp += r.expected
				del += r.delivered
				sockErr += r.socketErrors()
				wrong += r.wrongStatus(c.status)
			}
			delivery := "–"
			if exp > 0 || del > 0 {
				delivery = fmt.Sprintf("%d/%d (%.1f%%)", del, exp, 100*float64(del)/float64(max(exp, 1)))
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %s | %d | %d |\n",
				c.name, p.name, median(rps), median(ratio), median(p50), median(p99), median(p99r),
				orDash(cpu, "%.1f"), orDash(cpur, "%.2f"), rssText(rss), delivery, sockErr, wrong)
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func orDash(v []float64, format string) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf(format, median(v))
}

func rssText(kib int64) string {
	if kib == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			_, name, _ := strings.Cut(rest, ":")
			return fmt.Sprintf("%d × %s", runtime.NumCPU(), strings.TrimSpace(name))
		}
	}
	return fmt.Sprintf("%d CPUs", runtime.NumCPU())
}

func wrkVersion(wrk string) string {
	out, _ := exec.Command(wrk, "--version").CombinedOutput()
	first, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(first)
	if len(f) >= 2 {
		return "wrk " + f[1]
	}
	return "wrk"
}
