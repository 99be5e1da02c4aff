package tunnel

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// TestMain checks that no test of the package leaves a goroutine behind
// (an idle upstream connection, a hanging request).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	// realKey is the key of the real browser DSN; it must never reach the
	// browser or the log.
	realKey = "0123456789abcdef0123456789abcdef"
	// placeholder is the key the browser config hands out.
	placeholder = "feedfacefeedfacefeedfacefeedface"
	project     = 42
	eventID     = "9ec79c33ec9942ab8353589fcb2e04dc"
	clientIP    = "203.0.113.7"
	browserUA   = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
)

// placeholderDSN is what a page on https://app.example.com was given.
var placeholderDSN = "https://" + placeholder + "@app.example.com/" + strconv.Itoa(project)

// clock is an injected Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is a handler in front of a Sentry double.
type fixture struct {
	sentry *sentrytest.Server
	h      *Handler
	reg    *prometheus.Registry
	clock  *clock
	logs   *observer.ObservedLogs
}

// mustFixture builds a handler whose Target is the double's project 42
// with realKey (and a secret that must never travel), the placeholder key,
// a client IP taken from X-Test-Client-IP (standing for the proxy's trusted
// rules) or else the peer; mod adjusts the options.
func mustFixture(tb testing.TB, mod func(*Options)) *fixture {
	tb.Helper()
	f := &fixture{sentry: sentrytest.NewServer(tb), reg: prometheus.NewRegistry(), clock: newClock()}
	f.sentry.AllowKey(realKey)
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	o := Options{
		Target:         strings.Replace(f.sentry.DSN(realKey, project), realKey+"@", realKey+":s3cret@", 1),
		PlaceholderKey: placeholder,
		Registerer:     f.reg,
		Log:            zap.New(core),
		Now:            f.clock.Now,
		ClientIP: func(r *http.Request) string {
			if ip := r.Header.Get("X-Test-Client-IP"); ip != "" {
				return ip
			}
			return remoteHost(r)
		},
	}
	if mod != nil {
		mod(&o)
	}
	f.h = mustHandler(tb, o)
	return f
}

func mustHandler(tb testing.TB, o Options) *Handler {
	tb.Helper()
	h, err := New(o)
	require.NoError(tb, err)
	tb.Cleanup(h.Close)
	return h
}

// part is one item as the SDK writes it: header line and payload.
type part struct {
	header  string
	payload []byte
}

// envelopeBytes frames an envelope as the browser SDK does: header, then
// "\n" + item header + "\n" + payload per item, no trailing newline.
func envelopeBytes(header string, items ...part) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, it := range items {
		b.WriteByte('\n')
		b.WriteString(it.header)
		b.WriteByte('\n')
		b.Write(it.payload)
	}
	return b.Bytes()
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	require.NoError(tb, err)
	return string(b)
}

// browserHeader is an envelope header as the browser SDK writes it through
// a tunnel, plus the Relay-internal keys a hostile page might add.
func browserHeader(tb testing.TB, dsn string) string {
	tb.Helper()
	return mustJSON(tb, map[string]any{
		"event_id": eventID,
		"sent_at":  "2026-07-01T12:00:00.123Z",
		"dsn":      dsn,
		"sdk":      map[string]any{"name": "sentry.javascript.browser", "version": "10.63.0"},
		"trace": map[string]any{
			"trace_id": "771a43a4192642f0b136d5159a501700", "public_key": placeholder,
			"sample_rate": json.Number("0.10000000000000000555"), "sampled": "true", "environment": "production",
		},
		"forwarded_for": "6.6.6.6",
		"remote_addr":   "6.6.6.6",
		"user_agent":    "forged",
		"x_future_key":  map[string]any{"kept": true},
	})
}

func eventPart(tb testing.TB, ev map[string]any) part {
	tb.Helper()
	return part{header: `{"type":"event"}`, payload: []byte(mustJSON(tb, ev))}
}

func simpleEvent(tb testing.TB, dsn string) []byte {
	tb.Helper()
	return envelopeBytes(mustJSON(tb, map[string]any{"event_id": eventID, "dsn": dsn}),
		eventPart(tb, map[string]any{"event_id": eventID, "message": "boom", "platform": "javascript"}))
}

// post sends body to the handler as a browser would, with extra headers
// given as name, value pairs.
func (f *fixture) post(tb testing.TB, body []byte, kv ...string) *httptest.ResponseRecorder {
	tb.Helper()
	return serve(f.h, http.MethodPost, body, kv...)
}

func serve(h http.Handler, method string, body []byte, kv ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/api/v1/envelope", bytes.NewReader(body))
	req.RemoteAddr = "192.0.2.10:51234"
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	req.Header.Set("User-Agent", browserUA)
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// afterHeader is everything after the envelope header line.
func afterHeader(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[i:]
	}
	return nil
}

func detail(tb testing.TB, rec *httptest.ResponseRecorder) errorBody {
	tb.Helper()
	var e errorBody
	require.NoError(tb, json.Unmarshal(rec.Body.Bytes(), &e), "body %q", rec.Body.String())
	return e
}

func outcome(h *Handler, o string) float64 {
	return testutil.ToFloat64(h.m.envelopes.WithLabelValues(o))
}

