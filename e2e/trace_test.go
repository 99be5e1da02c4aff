//go:build e2e

// Package e2e tests the sidecar binary with real clients: here, a FastAPI
// app with its own sentry_sdk behind the sidecar, both reporting to one
// Sentry double, to check that a trace runs unbroken from the browser
// through the sidecar into the API.
//
// Run with `go test -tags e2e ./e2e/...` (or .ci/e2e, which installs the
// Debian packages the API needs first).
package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sentry-sidecar/sentry-sidecar/internal/proctest"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// The two Sentry projects on the one double: the sidecar's and the API's.
const (
	sidecarKey     = "sidecarkey"
	sidecarProject = 1
	apiKey         = "apikey"
	apiProject     = 2
	browserKey     = "browserkey" // the browser SDK's, seen only in baggage
	jwtSecret      = "e2e-jwt-secret-not-for-production"

	arrival = 15 * time.Second // bound on any wait for an item at the double
	absence = 2 * time.Second  // how long "nothing arrived" is watched
)

var (
	repoRoot   string // the module root, where the API's file is found
	sidecarBin string // built once by TestMain
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "sentry-sidecar-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, took, err := proctest.BuildSidecar(repoRoot, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	sidecarBin = bin
	fmt.Printf("e2e: built the sidecar in %s\n", took.Round(time.Millisecond))
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
			code = 1
		}
	}
	return code
}

// suite is what the scenarios share: one Sentry double and one API.
type suite struct {
	srv *sentrytest.Server
	api *api
}

// TestTrace runs the scenarios against one Sentry double and one Python API
// (starting them takes a second); each scenario starts its own sidecar with
// the sample rate it needs.
func TestTrace(t *testing.T) {
	t.Logf("API runs on %s", mustCheckPython(t))
	srv := sentrytest.NewServer(t)
	srv.AllowKey(sidecarKey)
	srv.AllowKey(apiKey)
	start := time.Now()
	a := mustStartAPI(t, []string{
		"PATH=/usr/bin:/bin",
		"JWT_SECRET_KEY=" + jwtSecret,
		"SENTRY_DSN=" + srv.DSN(apiKey, apiProject),
		"TRACES_SAMPLE_RATE=1.0",
	})
	t.Logf("API up at %s in %s", a.url, time.Since(start).Round(time.Millisecond))
	s := &suite{srv: srv, api: a}

	t.Run("sampled by the browser", s.testSampledByBrowser)
	t.Run("not sampled by the browser", s.testNotSampledByBrowser)
	t.Run("no browser header", s.testSidecarHeadsTrace)
	t.Run("repeated client headers", s.testRepeatedClientHeaders)
	t.Run("5xx links to the trace", s.test5xxLinksToTrace)
	t.Run("logged-in user on the transaction", s.testUserOnTransaction)

	if t.Failed() {
		t.Logf("API output:\n%s", a.Out.String())
	}
}

