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