func TestForwardKeepsEveryItemByteForByte(t *testing.T) {
	t.Parallel()
	f := mustFixture(t, nil)
	replay := []byte("{\"segment_id\":0}\n\x78\x9c\x0a\x00\xff\n\r\n\x01binary\n")
	body := envelopeBytes(browserHeader(t, placeholderDSN),
		part{`{"type":"event"}`, []byte(`{"event_id":"` + eventID + `","message":"boom","user":{"id":"page"},"extra":{"password":"kept: Scrub is off"}}`)},
		part{`{"type":"attachment","length":14,"filename":"a.txt","content_type":"text/plain"}`, []byte("line1\nline2\n\n\n")},
		part{`{"type":"replay_event"}`, []byte(`{"type":"replay_event","replay_id":"r1","segment_id":0}`)},
		part{`{"type":"replay_recording","length":` + strconv.Itoa(len(replay)) + `}`, replay},
		part{`{"type":"some_future_type","x":[1,2]}`, []byte("opaque")},
		part{`{"type":"client_report"}`, []byte(`{"timestamp":1,"discarded_events":[]}`)},
	)

	rec := f.post(t, body, "X-Test-Client-IP", clientIP, "X-Forwarded-For", "6.6.6.6", "Cookie", "session=abc", "Authorization", "Bearer abc")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.JSONEq(t, `{"id":"`+eventID+`"}`, rec.Body.String(), "Sentry's own answer")

	envs := f.sentry.Envelopes()
	require.Len(t, envs, 1)
	got := envs[0]
	assert.Equal(t, afterHeader(body), afterHeader(got.Raw), "every item byte for byte, binary replay included")
	require.Len(t, got.Items, 6)
	assert.Equal(t, replay, got.Items[3].Payload)

	// The header line: dsn is the real one without its secret, the
	// placeholder key in the trace head is mapped, Relay-internal keys
	// are gone, everything else is kept.
	assert.Equal(t, f.sentry.DSN(realKey, project), got.Header["dsn"])
	trace := got.Header["trace"].(map[string]any)
	assert.Equal(t, realKey, trace["public_key"])
	assert.Equal(t, "771a43a4192642f0b136d5159a501700", trace["trace_id"])
	assert.Contains(t, string(got.Raw[:bytes.IndexByte(got.Raw, '\n')]), `"sample_rate":0.10000000000000000555`, "numbers keep their digits")
	for _, k := range []string{"forwarded_for", "remote_addr", "user_agent"} {
		assert.NotContains(t, got.Header, k)
	}
	assert.Equal(t, "2026-07-01T12:00:00.123Z", got.Header["sent_at"])
	assert.Equal(t, map[string]any{"kept": true}, got.Header["x_future_key"])

	// The HTTP request: auth with the real key, the trusted client IP,
	// the browser's User-Agent and Content-Type, nothing else of the
	// browser's request.
	hd := got.HTTPHeader
	assert.Equal(t, "Sentry sentry_version=7, sentry_key="+realKey+", sentry_client=sentry.javascript.browser/10.63.0", hd.Get("X-Sentry-Auth"))
	assert.Equal(t, clientIP, hd.Get("X-Forwarded-For"))
	assert.Equal(t, clientIP, hd.Get("X-Sentry-Forwarded-For"))
	assert.Equal(t, browserUA, hd.Get("User-Agent"))
	assert.Equal(t, "text/plain;charset=UTF-8", hd.Get("Content-Type"))
	assert.Empty(t, hd.Get("Cookie"))
	assert.Empty(t, hd.Get("Authorization"))
	assert.Equal(t, fmt.Sprintf("/api/%d/envelope/", project), got.URL)
	assert.NotContains(t, string(f.sentry.AllBytes()), "s3cret", "the DSN's secret never travels")
	assert.NotContains(t, string(f.sentry.AllBytes()), "6.6.6.6", "the page's claimed IP never travels")

	assert.Equal(t, 1.0, outcome(f.h, OutcomeForwarded))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.h.m.items.WithLabelValues("replay_recording")))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.h.m.items.WithLabelValues("other")))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.h.m.upstream.WithLabelValues("2xx")))
	assert.Equal(t, float64(len(body)), testutil.ToFloat64(f.h.m.bytes.WithLabelValues("in")))
}

func TestForwardHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		kv                       []string
		sdk                      any
		wantCT, wantClient, want string
	}{
		{name: "same-origin content type, no sdk", kv: []string{"Content-Type", "application/x-sentry-envelope"},
			wantCT: "application/x-sentry-envelope", wantClient: "sentry-sidecar", want: "192.0.2.10"},
		{name: "binary body without content type", kv: []string{"Content-Type", ""},
			wantCT: "application/x-sentry-envelope", wantClient: "sentry-sidecar", want: "192.0.2.10"},
		{name: "other content type replaced", kv: []string{"Content-Type", "application/json"},
			wantCT: "application/x-sentry-envelope", wantClient: "sentry-sidecar", want: "192.0.2.10"},
		{name: "sdk name cannot add auth fields", sdk: map[string]any{"name": "x, sentry_key=other\r\n", "version": "1"},
			wantCT: "text/plain;charset=UTF-8", wantClient: "xsentry_keyother/1", want: "192.0.2.10"},
		{name: "trusted client ip", kv: []string{"X-Test-Client-IP", "2001:db8::1"},
			wantCT: "text/plain;charset=UTF-8", wantClient: "sentry-sidecar", want: "2001:db8::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustFixture(t, nil)
			hdr := map[string]any{"dsn": placeholderDSN}
			if tc.sdk != nil {
				hdr["sdk"] = tc.sdk
			}
			rec := f.post(t, envelopeBytes(mustJSON(t, hdr), eventPart(t, map[string]any{"message": "x"})), tc.kv...)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			got := f.sentry.Envelopes()[0].HTTPHeader
			assert.Equal(t, tc.wantCT, got.Get("Content-Type"))
			assert.Equal(t, "Sentry sentry_version=7, sentry_key="+realKey+", sentry_client="+tc.wantClient, got.Get("X-Sentry-Auth"))
			assert.Equal(t, tc.want, got.Get("X-Forwarded-For"))
			assert.Equal(t, tc.want, got.Get("X-Sentry-Forwarded-For"))
		})
	}
}

