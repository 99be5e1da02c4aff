package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestMain fails the package if any test leaves a goroutine behind: a
// proxy that leaks one per upgraded connection or per failed round trip
// would slowly eat a long-running sidecar.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait for something that happens after the
// client already has its answer (access-log lines, metrics, goroutines).
const waitTimeout = 5 * time.Second

// clientTimeout bounds each request a fixture's client makes.
const clientTimeout = 30 * time.Second

// fixture is a proxy under test, served by a real http.Server (ReverseProxy
// panics http.ErrAbortHandler only under one), with its logs and metrics.
type fixture struct {
	p    *Proxy
	srv  *httptest.Server
	logs *observer.ObservedLogs
	reg  *prometheus.Registry
}

// mustUpstream starts a fake upstream that is closed when the test ends.
func mustUpstream(tb testing.TB, h http.HandlerFunc) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// mustClosedPort returns an address on 127.0.0.1 where nothing listens.
func mustClosedPort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	addr := ln.Addr().String()
	require.NoError(tb, ln.Close())
	return addr
}

// mustNewProxy builds a proxy for upstream with test defaults, a debug-level
// observed logger and a fresh registry; opts adjust the config.
func mustNewProxy(tb testing.TB, upstream string, opts ...func(*Config)) (*Proxy, *observer.ObservedLogs, *prometheus.Registry) {
	tb.Helper()
	u, err := url.Parse(upstream)
	require.NoError(tb, err)
	cfg := Config{
		Upstream:            u,
		DialTimeout:         2 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		MaxIdleConnsPerHost: 16,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	p, err := New(cfg, zap.New(core), reg)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		p.CloseUpgraded()
		p.CloseIdleConnections()
	})
	return p, logs, reg
}

// mustProxy serves a new proxy for upstream on 127.0.0.1. The server is
// closed (and its client's idle connections with it) before the upstream,
// because cleanups run last-in first-out.
func mustProxy(tb testing.TB, upstream string, opts ...func(*Config)) *fixture {
	tb.Helper()
	p, logs, reg := mustNewProxy(tb, upstream, opts...)
	srv := httptest.NewServer(p)
	tb.Cleanup(srv.Close)
	// Every request of a test ends by itself, even if the proxy hangs.
	srv.Client().Timeout = clientTimeout
	return &fixture{p: p, srv: srv, logs: logs, reg: reg}
}

// noRedirects is a client that shows the status it got instead of
// following a Location.
func (f *fixture) noRedirects() *http.Client {
	c := *f.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// mustRequest builds a request to the proxy; target is the request URI
// (path and query) exactly as it goes on the wire.
func (f *fixture) mustRequest(tb testing.TB, method, target string, body io.Reader) *http.Request {
	tb.Helper()
	req, err := http.NewRequest(method, f.srv.URL+target, body)
	require.NoError(tb, err)
	require.Equal(tb, target, req.URL.RequestURI(), "the client would not send the target as written")
	return req
}

// mustDo sends req with c and returns the response with its whole body.
func mustDo(tb testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	tb.Helper()
	res, err := c.Do(req)
	require.NoError(tb, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(tb, err)
	return res, body
}

// mustAccessLog waits for the access-log line of the request with id and
// returns its fields. The line is written after the response has gone, so
// the client may see its answer first.
func (f *fixture) mustAccessLog(tb testing.TB, id string) map[string]any {
	tb.Helper()
	var entries []observer.LoggedEntry
	require.Eventually(tb, func() bool {
		entries = f.logs.FilterMessage("request").FilterField(zap.String("request_id", id)).All()
		return len(entries) > 0
	}, waitTimeout, 5*time.Millisecond, "no access-log line for request %s", id)
	require.Len(tb, entries, 1, "one access-log line per request")
	return entries[0].ContextMap()
}

// mustMetric adds up the series of name that carry labels (name, value
// pairs; none means every series): the value of counters and gauges, the
// sample count of histograms. No matching series is 0.
func mustMetric(tb testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	tb.Helper()
	require.Zero(tb, len(labels)%2, "labels come in name, value pairs")
	families, err := reg.Gather()
	require.NoError(tb, err)
	var sum float64
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func labelsMatch(have []*dto.LabelPair, want []string) bool {
	for i := 0; i < len(want); i += 2 {
		found := false
		for _, lp := range have {
			if lp.GetName() == want[i] && lp.GetValue() == want[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// mustInFlightZero waits until no request is being served.
func (f *fixture) mustInFlightZero(tb testing.TB) {
	tb.Helper()
	require.Eventually(tb, func() bool {
		return mustMetric(tb, f.reg, "sidecar_requests_in_flight") == 0
	}, waitTimeout, 5*time.Millisecond, "sidecar_requests_in_flight did not return to 0")
}
