//go:build faults

package faults

// Clients misbehave: slowloris headers, oversized headers, 10 000 idle
// keep-alive connections, clients that go away mid-upload and mid-download,
// and a flood on the browser tunnel from one address. The helpers (cf*) are
// in api_test.go.

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// cfCounting is an upstream that answers 200 "ok" and counts the requests
// of each path.
type cfCounting struct {
	mu    sync.Mutex
	paths map[string]int
}

func (c *cfCounting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	c.mu.Lock()
	if c.paths == nil {
		c.paths = map[string]int{}
	}
	c.paths[r.URL.Path]++
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ok\n")
}

func (c *cfCounting) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paths[path]
}

// cfTimedGet is one GET on a new connection and its duration.
func cfTimedGet(tb testing.TB, url string) (int, time.Duration) {
	tb.Helper()
	c := cfNewClient(tb, 10*time.Second, false)
	start := time.Now()
	status, _, err := cfGet(c, url, "")
	require.NoError(tb, err)
	return status, time.Since(start)
}

// ---------------------------------------------------------------------------

// TestClientsSlowloris: 20 raw TCP clients send a request's headers one
// byte per second. server.read_header_timeout (1 s here) cuts each one: the
// sidecar closes the connection without forwarding anything, and meanwhile
// serves a normal request at once.
func TestClientsSlowloris(t *testing.T) {
	const (
		conns   = 20
		timeout = time.Second
	)
	up := &cfCounting{}
	sc := cfStartSidecar(t, cfConf{
		Upstream: cfStartUpstream(t, up).url(),
		Server:   []string{"read_header_timeout: " + timeout.String()},
	}.yaml())
	host := strings.TrimPrefix(sc.url, "http://")

	type cut struct {
		after time.Duration
		read  []byte
		sent  int
		err   error
	}
	cuts := make([]cut, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			conn, err := net.DialTimeout("tcp", host, 5*time.Second)
			if err != nil {
				cuts[i].err = err
				return
			}
			defer conn.Close()
			start := time.Now()
			_ = conn.SetReadDeadline(start.Add(10 * time.Second))
			ended := make(chan cut, 1)
			go func() {
				b, err := io.ReadAll(conn)
				ended <- cut{after: time.Since(start), read: b, err: err}
			}()
			header := "GET /slowloris HTTP/1.1\r\nHost: " + host + "\r\nX-Slow: " + strings.Repeat("a", 30) + "\r\n\r\n"
			sent := 0
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				if sent < len(header) {
					if _, err := conn.Write([]byte{header[sent]}); err == nil {
						sent++
					}
				}
				select {
				case c := <-ended:
					c.sent = sent
					cuts[i] = c
					return
				case <-tick.C:
				}
			}
		})
	}
	time.Sleep(timeout / 2)
	status, took := cfTimedGet(t, sc.url+"/normal")
	assert.Equal(t, http.StatusOK, status)
	assert.Less(t, took, 500*time.Millisecond, "a normal request waited behind the slow clients")
	wg.Wait()

	shortest, longest := time.Hour, time.Duration(0)
	for i, c := range cuts {
		// EOF or a reset (our next byte hit the closed socket): both end
		// the connection. Only the read deadline is a failure.
		var ne net.Error
		require.False(t, errors.As(c.err, &ne) && ne.Timeout(), "client %d: the connection was not cut within 10 s", i)
		require.False(t, c.after == 0 && c.err != nil, "client %d: %v", i, c.err)
		assert.GreaterOrEqual(t, c.after, timeout-50*time.Millisecond, "client %d cut before the timeout", i)
		assert.Less(t, c.after, timeout+2*time.Second, "client %d cut late", i)
		assert.NotContains(t, string(c.read), " 200 ", "client %d got an answer", i)
		shortest, longest = min(shortest, c.after), max(longest, c.after)
	}
	assert.Equal(t, 0, up.count("/slowloris"), "a slow request reached the upstream")
	assert.Equal(t, 1, up.count("/normal"))
	t.Logf("%d slowloris clients, each cut %v–%v after connecting (read_header_timeout %v) having sent %d bytes; a normal request took %v meanwhile",
		conns, shortest.Round(time.Millisecond), longest.Round(time.Millisecond), timeout, cuts[0].sent, took.Round(time.Microsecond))
	recordRow(faultRow{
		Scenario: "clients: slowloris headers", Requests: conns + 1,
		Note: fmt.Sprintf("%d conns cut %v–%v (read_header_timeout %v), none forwarded; normal GET %v meanwhile",
			conns, shortest.Round(time.Millisecond), longest.Round(time.Millisecond), timeout, took.Round(time.Millisecond)),
	})
}