func TestDSNCheck(t *testing.T) {
	t.Parallel()
	// An internal listener the envelope tries to make the sidecar call.
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { internalHits.Add(1) }))
	t.Cleanup(internal.Close)
	internalHost := strings.TrimPrefix(internal.URL, "http://")
	const allowed = "https://0000aaaa0000aaaa0000aaaa0000aaaa@sentry.example.com:8443/prefix/7"

	tests := []struct {
		name string
		dsn  any // nil: no dsn key
		want int
	}{
		{name: "placeholder on the page's host", dsn: placeholderDSN, want: http.StatusOK},
		{name: "placeholder on any host, even an internal one", dsn: "http://" + placeholder + "@" + internalHost + "/42", want: http.StatusOK},
		{name: "no dsn maps to the target", want: http.StatusOK},
		{name: "allowed DSN exactly", dsn: allowed, want: http.StatusOK},
		{name: "allowed DSN with its secret and the host's case", dsn: "https://0000aaaa0000aaaa0000aaaa0000aaaa:x@Sentry.Example.com:8443/prefix/7", want: http.StatusOK},
		{name: "placeholder with another project", dsn: "https://" + placeholder + "@app.example.com/43", want: http.StatusForbidden},
		{name: "another key", dsn: "https://ffffffffffffffffffffffffffffffff@app.example.com/42", want: http.StatusForbidden},
		{name: "the real DSN itself is not on the list", dsn: "http://" + realKey + "@app.example.com/42", want: http.StatusForbidden},
		{name: "allowed key on another host", dsn: "https://0000aaaa0000aaaa0000aaaa0000aaaa@evil.example.com:8443/prefix/7", want: http.StatusForbidden},
		{name: "allowed key with another project", dsn: "https://0000aaaa0000aaaa0000aaaa0000aaaa@sentry.example.com:8443/prefix/8", want: http.StatusForbidden},
		{name: "allowed key on another port", dsn: "https://0000aaaa0000aaaa0000aaaa0000aaaa@sentry.example.com/prefix/7", want: http.StatusForbidden},
		{name: "allowed key with another path", dsn: "https://0000aaaa0000aaaa0000aaaa0000aaaa@sentry.example.com:8443/7", want: http.StatusForbidden},
		{name: "internal host", dsn: "http://someone@" + internalHost + "/1", want: http.StatusForbidden},
		{name: "unparsable", dsn: "::not a dsn", want: http.StatusForbidden},
		{name: "empty", dsn: "", want: http.StatusForbidden},
		{name: "not a string", dsn: 42, want: http.StatusForbidden},
		{name: "file scheme", dsn: "file://" + placeholder + "@/etc/42", want: http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustFixture(t, func(o *Options) { o.Allowed = []string{allowed} })
			hdr := map[string]any{"event_id": eventID}
			if tc.dsn != nil {
				hdr["dsn"] = tc.dsn
			}
			rec := f.post(t, envelopeBytes(mustJSON(t, hdr), eventPart(t, map[string]any{"message": "x"})))
			require.Equal(t, tc.want, rec.Code, rec.Body.String())
			if tc.want == http.StatusForbidden {
				assert.Equal(t, 0, f.sentry.Requests(), "nothing sent")
				assert.Equal(t, "dsn not allowed", detail(t, rec).Detail)
				assert.Equal(t, "dsn not allowed", rec.Header().Get("X-Sentry-Error"))
				assert.Equal(t, 1.0, outcome(f.h, OutcomeRejectedDSN))
				return
			}
			envs := f.sentry.Envelopes()
			require.Len(t, envs, 1, "sent to the target, whatever host the envelope named")
			if tc.dsn != nil {
				assert.Equal(t, f.sentry.DSN(realKey, project), envs[0].Header["dsn"])
			} else {
				assert.NotContains(t, envs[0].Header, "dsn", "a header without dsn keeps its bytes")
			}
		})
	}
	// After the parallel subtests: cleanups run once they are done.
	t.Cleanup(func() { assert.Zero(t, internalHits.Load(), "the internal listener was never called") })
}

func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{
		{"own client", nil},
		{"given client that would follow", &http.Client{Transport: &http.Transport{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := sentrytest.NewServer(t)
			var hits atomic.Int32
			redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				http.Redirect(w, r, s.EnvelopeURL(project), http.StatusTemporaryRedirect)
			}))
			t.Cleanup(redirector.Close)
			if tc.client != nil {
				t.Cleanup(tc.client.CloseIdleConnections)
			}
			h := mustHandler(t, Options{
				Target:         "http://" + realKey + "@" + strings.TrimPrefix(redirector.URL, "http://") + "/42",
				PlaceholderKey: placeholder, HTTPClient: tc.client,
			})
			rec := serve(h, http.MethodPost, simpleEvent(t, placeholderDSN))
			assert.Equal(t, http.StatusBadGateway, rec.Code)
			assert.Empty(t, rec.Header().Get("Location"))
			assert.Equal(t, int32(1), hits.Load())
			assert.Zero(t, s.Requests(), "the redirect target got nothing")
			assert.Equal(t, 1.0, outcome(h, OutcomeUpstreamError))
		})
	}
}

// failReader fails the test if the handler reads the body.
type failReader struct{ tb testing.TB }

func (r failReader) Read([]byte) (int, error) {
	r.tb.Error("the body was read")
	return 0, io.EOF
}

