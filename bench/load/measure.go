package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// options are the command's flags.
type options struct {
	sidecar, wrk         string
	duration             time.Duration
	rounds               int
	conns, threads       int
	traces               float64
	cases                string
	loadCPUs, serverCPUs string
	also                 []proxy // other sidecar builds, in every case
}

// A proxy is one side of a comparison: the baseline (bare proxy, or
// nothing in front of the double for the tunnel) or a sidecar.
type proxy struct {
	name   string
	kind   string  // "bare", "direct" or "sidecar"
	traces float64 // the sidecar's traces_sample_rate; <0: -traces
	binary string  // the sidecar's binary; empty: -sidecar
}

// A testCase is one request shape, repeated by wrk on every connection.
// The first proxy is the baseline of the ratios.
type testCase struct {
	name    string
	method  string
	path    string // on the proxy; "tunnel" cases post to the envelope path
	body    func(env *environment) string
	ctype   string
	proxies []proxy
	status  int // the answer every request must get
}

var cases = []testCase{
	{name: "get1k", method: "GET", path: "/api/v1/apps/wordpress-blog", status: 200,
		proxies: []proxy{{name: "bare", kind: "bare"}, {name: "sidecar", kind: "sidecar", traces: -1},
			{name: "sidecar traces=0", kind: "sidecar", traces: 0}, {name: "sidecar traces=1", kind: "sidecar", traces: 1}}},
	{name: "post64k", method: "POST", path: "/api/v1/apps/wordpress-blog/backup", status: 200, ctype: "application/json",
		body:    func(*environment) string { return `{"pad":"` + strings.Repeat("x", 64<<10-10) + `"}` },
		proxies: []proxy{{name: "bare", kind: "bare"}, {name: "sidecar", kind: "sidecar", traces: -1}}},
	{name: "get1m", method: "GET", path: "/api/v1/files/backup.tar", status: 200,
		proxies: []proxy{{name: "bare", kind: "bare"}, {name: "sidecar", kind: "sidecar", traces: -1}}},
	{name: "all500", method: "GET", path: "/api/v1/apps/broken", status: 500,
		proxies: []proxy{{name: "bare", kind: "bare"}, {name: "sidecar", kind: "sidecar", traces: -1}}},
	{name: "tunnel", method: "POST", path: tunnelPath, status: 200, ctype: "application/x-sentry-envelope",
		body:    func(env *environment) string { return string(envelope(env.placeholderDSN, 10<<10)) },
		proxies: []proxy{{name: "direct", kind: "direct"}, {name: "sidecar", kind: "sidecar", traces: -1}}},
}

func caseNames() []string {
	var names []string
	for _, c := range cases {
		names = append(names, c.name)
	}
	return names
}

const (
	tunnelPath    = "/api/v1/envelope"
	browserProj   = "2"
	serverProject = "1"
)

// environment is what every run shares: the upstream and the double, both
// in this process, and the token the load sends.
type environment struct {
	o              options
	dir            string
	upstream       string
	double         *double
	doubleURL      string
	serverDSN      string
	browserDSN     string
	placeholderDSN string
	token          string
	clkTck         float64
}

// result is one wrk run against one proxy.
type result struct {
	Requests   int64   `json:"requests"`
	DurationUS float64 `json:"duration_us"`
	Connect    int64   `json:"connect"`
	Read       int64   `json:"read"`
	Write      int64   `json:"write"`
	Status     int64   `json:"status"`
	Timeout    int64   `json:"timeout"`
	P50US      float64 `json:"p50_us"`
	P99US      float64 `json:"p99_us"`

	cpuUS     float64 // the proxy's user+system CPU during the load
	rssKiB    int64   // the proxy's peak RSS (VmHWM)
	expected  int64   // envelopes the sidecar had to deliver (or 2xx tunnel posts)
	delivered int64   // items the double counted
	lost      string  // how the rest were dropped, from the sidecar's metrics
}

func (r result) rps() float64 { return float64(r.Requests) / (r.DurationUS / 1e6) }

func (r result) socketErrors() int64 { return r.Connect + r.Read + r.Write + r.Timeout }