// ---------------------------------------------------------------------------

// TestClientsOversizedHeaders: with the default server.max_header_bytes
// (1 MiB), a request with 768 KiB of headers goes through, and one with
// 2 MiB (one value, or many headers) gets 431 without reaching the
// upstream.
func TestClientsOversizedHeaders(t *testing.T) {
	up := &cfCounting{}
	sc := cfStartSidecar(t, cfConf{Upstream: cfStartUpstream(t, up).url()}.yaml())
	host := strings.TrimPrefix(sc.url, "http://")

	send := func(t *testing.T, path string, header string) (int, string) {
		conn, err := net.DialTimeout("tcp", host, 5*time.Second)
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			// The server may answer and close before it has read it all.
			_, _ = io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n"+header+"\r\n")
		}()
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	cases := []struct {
		name, path, header string
		want               int
	}{
		{"768 KiB in one header", "/fits", "X-Big: " + strings.Repeat("a", 768<<10) + "\r\n", http.StatusOK},
		{"2 MiB in one header", "/one-huge", "X-Big: " + strings.Repeat("a", 2<<20) + "\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"2 MiB in 2048 headers", "/many", strings.Repeat("X-Many: "+strings.Repeat("b", 1014)+"\r\n", 2048), http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := send(t, tc.path, tc.header)
			assert.Equal(t, tc.want, status, "%s", sfTail(body, 200))
			reached := 0
			if tc.want == http.StatusOK {
				reached = 1
			}
			assert.Equal(t, reached, up.count(tc.path))
			t.Logf("%d header bytes: %d %s", len(tc.header), status, strings.TrimSpace(sfTail(body, 80)))
		})
	}
	status, took := cfTimedGet(t, sc.url+"/after")
	assert.Equal(t, http.StatusOK, status)
	recordRow(faultRow{
		Scenario: "clients: oversized headers", Requests: len(cases) + 1,
		Note: fmt.Sprintf("max_header_bytes 1 MiB: 768 KiB → 200; 2 MiB (1 or 2048 headers) → 431, not forwarded; next GET %v", took.Round(time.Millisecond)),
	})
}

// ---------------------------------------------------------------------------

// cfIdleConns is the number of idle keep-alive connections the test holds.
const cfIdleConns = 10000

// cfSoftNoFile reads the soft "Max open files" of a process.
func cfSoftNoFile(tb testing.TB, pid int) int {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	require.NoError(tb, err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
			return 1 << 30 // unlimited
		}
	}
	tb.Fatalf("no Max open files in /proc/%d/limits", pid)
	return 0
}