func TestSizeAndEncoding(t *testing.T) {
	t.Parallel()
	t.Run("oversize by Content-Length is refused unread", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, func(o *Options) { o.Limits = Limits{Body: 1 << 20} })
		req := httptest.NewRequest(http.MethodPost, "/api/v1/envelope", failReader{t})
		req.ContentLength = 2 << 20
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.Equal(t, "envelope exceeded size limits (body)", detail(t, rec).Detail)
		assert.Equal(t, "envelope exceeded size limits (body)", rec.Header().Get("X-Sentry-Error"))
		assert.Zero(t, f.sentry.Requests())
		assert.Equal(t, 1.0, outcome(f.h, OutcomeRejectedTooLarge))
	})
	t.Run("gzip bomb", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, func(o *Options) { o.Limits = Limits{Decompressed: 1 << 20} })
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(simpleEvent(t, placeholderDSN))
		_, _ = zw.Write(make([]byte, 8<<20))
		require.NoError(t, zw.Close())
		require.Less(t, gz.Len(), 1<<20, "small on the wire")
		rec := f.post(t, gz.Bytes(), "Content-Encoding", "gzip")
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.Equal(t, "envelope exceeded size limits (decompressed)", detail(t, rec).Detail)
		assert.Zero(t, f.sentry.Requests())
	})
	t.Run("gzip within limits is decoded and sent plain", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		body := simpleEvent(t, placeholderDSN)
		_, _ = zw.Write(body)
		require.NoError(t, zw.Close())
		rec := f.post(t, gz.Bytes(), "Content-Encoding", "gzip")
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		env := f.sentry.Envelopes()[0]
		assert.Empty(t, env.HTTPHeader.Get("Content-Encoding"))
		assert.Equal(t, afterHeader(body), afterHeader(env.Raw))
	})
	t.Run("item over its limit", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, func(o *Options) { o.Limits = Limits{Event: 100} })
		rec := f.post(t, envelopeBytes(`{}`, eventPart(t, map[string]any{"message": strings.Repeat("x", 200)})))
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.Equal(t, "envelope exceeded size limits (item:event)", detail(t, rec).Detail)
		assert.Zero(t, f.sentry.Requests())
	})
	t.Run("unsupported encoding", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		rec := f.post(t, []byte("whatever"), "Content-Encoding", "br")
		assert.Equal(t, http.StatusUnsupportedMediaType, rec.Code)
		assert.Equal(t, "unsupported content encoding", rec.Header().Get("X-Sentry-Error"))
		assert.Zero(t, f.sentry.Requests())
		assert.Equal(t, 1.0, outcome(f.h, OutcomeRejectedEncoding))
	})
	t.Run("malformed", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		rec := f.post(t, []byte("{}\n"+`{"type":"attachment","length":50}`+"\nshort"))
		assert.Equal(t, http.StatusBadRequest, rec.Code)
		e := detail(t, rec)
		assert.Equal(t, "invalid envelope", e.Detail)
		require.NotEmpty(t, e.Causes)
		assert.Equal(t, "unexpected end of file", e.Causes[0])
		assert.Equal(t, "invalid envelope", rec.Header().Get("X-Sentry-Error"))
		assert.Zero(t, f.sentry.Requests())
		assert.Equal(t, 1.0, outcome(f.h, OutcomeRejectedMalformed))
	})
	t.Run("corrupt gzip", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		rec := f.post(t, []byte("\x1f\x8b\x08\x00garbage"), "Content-Encoding", "gzip")
		assert.Equal(t, http.StatusBadRequest, rec.Code)
		assert.Zero(t, f.sentry.Requests())
	})
	t.Run("empty envelope is answered, not sent", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		rec := f.post(t, []byte(`{"dsn":"`+placeholderDSN+`"}`))
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.JSONEq(t, `{}`, rec.Body.String())
		assert.Zero(t, f.sentry.Requests())
		assert.Equal(t, 1.0, outcome(f.h, OutcomeEmpty))
	})
}

func TestSentryRateLimits(t *testing.T) {
	t.Parallel()
	f := mustFixture(t, nil)
	transaction := part{`{"type":"transaction"}`, []byte(`{"type":"transaction","transaction":"/apps","spans":[]}`)}
	event := eventPart(t, map[string]any{"message": "boom"})
	header := mustJSON(t, map[string]any{"dsn": placeholderDSN})

	f.sentry.SetStatus(http.StatusTooManyRequests, http.Header{
		"Retry-After":          {"60"},
		"X-Sentry-Rate-Limits": {"60:error:key:quota_exceeded"},
	})
	rec := f.post(t, envelopeBytes(header, event))
	require.Equal(t, http.StatusTooManyRequests, rec.Code, "Sentry's 429 passed back, never a 500")
	assert.Equal(t, "60", rec.Header().Get("Retry-After"))
	assert.Equal(t, "60:error:key:quota_exceeded", rec.Header().Get("X-Sentry-Rate-Limits"))
	assert.Equal(t, 1, f.sentry.Requests(), "never retried")
	f.sentry.SetStatus(0, nil)

	// While the limit holds, errors are answered here.
	f.clock.Add(20 * time.Second)
	rec = f.post(t, envelopeBytes(header, event))
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "40", rec.Header().Get("Retry-After"), "the seconds left")
	assert.Equal(t, "40:error:key", rec.Header().Get("X-Sentry-Rate-Limits"))
	assert.Equal(t, 1, f.sentry.Requests(), "nothing sent")
	assert.Equal(t, 2.0, outcome(f.h, OutcomeRateLimitedSentry))

	// Other categories still go; a mixed envelope loses its limited item.
	rec = f.post(t, envelopeBytes(header, transaction))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "40:error:key", rec.Header().Get("X-Sentry-Rate-Limits"), "limits in force are told on every answer")
	mixed := envelopeBytes(header, event, transaction,
		part{`{"type":"client_report"}`, []byte(`{"discarded_events":[]}`)})
	rec = f.post(t, mixed)
	require.Equal(t, http.StatusOK, rec.Code)
	envs := f.sentry.Envelopes()
	require.Len(t, envs, 2)
	last := envs[1]
	require.Len(t, last.Items, 2)
	assert.Equal(t, "transaction", last.Items[0].Type)
	assert.Equal(t, transaction.payload, last.Items[0].Payload)
	assert.Equal(t, "client_report", last.Items[1].Type, "client reports are never limited")

	// Once the limit has passed, errors go again.
	f.clock.Add(41 * time.Second)
	rec = f.post(t, envelopeBytes(header, event))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Empty(t, rec.Header().Get("X-Sentry-Rate-Limits"))
	assert.Len(t, f.sentry.Envelopes(), 3)
}