// startSidecar runs a sidecar in front of the API, reporting to the
// double's sidecar project, with the given traces_sample_rate.
func (s *suite) startSidecar(t *testing.T, rate string) *sidecar {
	t.Helper()
	sc := mustStartSidecar(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstream:
  url: %q
sentry:
  dsn: %q
  environment: production
  release: "sidecar@e2e"
  traces_sample_rate: %s
jwt:
  secret: %q
shutdown:
  drain_delay: 0s
  grace_period: 5s
  flush_timeout: 5s
log:
  format: json
`, s.api.url, s.srv.DSN(sidecarKey, sidecarProject), rate, jwtSecret))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sidecar output:\n%s", sc.Out.String())
		}
	})
	return sc
}

// testSampledByBrowser: the browser sampled the trace and the sidecar's own
// rate is 0, so only the browser's decision makes the sidecar trace.
func (s *suite) testSampledByBrowser(t *testing.T) {
	sc := s.startSidecar(t, "0")
	trace, browserSpan := newTraceID(), newSpanID()

	got, elapsed := mustEcho(t, sc.url, browserHeaders(trace, browserSpan, "1", true))

	// What the API saw: one sentry-trace, the browser's trace, our span.
	require.Len(t, got.SentryTrace, 1, "the API must see exactly one sentry-trace: %q", got.SentryTrace)
	upTrace, upParent, upFlag := mustParseSentryTrace(t, got.SentryTrace[0])
	assert.Equal(t, trace, upTrace, "the trace id the API continues")
	assert.NotEqual(t, browserSpan, upParent, "the API's parent must be the sidecar's http.client span, not the browser's")
	assert.Equal(t, "1", upFlag, "the sampling decision goes on")
	// And one baggage: the root's frozen DSC (the browser's key), plus the
	// third-party member.
	require.Len(t, got.Baggage, 1, "the API must see exactly one baggage: %q", got.Baggage)
	bag := parseBaggage(got.Baggage[0])
	assert.Equal(t, "keep", bag["other-vendor"], "non-Sentry baggage members are kept: %s", got.Baggage[0])
	assert.Equal(t, trace, bag["sentry-trace_id"], "baggage: %s", got.Baggage[0])
	assert.Equal(t, browserKey, bag["sentry-public_key"], "the browser's frozen DSC, not the sidecar's DSN key: %s", got.Baggage[0])
	assert.Equal(t, "true", bag["sentry-sampled"], "baggage: %s", got.Baggage[0])
	assert.NotContains(t, got.Baggage[0], sidecarKey)

	// At the double: the sidecar's transaction under the browser's span, and
	// the API's under the sidecar's http.client span.
	tx := s.waitItem(t, "transaction", sidecarProject, trace)
	api := s.waitItem(t, "transaction", apiProject, trace)
	txCtx := traceContext(tx.payload)
	assert.Equal(t, "GET /api/v1/echo-trace", tx.payload["transaction"])
	assert.Equal(t, "route", nested(tx.payload, "transaction_info", "source"))
	assert.Equal(t, "http.server", txCtx["op"])
	assert.Equal(t, trace, txCtx["trace_id"])
	assert.Equal(t, browserSpan, txCtx["parent_span_id"], "the sidecar's transaction continues the browser's span")
	client := mustHTTPClientSpan(t, tx.payload)
	assert.Equal(t, upParent, client["span_id"], "the sentry-trace the API got names the http.client span")
	assert.Equal(t, trace, traceContext(api.payload)["trace_id"])
	assert.Equal(t, client["span_id"], traceContext(api.payload)["parent_span_id"], "the API's transaction hangs under the sidecar's http.client span")
	assert.Equal(t, "/api/v1/echo-trace", api.payload["transaction"])
	// The envelopes' trace headers (what dynamic sampling reads): one head,
	// the browser. The DSC spec wants a continuing SDK to send the DSC it
	// received, unchanged (sentry-javascript#5292 fixed the same bug). In
	// sentry-go v0.46.2 Scope.ApplyToEvent (scope.go:424) rebuilds the DSC
	// of every event whose scope has a span from the client's own DSN,
	// replacing the frozen one that Span.toEvent had set.
	assert.Equal(t, browserKey, nested(tx.header, "trace", "public_key"), "the sidecar transaction's envelope trace header: %v", tx.header["trace"])
	assert.Equal(t, trace, nested(tx.header, "trace", "trace_id"))
	assert.Equal(t, browserKey, nested(api.header, "trace", "public_key"), "the API transaction's envelope trace header: %v", api.header["trace"])

	t.Logf("trace %s: browser span %s → sidecar tx %s (%s) → http.client %s (%s) → API tx %s (%s); client saw %s",
		trace, browserSpan, txCtx["span_id"], duration(tx.payload), client["span_id"], duration(client),
		traceContext(api.payload)["span_id"], duration(api.payload), elapsed.Round(time.Microsecond))
	t.Logf("API got sentry-trace %q, baggage %q", got.SentryTrace, got.Baggage)
}

// testNotSampledByBrowser: the browser decided not to sample; the sidecar's
// rate 1.0 must not override it, nothing is built for the request, and the
// API continues the negative decision.
func (s *suite) testNotSampledByBrowser(t *testing.T) {
	sc := s.startSidecar(t, "1.0")
	trace, browserSpan := newTraceID(), newSpanID()
	h := browserHeaders(trace, browserSpan, "0", false)

	got, elapsed := mustEcho(t, sc.url, h)
	assert.Equal(t, []string{h.Get("Sentry-Trace")}, got.SentryTrace, "the API sees the browser's sentry-trace, once and unchanged")
	assert.Equal(t, []string{h.Get("Baggage")}, got.Baggage, "the API sees the browser's baggage, once and unchanged")

	// A later sampled request through the same sidecar: once both its
	// transactions arrived, wait a little more and check that nothing of the
	// unsampled trace came.
	marker := newTraceID()
	mustEcho(t, sc.url, browserHeaders(marker, newSpanID(), "1", true))
	s.waitItem(t, "transaction", sidecarProject, marker)
	s.waitItem(t, "transaction", apiProject, marker)
	time.Sleep(absence)
	for _, typ := range []string{"transaction", "event"} {
		for _, it := range s.items(typ) {
			if traceContext(it.payload)["trace_id"] == trace {
				t.Errorf("project %s sent a %s for the unsampled trace %s: %v", it.project, typ, trace, it.payload["transaction"])
			}
		}
	}
	t.Logf("trace %s (-0): the API got %q; no transaction %s after the marker %s arrived; client saw %s",
		trace, got.SentryTrace, absence, marker, elapsed.Round(time.Microsecond))
}

// testRepeatedClientHeaders: a client (or a proxy before the sidecar) that
// sends sentry-trace twice and baggage on two lines still gets exactly one
// of each to the API, with the other vendor's member kept.
func (s *suite) testRepeatedClientHeaders(t *testing.T) {
	sc := s.startSidecar(t, "0")
	trace, browserSpan := newTraceID(), newSpanID()
	h := browserHeaders(trace, browserSpan, "1", true)
	h.Add("Sentry-Trace", h.Get("Sentry-Trace"))
	h["Baggage"] = []string{
		fmt.Sprintf("sentry-trace_id=%s,sentry-public_key=%s,sentry-sample_rate=1,sentry-sampled=true", trace, browserKey),
		"other-vendor=keep",
	}

	got, _ := mustEcho(t, sc.url, h)
	require.Len(t, got.SentryTrace, 1, "the API must see exactly one sentry-trace: %q", got.SentryTrace)
	upTrace, upParent, _ := mustParseSentryTrace(t, got.SentryTrace[0])
	assert.Equal(t, trace, upTrace)
	assert.NotEqual(t, browserSpan, upParent)
	require.Len(t, got.Baggage, 1, "the API must see exactly one baggage: %q", got.Baggage)
	bag := parseBaggage(got.Baggage[0])
	assert.Equal(t, "keep", bag["other-vendor"], "baggage: %s", got.Baggage[0])
	assert.Equal(t, browserKey, bag["sentry-public_key"], "baggage: %s", got.Baggage[0])

	tx := s.waitItem(t, "transaction", sidecarProject, trace)
	api := s.waitItem(t, "transaction", apiProject, trace)
	assert.Equal(t, browserSpan, traceContext(tx.payload)["parent_span_id"])
	assert.Equal(t, upParent, traceContext(api.payload)["parent_span_id"])
	t.Logf("trace %s: client sent 2 sentry-trace and 2 baggage lines; the API got %q and %q", trace, got.SentryTrace, got.Baggage)
}

// testSidecarHeadsTrace: no browser header and rate 1.0: the sidecar starts
// the trace and the API continues it.
func (s *suite) testSidecarHeadsTrace(t *testing.T) {
	sc := s.startSidecar(t, "1.0")
	got, elapsed := mustEcho(t, sc.url, http.Header{})

	require.Len(t, got.SentryTrace, 1, "the API must see exactly one sentry-trace: %q", got.SentryTrace)
	trace, parent, flag := mustParseSentryTrace(t, got.SentryTrace[0])
	assert.Equal(t, "1", flag)
	require.Len(t, got.Baggage, 1, "the API must see exactly one baggage: %q", got.Baggage)
	bag := parseBaggage(got.Baggage[0])
	assert.Equal(t, trace, bag["sentry-trace_id"], "baggage: %s", got.Baggage[0])
	assert.Equal(t, sidecarKey, bag["sentry-public_key"], "the sidecar heads the trace: its own DSC: %s", got.Baggage[0])
	assert.Equal(t, "true", bag["sentry-sampled"], "baggage: %s", got.Baggage[0])
	assert.Equal(t, "production", bag["sentry-environment"], "baggage: %s", got.Baggage[0])

	tx := s.waitItem(t, "transaction", sidecarProject, trace)
	api := s.waitItem(t, "transaction", apiProject, trace)
	txCtx := traceContext(tx.payload)
	assert.Equal(t, "GET /api/v1/echo-trace", tx.payload["transaction"])
	assert.Equal(t, "http.server", txCtx["op"])
	assert.Empty(t, txCtx["parent_span_id"], "the sidecar's transaction is the trace's head")
	client := mustHTTPClientSpan(t, tx.payload)
	assert.Equal(t, parent, client["span_id"])
	assert.Equal(t, client["span_id"], traceContext(api.payload)["parent_span_id"], "the API's transaction hangs under the sidecar's http.client span")
	assert.Equal(t, sidecarKey, nested(api.header, "trace", "public_key"), "the API continues the sidecar's DSC: %v", api.header["trace"])

	t.Logf("trace %s: sidecar tx %s (%s, head) → http.client %s (%s) → API tx %s (%s); client saw %s",
		trace, txCtx["span_id"], duration(tx.payload), client["span_id"], duration(client),
		traceContext(api.payload)["span_id"], duration(api.payload), elapsed.Round(time.Microsecond))
}

// test5xxLinksToTrace: the API fails; the sidecar's event for the 500 and
// the API's own exception event both carry the browser's trace id, whether
// the browser sampled the trace or not.
func (s *suite) test5xxLinksToTrace(t *testing.T) {
	sc := s.startSidecar(t, "0")
	trace, browserSpan := newTraceID(), newSpanID()

	code, body, elapsed := mustDo(t, http.MethodGet, sc.url+"/api/v1/fail", browserHeaders(trace, browserSpan, "1", true), "")
	require.Equal(t, http.StatusInternalServerError, code, "%s", body)
	assert.JSONEq(t, `{"detail":"Internal server error: e2e: deliberate failure in the API"}`, string(body), "the client gets the API's body")

	ev := s.waitItem(t, "event", sidecarProject, trace)
	apiEv := s.waitItem(t, "event", apiProject, trace)
	tx := s.waitItem(t, "transaction", sidecarProject, trace)
	apiTx := s.waitItem(t, "transaction", apiProject, trace)

	assert.Equal(t, trace, traceContext(ev.payload)["trace_id"], "the sidecar's event links to the trace")
	assert.Equal(t, trace, traceContext(apiEv.payload)["trace_id"], "the API's event links to the trace")
	assert.Equal(t, "500", nested(ev.payload, "tags", "http.status_code"), "the sidecar's event is the upstream 500: %v", ev.payload["tags"])
	assert.Equal(t, "RuntimeError", nested(firstException(apiEv.payload), "type"), "the API's own exception event")
	assert.Equal(t, "internal_error", traceContext(tx.payload)["status"])
	client := mustHTTPClientSpan(t, tx.payload)
	assert.Equal(t, client["span_id"], traceContext(apiTx.payload)["parent_span_id"])

	t.Logf("trace %s: sidecar event %s (%q, span %s, envelope trace header %v), API event %s (span %s); sidecar tx %s, API tx %s; client saw %s",
		trace, ev.payload["event_id"], ev.payload["message"], traceContext(ev.payload)["span_id"], ev.header["trace"],
		apiEv.payload["event_id"], traceContext(apiEv.payload)["span_id"],
		traceContext(tx.payload)["span_id"], traceContext(apiTx.payload)["span_id"], elapsed.Round(time.Microsecond))

	// Unsampled: no transaction, but both events still name the browser's
	// trace, and the sidecar's carries the browser's sampling context.
	unsampled := newTraceID()
	code, body, _ = mustDo(t, http.MethodGet, sc.url+"/api/v1/fail", browserHeaders(unsampled, newSpanID(), "0", false), "")
	require.Equal(t, http.StatusInternalServerError, code, "%s", body)
	ev = s.waitItem(t, "event", sidecarProject, unsampled)
	apiEv = s.waitItem(t, "event", apiProject, unsampled)
	assert.Equal(t, browserKey, nested(ev.header, "trace", "public_key"), "the unsampled event's envelope trace header: %v", ev.header["trace"])
	assert.Equal(t, "false", nested(ev.header, "trace", "sampled"), "the unsampled event's envelope trace header: %v", ev.header["trace"])
	t.Logf("unsampled trace %s: sidecar event %s (envelope trace header %v), API event %s",
		unsampled, ev.payload["event_id"], ev.header["trace"], apiEv.payload["event_id"])
}

// testUserOnTransaction: a token the API issued (fetched through the
// sidecar) names the user on the sidecar's transaction; the token itself
// never reaches Sentry.
func (s *suite) testUserOnTransaction(t *testing.T) {
	sc := s.startSidecar(t, "1.0")
	code, body, _ := mustDo(t, http.MethodPost, sc.url+"/api/v1/auth/login",
		http.Header{"Content-Type": {"application/json"}}, `{"username":"demo","password":"demo1234"}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var login struct {
		AccessToken string `json:"access_token"`
	}
	mustJSON(t, body, &login)
	require.NotEmpty(t, login.AccessToken)

	trace := newTraceID()
	h := browserHeaders(trace, newSpanID(), "1", true)
	h.Set("Authorization", "Bearer "+login.AccessToken)
	code, body, elapsed := mustDo(t, http.MethodGet, sc.url+"/api/v1/apps", h, "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var apps []map[string]any
	mustJSON(t, body, &apps)
	assert.Len(t, apps, 2)

	tx := s.waitItem(t, "transaction", sidecarProject, trace)
	api := s.waitItem(t, "transaction", apiProject, trace)
	assert.Equal(t, "GET /api/v1/apps", tx.payload["transaction"])
	user, _ := tx.payload["user"].(map[string]any)
	assert.Equal(t, "2", nested(user, "id"), "the sidecar's transaction names the token's user: %v", tx.payload["user"])
	assert.Equal(t, "demo", nested(user, "username"), "user: %v", tx.payload["user"])
	client := mustHTTPClientSpan(t, tx.payload)
	assert.Equal(t, client["span_id"], traceContext(api.payload)["parent_span_id"])

	for _, env := range s.srv.Envelopes() {
		if projectOf(env) == fmt.Sprint(sidecarProject) && strings.Contains(string(env.Raw), login.AccessToken) {
			t.Errorf("the token reached Sentry in the sidecar's envelope %s", env.EventID())
		}
	}
	t.Logf("trace %s: sidecar tx %s user %v; API tx %s user %v; client saw %s",
		trace, traceContext(tx.payload)["span_id"], tx.payload["user"],
		traceContext(api.payload)["span_id"], api.payload["user"], elapsed.Round(time.Microsecond))
}

// echo is the API's /api/v1/echo-trace answer: the trace headers it got.
type echo struct {
	SentryTrace []string `json:"sentry_trace"`
	Baggage     []string `json:"baggage"`
}

func mustEcho(t *testing.T, base string, h http.Header) (echo, time.Duration) {
	t.Helper()
	code, body, elapsed := mustDo(t, http.MethodGet, base+"/api/v1/echo-trace", h, "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var got echo
	mustJSON(t, body, &got)
	return got, elapsed
}

// browserHeaders are the trace headers the browser SDK sends with an API
// call: its sentry-trace, and baggage with its DSC and another vendor's
// member.
func browserHeaders(trace, span, sampled string, sampledBaggage bool) http.Header {
	return http.Header{
		"Sentry-Trace": {trace + "-" + span + "-" + sampled},
		"Baggage": {fmt.Sprintf("sentry-trace_id=%s,sentry-public_key=%s,sentry-sample_rate=1,sentry-sampled=%t,other-vendor=keep",
			trace, browserKey, sampledBaggage)},
	}
}

var sentryTraceRE = regexp.MustCompile(`^([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?$`)

func mustParseSentryTrace(t *testing.T, v string) (trace, span, flag string) {
	t.Helper()
	m := sentryTraceRE.FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("not a sentry-trace value: %q", v)
	}
	return m[1], m[2], m[3]
}

// parseBaggage splits a baggage value into its members (W3C: key=value,
// comma-separated, values percent-encoded, properties after ";").
func parseBaggage(v string) map[string]string {
	out := map[string]string{}
	for member := range strings.SplitSeq(v, ",") {
		member, _, _ = strings.Cut(member, ";")
		k, val, ok := strings.Cut(strings.TrimSpace(member), "=")
		if !ok {
			continue
		}
		if u, err := url.QueryUnescape(val); err == nil {
			val = u
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	return out
}

// received is one item at the double with what tells where it came from.
type received struct {
	project string
	header  map[string]any // the envelope header
	payload map[string]any
}

func projectOf(env sentrytest.Envelope) string {
	rest := strings.TrimPrefix(env.URL, "/api/")
	p, _, _ := strings.Cut(rest, "/")
	return p
}

// items returns every accepted item of type typ, in arrival order.
func (s *suite) items(typ string) []received {
	var out []received
	for _, env := range s.srv.Envelopes() {
		for _, it := range env.Items {
			if it.Type == typ {
				out = append(out, received{project: projectOf(env), header: env.Header, payload: it.JSON()})
			}
		}
	}
	return out
}

// waitItem waits until project sent an item of type typ in trace and
// returns it; it fails the test, listing what did arrive, after arrival.
func (s *suite) waitItem(t *testing.T, typ string, project int, trace string) received {
	t.Helper()
	want := fmt.Sprint(project)
	deadline := time.Now().Add(arrival)
	for {
		var found []received
		for _, it := range s.items(typ) {
			if it.project == want && traceContext(it.payload)["trace_id"] == trace {
				found = append(found, it)
			}
		}
		if len(found) > 1 {
			t.Errorf("project %s sent %d %s items for trace %s; want one", want, len(found), typ, trace)
		}
		if len(found) > 0 {
			return found[0]
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, it := range s.items(typ) {
				seen = append(seen, fmt.Sprintf("project %s %v trace %v", it.project, it.payload["transaction"], traceContext(it.payload)["trace_id"]))
			}
			t.Fatalf("waited %s for a %s from project %s in trace %s; the double has %d: %s (rejected: %d)",
				arrival, typ, want, trace, len(seen), strings.Join(seen, "; "), len(s.srv.Rejections()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// traceContext returns the payload's contexts.trace (empty if none).
func traceContext(payload map[string]any) map[string]any {
	tc, _ := nested(payload, "contexts", "trace").(map[string]any)
	if tc == nil {
		return map[string]any{}
	}
	return tc
}

// nested follows keys through JSON objects; nil when one is missing.
func nested(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

func firstException(payload map[string]any) map[string]any {
	values, _ := nested(payload, "exception", "values").([]any)
	if len(values) == 0 {
		return nil
	}
	ex, _ := values[len(values)-1].(map[string]any)
	return ex
}

// mustHTTPClientSpan returns the transaction's one http.client span, which
// must be a direct child of the transaction in the same trace.
func mustHTTPClientSpan(t *testing.T, tx map[string]any) map[string]any {
	t.Helper()
	spans, _ := tx["spans"].([]any)
	var found []map[string]any
	for _, sp := range spans {
		if m, ok := sp.(map[string]any); ok && m["op"] == "http.client" {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the sidecar's transaction %v has %d http.client spans, want 1: %v", tx["transaction"], len(found), spans)
	}
	span, tc := found[0], traceContext(tx)
	assert.Equal(t, tc["span_id"], span["parent_span_id"], "the http.client span is a child of the transaction")
	assert.Equal(t, tc["trace_id"], span["trace_id"], "the http.client span is in the transaction's trace")
	return span
}

// duration is an item's timestamp minus its start_timestamp: RFC 3339
// strings (sentry-go, sentry-python) or seconds since the epoch.
func duration(m map[string]any) time.Duration {
	start, ok1 := timestamp(m["start_timestamp"])
	end, ok2 := timestamp(m["timestamp"])
	if !ok1 || !ok2 {
		return 0
	}
	return end.Sub(start).Round(time.Microsecond)
}

func timestamp(v any) (time.Time, bool) {
	switch v := v.(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		return t, err == nil
	case float64:
		sec := int64(v)
		return time.Unix(sec, int64((v-float64(sec))*1e9)), true
	}
	return time.Time{}, false
}

func newTraceID() string { return randomHex(16) }
func newSpanID() string  { return randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