// TestClientsTenThousandIdle: 10 000 clients each send one request on a
// keep-alive connection and then stay idle. The sidecar holds them all
// (its fds grow by as many), its RSS stays under the ceiling, and a normal
// request on a new connection is still answered at once; a sample of the
// idle connections still works afterwards.
func TestClientsTenThousandIdle(t *testing.T) {
	const (
		batch = 500
		// The ceiling: what the sidecar started with plus 40 KiB per
		// connection. Go's server keeps a goroutine (8 KiB stack), a 4 KiB
		// read buffer and a 4 KiB write buffer per idle connection, about
		// 26 KiB of RSS each with the GC's headroom; a per-connection
		// buffer of 16 KiB more would cross it.
		perConn = 40 << 10
	)
	// The test holds one end of every connection, the sidecar the other:
	// both need the fds. Go raises the soft limit to the hard one at start;
	// as root the hard one can go up too. The sidecar inherits the result.
	n := cfIdleConns
	need := uint64(n + 1000)
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < need {
		raised := lim
		raised.Cur = need
		if raised.Max < need {
			raised.Max = need // only root may; otherwise Setrlimit fails and we use what there is
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			raised.Max = lim.Max
			raised.Cur = lim.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised)
		}
		require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	}
	up := &cfCounting{}
	upstream := cfStartUpstream(t, up)
	sc := cfStartSidecar(t, cfConf{Upstream: upstream.url()}.yaml())
	sidecarLimit := cfSoftNoFile(t, sc.pid)
	ownLimit := int(lim.Cur)
	if room := min(sidecarLimit, ownLimit) - 1000; room < n {
		t.Logf("RLIMIT_NOFILE: test %d, sidecar %d: only %d connections fit (1000 fds kept for everything else), not %d", ownLimit, sidecarLimit, room, n)
		n = room
	}
	require.Greater(t, n, 1000, "too few file descriptors for this test")
	host := strings.TrimPrefix(sc.url, "http://")

	status, _ := cfTimedGet(t, sc.url+"/warm")
	require.Equal(t, http.StatusOK, status)
	time.Sleep(200 * time.Millisecond)
	rss0, _ := sc.rss(t)
	fd0, g0, pool0 := sc.fds(t), sc.goroutines(t), upstream.open()

	conns := make([]net.Conn, n)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	request := func(conn net.Conn, br *bufio.Reader, path string) error {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
			return err
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err == nil && (res.StatusCode != http.StatusOK || res.Close) {
			err = fmt.Errorf("status %d, close %t", res.StatusCode, res.Close)
		}
		_ = conn.SetDeadline(time.Time{})
		return err
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for lo := 0; lo < n; lo += batch {
		var wg sync.WaitGroup
		for i := lo; i < min(lo+batch, n); i++ {
			wg.Go(func() {
				conn, err := net.DialTimeout("tcp", host, 10*time.Second)
				if err == nil {
					conns[i] = conn
					err = request(conn, bufio.NewReaderSize(conn, 1024), "/idle")
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			})
		}
		wg.Wait()
	}
	opened := time.Since(start)
	require.Zero(t, failed.Load(), "%d of %d connections failed, e.g. %v", failed.Load(), n, firstErr.Load())

	time.Sleep(time.Second)
	rss1, peak := sc.rss(t)
	fd1, g1 := sc.fds(t), sc.goroutines(t)
	var slowest time.Duration
	for range 20 {
		status, took := cfTimedGet(t, sc.url+"/normal")
		assert.Equal(t, http.StatusOK, status)
		slowest = max(slowest, took)
	}
	code, _ := sc.readyz(t)
	assert.Equal(t, http.StatusOK, code)

	// Every 100th idle connection still works: the sidecar kept them.
	reused := 0
	for i := 0; i < n; i += 100 {
		if assert.NoError(t, request(conns[i], bufio.NewReaderSize(conns[i], 1024), "/again"), "idle connection %d", i) {
			reused++
		}
	}
	ceiling := rss0 + int64(n)*perConn
	assert.GreaterOrEqual(t, fd1, fd0+n-n/100, "the sidecar does not hold the idle connections")
	assert.LessOrEqual(t, rss1, ceiling, "RSS with %d idle connections", n)
	assert.LessOrEqual(t, peak, ceiling, "peak RSS with %d idle connections", n)
	assert.Less(t, slowest, 500*time.Millisecond, "a normal request is slow beside the idle connections")
	assert.Equal(t, n, up.count("/idle"))

	for i, c := range conns {
		c.Close()
		conns[i] = nil
	}
	// What stays is the upstream pool the batches filled (at most
	// max_idle_conns_per_host, 64): one fd and two goroutines (the
	// transport's read and write loops) per pooled connection.
	var fd2, g2 int
	var pooled int64
	_, released := cfWait(15*time.Second, func() bool {
		pooled = upstream.open() - pool0
		fd2, g2 = sc.fds(t), sc.goroutines(t)
		return fd2 <= fd0+int(pooled)+5 && g2 <= g0+2*int(pooled)+5
	})
	assert.True(t, released, "after the clients left: fds %d (baseline %d), goroutines %d (baseline %d), %d more pooled upstream connections", fd2, fd0, g2, g0, pooled)
	assert.LessOrEqual(t, pooled, int64(64), "upstream pool beyond max_idle_conns_per_host")
	rss2, _ := sc.rss(t)

	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	t.Logf("%d idle keep-alive connections opened in %v (batches of %d; RLIMIT_NOFILE test %d, sidecar %d)", n, opened.Round(time.Millisecond), batch, ownLimit, sidecarLimit)
	t.Logf("sidecar: RSS %s → %s (peak %s, ceiling %s = start + 40 KiB/conn, %.1f KiB/conn measured); fds %d → %d → %d after close; goroutines %d → %d",
		mib(rss0), mib(rss1), mib(peak), mib(ceiling), float64(rss1-rss0)/float64(n)/1024, fd0, fd1, fd2, g0, g1)
	t.Logf("meanwhile: slowest of 20 normal requests %v; %d/%d sampled idle connections reused; after close: RSS %s, fds %d, goroutines %d, %d more pooled upstream connections",
		slowest.Round(time.Microsecond), reused, (n+99)/100, mib(rss2), fd2, g2, pooled)
	recordRow(faultRow{
		Scenario: fmt.Sprintf("clients: %d idle keep-alive conns", n), Requests: n + 20 + reused, Errors: int(failed.Load()),
		PeakRSS: peak, GoroutinesBefore: g0, GoroutinesAfter: g2,
		Note: fmt.Sprintf("held: fds %d→%d, goroutines %d, RSS ceiling %s; normal GET ≤ %v", fd0, fd1, g1, mib(ceiling), slowest.Round(time.Millisecond)),
	})
}

// ---------------------------------------------------------------------------

// cfProgress is an upstream for the disconnect test: it tells the test
// when a request has reached it and how much of its body has arrived.
type cfProgress struct {
	mu      sync.Mutex
	got     map[string]int64
	changed chan struct{}
}

func (p *cfProgress) add(id string, n int64) {
	p.mu.Lock()
	p.got[id] += n
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// wait blocks until id has delivered at least n bytes (0: arrived).
func (p *cfProgress) wait(tb testing.TB, id string, n int64) {
	tb.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		p.mu.Lock()
		got, ok := p.got[id]
		ch := p.changed
		p.mu.Unlock()
		if ok && got >= n {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("%s: the upstream got %d bytes in 10 s, want %d", id, got, n)
		}
	}
}

func (p *cfProgress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Request-Id")
	p.add(id, 0)
	switch r.URL.Path {
	case "/upload":
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			p.add(id, int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				return // the sidecar gave up the request: nobody to answer
			}
		}
		_, _ = io.WriteString(w, "uploaded\n")
	case "/download":
		const size = 64 << 20
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := make([]byte, 32<<10)
		rc := http.NewResponseController(w)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			_ = rc.Flush()
			time.Sleep(2 * time.Millisecond)
		}
	case "/slow":
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
			_, _ = io.WriteString(w, "late\n")
		}
	case "/boom", "/boom/after":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"detail":"cf control failure"}`)
	default:
		_, _ = io.WriteString(w, "ok\n")
	}
}

// TestClientsDisconnect: clients go away mid-upload (10 MiB announced, 256
// KiB sent), mid-download (a 64 MiB answer, 128 KiB read) and before the
// answer, closing with a FIN or an RST. Each is logged as 499
// (client_closed) and counted, none becomes an event at the Sentry double
// (upstream 500s sent before and after do, as controls), and the sidecar's
// goroutines return to their baseline.
func TestClientsDisconnect(t *testing.T) {
	const rounds = 10
	sentry := sentrytest.NewServer(t)
	sentry.AllowKey(cfSentryKey)
	up := &cfProgress{got: map[string]int64{}, changed: make(chan struct{})}
	sc := cfStartSidecar(t, cfConf{
		Upstream: cfStartUpstream(t, up).url(),
		Sentry:   []string{fmt.Sprintf("dsn: %q", sentry.DSN(cfSentryKey, cfSentryProject))},
	}.yaml())
	host := strings.TrimPrefix(sc.url, "http://")

	// Before the baseline: one upstream 500, so that the baseline holds
	// the pooled upstream connection and the event transport's connection
	// to the double; it is also the first of the two control events.
	c := cfNewClient(t, 10*time.Second, false)
	status, _, err := cfGet(c, sc.url+"/boom", "cf-control-before")
	require.NoError(t, err)
	require.Equal(t, http.StatusInternalServerError, status)
	sentry.WaitEvents(t, 1, 15*time.Second)
	var g0 int
	cfWait(3*time.Second, func() bool { // the minimum of a few readings: the settled baseline
		g := sc.goroutines(t)
		if g0 == 0 || g < g0 {
			g0 = g
			return false
		}
		return true
	})

	dial := func(t *testing.T) *net.TCPConn {
		conn, err := net.DialTimeout("tcp", host, 5*time.Second)
		require.NoError(t, err)
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		return conn.(*net.TCPConn)
	}
	leave := func(conn *net.TCPConn, i int) {
		if i%2 == 1 {
			_ = conn.SetLinger(0) // an RST
		}
		_ = conn.Close()
	}
	var ids []string
	chunk := make([]byte, 32<<10)
	for i := range rounds {
		id := fmt.Sprintf("cf-upload-%d", i)
		ids = append(ids, id)
		conn := dial(t)
		fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\nX-Request-ID: %s\r\n\r\n", host, 10<<20, id)
		for range 8 {
			_, err := conn.Write(chunk)
			require.NoError(t, err)
		}
		up.wait(t, id, 128<<10)
		leave(conn, i)
	}
	for i := range rounds {
		id := fmt.Sprintf("cf-download-%d", i)
		ids = append(ids, id)
		conn := dial(t)
		fmt.Fprintf(conn, "GET /download HTTP/1.1\r\nHost: %s\r\nX-Request-ID: %s\r\n\r\n", host, id)
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, res.StatusCode)
		_, err = io.CopyN(io.Discard, res.Body, 128<<10)
		require.NoError(t, err)
		leave(conn, i)
	}
	for i := range rounds / 2 {
		id := fmt.Sprintf("cf-before-answer-%d", i)
		ids = append(ids, id)
		conn := dial(t)
		fmt.Fprintf(conn, "GET /slow HTTP/1.1\r\nHost: %s\r\nX-Request-ID: %s\r\n\r\n", host, id)
		up.wait(t, id, 0)
		leave(conn, i)
	}

	log := sc.waitAccess(t, ids, 10*time.Second)
	for _, id := range ids {
		assert.Equal(t, 499, log[id].Status, "access log of %s: %+v", id, log[id])
		assert.Equal(t, "client_closed", log[id].Error, "access log of %s", id)
	}
	// The control: an upstream 500 after the aborts is the second event,
	// and the only other one.
	status, _, err = cfGet(c, sc.url+"/boom/after", "cf-control-after")
	require.NoError(t, err)
	require.Equal(t, http.StatusInternalServerError, status)
	sentry.WaitEvents(t, 2, 15*time.Second)
	time.Sleep(1500 * time.Millisecond)
	events := sentry.Events()
	var fingerprints []any
	for _, ev := range events {
		fingerprints = append(fingerprints, ev["fingerprint"])
	}
	assert.Equal(t, []any{[]any{"GET", "/boom", "500"}, []any{"GET", "/boom/after", "500"}}, fingerprints,
		"the only events are the two controls: client aborts are never events")

	m := sc.metrics(t)
	closed := cfMetric(m, "sidecar_client_closed_total")
	assert.Equal(t, float64(len(ids)), closed)
	assert.Zero(t, cfMetric(m, "sidecar_sentry_events_total", "kind=proxy_error"), "a client abort counted as a proxy error event")
	assert.Zero(t, cfMetric(m, "sidecar_upstream_errors_total"), "a client abort counted as an upstream error")

	var g1 int
	_, back := cfWait(10*time.Second, func() bool { g1 = sc.goroutines(t); return g1 <= g0+3 })
	assert.True(t, back, "goroutines: %d before, %d after the aborts", g0, g1)
	t.Logf("%d aborted requests (%d mid-upload, %d mid-download, %d before the answer; FIN and RST alternating): all 499 client_closed in the access log, sidecar_client_closed_total %v, 0 events (2 from the control 500s before and after); goroutines %d → %d",
		len(ids), rounds, rounds, rounds/2, closed, g0, g1)
	wrong := 0
	for _, id := range ids {
		if log[id].Status != 499 {
			wrong++
		}
	}
	recordRow(faultRow{
		Scenario: "clients: disconnect mid-upload/-download", Requests: len(ids) + 2, Errors: wrong,
		GoroutinesBefore: g0, GoroutinesAfter: g1, EventsExpected: 2, EventsDelivered: len(events),
		Note: fmt.Sprintf("%d upload, %d download, %d before answer: 499 in the access log, no event (the 2 are control 500s)", rounds, rounds, rounds/2),
	})
}

// ---------------------------------------------------------------------------

// TestClientsTunnelFlood: tunnel.client_rate allows 5 envelopes per client
// address, then one a minute. One address (X-Forwarded-For from the trusted
// loopback proxy) floods the tunnel: 5 envelopes pass and the rest get 429
// with Retry-After and X-Sentry-Rate-Limits. Another address, and the peer
// itself, are unaffected while the first is limited, and only the accepted
// envelopes reach the Sentry double.
func TestClientsTunnelFlood(t *testing.T) {
	const (
		burst = 5
		flood = 40
		other = 5
		path  = "/api/v1/beacon"
	)
	sentry := sentrytest.NewServer(t)
	sentry.AllowKey(cfSentryKey)
	dsn := sentry.DSN(cfSentryKey, cfSentryProject)
	up := &cfCounting{}
	sc := cfStartSidecar(t, cfConf{
		Upstream:      cfStartUpstream(t, up).url(),
		UpstreamExtra: []string{`trusted_proxies: ["127.0.0.1/32"]`},
		Sentry:        []string{fmt.Sprintf("dsn: %q", dsn)},
		Top:           []string{"tunnel:", "  path: " + path, fmt.Sprintf("  client_rate: {burst: %d, every: 1m}", burst)},
	}.yaml())
	host := strings.TrimPrefix(sc.url, "http://")
	browserDSN := fmt.Sprintf("http://%s@%s/%d", tunnel.PlaceholderKey(dsn), host, cfSentryProject)

	c := cfNewClient(t, 10*time.Second, true)
	post := func(xff string) (int, http.Header) {
		var raw [16]byte
		_, _ = rand.Read(raw[:])
		id := hex.EncodeToString(raw[:])
		body := fmt.Sprintf(`{"event_id":%q,"dsn":%q}`+"\n"+`{"type":"event"}`+"\n"+`{"event_id":%q,"message":"cf flood","level":"error","platform":"javascript"}`+"\n", id, browserDSN, id)
		req, _ := http.NewRequest(http.MethodPost, sc.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-sentry-envelope")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		res, err := c.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode == http.StatusTooManyRequests {
			var e map[string]any
			assert.NoError(t, json.Unmarshal(b, &e), "429 body is not JSON: %s", b)
		}
		return res.StatusCode, res.Header
	}

	flooder, bystander := "203.0.113.7", "198.51.100.9"
	floodStatus := map[int]int{}
	var retryAfter []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < flood; i += 8 {
				status, h := post(flooder)
				mu.Lock()
				floodStatus[status]++
				if status == http.StatusTooManyRequests {
					ra, err := strconv.Atoi(h.Get("Retry-After"))
					assert.NoError(t, err, "Retry-After %q", h.Get("Retry-After"))
					retryAfter = append(retryAfter, ra)
					assert.NotEmpty(t, h.Get("X-Sentry-Rate-Limits"))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	otherStatus := map[int]int{}
	for range other {
		status, _ := post(bystander)
		otherStatus[status]++
	}
	peerStatus, _ := post("")
	stillLimited, _ := post(flooder)

	assert.Equal(t, map[int]int{http.StatusOK: burst, http.StatusTooManyRequests: flood - burst}, floodStatus)
	for _, ra := range retryAfter {
		assert.True(t, ra >= 1 && ra <= 60, "Retry-After %d outside 1–60 s", ra)
	}
	assert.Equal(t, map[int]int{http.StatusOK: other}, otherStatus, "another address was limited by the flood")
	assert.Equal(t, http.StatusOK, peerStatus, "the peer's own address was limited by the flood")
	assert.Equal(t, http.StatusTooManyRequests, stillLimited)

	accepted := burst + other + 1
	sentry.WaitEnvelopes(t, accepted, 15*time.Second)
	time.Sleep(time.Second)
	assert.Len(t, sentry.Envelopes(), accepted, "envelopes at the double: only the accepted ones")
	m := sc.metrics(t)
	limited := cfMetric(m, "sidecar_tunnel_envelopes_total", "outcome=rate_limited_client")
	forwarded := cfMetric(m, "sidecar_tunnel_envelopes_total", "outcome=forwarded")
	assert.Equal(t, float64(flood-burst+1), limited)
	assert.Equal(t, float64(accepted), forwarded)
	assert.Zero(t, up.count(path), "a tunnel post reached the API")
	minRA, maxRA := 0, 0
	if len(retryAfter) > 0 {
		minRA, maxRA = retryAfter[0], retryAfter[0]
		for _, ra := range retryAfter {
			minRA, maxRA = min(minRA, ra), max(maxRA, ra)
		}
	}
	t.Logf("flood of %d from %s: %v (Retry-After %d–%d s); %s: %v; the peer: %d; the flooder again: %d; %d envelopes at the double; metrics rate_limited_client=%v forwarded=%v",
		flood, flooder, floodStatus, minRA, maxRA, bystander, otherStatus, peerStatus, stillLimited, len(sentry.Envelopes()), limited, forwarded)
	recordRow(faultRow{
		Scenario: "clients: tunnel flood from one IP", Requests: flood + other + 2,
		Errors: flood - floodStatus[http.StatusOK] - floodStatus[http.StatusTooManyRequests] + other - otherStatus[http.StatusOK],
		Note: fmt.Sprintf("flooder %d×200 %d×429 (Retry-After %d–%d s); other IP %d/%d 200; %d envelopes reached Sentry",
			floodStatus[http.StatusOK], floodStatus[http.StatusTooManyRequests], minRA, maxRA, otherStatus[http.StatusOK], other, len(sentry.Envelopes())),
	})
}