func TestSentryRateLimitAllCategories(t *testing.T) {
	t.Parallel()
	f := mustFixture(t, nil)
	f.sentry.SetStatus(http.StatusTooManyRequests, nil) // a bare 429: 60 s for everything
	header := mustJSON(t, map[string]any{"dsn": placeholderDSN})
	rec := f.post(t, envelopeBytes(header, eventPart(t, map[string]any{"message": "x"})))
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	f.sentry.SetStatus(0, nil)
	rec = f.post(t, envelopeBytes(header, part{`{"type":"session"}`, []byte(`{"sid":"s"}`)}))
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "60", rec.Header().Get("Retry-After"))
	assert.Equal(t, "60::key", rec.Header().Get("X-Sentry-Rate-Limits"))
	assert.Equal(t, 1, f.sentry.Requests())
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	t.Run("5xx passed back with Retry-After, not its body", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		f.sentry.SetStatus(http.StatusServiceUnavailable, http.Header{"Retry-After": {"30"}})
		rec := f.post(t, simpleEvent(t, placeholderDSN))
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.Equal(t, "30", rec.Header().Get("Retry-After"))
		assert.Equal(t, "sentry answered 503", detail(t, rec).Detail)
		assert.Equal(t, 1, f.sentry.Requests(), "never retried")
		assert.Equal(t, 1.0, outcome(f.h, OutcomeUpstreamError))
		assert.Equal(t, 1.0, testutil.ToFloat64(f.h.m.upstream.WithLabelValues("5xx")))
	})
	t.Run("4xx passed back", func(t *testing.T) {
		t.Parallel()
		f := mustFixture(t, nil)
		f.sentry.SetStatus(http.StatusRequestEntityTooLarge, nil)
		rec := f.post(t, simpleEvent(t, placeholderDSN))
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.Equal(t, "Request Entity Too Large", detail(t, rec).Detail)
	})
	t.Run("hanging Sentry is a 504 within the client timeout", func(t *testing.T) {
		t.Parallel()
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		f := mustFixture(t, func(o *Options) { o.HTTPClient = &http.Client{Transport: tr, Timeout: 300 * time.Millisecond} })
		f.sentry.SetHang(true)
		t.Cleanup(func() { f.sentry.SetHang(false) })
		start := time.Now()
		rec := f.post(t, simpleEvent(t, placeholderDSN))
		elapsed := time.Since(start)
		assert.Equal(t, http.StatusGatewayTimeout, rec.Code)
		assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
		assert.Less(t, elapsed, 3*time.Second, "the client timeout, not the hang, ended it")
		assert.Equal(t, 1.0, testutil.ToFloat64(f.h.m.upstream.WithLabelValues("timeout")))
	})
	t.Run("unreachable Sentry is a 502", func(t *testing.T) {
		t.Parallel()
		h := mustHandler(t, Options{Target: sentrytest.RefusingDSN(t, realKey, project), PlaceholderKey: placeholder})
		rec := serve(h, http.MethodPost, simpleEvent(t, placeholderDSN))
		assert.Equal(t, http.StatusBadGateway, rec.Code)
		assert.Equal(t, "sentry unreachable", detail(t, rec).Detail)
	})
}

func TestRealKeyNeverReachesTheBrowser(t *testing.T) {
	t.Parallel()
	// An upstream that echoes the key, in case Sentry ever does.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Sentry-Rate-Limits", "1:error:key:"+realKey)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"detail":"unknown public key %s"}`, realKey)
	}))
	t.Cleanup(echo.Close)
	core, logs := observer.New(zap.DebugLevel)
	var responses []*httptest.ResponseRecorder
	f := mustFixture(t, func(o *Options) { o.Log = zap.New(core) })
	echoH := mustHandler(t, Options{Target: "http://" + realKey + "@" + strings.TrimPrefix(echo.URL, "http://") + "/42",
		PlaceholderKey: placeholder, Log: zap.New(core)})
	refusing := mustHandler(t, Options{Target: sentrytest.RefusingDSN(t, realKey, project), PlaceholderKey: placeholder, Log: zap.New(core)})

	responses = append(responses,
		f.post(t, simpleEvent(t, placeholderDSN)),
		f.post(t, simpleEvent(t, "https://other@evil.example/42")),
		f.post(t, []byte("not an envelope")),
		serve(f.h, http.MethodGet, nil),
		serve(echoH, http.MethodPost, simpleEvent(t, placeholderDSN)),
		serve(refusing, http.MethodPost, simpleEvent(t, placeholderDSN)),
	)
	f.sentry.SetStatus(http.StatusTooManyRequests, http.Header{"Retry-After": {"5"}})
	responses = append(responses, f.post(t, simpleEvent(t, placeholderDSN)), f.post(t, simpleEvent(t, placeholderDSN)))
	f.sentry.SetStatus(http.StatusInternalServerError, nil)
	f.clock.Add(time.Minute)
	responses = append(responses, f.post(t, simpleEvent(t, placeholderDSN)))

	assert.Equal(t, http.StatusBadRequest, responses[4].Code)
	for i, rec := range responses {
		var dump bytes.Buffer
		_ = rec.Result().Header.Write(&dump)
		dump.Write(rec.Body.Bytes())
		assert.NotContains(t, dump.String(), realKey, "response %d: %s", i, dump.String())
	}
	require.NotZero(t, logs.Len())
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		assert.NotContains(t, e.Message+string(b), realKey)
	}
}

func TestPerClientRateLimit(t *testing.T) {
	t.Parallel()
	f := mustFixture(t, func(o *Options) { o.PerIP = Rate{Burst: 3, Every: time.Minute} })
	body := simpleEvent(t, placeholderDSN)
	for i := range 3 {
		rec := f.post(t, body, "X-Test-Client-IP", "198.51.100.1")
		require.Equal(t, http.StatusOK, rec.Code, "envelope %d", i)
	}
	rec := f.post(t, body, "X-Test-Client-IP", "198.51.100.1")
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "60", rec.Header().Get("Retry-After"))
	assert.Equal(t, "60::organization", rec.Header().Get("X-Sentry-Rate-Limits"))
	assert.Equal(t, 1.0, outcome(f.h, OutcomeRateLimitedClient))

	assert.Equal(t, http.StatusOK, f.post(t, body, "X-Test-Client-IP", "198.51.100.2").Code, "another client is not affected")
	// An IPv6 client is one /64: rotating the interface id does not help.
	for i := range 3 {
		require.Equal(t, http.StatusOK, f.post(t, body, "X-Test-Client-IP", fmt.Sprintf("2001:db8:1:2::%x", i+1)).Code)
	}
	assert.Equal(t, http.StatusTooManyRequests, f.post(t, body, "X-Test-Client-IP", "2001:db8:1:2::ffff").Code)

	f.clock.Add(time.Minute)
	assert.Equal(t, http.StatusOK, f.post(t, body, "X-Test-Client-IP", "198.51.100.1").Code, "a token came back")
	assert.Equal(t, 8, f.sentry.Requests(), "limited envelopes were never sent")
}