// wrongStatus counts the answers that were not the case's status: wrk
// counts statuses of 400 and above.
func (r result) wrongStatus(want int) int64 {
	if want < 400 {
		return r.Status
	}
	return r.Requests - r.Status
}

func measure(ctx context.Context, o options, stdout, stderr io.Writer) error {
	selected := map[string]bool{}
	for _, n := range strings.Split(o.cases, ",") {
		selected[strings.TrimSpace(n)] = true
	}
	var run []testCase
	for _, c := range cases {
		if selected[c.name] {
			c.proxies = append(slices.Clone(c.proxies), o.also...)
			run = append(run, c)
			delete(selected, c.name)
		}
	}
	for n := range selected {
		return fmt.Errorf("unknown case %q (have %s)", n, strings.Join(caseNames(), ", "))
	}
	if _, err := exec.LookPath(o.wrk); err != nil {
		return fmt.Errorf("wrk not found (Debian: apt-get install wrk; scripts/bench.sh installs it): %w", err)
	}
	if _, err := os.Stat(o.sidecar); err != nil {
		return fmt.Errorf("sidecar binary: %w (go build -o bin/sentry-sidecar ./cmd/sentry-sidecar)", err)
	}
	if o.serverCPUs != "" {
		if err := pin(o.serverCPUs, os.Getpid(), true); err != nil {
			return err
		}
	}
	env, err := newEnvironment(o)
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.dir)

	fmt.Fprintf(stderr, "load: %d cases × %d rounds × %v per proxy; wrk -t%d -c%d on CPUs %q, servers on %q\n",
		len(run), o.rounds, o.duration, o.threads, o.conns, o.loadCPUs, o.serverCPUs)
	results := map[string][][]result{} // case name → round → proxy index
	for round := range o.rounds {
		for _, c := range run {
			row := make([]result, len(c.proxies))
			for i := range c.proxies {
				k := (i + round) % len(c.proxies) // rotate the order each round
				p := c.proxies[k]
				r, err := env.runOne(ctx, c, p)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", round+1, c.name, p.name, err)
				}
				row[k] = r
				fmt.Fprintf(stderr, "round %d  %-8s %-17s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  cpu %5.1f µs/req  rss %4d MiB  delivered %d/%d %s  socket errors %d  wrong status %d\n",
					round+1, c.name, p.name, r.rps(), r.P50US/1e3, r.P99US/1e3, r.cpuUS/float64(r.Requests), r.rssKiB>>10,
					r.delivered, r.expected, r.lost, r.socketErrors(), r.wrongStatus(c.status))
			}
			results[c.name] = append(results[c.name], row)
		}
	}
	printTable(stdout, o, run, results)
	// A wrong status means the setup is broken (a refused token, a missing
	// route): the figures would be of errors. Socket errors are measured,
	// not refused: they are a result.
	for _, c := range run {
		for _, row := range results[c.name] {
			for k, r := range row {
				if n := r.wrongStatus(c.status); n > 0 {
					return fmt.Errorf("%s, %s: %d answers were not %d", c.name, c.proxies[k].name, n, c.status)
				}
			}
		}
	}
	return nil
}

func newEnvironment(o options) (*environment, error) {
	dir, err := os.MkdirTemp("", "sidecar-load-")
	if err != nil {
		return nil, err
	}
	env := &environment{o: o, dir: dir, double: newDouble(), clkTck: clockTicks()}
	if env.upstream, err = serve(upstream()); err != nil {
		return nil, err
	}
	if env.doubleURL, err = serve(env.double); err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(env.doubleURL, "http://")
	env.serverDSN = "http://serverkey@" + host + "/" + serverProject
	env.browserDSN = "http://browserkey@" + host + "/" + browserProj
	// The tunnel accepts the placeholder it hands out and swaps in the real
	// DSN; posting straight to the double names the real one.
	env.placeholderDSN = "http://" + tunnel.PlaceholderKey(env.browserDSN) + "@localhost/" + browserProj
	if env.token, err = demo.Token(demo.DefaultSecret, "demo", "user", 2, time.Now(), 24*time.Hour); err != nil {
		return nil, err
	}
	return env, nil
}

