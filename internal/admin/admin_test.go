package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustGet(tb testing.TB, h http.Handler, method, path string) (int, map[string]any) {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	var body map[string]any
	if rec.Header().Get("Content-Type") == "application/json" {
		require.NoError(tb, json.Unmarshal(rec.Body.Bytes(), &body))
	}
	return rec.Code, body
}

func TestReadinessFollowsProbeAndDrain(t *testing.T) {
	t.Parallel()
	r := NewReadiness()
	var healthy atomic.Bool
	probed := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func(context.Context) error {
			defer func() { probed <- struct{}{} }()
			if healthy.Load() {
				return nil
			}
			return errors.New("connection refused")
		}, 10*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()

	h := New(Options{Readiness: r, Gatherer: prometheus.NewRegistry(), Info: map[string]string{"environment": "test"}})
	<-probed
	code, body := mustGet(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "upstream unreachable: connection refused", body["reason"])

	healthy.Store(true)
	require.Eventually(t, func() bool { c, _ := mustGet(t, h, http.MethodGet, "/readyz"); return c == http.StatusOK }, 2*time.Second, 5*time.Millisecond)

	r.Drain()
	code, body = mustGet(t, h, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "shutting down", body["reason"])

	code, body = mustGet(t, h, http.MethodGet, "/healthz")
	assert.Equal(t, http.StatusOK, code, "liveness does not depend on readiness")
	assert.Equal(t, "ok", body["status"])
}

func TestReadinessStaleProbe(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	r := &Readiness{now: func() time.Time { return now }, probed: true, lastAt: now, maxAge: 3 * time.Second}
	ok, _ := r.Ready()
	assert.True(t, ok)
	now = now.Add(4 * time.Second)
	ok, reason := r.Ready()
	assert.False(t, ok)
	assert.Equal(t, "upstream probe is stale", reason)

	ok, reason = NewReadiness().Ready()
	assert.False(t, ok, "not ready before the first probe")
	assert.Equal(t, "upstream not probed yet", reason)
}

func TestAdminPaths(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecar_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	h := New(Options{Readiness: NewReadiness(), Gatherer: reg, Info: map[string]string{"environment": "production"}})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), "sidecar_test_total 1")

	code, body := mustGet(t, h, http.MethodGet, "/sentry-info")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "production", body["environment"])

	code, _ = mustGet(t, h, http.MethodGet, "/inbox")
	assert.Equal(t, http.StatusNotImplemented, code)
	code, _ = mustGet(t, h, http.MethodPost, "/test-event")
	assert.Equal(t, http.StatusNotImplemented, code)
	code, _ = mustGet(t, h, http.MethodGet, "/test-event")
	assert.Equal(t, http.StatusMethodNotAllowed, code)
	code, _ = mustGet(t, h, http.MethodGet, "/nope")
	assert.Equal(t, http.StatusNotFound, code)
}