func TestClientLimiterMemoryIsBounded(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := newClientLimiter(Rate{Burst: 2, Every: time.Second, MaxClients: 100})
	for i := range 1000 {
		ok, _ := l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), c.Now())
		require.True(t, ok)
	}
	assert.Equal(t, 100, l.len(), "capped")

	// A busy client is not forgotten by a flood of others as long as it is
	// seen more recently than they are.
	ok, _ := l.allow("10.9.9.9", c.Now())
	require.True(t, ok)
	ok, _ = l.allow("10.9.9.9", c.Now())
	require.True(t, ok)
	ok, _ = l.allow("10.9.9.9", c.Now())
	assert.False(t, ok)

	// Idle clients (full buckets) go as traffic passes.
	c.Add(time.Hour)
	for range 60 {
		_, _ = l.allow("10.9.9.9", c.Now())
	}
	assert.Less(t, l.len(), 5)
	assert.Nil(t, newClientLimiter(Rate{}), "zero is off")
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"198.51.100.1":          "198.51.100.1",
		"::ffff:198.51.100.1":   "198.51.100.1",
		"2001:db8:1:2:3:4:5:6":  "2001:db8:1:2::/64",
		"2001:db8:1:2::1%eth0":  "2001:db8:1:2::/64",
		"not-an-ip":             "not-an-ip",
		"":                      "",
		"2001:db8:ffff:0:0:0:1": "2001:db8:ffff:0:0:0:1",
	} {
		assert.Equal(t, want, clientKey(in), in)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	f := mustFixture(t, func(o *Options) { o.AllowedOrigins = []string{"https://app.example.com"} })
	tests := []struct {
		name, method, origin string
		want                 int
		wantCORS             bool
	}{
		{"preflight from an allowed origin", http.MethodOptions, "https://app.example.com", http.StatusNoContent, true},
		{"preflight from another origin", http.MethodOptions, "https://evil.example.com", http.StatusMethodNotAllowed, false},
		{"preflight from a look-alike origin", http.MethodOptions, "https://app.example.com.evil.example", http.StatusMethodNotAllowed, false},
		{"options without origin", http.MethodOptions, "", http.StatusMethodNotAllowed, false},
		{"get", http.MethodGet, "https://app.example.com", http.StatusMethodNotAllowed, true},
		{"post from an allowed origin", http.MethodPost, "https://app.example.com", http.StatusOK, true},
		{"post from another origin: processed, unreadable to its page", http.MethodPost, "https://evil.example.com", http.StatusOK, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.method == http.MethodPost {
				body = simpleEvent(t, placeholderDSN)
			}
			rec := serve(f.h, tc.method, body, "Origin", tc.origin, "Access-Control-Request-Method", "POST")
			require.Equal(t, tc.want, rec.Code, rec.Body.String())
			hd := rec.Header()
			assert.Empty(t, hd.Get("Access-Control-Allow-Credentials"), "never credentials")
			assert.Contains(t, hd.Values("Vary"), "Origin")
			if !tc.wantCORS {
				for k := range hd {
					assert.False(t, strings.HasPrefix(k, "Access-Control-"), "no CORS header %s", k)
				}
			} else {
				assert.Equal(t, tc.origin, hd.Get("Access-Control-Allow-Origin"))
				assert.Equal(t, "Retry-After, X-Sentry-Rate-Limits, X-Sentry-Error", hd.Get("Access-Control-Expose-Headers"))
			}
			if tc.want == http.StatusNoContent {
				assert.Equal(t, "POST, OPTIONS", hd.Get("Access-Control-Allow-Methods"))
				assert.Contains(t, hd.Get("Access-Control-Allow-Headers"), "Content-Type")
				assert.Equal(t, "3600", hd.Get("Access-Control-Max-Age"))
			}
			if tc.want == http.StatusMethodNotAllowed {
				assert.Equal(t, "POST, OPTIONS", hd.Get("Allow"))
			}
		})
	}

	t.Run("no origins allowed by default", func(t *testing.T) {
		t.Parallel()
		g := mustFixture(t, nil)
		rec := serve(g.h, http.MethodOptions, nil, "Origin", "https://app.example.com")
		assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
		assert.Equal(t, "POST", rec.Header().Get("Allow"))
		assert.Empty(t, rec.Header().Get("Access-Control-Allow-Origin"))
		rec = serve(g.h, http.MethodGet, nil)
		assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
		assert.Zero(t, g.sentry.Requests())
	})
}