// runOne starts p, loads it with c for the run's duration, and stops it.
func (env *environment) runOne(ctx context.Context, c testCase, p proxy) (result, error) {
	env.double.settle() // the last run's requests in flight
	env.double.take()   // counts from this run only
	var proc *process
	var err error
	base := env.doubleURL // direct: wrk posts to the double
	switch p.kind {
	case "bare":
		proc, base, err = env.startBare()
	case "sidecar":
		traces := p.traces
		if traces < 0 {
			traces = env.o.traces
		}
		proc, base, err = env.startSidecar(cmp.Or(p.binary, env.o.sidecar), traces)
	}
	if err != nil {
		return result{}, err
	}
	if proc != nil {
		defer proc.kill()
	}
	path := c.path
	body := ""
	if c.body != nil {
		body = c.body(env)
	}
	if p.kind == "direct" {
		path = "/api/" + browserProj + "/envelope/?sentry_key=browserkey&sentry_version=7"
		body = strings.Replace(body, env.placeholderDSN, env.browserDSN, 1)
	}
	script, err := env.script(c, body)
	if err != nil {
		return result{}, err
	}

	var cpu0 float64
	if proc != nil {
		cpu0 = proc.cpuUS(env.clkTck)
	}
	r, err := env.wrk(ctx, base+path, script)
	if err != nil {
		return r, err
	}
	if proc != nil {
		r.cpuUS = proc.cpuUS(env.clkTck) - cpu0
		r.rssKiB = proc.peakRSS()
	}
	if r.Requests == 0 {
		return r, errors.New("wrk made no request")
	}

	if p.kind == "sidecar" && c.name != "tunnel" {
		r.expected, r.lost, err = proc.settle(ctx)
		if err != nil {
			return r, err
		}
	}
	if proc != nil {
		if err := proc.stop(); err != nil {
			return r, err
		}
	}
	env.double.settle()
	items, rejected := env.double.take()
	if rejected > 0 {
		return r, fmt.Errorf("the Sentry double rejected %d envelopes", rejected)
	}
	switch {
	case c.name == "tunnel":
		r.expected = r.Requests - r.Status
		r.delivered = int64(items["event"])
	case p.kind == "sidecar":
		r.delivered = int64(items["event"] + items["transaction"])
	}
	return r, nil
}

// script writes the wrk Lua script of c: the request, and a done hook that
// prints the figures as one JSON line.
func (env *environment) script(c testCase, body string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "wrk.method = %q\n", c.method)
	fmt.Fprintf(&b, "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n", env.token)
	if c.ctype != "" {
		fmt.Fprintf(&b, "wrk.headers[\"Content-Type\"] = %q\n", c.ctype)
	}
	if body != "" {
		if strings.Contains(body, "]==]") || strings.Contains(body, "\r") {
			return "", errors.New("body cannot be a Lua long string")
		}
		fmt.Fprintf(&b, "wrk.body = [==[\n%s]==]\n", body)
	}
	b.WriteString(`function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`)
	path := filepath.Join(env.dir, c.name+".lua")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// wrk runs the load and parses its RESULT line.
func (env *environment) wrk(ctx context.Context, target, script string) (result, error) {
	args := []string{"-t", strconv.Itoa(env.o.threads), "-c", strconv.Itoa(env.o.conns),
		"-d", strconv.Itoa(int(env.o.duration / time.Second)), "--timeout", "5s", "-s", script, target}
	name := env.o.wrk
	if env.o.loadCPUs != "" {
		args = append([]string{"-c", env.o.loadCPUs, name}, args...)
		name = "taskset"
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			var r result
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				return r, fmt.Errorf("wrk result %q: %w", rest, err)
			}
			return r, nil
		}
	}
	return result{}, fmt.Errorf("wrk printed no result:\n%s", out)
}

// process is a proxy started for one run.
type process struct {
	cmd   *exec.Cmd
	log   string
	admin string // the sidecar's admin base URL
	done  chan error
}

func (env *environment) startBare() (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	p, err := env.start("bare", self, "bare", "-listen", addr, "-upstream", env.upstream)
	if err != nil {
		return nil, "", err
	}
	return p, "http://" + addr, waitFor(p, "http://"+addr+"/api/v1/apps/probe", 200)
}

