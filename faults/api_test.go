//go:build faults

package faults

// The API misbehaves: an upstream that is down at start, dies under load and
// comes back, resets connections mid-body, holds a request for three minutes,
// or answers slowly to many clients at once. Each test runs the built sidecar
// binary in front of an upstream served by the test process itself, behind a
// listener that counts the sidecar's connections from the upstream's side.
// The helpers of this file (cf*) are shared with clients_test.go.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// cfSentryKey and cfSentryProject name the sidecar's project at the double.
const (
	cfSentryKey     = "cfkey"
	cfSentryProject = 1
	cfJWTSecret     = "faults-cf-jwt-secret-not-for-production"
)

// ---------------------------------------------------------------------------
// The sidecar process (TestMain in main_test.go builds the binary).

// cfSidecar is the running binary, with its pid for /proc.
type cfSidecar struct {
	*sfSidecar
	pid int
}

// cfStartSidecar runs the binary with config (sfStartSidecar: a temp file,
// PATH and HOME only, stopped when tb ends).
func cfStartSidecar(tb testing.TB, config string) *cfSidecar {
	tb.Helper()
	s := sfStartSidecar(tb, config)
	return &cfSidecar{sfSidecar: s, pid: s.Cmd.Process.Pid}
}

// cfConf is a sidecar configuration: loopback listeners, JSON logs, a fast
// drain, no traces, and extra lines under each section.
type cfConf struct {
	Upstream      string   // upstream.url
	UpstreamExtra []string // more lines under upstream:
	Server        []string // lines under server:
	Sentry        []string // more lines under sentry:
	Top           []string // more top-level lines (tunnel:, jwt:, actions:)
}