func TestEnrichment(t *testing.T) {
	t.Parallel()
	user := &enrich.User{ID: "7", Username: "alice", Email: "alice@example.com", Role: "admin", Verified: true}
	f := mustFixture(t, func(o *Options) {
		o.Scrub = true
		o.User = func(r *http.Request) *enrich.User {
			if r.Header.Get("Authorization") == "Bearer good" {
				return user
			}
			return nil
		}
	})
	attachment := []byte("password=1\nsecret: two\n")
	replay := []byte("{\"segment_id\":3}\n\x1f\x8b\x08\x00token=abc\n\xff")
	body := envelopeBytes(browserHeader(t, placeholderDSN),
		eventPart(t, map[string]any{
			"event_id": eventID, "message": "boom", "timestamp": json.Number("1782907200.123456789"),
			"user":    map[string]any{"id": "evil", "email": "evil@example.com", "ip_address": "{{auto}}"},
			"request": map[string]any{"url": "https://app.example.com/apps?token=t1&page=2", "headers": map[string]any{"Authorization": "Bearer abc", "Referer": "https://app.example.com/"}},
			"extra":   map[string]any{"password": "hunter2", "catalog_id": "wordpress"},
		}),
		part{`{"type":"transaction"}`, []byte(mustJSON(t, map[string]any{
			"type": "transaction", "transaction": "/apps", "user": map[string]any{"id": "page"},
			"request": map[string]any{"headers": map[string]any{"Cookie": "session=s"}},
			"spans":   []any{map[string]any{"op": "http.client", "description": "GET /api?api_key=k", "data": map[string]any{"token": "t"}}},
		}))},
		part{`{"type":"attachment","length":` + strconv.Itoa(len(attachment)) + `,"filename":"log.txt"}`, attachment},
		part{`{"type":"replay_recording","length":` + strconv.Itoa(len(replay)) + `}`, replay},
	)
	rec := f.post(t, body, "Authorization", "Bearer good", "X-Test-Client-IP", clientIP)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	env := f.sentry.Envelopes()[0]
	require.Len(t, env.Items, 4)
	ev := env.Items[0].JSON()
	require.NotNil(t, ev)
	assert.Equal(t, map[string]any{
		"id": "7", "username": "alice", "email": "alice@example.com", "ip_address": clientIP,
		"data": map[string]any{"role": "admin", "verified": "true"},
	}, ev["user"], "the verified user replaces the page's")
	request := ev["request"].(map[string]any)
	assert.Equal(t, enrich.Filtered, request["headers"].(map[string]any)["Authorization"])
	assert.Equal(t, "https://app.example.com/apps?token=[Filtered]&page=2", request["url"])
	assert.Equal(t, map[string]any{"password": enrich.Filtered, "catalog_id": "wordpress"}, ev["extra"])
	assert.Contains(t, string(env.Items[0].Payload), `"timestamp":1782907200.123456789`)
	assert.EqualValues(t, len(env.Items[0].Payload), env.Items[0].Header["length"], "re-encoded with its length")

	tx := env.Items[1].JSON()
	require.NotNil(t, tx)
	assert.Equal(t, map[string]any{"id": "page"}, tx["user"], "only events get the user")
	assert.Equal(t, enrich.Filtered, tx["request"].(map[string]any)["headers"].(map[string]any)["Cookie"])
	span := tx["spans"].([]any)[0].(map[string]any)
	assert.Equal(t, "GET /api?api_key=[Filtered]", span["description"])
	assert.Equal(t, enrich.Filtered, span["data"].(map[string]any)["token"])

	assert.Equal(t, attachment, env.Items[2].Payload, "attachments are never touched")
	assert.Equal(t, replay, env.Items[3].Payload, "replays are never touched")
	sent := afterHeader(env.Raw)
	assert.True(t, bytes.HasSuffix(sent, afterHeader(envelopeBytes("{}",
		part{`{"type":"attachment","length":` + strconv.Itoa(len(attachment)) + `,"filename":"log.txt"}`, attachment},
		part{`{"type":"replay_recording","length":` + strconv.Itoa(len(replay)) + `}`, replay}))),
		"the untouched items keep their framing byte for byte")

	assert.Equal(t, 1.0, testutil.ToFloat64(f.h.m.usersSet))
	assert.Equal(t, 2.0, testutil.ToFloat64(f.h.m.scrubbed))

	t.Run("without a verified user the page's user stays, scrubbed", func(t *testing.T) {
		rec := f.post(t, envelopeBytes(`{}`, eventPart(t, map[string]any{"user": map[string]any{"id": "page", "data": map[string]any{"token": "x"}}})))
		require.Equal(t, http.StatusOK, rec.Code)
		evs := f.sentry.Events()
		assert.Equal(t, map[string]any{"id": "page", "data": map[string]any{"token": enrich.Filtered}}, evs[len(evs)-1]["user"])
	})
	t.Run("an event that is not JSON cannot be scrubbed: refused", func(t *testing.T) {
		n := f.sentry.Requests()
		rec := f.post(t, envelopeBytes(`{}`, part{`{"type":"event"}`, []byte(`password=hunter2`)}))
		assert.Equal(t, http.StatusBadRequest, rec.Code)
		assert.Equal(t, n, f.sentry.Requests())
	})
}

func TestSink(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []*Envelope
	h := mustHandler(t, Options{
		PlaceholderKey: placeholder,
		Scrub:          true,
		Sink: func(e *Envelope) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e)
		},
	})
	rec := serve(h, http.MethodPost, envelopeBytes(browserHeader(t, "http://"+placeholder+"@localhost:8080/0"),
		eventPart(t, map[string]any{"message": "boom", "extra": map[string]any{"password": "p"}})))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.JSONEq(t, `{}`, rec.Body.String())
	rec = serve(h, http.MethodPost, simpleEvent(t, "http://other@localhost:8080/0"))
	assert.Equal(t, http.StatusForbidden, rec.Code)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 1)
	e, err := Parse(got[0].Bytes())
	require.NoError(t, err)
	assert.NotContains(t, e.Header, "forwarded_for")
	assert.Equal(t, "http://"+placeholder+"@localhost:8080/0", e.Header["dsn"], "no target to map to")
	var ev map[string]any
	require.NoError(t, json.Unmarshal(e.Items[0].Payload, &ev))
	assert.Equal(t, map[string]any{"password": enrich.Filtered}, ev["extra"])
	assert.Equal(t, 1.0, outcome(h, OutcomeInbox))
}

