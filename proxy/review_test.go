package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Regression tests for what a review of the reporting found.

// TestConcurrentEventsWithNestedContexts: scrubbing wrote into the nested
// maps of the base scope's contexts, which every event shares; concurrent
// captures crashed the process with "concurrent map writes".
func TestConcurrentEventsWithNestedContexts(t *testing.T) {
	t.Parallel()
	upstream := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	transport := &sentry.MockTransport{}
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn: "http://public@127.0.0.1:1/1", Transport: transport, Release: "t",
		EnableTracing: true, TracesSampleRate: 1, TraceIgnoreStatusCodes: [][]int{},
		BeforeSend:            func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event { return enrich.ScrubEvent(ev) },
		BeforeSendTransaction: func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event { return enrich.ScrubEvent(ev) },
		DisableMetrics:        true, DisableClientReports: true,
	})
	require.NoError(t, err)
	defer client.Close()
	scope := sentry.NewScope()
	tls := map[string]any{"verify": false, "api_token": "s3cret"}
	scope.SetContext("proxmox", sentry.Context{"host": "pve", "tls": tls, "nodes": []any{map[string]any{"password": "x"}}})
	f := mustProxy(t, upstream.URL, func(c *Config) {
		c.Report = Report{Client: client, Scope: scope, Capture: []StatusRange{{500, 599}}, TracesSampleRate: 1}
	})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			res, err := f.srv.Client().Get(fmt.Sprintf("%s/x/%d", f.srv.URL, i))
			if assert.NoError(t, err) {
				res.Body.Close()
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return len(transport.Events()) == 80 }, waitTimeout, 5*time.Millisecond, "40 events and 40 transactions")
	for _, ev := range transport.Events() {
		if ev.Type == "transaction" {
			continue
		}
		assert.Equal(t, enrich.Filtered, ev.Contexts["proxmox"]["tls"].(map[string]any)["api_token"])
	}
	assert.Equal(t, "s3cret", tls["api_token"], "the base scope is never written")
}

// TestTracedPathSecretsStayOut: a token in the path of a traced request
// reached Sentry in the transaction's url.path.
func TestTracedPathSecretsStayOut(t *testing.T) {
	t.Parallel()
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	f := mustTraceFixture(t, 1.0, 200)
	f.mustGet(t, "/share/"+jwt+"/x;token=hunter2", nil)
	txs, _ := f.recorded(t, 1, 0)
	b, err := txs[0].MarshalJSON()
	require.NoError(t, err)
	assert.NotContains(t, string(b), jwt)
	assert.NotContains(t, string(b), "hunter2")
}

// TestMalformedTraceHeaderStartsATrace: when the SDK refuses the caller's
// sentry-trace, the trace is ours, and its baggage must say so.
func TestMalformedTraceHeaderStartsATrace(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 1.0, 200)
	f.mustGet(t, "/api/v1/apps", http.Header{
		"Sentry-Trace": {"garbage"},
		"Baggage":      {"sentry-trace_id=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,sentry-public_key=x,sentry-sample_rate=0.0001"},
	})
	up := f.upstreamHeaders(t)
	traceID := strings.Split(up.Get("Sentry-Trace"), "-")[0]
	assert.NotEqual(t, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", traceID)
	assert.Contains(t, up.Get("Baggage"), "sentry-trace_id="+traceID)
	assert.NotContains(t, up.Get("Baggage"), "aaaaaaaa")
	txs, _ := f.recorded(t, 1, 0)
	assert.Equal(t, traceID, enrich.PeekDSC(txs[0])["trace_id"])
}

// TestUpgradeOnAnActionRoute: an anonymous request on an action route is
// teed to learn a login's user; a 101's body is the connection itself and
// must not be wrapped, or the upgrade fails with 502.
func TestUpgradeOnAnActionRoute(t *testing.T) {
	t.Parallel()
	upstream := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	})
	routes, err := enrich.NewRouter(nil, 10)
	require.NoError(t, err)
	f := mustProxy(t, upstream.URL, func(c *Config) {
		c.Report = Report{
			Routes:  routes,
			Trails:  enrich.NewTrails(5, 10, time.Hour, nil),
			Actions: []Action{{Method: "GET", Route: "/ws", Name: "chat"}},
		}
	})
	conn, err := (&net.Dialer{}).Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	fmt.Fprintf(conn, "hello\n")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo hello\n", line)
	_, _ = io.Copy(io.Discard, br)
}

// TestIgnorePaths: an ignored path (exact, or a prefix ending in "*")
// makes no event and no transaction, whatever its status; other paths do.
func TestIgnorePaths(t *testing.T) {
	t.Parallel()
	upstream := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	transport := &sentry.MockTransport{}
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn: "http://public@127.0.0.1:1/1", Transport: transport, Release: "t",
		EnableTracing: true, TracesSampleRate: 1, TraceIgnoreStatusCodes: [][]int{},
		DisableMetrics: true, DisableClientReports: true,
	})
	require.NoError(t, err)
	defer client.Close()
	f := mustProxy(t, upstream.URL, func(c *Config) {
		c.Report = Report{
			Client: client, Scope: sentry.NewScope(), Capture: []StatusRange{{500, 599}},
			TracesSampleRate: 1, IgnorePaths: []string{"/health", "/static/*"},
		}
	})
	for _, path := range []string{"/health", "/static/app.js", "/api/x"} {
		res, err := f.srv.Client().Get(f.srv.URL + path)
		require.NoError(t, err)
		res.Body.Close()
	}
	require.Eventually(t, func() bool { return len(transport.Events()) >= 2 }, waitTimeout, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	events := transport.Events()
	require.Len(t, events, 2, "one event and one transaction, both for /api/x")
	for _, ev := range events {
		assert.Contains(t, ev.Transaction, "/api/x")
	}
}
