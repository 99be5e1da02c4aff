package proxy

import (
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

const (
	browserTrace = "0123456789abcdef0123456789abcdef"
	browserSpan  = "89abcdef01234567"
)

// traceFixture is a proxy with tracing on at rate, sending to a recording
// transport, in front of an upstream that records the trace headers it got.
type traceFixture struct {
	*fixture
	transport *sentry.MockTransport
	mu        sync.Mutex
	got       []http.Header
}

func mustTraceFixture(tb testing.TB, rate float64, status int, rules ...SampleRule) *traceFixture {
	tb.Helper()
	f := &traceFixture{transport: &sentry.MockTransport{}}
	upstream := mustUpstream(tb, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.got = append(f.got, r.Header.Clone())
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{"detail":"boom"}`))
	})
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:                    "http://public@127.0.0.1:1/1",
		Transport:              f.transport,
		EnableTracing:          true,
		TracesSampleRate:       rate,
		TraceIgnoreStatusCodes: [][]int{},
		Release:                "test",
		DisableMetrics:         true,
		DisableClientReports:   true,
	})
	require.NoError(tb, err)
	tb.Cleanup(client.Close)
	routes, err := enrich.NewRouter([]string{"/api/v1/apps/{app_id}"}, 100)
	require.NoError(tb, err)
	f.fixture = mustProxy(tb, upstream.URL, func(c *Config) {
		c.Report = Report{
			Client:           client,
			Scope:            sentry.NewScope(),
			Routes:           routes,
			Capture:          []StatusRange{{500, 599}},
			TracesSampleRate: rate,
			TracesSampler:    rules,
		}
	})
	return f
}

func (f *traceFixture) mustGet(tb testing.TB, path string, h http.Header) {
	tb.Helper()
	req := f.mustRequest(tb, http.MethodGet, path, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	res, _ := mustDo(tb, f.srv.Client(), req)
	res.Body.Close()
}

func (f *traceFixture) upstreamHeaders(tb testing.TB) http.Header {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(tb, f.got)
	return f.got[len(f.got)-1]
}

// kinds waits for the recorded events and returns them split.
func (f *traceFixture) recorded(tb testing.TB, wantTx, wantErr int) (txs, errs []*sentry.Event) {
	tb.Helper()
	require.Eventually(tb, func() bool {
		txs, errs = nil, nil
		for _, ev := range f.transport.Events() {
			if ev.Type == "transaction" {
				txs = append(txs, ev)
			} else {
				errs = append(errs, ev)
			}
		}
		return len(txs) >= wantTx && len(errs) >= wantErr
	}, waitTimeout, 5*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	return txs, errs
}

func TestTraceContinuesBrowserSampledTrace(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 0, 500) // our rate 0: only the browser samples
	f.mustGet(t, "/api/v1/apps/wordpress-myblog?x=1", http.Header{
		"Sentry-Trace": {browserTrace + "-" + browserSpan + "-1"},
		"Baggage":      {"sentry-trace_id=" + browserTrace + ",sentry-public_key=browserkey,sentry-sample_rate=0.25,sentry-sampled=true", "other-vendor=keep"},
	})
	up := f.upstreamHeaders(t)
	require.Len(t, up.Values("Sentry-Trace"), 1, "set once, never added")
	parts := strings.Split(up.Get("Sentry-Trace"), "-")
	require.Len(t, parts, 3)
	assert.Equal(t, browserTrace, parts[0])
	assert.NotEqual(t, browserSpan, parts[1], "the upstream's parent is our span")
	assert.Equal(t, "1", parts[2])
	require.Len(t, up.Values("Baggage"), 1)
	baggage := up.Get("Baggage")
	assert.Contains(t, baggage, "other-vendor=keep")
	assert.Contains(t, baggage, "sentry-public_key=browserkey", "the browser's frozen sampling context")
	assert.Contains(t, baggage, "sentry-sample_rate=0.25")

	txs, errs := f.recorded(t, 1, 1)
	require.Len(t, txs, 1)
	tx := txs[0]
	assert.Equal(t, "GET /api/v1/apps/{app_id}", tx.Transaction)
	assert.Equal(t, sentry.SourceRoute, tx.TransactionInfo.Source)
	trace := tx.Contexts["trace"]
	assert.Equal(t, "http.server", trace["op"])
	assert.Equal(t, browserTrace, trace["trace_id"].(sentry.TraceID).String())
	assert.Equal(t, browserSpan, trace["parent_span_id"].(sentry.SpanID).String())
	require.Len(t, tx.Spans, 1)
	span := tx.Spans[0]
	assert.Equal(t, "http.client", span.Op)
	assert.Equal(t, parts[1], span.SpanID.String(), "the upstream's parent is the http.client span")
	assert.Equal(t, 500, span.Data["http.response.status_code"])
	assert.Equal(t, sentry.SpanStatusInternalError, span.Status)

	require.Len(t, errs, 1)
	assert.Equal(t, browserTrace, errs[0].Contexts["trace"]["trace_id"].(sentry.TraceID).String(), "the 5xx event is in the trace")
}

func TestTraceBrowserNotSampledBuildsNothing(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 1.0, 500) // our rate 1: the browser's 0 still wins
	in := browserTrace + "-" + browserSpan + "-0"
	f.mustGet(t, "/api/v1/apps", http.Header{"Sentry-Trace": {in}, "Baggage": {"sentry-sampled=false,other=1"}})
	up := f.upstreamHeaders(t)
	assert.Equal(t, []string{in}, up.Values("Sentry-Trace"), "passed on untouched")
	assert.Equal(t, []string{"sentry-sampled=false,other=1"}, up.Values("Baggage"))
	_, errs := f.recorded(t, 0, 1)
	for _, ev := range f.transport.Events() {
		assert.NotEqual(t, "transaction", ev.Type)
	}
	assert.Equal(t, browserTrace, errs[0].Contexts["trace"]["trace_id"].(sentry.TraceID).String(), "the event still joins the browser's trace")
}

func TestTraceHeadOfTrace(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 1.0, 200)
	f.mustGet(t, "/api/v1/apps", nil)
	up := f.upstreamHeaders(t)
	require.Len(t, up.Values("Sentry-Trace"), 1)
	txs, _ := f.recorded(t, 1, 0)
	trace := txs[0].Contexts["trace"]
	parts := strings.Split(up.Get("Sentry-Trace"), "-")
	assert.Equal(t, trace["trace_id"].(sentry.TraceID).String(), parts[0])
	assert.Equal(t, "1", parts[2])
	assert.Contains(t, up.Get("Baggage"), "sentry-trace_id="+parts[0])
	assert.Equal(t, sentry.SpanStatusOK, txs[0].Contexts["trace"]["status"])
}

func TestTraceSamplerRulesAndUnsampledPath(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 0, 200, SampleRule{Method: "GET", Route: "/api/v1/apps/{id}", Rate: 1})
	f.mustGet(t, "/api/v1/apps", nil) // rate 0: not traced
	up := f.upstreamHeaders(t)
	assert.Empty(t, up.Values("Sentry-Trace"), "nothing is built for an unsampled request")
	assert.Empty(t, up.Values("Baggage"))
	f.mustGet(t, "/api/v1/apps/nginx-mysite", nil) // the rule, templated like requests, samples it
	txs, _ := f.recorded(t, 1, 0)
	require.Len(t, txs, 1)
	assert.Equal(t, "GET /api/v1/apps/{app_id}", txs[0].Transaction)
}

func TestSampledFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]byte{
		browserTrace + "-" + browserSpan + "-1":        '1',
		browserTrace + "-" + browserSpan + "-0":        '0',
		browserTrace + "-" + browserSpan:               0,
		" " + browserTrace + "-" + browserSpan + "-1 ": '1',
		"garbage": 0,
		"":        0,
	} {
		assert.Equal(t, want, sampledFlag(in), in)
	}
}

func BenchmarkSampledDecisionUnsampled(b *testing.B) {
	s := newSampler(0.1, nil, nil)
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		s.sampled(h, "GET", "/api/v1/apps")
	}
}

func TestPlaceholderKeyMappedInBaggage(t *testing.T) {
	r := &Report{PublicKeys: map[string]string{"placeholder": "realkey"}}
	for _, tc := range []struct{ in, want string }{
		{"sentry-trace_id=abc,sentry-public_key=placeholder,other=1", "sentry-trace_id=abc,sentry-public_key=realkey,other=1"},
		{"sentry-public_key=placeholder", "sentry-public_key=realkey"},
		{"sentry-public_key=someoneelse,x=1", "sentry-public_key=someoneelse,x=1"},
		{"other=1", "other=1"},
	} {
		h := http.Header{"Baggage": {tc.in}}
		r.mapPublicKey(h)
		assert.Equal(t, tc.want, h.Get("Baggage"), tc.in)
	}
	h := http.Header{"Baggage": {"other=1"}}
	assert.Zero(t, testing.AllocsPerRun(10, func() { r.mapPublicKey(h) }))
}

// TestTraceHeadRecordsTheDecidedRate: when the sidecar heads the trace at a
// rate below 1, the sampling context says that rate, not the 1.0 the SDK
// records for an explicit decision.
func TestTraceHeadRecordsTheDecidedRate(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 1.0, 200, SampleRule{Route: "/api/v1/apps", Rate: 0.5})
	for i := 0; i < 100 && len(f.transport.Events()) == 0; i++ {
		f.mustGet(t, "/api/v1/apps", nil)
	}
	txs, _ := f.recorded(t, 1, 0)
	f.mu.Lock()
	var sampledBaggage string
	for _, h := range f.got {
		if b := h.Get("Baggage"); b != "" {
			sampledBaggage = b
		}
	}
	f.mu.Unlock()
	assert.Contains(t, sampledBaggage, "sentry-sample_rate=0.5")
	assert.Equal(t, "0.5", enrich.PeekDSC(txs[0])["sample_rate"], "the envelope's trace header")
}

func TestTraceHeadDropsStaleSentryBaggage(t *testing.T) {
	t.Parallel()
	f := mustTraceFixture(t, 1.0, 200)
	f.mustGet(t, "/api/v1/apps", http.Header{"Baggage": {"sentry-trace_id=deadbeefdeadbeefdeadbeefdeadbeef,sentry-public_key=stale,vendor=1"}})
	b := f.upstreamHeaders(t).Get("Baggage")
	assert.Contains(t, b, "vendor=1")
	assert.NotContains(t, b, "stale")
	assert.NotContains(t, b, "deadbeef")
	assert.Equal(t, 1, strings.Count(b, "sentry-trace_id="))
}