func TestRejectionLogIsRateLimited(t *testing.T) {
	t.Parallel()
	f := mustFixture(t, nil)
	for range 50 {
		require.Equal(t, http.StatusBadRequest, f.post(t, []byte("garbage")).Code)
	}
	assert.Equal(t, rejectLogBurst, f.logs.FilterField(zap.String("reason", OutcomeRejectedMalformed)).Len())
	for _, e := range f.logs.All() {
		assert.NotContains(t, fmt.Sprint(e.ContextMap()), "garbage", "never the body")
	}
	f.clock.Add(rejectLogEvery)
	require.Equal(t, http.StatusBadRequest, f.post(t, []byte("garbage")).Code)
	all := f.logs.All()
	assert.EqualValues(t, 50-rejectLogBurst, all[len(all)-1].ContextMap()["suppressed"])
	// Another reason has its own budget.
	require.Equal(t, http.StatusForbidden, f.post(t, simpleEvent(t, "https://k@evil.example/42")).Code)
	assert.Equal(t, 1, f.logs.FilterField(zap.String("reason", OutcomeRejectedDSN)).Len())
	assert.Equal(t, 51.0, outcome(f.h, OutcomeRejectedMalformed), "metrics count every one")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"neither target nor sink", Options{}, "Target or Sink"},
		{"bad target", Options{Target: "ftp://k@h/1"}, "Target: not a valid DSN: invalid scheme"},
		{"target project not a number", Options{Target: "https://k@h/abc"}, "project id must be a number"},
		{"placeholder equals the real key", Options{Target: "https://" + realKey + "@h/1", PlaceholderKey: realKey}, "PlaceholderKey"},
		{"bad allowed", Options{Target: "https://k@h/1", Allowed: []string{"https://k@h/1", "nope"}}, "Allowed[1]"},
		{"half a rate", Options{Target: "https://k@h/1", PerIP: Rate{Burst: 5}}, "PerIP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), realKey, "a DSN's key is never quoted")
		})
	}
	t.Run("url errors do not quote the DSN", func(t *testing.T) {
		t.Parallel()
		_, err := New(Options{Target: "https://" + realKey + "@h/1\x7f"})
		require.Error(t, err)
		assert.NotContains(t, err.Error(), realKey)
	})
	t.Run("metrics register once per registry", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		mustHandler(t, Options{Target: "https://k@h/1", Registerer: reg})
		_, err := New(Options{Target: "https://k@h/1", Registerer: reg})
		assert.Error(t, err)
		names := map[string]bool{}
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
		for _, n := range []string{"sidecar_tunnel_envelopes_total", "sidecar_tunnel_bytes_total", "sidecar_tunnel_upstream_responses_total"} {
			assert.True(t, names[n], n)
		}
	})
}

func TestTargetURLAndDSN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dsn, url, public string }{
		{"https://k@o1.ingest.sentry.io/42", "https://o1.ingest.sentry.io/api/42/envelope/", "https://k@o1.ingest.sentry.io/42"},
		{"http://k:s@sentry.local:9000/prefix/a/7", "http://sentry.local:9000/prefix/a/api/7/envelope/", "http://k@sentry.local:9000/prefix/a/7"},
		{"https://k@sentry.example.com:443/7", "https://sentry.example.com/api/7/envelope/", "https://k@sentry.example.com/7"},
		{"http://k@[2001:db8::1]:9000/7", "http://[2001:db8::1]:9000/api/7/envelope/", "http://k@[2001:db8::1]:9000/7"},
		{"https://k:s@[2001:db8::1]/sentry/7", "https://[2001:db8::1]/sentry/api/7/envelope/", "https://k@[2001:db8::1]/sentry/7"},
	} {
		d, err := parseDSN(tc.dsn)
		require.NoError(t, err, tc.dsn)
		assert.Equal(t, tc.url, apiURL(d), tc.dsn)
		assert.Equal(t, tc.public, publicDSN(d), tc.dsn)
	}
}

// BenchmarkForward compares 10 KiB event envelopes posted through the
// handler to the Sentry double with the same envelopes posted straight to
// the double, over real HTTP on 127.0.0.1 both ways.
func BenchmarkForward(b *testing.B) {
	s := sentrytest.NewServer(b)
	s.AllowKey(realKey)
	ev := map[string]any{
		"event_id": eventID, "platform": "javascript", "level": "error",
		"message":     "TypeError: Cannot read properties of undefined",
		"breadcrumbs": map[string]any{"values": []any{}},
		"request":     map[string]any{"url": "https://app.example.com/apps?page=2", "headers": map[string]any{"User-Agent": browserUA}},
	}
	crumbs := []any{}
	for i := 0; len(mustJSON(b, ev)) < 10<<10; i++ {
		crumbs = append(crumbs, map[string]any{"category": "fetch", "data": map[string]any{"method": "GET", "url": fmt.Sprintf("/api/v1/apps/%d", i), "status_code": 200}})
		ev["breadcrumbs"] = map[string]any{"values": crumbs}
	}
	payload := eventPart(b, ev)
	direct := envelopeBytes(mustJSON(b, map[string]any{"event_id": eventID, "dsn": s.DSN(realKey, project)}), payload)
	tunneled := envelopeBytes(browserHeader(b, placeholderDSN), payload)
	b.Logf("envelope: %d bytes", len(tunneled))

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	run := func(b *testing.B, url string, body []byte, auth string) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%1000 == 0 {
				s.Reset() // the double keeps everything it receives
			}
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
			if auth != "" {
				req.Header.Set("X-Sentry-Auth", auth)
			}
			res, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				b.Fatalf("status %d", res.StatusCode)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "envelopes/s")
	}
	b.Run("direct", func(b *testing.B) {
		run(b, s.EnvelopeURL(project), direct, "Sentry sentry_version=7, sentry_key="+realKey+", sentry_client=bench")
	})
	for _, scrub := range []bool{false, true} {
		b.Run("tunnel/scrub="+strconv.FormatBool(scrub), func(b *testing.B) {
			h := mustHandler(b, Options{Target: s.DSN(realKey, project), PlaceholderKey: placeholder, Scrub: scrub})
			srv := httptest.NewServer(h)
			defer srv.Close()
			run(b, srv.URL, tunneled, "")
		})
	}
}