// TestAdminToken: with a token, every path but the probes answers 401
// with a Bearer challenge unless the request carries the token, and the
// handler behind it never runs; the probes stay open for kubelets.
func TestAdminToken(t *testing.T) {
	t.Parallel()
	const token = "s3cret-admin-token"
	var inboxCalls, testEventCalls atomic.Int32
	h := New(Options{
		Readiness: NewReadiness(),
		Gatherer:  prometheus.NewRegistry(),
		Info:      map[string]string{"environment": "production"},
		Inbox: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inboxCalls.Add(1)
			writeJSON(w, http.StatusOK, map[string]string{"inbox": r.URL.Path})
		}),
		TestEvent: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			testEventCalls.Add(1)
			writeJSON(w, http.StatusOK, map[string]string{"event_id": "x"})
		}),
		Token: token,
	})

	guarded := []struct{ method, path string }{
		{http.MethodGet, "/metrics"},
		{http.MethodGet, "/sentry-info"},
		{http.MethodGet, "/inbox"},
		{http.MethodGet, "/inbox/0123456789abcdef"},
		{http.MethodGet, "/inbox.html"},
		{http.MethodDelete, "/inbox"},
		{http.MethodPost, "/test-event"},
		{http.MethodGet, "/nope"},             // 401, not 404: nothing is told without the token
		{http.MethodGet, "/healthz/../inbox"}, // not a probe: paths match as sent
		{http.MethodGet, "//healthz"},
	}
	credentials := []struct {
		name          string
		authorization string
		wantChallenge string
	}{
		{"none", "", `Bearer realm="sentry-sidecar admin"`},
		{"wrong token", "Bearer wrong", `Bearer realm="sentry-sidecar admin", error="invalid_token"`},
		{"token prefix", "Bearer " + token[:len(token)-1], `Bearer realm="sentry-sidecar admin", error="invalid_token"`},
		{"token with a suffix", "Bearer " + token + "x", `Bearer realm="sentry-sidecar admin", error="invalid_token"`},
		{"basic scheme", "Basic " + token, `Bearer realm="sentry-sidecar admin"`},
		{"bare token", token, `Bearer realm="sentry-sidecar admin"`},
		{"empty bearer", "Bearer ", `Bearer realm="sentry-sidecar admin"`},
	}
	for _, g := range guarded {
		for _, c := range credentials {
			t.Run(g.method+" "+g.path+" "+c.name, func(t *testing.T) {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(g.method, g.path, nil)
				if c.authorization != "" {
					req.Header.Set("Authorization", c.authorization)
				}
				h.ServeHTTP(rec, req)
				assert.Equal(t, http.StatusUnauthorized, rec.Code)
				assert.Equal(t, c.wantChallenge, rec.Header().Get("WWW-Authenticate"))
				assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
				assert.NotContains(t, rec.Body.String(), token)
			})
		}
	}
	assert.Zero(t, inboxCalls.Load(), "the inbox must not run without the token")
	assert.Zero(t, testEventCalls.Load(), "no test event without the token")

	// With the token (any case of the scheme), each path gets its answer.
	for _, tc := range []struct {
		method, path, authorization string
		want                        int
	}{
		{http.MethodGet, "/metrics", "Bearer " + token, http.StatusOK},
		{http.MethodGet, "/sentry-info", "bearer " + token, http.StatusOK},
		{http.MethodGet, "/inbox", "BEARER  " + token + " ", http.StatusOK},
		{http.MethodGet, "/inbox/0123456789abcdef", "Bearer " + token, http.StatusOK},
		{http.MethodPost, "/test-event", "Bearer " + token, http.StatusOK},
		{http.MethodGet, "/test-event", "Bearer " + token, http.StatusMethodNotAllowed},
		{http.MethodGet, "/nope", "Bearer " + token, http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Header.Set("Authorization", tc.authorization)
		h.ServeHTTP(rec, req)
		assert.Equal(t, tc.want, rec.Code, "%s %s", tc.method, tc.path)
		assert.Empty(t, rec.Header().Get("WWW-Authenticate"), "%s %s", tc.method, tc.path)
	}
	assert.Equal(t, int32(2), inboxCalls.Load())
	assert.Equal(t, int32(1), testEventCalls.Load())

	// Probes need nothing, and a wrong token does not turn them away.
	for _, path := range []string{"/healthz", "/readyz"} {
		for _, authorization := range []string{"", "Bearer wrong"} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, path, nil)
			if authorization != "" {
				req.Header.Set("Authorization", authorization)
			}
			h.ServeHTTP(rec, req)
			assert.NotEqual(t, http.StatusUnauthorized, rec.Code, "%s %q", path, authorization)
			assert.Empty(t, rec.Header().Get("WWW-Authenticate"))
		}
	}
}

// TestAdminNoTokenIsOpen: without a token nothing asks for one (the
// listener is loopback by default; check warns otherwise).
func TestAdminNoTokenIsOpen(t *testing.T) {
	t.Parallel()
	h := New(Options{Readiness: NewReadiness(), Gatherer: prometheus.NewRegistry(), Info: map[string]string{}})
	for _, path := range []string{"/metrics", "/sentry-info", "/inbox"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		assert.NotEqual(t, http.StatusUnauthorized, rec.Code, path)
		assert.Empty(t, rec.Header().Get("WWW-Authenticate"), path)
	}
}
