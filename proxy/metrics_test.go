package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/missing":
			http.NotFound(w, r)
		case r.Method == http.MethodPost:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"detail":"boom"}`)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	f := mustProxy(t, up.URL)
	requests := []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodGet, "/a", http.StatusOK, "ok"},
		{http.MethodGet, "/b", http.StatusOK, "ok"},
		{http.MethodGet, "/c", http.StatusOK, "ok"},
		{http.MethodGet, "/missing", http.StatusNotFound, "404 page not found\n"},
		{http.MethodPost, "/deploy", http.StatusInternalServerError, `{"detail":"boom"}`},
		{http.MethodPost, "/deploy", http.StatusInternalServerError, `{"detail":"boom"}`},
		{"PURGE", "/cache", http.StatusOK, "ok"},
		{"purge", "/cache", http.StatusOK, "ok"},
	}
	for _, r := range requests {
		res, body := mustDo(t, f.srv.Client(), f.mustRequest(t, r.method, r.path, strings.NewReader("")))
		require.Equal(t, r.status, res.StatusCode, "%s %s", r.method, r.path)
		// An upstream error body passes as it is: the proxy answers with its
		// own JSON only when it made the error.
		require.Equal(t, r.body, string(body), "%s %s", r.method, r.path)
	}
	require.Eventually(t, func() bool {
		return mustMetric(t, f.reg, "sidecar_requests_total") == float64(len(requests))
	}, waitTimeout, 5*time.Millisecond, "requests counted")

	series := []struct {
		method, code string
		want         float64
	}{
		{"GET", "2xx", 3},
		{"GET", "4xx", 1},
		{"GET", "5xx", 0},
		{"POST", "5xx", 2},
		{"POST", "2xx", 0},
		{"OTHER", "2xx", 2},
		{"PURGE", "2xx", 0},
		{"purge", "2xx", 0},
	}
	for _, s := range series {
		assert.Equal(t, s.want, mustMetric(t, f.reg, "sidecar_requests_total", "method", s.method, "code", s.code),
			"sidecar_requests_total{method=%q,code=%q}", s.method, s.code)
		assert.Equal(t, s.want, mustMetric(t, f.reg, "sidecar_request_duration_seconds", "method", s.method, "code", s.code),
			"sidecar_request_duration_seconds_count{method=%q,code=%q}", s.method, s.code)
	}
	assert.Equal(t, float64(len(requests)), mustMetric(t, f.reg, "sidecar_request_duration_seconds"), "histogram count")
	assert.Zero(t, mustMetric(t, f.reg, "sidecar_upstream_errors_total"), "an upstream 5xx is not an upstream error")
	f.mustInFlightZero(t)
}

func TestMetricsObserveClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		status int
		labels []string
	}{
		{"101", http.MethodGet, http.StatusSwitchingProtocols, []string{"method", "GET", "code", "1xx"}},
		{"304", http.MethodHead, http.StatusNotModified, []string{"method", "HEAD", "code", "3xx"}},
		{"499", http.MethodPut, StatusClientClosed, []string{"method", "PUT", "code", "4xx"}},
		{"504", http.MethodDelete, http.StatusGatewayTimeout, []string{"method", "DELETE", "code", "5xx"}},
		{"out of range is a server fault", http.MethodPatch, 600, []string{"method", "PATCH", "code", "5xx"}},
		{"zero is a server fault", http.MethodOptions, 0, []string{"method", "OPTIONS", "code", "5xx"}},
		{"unknown method", "BREW", http.StatusTeapot, []string{"method", "OTHER", "code", "4xx"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _, reg := mustNewProxy(t, "http://127.0.0.1:1")
			p.metrics.observe(tc.method, tc.status, 0.01)
			assert.Equal(t, 1.0, mustMetric(t, reg, "sidecar_requests_total", tc.labels...))
			assert.Equal(t, 1.0, mustMetric(t, reg, "sidecar_requests_total"), "one series moved")
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	_, _, reg := mustNewProxy(t, "http://127.0.0.1:1")
	tests := []struct {
		name string
		cfg  Config
		reg  prometheus.Registerer
	}{
		{"no upstream", Config{}, prometheus.NewRegistry()},
		{"upstream without host", Config{Upstream: &url.URL{Scheme: "http", Path: "/api"}}, prometheus.NewRegistry()},
		{"metrics registered twice", Config{Upstream: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}}, reg},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(tc.cfg, zap.NewNop(), tc.reg)
			assert.Error(t, err)
			assert.Nil(t, p)
		})
	}
}