func (env *environment) startSidecar(binary string, traces float64) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	// Everything on, as in production: verified HS256 user, trails, route
	// templates and actions (the defaults), 5xx capture with its throttle,
	// tracing, the tunnel with scrubbing and user injection. The tunnel's
	// per-IP limit is as good as off (all the load comes from one
	// address); burst 0 would say so, but builds before 2026-12-04 refused
	// to start with it, and -also may measure one.
	conf := fmt.Sprintf(`listen: %q
admin:
  listen: %q
upstream:
  url: %q
sentry:
  dsn: %q
  environment: production
  traces_sample_rate: %g
jwt:
  secret: %q
tunnel:
  path: %q
  dsn: %q
  client_rate:
    burst: 1000000
    every: 1ms
shutdown:
  drain_delay: 0s
  grace_period: 5s
  flush_timeout: 10s
log:
  level: info
  format: json
`, addr, admin, env.upstream, env.serverDSN, traces, demo.DefaultSecret, tunnelPath, env.browserDSN)
	path := filepath.Join(env.dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	p, err := env.start("sidecar", binary, "run", "-config", path)
	if err != nil {
		return nil, "", err
	}
	p.admin = "http://" + admin
	return p, "http://" + addr, waitFor(p, p.admin+"/readyz", 200)
}

// start runs name pinned to the server CPUs, its output in a file.
func (env *environment) start(label, name string, args ...string) (*process, error) {
	logPath := filepath.Join(env.dir, label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if env.o.serverCPUs != "" {
		args = append([]string{"-c", env.o.serverCPUs, name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	p := &process{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// waitFor polls url until it answers status, for up to 10 s.
func waitFor(p *process, url string, status int) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("exited before it was ready (%v):\n%s", err, p.tail())
		default:
		}
		res, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == status {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %d within 10 s:\n%s", url, status, p.tail())
}

// settle waits until the sidecar's transport has nothing queued and its
// counts stop moving, then returns how many envelopes it was given and how
// the undelivered ones ended.
func (p *process) settle(ctx context.Context) (int64, string, error) {
	var last map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := scrape(p.admin + "/metrics")
		if err != nil {
			return 0, "", err
		}
		if m["sidecar_sentry_queue_length"] == 0 && last != nil && m["envelopes"] == last["envelopes"] {
			var lost []string
			for _, o := range []string{"queue_full", "failed", "rate_limited", "rejected"} {
				if n := m["outcome="+o]; n > 0 {
					lost = append(lost, fmt.Sprintf("%s %.0f", o, n))
				}
			}
			s := ""
			if len(lost) > 0 {
				s = "(" + strings.Join(lost, ", ") + ")"
			}
			return int64(m["envelopes"]), s, nil
		}
		last = m
		time.Sleep(300 * time.Millisecond)
	}
	return 0, "", errors.New("the sidecar's Sentry queue did not settle in 20 s")
}

// scrape reads the few series settle needs from a Prometheus text page.
func scrape(url string) (map[string]float64, error) {
	res, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch name := line[:i]; {
		case name == "sidecar_sentry_queue_length":
			m[name] = v
		case strings.HasPrefix(name, "sidecar_sentry_envelopes_total{"):
			m["envelopes"] += v
			if _, rest, ok := strings.Cut(name, `outcome="`); ok {
				o, _, _ := strings.Cut(rest, `"`)
				m["outcome="+o] += v
			}
		}
	}
	return m, sc.Err()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			return fmt.Errorf("exited with %v:\n%s", err, p.tail())
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("still running 30 s after SIGTERM:\n%s", p.tail())
	}
}

func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
}

// cpuUS is the process's user+system CPU time so far, in µs.
func (p *process) cpuUS(clkTck float64) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which may hold spaces: state is
	// field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / clkTck * 1e6
}

// peakRSS is the process's VmHWM in KiB.
func (p *process) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// tail is the end of the process's output, for errors.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freeAddr returns a 127.0.0.1 address nobody listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// pin sets the CPU affinity of pid (and all its threads).
func pin(cpus string, pid int, allThreads bool) error {
	args := []string{"-p", "-c", cpus, strconv.Itoa(pid)}
	if allThreads {
		args = append([]string{"-a"}, args...)
	}
	if out, err := exec.Command("taskset", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("taskset %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}