func (c cfConf) yaml() string {
	var b strings.Builder
	b.WriteString("listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n")
	fmt.Fprintf(&b, "upstream:\n  url: %q\n", c.Upstream)
	for _, l := range c.UpstreamExtra {
		b.WriteString("  " + l + "\n")
	}
	if len(c.Server) > 0 {
		b.WriteString("server:\n")
		for _, l := range c.Server {
			b.WriteString("  " + l + "\n")
		}
	}
	b.WriteString("sentry:\n  environment: production\n  release: \"sidecar@faults\"\n  traces_sample_rate: 0\n")
	for _, l := range c.Sentry {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("shutdown:\n  drain_delay: 0s\n  grace_period: 2s\n  flush_timeout: 1s\n")
	b.WriteString("log:\n  level: info\n  format: json\n")
	for _, l := range c.Top {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// cfAdminClient talks to the admin listener without keeping connections,
// so that it adds no goroutine to the sidecar between two readings.
var cfAdminClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// metrics returns the admin /metrics text.
func (s *cfSidecar) metrics(tb testing.TB) string {
	tb.Helper()
	res, err := cfAdminClient.Get(s.admin + "/metrics")
	require.NoError(tb, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(tb, err)
	require.Equal(tb, http.StatusOK, res.StatusCode)
	return string(b)
}

// metric sums the samples of name whose labels include every "k=v" given.
func (s *cfSidecar) metric(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	return cfMetric(s.metrics(tb), name, labels...)
}

// cfMetric reads one series out of Prometheus text: the sum of the samples
// of name whose labels include every "k=v" given.
func cfMetric(text, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, value := line[:sp], line[sp+1:]
		got, lbl, _ := strings.Cut(series, "{")
		if got != name {
			continue
		}
		lbl = strings.TrimSuffix(lbl, "}")
		ok := true
		for _, want := range labels {
			k, v, _ := strings.Cut(want, "=")
			if !strings.Contains(","+lbl+",", ","+k+"="+strconv.Quote(v)+",") {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

// goroutines is the sidecar's go_goroutines.
func (s *cfSidecar) goroutines(tb testing.TB) int {
	tb.Helper()
	return int(s.metric(tb, "go_goroutines"))
}

// readyz returns the status and the reason of /readyz.
func (s *cfSidecar) readyz(tb testing.TB) (int, string) {
	tb.Helper()
	res, err := cfAdminClient.Get(s.admin + "/readyz")
	require.NoError(tb, err)
	defer res.Body.Close()
	var body struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	require.NoError(tb, json.NewDecoder(res.Body).Decode(&body))
	return res.StatusCode, body.Reason
}

// fds counts the sidecar's open file descriptors.
func (s *cfSidecar) fds(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	require.NoError(tb, err)
	return len(ents)
}

// rss returns the sidecar's resident set and its peak (VmRSS, VmHWM) in bytes.
func (s *cfSidecar) rss(tb testing.TB) (rss, peak int64) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	require.NoError(tb, err)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// cfAccess is one access-log line.
type cfAccess struct {
	RequestID string  `json:"request_id"`
	Method    string  `json:"method"`
	Path      string  `json:"path"`
	Status    int     `json:"status"`
	Error     string  `json:"error"`
	Duration  float64 `json:"duration"` // milliseconds
}

// accessLog returns the access-log lines by request id.
func (s *cfSidecar) accessLog() map[string]cfAccess {
	out := map[string]cfAccess{}
	sc := bufio.NewScanner(strings.NewReader(s.Out.String()))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"msg":"request"`)) {
			continue
		}
		var a cfAccess
		if json.Unmarshal(line, &a) == nil && a.RequestID != "" {
			out[a.RequestID] = a
		}
	}
	return out
}

// waitAccess waits until the access log has a line for every id.
func (s *cfSidecar) waitAccess(tb testing.TB, ids []string, timeout time.Duration) map[string]cfAccess {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := s.accessLog()
		var missing []string
		for _, id := range ids {
			if _, ok := log[id]; !ok {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return log
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no access-log line within %v for %d requests, e.g. %s", timeout, len(missing), missing[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cfWait polls cond every 20 ms until it holds or timeout passes, and
// reports how long it took.
func cfWait(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cfNewClient is an HTTP client of its own (loopback, no environment proxy),
// its idle connections closed when tb ends.
func cfNewClient(tb testing.TB, timeout time.Duration, keepAlive bool) *http.Client {
	tb.Helper()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 64}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: timeout, Transport: tr}
}

// cfGet sends a GET with a request id and returns the status, the body and
// the error of the whole exchange.
func cfGet(c *http.Client, url, id string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if id != "" {
		req.Header.Set("X-Request-ID", id)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// cfErrorBody is the sidecar's own JSON error.
type cfErrorBody struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

// ---------------------------------------------------------------------------
// The upstream, served by the test process.

// cfUpstream is an HTTP server on a loopback port of its own that counts,
// from its side, the connections the sidecar opens to it. It can be killed
// (listener and every connection closed, as when the process dies) and
// restarted on the same address.
type cfUpstream struct {
	addr    string
	handler http.Handler

	accepts, closes atomic.Int64
	peak            atomic.Int64

	mu  sync.Mutex
	srv *http.Server
}

// cfStartUpstream serves h on 127.0.0.1 until tb ends.
func cfStartUpstream(tb testing.TB, h http.Handler) *cfUpstream {
	tb.Helper()
	u := &cfUpstream{handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	u.addr = ln.Addr().String()
	u.serve(ln)
	tb.Cleanup(u.kill)
	return u
}

func (u *cfUpstream) url() string { return "http://" + u.addr }

func (u *cfUpstream) serve(ln net.Listener) {
	srv := &http.Server{Handler: u.handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 4 << 20}
	u.mu.Lock()
	u.srv = srv
	u.mu.Unlock()
	go srv.Serve(&cfCountingListener{Listener: ln, u: u})
}

// kill closes the listener and every connection at once.
func (u *cfUpstream) kill() {
	u.mu.Lock()
	srv := u.srv
	u.srv = nil
	u.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// restart listens on the same address again.
func (u *cfUpstream) restart(tb testing.TB) {
	tb.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger a moment after Close
		if ln, err = net.Listen("tcp", u.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(tb, err, "listen again on %s", u.addr)
	u.serve(ln)
}

// open is the number of connections accepted and not yet closed.
func (u *cfUpstream) open() int64 { return u.accepts.Load() - u.closes.Load() }

type cfCountingListener struct {
	net.Listener
	u *cfUpstream
}

func (l *cfCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.u.accepts.Add(1) - l.u.closes.Load()
	for {
		p := l.u.peak.Load()
		if n <= p || l.u.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &cfCountedConn{TCPConn: c.(*net.TCPConn), u: l.u}, nil
}

// cfCountedConn counts its close once; it stays a *net.TCPConn underneath
// so a handler can set SO_LINGER on the hijacked connection.
type cfCountedConn struct {
	*net.TCPConn
	u    *cfUpstream
	once sync.Once
}

func (c *cfCountedConn) Close() error {
	c.once.Do(func() { c.u.closes.Add(1) })
	return c.TCPConn.Close()
}

// cfReset drops a hijacked connection with an RST (rst) or a FIN.
func cfReset(conn net.Conn, rst bool) {
	if cc, ok := conn.(*cfCountedConn); ok && rst {
		_ = cc.SetLinger(0)
	}
	_ = conn.Close()
}

// ---------------------------------------------------------------------------
// (a) The upstream is down when the sidecar starts.

// TestAPIDownAtStart: nothing listens at upstream.url. Readiness is 503 and
// names the refusal; every request gets the sidecar's own 502 JSON; the
// Sentry double gets at most throttle.burst events, all of the one kind
// ["proxy-error", host, "refused"], and the metrics count the rest.
func TestAPIDownAtStart(t *testing.T) {
	const (
		n     = 60
		burst = 3
	)
	sentry := sentrytest.NewServer(t)
	sentry.AllowKey(cfSentryKey)
	addr := sentrytest.RefusingAddr(t)
	sc := cfStartSidecar(t, cfConf{
		Upstream:      "http://" + addr,
		UpstreamExtra: []string{"health_interval: 200ms"},
		Sentry: []string{
			fmt.Sprintf("dsn: %q", sentry.DSN(cfSentryKey, cfSentryProject)),
			fmt.Sprintf("throttle: {burst: %d, every: 1h}", burst),
		},
	}.yaml())

	var code int
	var reason string
	_, probed := cfWait(5*time.Second, func() bool {
		code, reason = sc.readyz(t)
		return reason != "upstream not probed yet"
	})
	require.True(t, probed, "the readiness probe never ran")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, reason, "upstream unreachable")
	assert.Contains(t, reason, "connection refused")
	t.Logf("/readyz: %d %q", code, reason)

	c := cfNewClient(t, 10*time.Second, true)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for w := range 6 {
		wg.Go(func() {
			for i := w; i < n; i += 6 {
				id := fmt.Sprintf("cf-down-%d", i)
				status, body, err := cfGet(c, sc.url+"/api/v1/apps/"+strconv.Itoa(i), id)
				mu.Lock()
				statuses[status]++
				mu.Unlock()
				if !assert.NoError(t, err) {
					continue
				}
				var eb cfErrorBody
				if assert.NoError(t, json.Unmarshal(body, &eb), "502 body is not JSON: %s", body) {
					assert.Equal(t, cfErrorBody{Error: "upstream unavailable", RequestID: id}, eb)
				}
				assert.NotContains(t, string(body), "dial tcp", "Go's error text reached the client")
			}
		})
	}
	wg.Wait()
	assert.Equal(t, map[int]int{http.StatusBadGateway: n}, statuses)

	sentry.WaitEvents(t, 1, 15*time.Second)
	time.Sleep(2 * time.Second) // anything more would have arrived by now
	events := sentry.Events()
	assert.LessOrEqual(t, len(events), burst, "one throttled event kind, not one event per request")
	assert.Equal(t, burst, len(events))
	for _, ev := range events {
		assert.Equal(t, []any{"proxy-error", addr, "refused"}, ev["fingerprint"])
	}
	m := sc.metrics(t)
	captured := cfMetric(m, "sidecar_sentry_events_total", "kind=proxy_error", "outcome=captured")
	throttled := cfMetric(m, "sidecar_sentry_events_total", "kind=proxy_error", "outcome=throttled")
	refused := cfMetric(m, "sidecar_upstream_errors_total", "kind=refused")
	assert.Equal(t, float64(len(events)), captured)
	assert.Equal(t, float64(n-len(events)), throttled, "the throttled rest is counted")
	assert.Equal(t, float64(n), refused)
	t.Logf("%d requests: %d × 502 JSON; %d events at the double (fingerprint proxy-error/%s/refused); metrics captured=%v throttled=%v refused=%v",
		n, statuses[http.StatusBadGateway], len(events), addr, captured, throttled, refused)
	recordRow(faultRow{
		Scenario: "api: down at start", Requests: n, Errors: n - statuses[http.StatusBadGateway],
		EventsExpected: burst, EventsDelivered: len(events),
		Note: fmt.Sprintf("502 JSON; readyz 503 refused; proxy-error/refused events ≤ burst %d, %v throttled (counted)", burst, throttled),
	})
}

// ---------------------------------------------------------------------------
// (b) The upstream dies under load and comes back.

// TestAPIDiesMidLoad: 8 clients loop over the sidecar while the upstream is
// killed (listener and connections closed) and later restarted on the same
// port. Readiness follows both changes within a few probe intervals; every
// request ends, with 200 or the sidecar's 502, never a hang or a timeout;
// requests made while the upstream is down get 502 and requests made after
// readiness is back get 200; nothing is left in flight.
func TestAPIDiesMidLoad(t *testing.T) {
	const (
		interval = 250 * time.Millisecond
		workers  = 8
	)
	up := cfStartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	sc := cfStartSidecar(t, cfConf{
		Upstream:      up.url(),
		UpstreamExtra: []string{"health_interval: " + interval.String()},
	}.yaml())
	_, ready := cfWait(5*time.Second, func() bool { code, _ := sc.readyz(t); return code == http.StatusOK })
	require.True(t, ready, "not ready with the upstream up")

	type result struct {
		start, end time.Time
		status     int
		err        error
	}
	var (
		mu      sync.Mutex
		results []result
	)
	stop := make(chan struct{})
	c := cfNewClient(t, 10*time.Second, true)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				status, body, err := cfGet(c, sc.url+"/work", fmt.Sprintf("cf-dies-%d-%d", w, i))
				if err == nil && status == http.StatusBadGateway {
					var eb cfErrorBody
					if json.Unmarshal(body, &eb) != nil || eb.Error != "upstream unavailable" {
						err = fmt.Errorf("502 without the JSON error: %s", body)
					}
				}
				mu.Lock()
				results = append(results, result{start, time.Now(), status, err})
				mu.Unlock()
				time.Sleep(2 * time.Millisecond) // a load, not a spin on instant 502s
			}
		})
	}

	time.Sleep(1500 * time.Millisecond)
	killedAt := time.Now()
	up.kill()
	downAfter, down := cfWait(3*interval+2*time.Second, func() bool { code, _ := sc.readyz(t); return code == http.StatusServiceUnavailable })
	_, reason := sc.readyz(t)
	assert.True(t, down, "readiness still 200 %v after the upstream died", downAfter)
	time.Sleep(2 * time.Second)
	restartedAt := time.Now()
	up.restart(t)
	upAfter, back := cfWait(3*interval+2*time.Second, func() bool { code, _ := sc.readyz(t); return code == http.StatusOK })
	assert.True(t, back, "readiness still 503 %v after the upstream came back", upAfter)
	readyAt := time.Now()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(15 * time.Second):
		t.Fatal("client requests still hanging 15 s after the load stopped")
	}

	// Both readiness changes within a few probe intervals (slack for the
	// 20 ms poll and a loaded runner).
	assert.LessOrEqual(t, downAfter, 3*interval+time.Second, "readiness lagged the upstream's death")
	assert.LessOrEqual(t, upAfter, 3*interval+time.Second, "readiness lagged the upstream's return")
	assert.Contains(t, reason, "connection refused")

	counts := map[string]int{}
	var downWrong, upWrong int
	for _, r := range results {
		key := strconv.Itoa(r.status)
		if r.err != nil {
			key = "error"
			t.Errorf("request %v–%v: %v", r.start.Sub(killedAt), r.end.Sub(killedAt), r.err)
		}
		counts[key]++
		// Started after the kill settled and ended before the restart: down.
		if r.start.After(killedAt.Add(100*time.Millisecond)) && r.end.Before(restartedAt) && r.status != http.StatusBadGateway {
			downWrong++
		}
		if r.start.After(readyAt) && r.status != http.StatusOK {
			upWrong++
		}
	}
	assert.Equal(t, 0, downWrong, "requests made while the upstream was down must get 502")
	assert.Equal(t, 0, upWrong, "requests made after readiness came back must get 200")
	for k := range counts {
		assert.Contains(t, []string{"200", "502"}, k, "only 200 or 502: %v", counts)
	}
	assert.Positive(t, counts["502"])
	assert.Positive(t, counts["200"])
	_, idle := cfWait(5*time.Second, func() bool { return sc.metric(t, "sidecar_requests_in_flight") == 0 })
	assert.True(t, idle, "requests still in flight at the sidecar after the load ended")
	t.Logf("%d requests by %d clients: %v; readiness 503 %v after the kill (%q), 200 %v after the restart (probe interval %v); %d \"upstream error\" warnings logged",
		len(results), workers, counts, downAfter.Round(time.Millisecond), reason, upAfter.Round(time.Millisecond), interval, strings.Count(sc.Out.String(), `"msg":"upstream error"`))
	recordRow(faultRow{
		Scenario: "api: dies mid-load, comes back", Requests: len(results), Errors: counts["error"] + downWrong + upWrong,
		Note: fmt.Sprintf("%d×200 %d×502, none hung; readyz 503 after %v, 200 after %v (probe every %v)",
			counts["200"], counts["502"], downAfter.Round(time.Millisecond), upAfter.Round(time.Millisecond), interval),
	})
}

// ---------------------------------------------------------------------------
// (c) The upstream resets the connection mid-body.

// TestAPIResetsMidBody: the upstream sends its status, headers and part of
// the body, then drops the connection (RST or FIN), with a Content-Length
// and chunked. The client must see an aborted response: a Go client's body
// read fails, and on the wire the sidecar sends fewer bytes than its
// Content-Length, or no last chunk, before the connection ends.
func TestAPIResetsMidBody(t *testing.T) {
	const (
		full = 1 << 20
		sent = 200 << 10
	)
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	up := cfStartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/cl/") {
			w.Header().Set("Content-Length", strconv.Itoa(full))
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for n := 0; n < sent; n += len(chunk) {
			_, _ = w.Write(chunk)
			_ = rc.Flush()
		}
		time.Sleep(50 * time.Millisecond) // let the sidecar pass it on first
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		cfReset(conn, strings.HasSuffix(r.URL.Path, "/rst"))
	}))
	sentry := sentrytest.NewServer(t)
	sentry.AllowKey(cfSentryKey)
	sc := cfStartSidecar(t, cfConf{
		Upstream: up.url(),
		Sentry:   []string{fmt.Sprintf("dsn: %q", sentry.DSN(cfSentryKey, cfSentryProject))},
	}.yaml())
	host := strings.TrimPrefix(sc.url, "http://")

	c := cfNewClient(t, 10*time.Second, false)
	var ids []string
	aborted := 0 // responses the client saw cut
	for _, framing := range []string{"cl", "chunked"} {
		for _, drop := range []string{"rst", "fin"} {
			path := "/" + framing + "/" + drop
			t.Run(framing+" "+drop+" go client", func(t *testing.T) {
				id := "cf-reset-go-" + framing + "-" + drop
				ids = append(ids, id)
				req, _ := http.NewRequest(http.MethodGet, sc.url+path, nil)
				req.Header.Set("X-Request-ID", id)
				res, err := c.Do(req)
				require.NoError(t, err, "the headers were sent before the fault")
				defer res.Body.Close()
				assert.Equal(t, http.StatusOK, res.StatusCode)
				n, err := io.Copy(io.Discard, res.Body)
				if assert.Error(t, err, "a body cut by the upstream read as complete (%d bytes)", n) && n < full {
					aborted++
				}
				assert.Less(t, n, int64(full))
				t.Logf("status %d, %d bytes, then %v", res.StatusCode, n, err)
			})
			t.Run(framing+" "+drop+" on the wire", func(t *testing.T) {
				id := "cf-reset-raw-" + framing + "-" + drop
				ids = append(ids, id)
				conn, err := net.DialTimeout("tcp", host, 5*time.Second)
				require.NoError(t, err)
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nX-Request-ID: %s\r\n\r\n", path, host, id)
				raw, err := io.ReadAll(conn)
				var ne net.Error
				require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was left open after the fault")
				head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
				require.True(t, ok, "no complete header: %q", sfTail(string(raw), 200))
				assert.True(t, bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")), "%s", head)
				var cut bool
				if framing == "cl" {
					assert.Contains(t, string(head), "Content-Length: "+strconv.Itoa(full))
					cut = assert.Less(t, len(body), full, "the whole Content-Length arrived")
				} else {
					assert.Contains(t, string(head), "Transfer-Encoding: chunked")
					cut = assert.False(t, bytes.HasSuffix(body, []byte("0\r\n\r\n")), "the chunked body was closed with a last chunk, as if complete")
				}
				if cut {
					aborted++
				}
				t.Logf("%d body bytes on the wire, then the connection ended (%v)", len(body), err)
			})
		}
	}
	log := sc.waitAccess(t, ids, 5*time.Second)
	for _, id := range ids {
		assert.Equal(t, "reset", log[id].Error, "access log of %s", id)
	}
	resets := sc.metric(t, "sidecar_upstream_errors_total", "kind=reset")
	assert.Equal(t, float64(len(ids)), resets)
	events := sentry.WaitEvents(t, 1, 15*time.Second)
	for _, ev := range events {
		assert.Equal(t, []any{"proxy-error", up.addr, "reset"}, ev["fingerprint"])
	}
	t.Logf("%d cut responses: every one aborted for the client; access log error=reset; %d proxy-error/reset events", len(ids), len(events))
	recordRow(faultRow{
		Scenario: "api: resets mid-body", Requests: len(ids), Errors: len(ids) - aborted,
		Note: "Content-Length and chunked × RST and FIN, Go client and raw: every one aborted, none complete",
	})
}

// ---------------------------------------------------------------------------
// (d) The upstream holds a request for three minutes.

// cfHold is how long the upstream holds the deploy: three minutes, longer
// than any timeout the sidecar has (read header 10 s, idle 2 m), as
// Proximity's deploys do.
const cfHold = 3 * time.Minute

// TestAPIHoldsThreeMinutes: POST /api/v1/apps/deploy on the demo API, held
// for three minutes before its answer's headers. The request completes with
// the API's 200 and body; nothing of the sidecar's cuts it. The request is
// started before t.Parallel, so it runs while the serial tests run and the
// suite does not take three more minutes.
func TestAPIHoldsThreeMinutes(t *testing.T) {
	up := cfStartUpstream(t, demo.New(demo.Options{Secret: cfJWTSecret, DeployDelay: cfHold}))
	sc := cfStartSidecar(t, cfConf{
		Upstream: up.url(),
		Top: []string{
			"jwt:", fmt.Sprintf("  secret: %q", cfJWTSecret),
			"actions:", `  - route: "POST /api/v1/apps/deploy"`, `    name: "app.deploy"`, `    fields: ["catalog_id", "hostname"]`,
		},
	}.yaml())
	c := cfNewClient(t, cfHold+time.Minute, false)
	req, _ := http.NewRequest(http.MethodPost, sc.url+"/api/v1/auth/login", strings.NewReader(`{"username":"demo","password":"demo1234"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	require.NoError(t, err)
	var login struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&login))
	res.Body.Close()
	require.NotEmpty(t, login.AccessToken)

	type held struct {
		status  int
		body    []byte
		err     error
		elapsed time.Duration
	}
	done := make(chan held, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, sc.url+"/api/v1/apps/deploy", strings.NewReader(`{"catalog_id":"nginx","hostname":"cf-held"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+login.AccessToken)
		req.Header.Set("X-Request-ID", "cf-held")
		start := time.Now()
		res, err := c.Do(req)
		if err != nil {
			done <- held{err: err, elapsed: time.Since(start)}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		done <- held{status: res.StatusCode, body: b, err: err, elapsed: time.Since(start)}
	}()
	t.Parallel()

	var h held
	select {
	case h = <-done:
	case <-time.After(cfHold + 90*time.Second):
		t.Fatalf("the held request did not end within %v", cfHold+90*time.Second)
	}
	if h.err != nil {
		recordRow(faultRow{Scenario: "api: holds a request 3 min", Requests: 1, Errors: 1, Note: fmt.Sprintf("failed after %v: %v", h.elapsed.Round(100*time.Millisecond), h.err)})
		t.Fatalf("the held request failed after %v: %v", h.elapsed, h.err)
	}
	assert.Equal(t, http.StatusOK, h.status, "%s", h.body)
	var app struct {
		Status   string `json:"status"`
		Hostname string `json:"hostname"`
	}
	assert.NoError(t, json.Unmarshal(h.body, &app), "%s", h.body)
	assert.Equal(t, "running", app.Status)
	assert.Equal(t, "cf-held", app.Hostname)
	assert.GreaterOrEqual(t, h.elapsed, cfHold)
	a := sc.waitAccess(t, []string{"cf-held"}, 5*time.Second)["cf-held"]
	assert.Equal(t, http.StatusOK, a.Status)
	assert.Empty(t, a.Error)
	assert.GreaterOrEqual(t, a.Duration, float64(cfHold.Milliseconds()))
	m := sc.metrics(t)
	assert.Equal(t, 1.0, cfMetric(m, "sidecar_action_total", "action=app.deploy", "outcome=success"))
	assert.GreaterOrEqual(t, cfMetric(m, "sidecar_action_duration_seconds_sum", "action=app.deploy"), cfHold.Seconds())
	t.Logf("the deploy held %v answered %d after %v; access log %d in %.0f ms", cfHold, h.status, h.elapsed.Round(time.Millisecond), a.Status, a.Duration)
	errs := 0
	if h.err != nil || h.status != http.StatusOK {
		errs = 1
	}
	recordRow(faultRow{
		Scenario: "api: holds a request 3 min", Requests: 1, Errors: errs,
		Note: fmt.Sprintf("POST deploy answered %d after %v (run beside the serial tests)", h.status, h.elapsed.Round(100*time.Millisecond)),
	})
}

// ---------------------------------------------------------------------------
// (e) The upstream answers slowly to many clients at once.

// TestAPISlowManyClients: 300 clients at once, each answered after 1 s, in
// two bursts. The sidecar opens as many upstream connections as it needs
// during a burst, then keeps at most max_idle_conns_per_host of them
// (counted from the upstream's side); its file descriptors come back to
// the baseline plus the pooled connections, and a second burst leaves the
// same count as the first.
func TestAPISlowManyClients(t *testing.T) {
	const (
		clients = 300
		slow    = time.Second
		maxIdle = 32
		margin  = 8
	)
	up := cfStartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(slow)
		_, _ = io.WriteString(w, "slow answer\n")
	}))
	sc := cfStartSidecar(t, cfConf{
		Upstream:      up.url(),
		UpstreamExtra: []string{fmt.Sprintf("max_idle_conns_per_host: %d", maxIdle)},
	}.yaml())
	c := cfNewClient(t, 30*time.Second, false)
	c.Transport.(*http.Transport).MaxConnsPerHost = 0

	status, _, err := cfGet(c, sc.url+"/warm", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	settle := func() (int, int64) {
		// Connections are closed by both ends asynchronously: wait until
		// the counts stop moving.
		prevFD, prevOpen := -1, int64(-1)
		for range 50 {
			time.Sleep(100 * time.Millisecond)
			fd, open := sc.fds(t), up.open()
			if fd == prevFD && open == prevOpen {
				return fd, open
			}
			prevFD, prevOpen = fd, open
		}
		return prevFD, prevOpen
	}
	fdBefore, openBefore := settle()
	stopRSS := sfRSSSampler(sc.pid)

	burst := func() (time.Duration, map[int]int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		statuses := map[int]int{}
		start := time.Now()
		for i := range clients {
			wg.Go(func() {
				status, body, err := cfGet(c, sc.url+"/slow/"+strconv.Itoa(i), "")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					statuses[-1]++
					return
				}
				if string(body) != "slow answer\n" {
					statuses[-2]++
				}
				statuses[status]++
			})
		}
		wg.Wait()
		return time.Since(start), statuses
	}
	took1, st1 := burst()
	peak := up.peak.Load()
	fd1, open1 := settle()
	took2, st2 := burst()
	fd2, open2 := settle()
	peakRSS := stopRSS()

	assert.Equal(t, map[int]int{http.StatusOK: clients}, st1)
	assert.Equal(t, map[int]int{http.StatusOK: clients}, st2)
	assert.Less(t, took1, 5*slow, "the burst was not served concurrently")
	assert.LessOrEqual(t, open1, int64(maxIdle+margin), "idle upstream connections after the burst")
	assert.LessOrEqual(t, open2, int64(maxIdle+margin), "idle upstream connections after the second burst")
	assert.LessOrEqual(t, fd1, fdBefore+int(open1-openBefore)+margin, "fds after the burst: baseline + pooled connections")
	assert.LessOrEqual(t, fd2, fd1+margin, "the second burst left more fds than the first")
	t.Logf("%d clients × 1 s, twice (%v, %v): upstream connections peak %d, open after %d and %d (max_idle_conns_per_host %d); sidecar fds %d → %d → %d",
		clients, took1.Round(time.Millisecond), took2.Round(time.Millisecond), peak, open1, open2, maxIdle, fdBefore, fd1, fd2)
	recordRow(faultRow{
		Scenario: "api: slow, 300 clients at once ×2", Requests: 2 * clients, Errors: 2*clients - st1[http.StatusOK] - st2[http.StatusOK],
		PeakRSS: peakRSS,
		Note:    fmt.Sprintf("upstream conns peak %d, idle after %d/%d (max_idle %d); fds %d→%d→%d", peak, open1, open2, maxIdle, fdBefore, fd1, fd2),
	})
}
