//go:build faults

// Package faults proves that the sidecar keeps working, and loses nothing it
// promises to keep, under the faults operators meet: a misbehaving Sentry,
// a misbehaving API, misbehaving clients, shutdown under load, hostile
// input (issue 6). Every scenario runs the real binary as a subprocess on
// loopback, asserts what it promises, is bounded in time and kills what it
// started.
//
// Run with `go test -tags faults -count=1 -timeout 30m -v ./faults/...`.
// TestMain builds the binary once (sidecarBin); at the end it prints one
// table of the figures every scenario recorded with recordRow.
package faults

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"go.uber.org/goleak"

	"github.com/sentry-sidecar/sentry-sidecar/internal/proctest"
)

var (
	repoRoot   string // the module root
	sidecarBin string // the sidecar binary, built once by TestMain
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "sentry-sidecar-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, took, err := proctest.BuildSidecar(repoRoot, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	sidecarBin = bin
	fmt.Printf("faults: built the sidecar in %s\n", took.Round(time.Millisecond))

	code := m.Run()
	printRows(os.Stdout)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "faults: leaked goroutines:", err)
			code = 1
		}
	}
	return code
}

// faultRow is one line of the table printed at the end of the suite. Zero
// values print as "-": leave out what a scenario does not measure.
type faultRow struct {
	Scenario string
	// Requests is how many requests the scenario sent through the sidecar;
	// Errors how many of them did not get their correct answer.
	Requests, Errors int
	// P99Healthy is the p99 latency of the same load with a healthy
	// dependency, P99Faulted with the fault.
	P99Healthy, P99Faulted time.Duration
	// PeakRSS is the sidecar process's largest VmRSS sampled, in bytes.
	PeakRSS int64
	// GoroutinesBefore and GoroutinesAfter are the sidecar's go_goroutines
	// before the fault and after it was over.
	GoroutinesBefore, GoroutinesAfter int
	// EventsExpected and EventsDelivered count Sentry events: the ones the
	// scenario caused and the ones the Sentry double accepted.
	EventsExpected, EventsDelivered int
	// Note is a short remark (e.g. which drops the metrics counted).
	Note string
}

var (
	rowsMu sync.Mutex
	rows   []faultRow
)

// recordRow adds a row to the table TestMain prints after the last test.
// It is safe for concurrent use.
func recordRow(r faultRow) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	rows = append(rows, r)
}

// printRows writes the table, in the order the rows were recorded.
func printRows(w io.Writer) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return
	}
	dash := func(s string, zero bool) string {
		if zero {
			return "-"
		}
		return s
	}
	dur := func(d time.Duration) string {
		return dash(d.Round(10*time.Microsecond).String(), d == 0)
	}
	num := func(n int) string { return dash(strconv.Itoa(n), n == 0) }
	fmt.Fprintln(w, "\nfaults: figures")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\trequests\terrors\tp99 healthy\tp99 faulted\tpeak RSS\tgoroutines before/after\tevents expected/delivered\tnote")
	for _, r := range rows {
		rss := dash(fmt.Sprintf("%.1f MiB", float64(r.PeakRSS)/(1<<20)), r.PeakRSS == 0)
		gor := dash(fmt.Sprintf("%d/%d", r.GoroutinesBefore, r.GoroutinesAfter), r.GoroutinesBefore == 0 && r.GoroutinesAfter == 0)
		ev := dash(fmt.Sprintf("%d/%d", r.EventsExpected, r.EventsDelivered), r.EventsExpected == 0 && r.EventsDelivered == 0)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Scenario, num(r.Requests), r.Errors, dur(r.P99Healthy), dur(r.P99Faulted), rss, gor, ev, r.Note)
	}
	tw.Flush()
}

// sfProcess is a child in a process group of its own (internal/proctest).
type sfProcess = proctest.Process

// sfSidecar is the built binary, running.
type sfSidecar struct {
	*sfProcess
	url, admin string
}

// sfStartSidecar writes config to a temp file, runs the binary with it and
// reads the addresses it bound from its JSON "listening" log line (the
// config must say log.format: json and listen on 127.0.0.1:0). On failure
// of tb it logs the sidecar's output.
func sfStartSidecar(tb testing.TB, config string) *sfSidecar {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := proctest.Start(tb, "sidecar", dir, proctest.Env(dir, nil), sidecarBin, "run", "-config", path)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("sidecar output (last 8 KiB):\n%s", sfTail(p.Out.String(), 8<<10))
		}
	})
	addr, admin := proctest.WaitListening(tb, p)
	return &sfSidecar{sfProcess: p, url: "http://" + addr, admin: "http://" + admin}
}

// sfTail is the last n bytes of s.
func sfTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// sfAdminClient talks to the admin listener: no keep-alive, so a scrape
// leaves no connection (and no server goroutine) behind to count.
var sfAdminClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// sfMetrics scrapes the admin /metrics into "name{labels}" → value.
func sfMetrics(tb testing.TB, admin string) map[string]float64 {
	tb.Helper()
	res, err := sfAdminClient.Get(admin + "/metrics")
	if err != nil {
		tb.Fatalf("scrape %s/metrics: %v", admin, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		tb.Fatalf("scrape %s/metrics: %d %v", admin, res.StatusCode, err)
	}
	return sfParseMetrics(string(b))
}

// sfParseMetrics reads Prometheus' text format: one "series value" a line.
func sfParseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// sfRSS is the VmRSS of pid in bytes, or 0 when it cannot be read (the
// process is gone).
func sfRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// sfRSSSampler samples the VmRSS of pid every 50 ms until stop is called,
// which returns the peak.
func sfRSSSampler(pid int) (stop func() int64) {
	var peak int64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, sfRSS(pid))
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(quit)
		<-done
		return peak
	}
}
