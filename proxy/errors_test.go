package proxy

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowUpstream answers after d, or gives up when the request is cancelled.
func slowUpstream(d time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
			_, _ = io.WriteString(w, "finally")
		case <-r.Context().Done():
		}
	}
}

// hangUp reads the request and closes the connection without answering.
func hangUp(w http.ResponseWriter, r *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// TestUpstreamFailures covers the answers the proxy makes itself: a small
// JSON body with the request id, never Go's error text.
func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	tlsUp := httptest.NewUnstartedServer(http.HandlerFunc(echoUpstream))
	// The handshake fails on purpose; keep its complaint out of the output.
	tlsUp.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsUp.StartTLS()
	t.Cleanup(tlsUp.Close)

	tests := []struct {
		name     string
		upstream func(t *testing.T) string
		config   func(*Config)
		status   int
		message  string
		kind     string
		maxTime  time.Duration
	}{
		{
			name:     "upstream down",
			upstream: func(t *testing.T) string { return "http://" + mustClosedPort(t) },
			status:   http.StatusBadGateway, message: "upstream unavailable", kind: KindRefused,
		},
		{
			name:     "upstream hangs up without answering",
			upstream: func(t *testing.T) string { return mustUpstream(t, hangUp).URL },
			status:   http.StatusBadGateway, message: "upstream unavailable", kind: KindReset,
		},
		{
			name:     "upstream certificate not trusted",
			upstream: func(t *testing.T) string { return tlsUp.URL },
			status:   http.StatusBadGateway, message: "upstream unavailable", kind: KindTLS,
		},
		{
			name: "TLS to a plain HTTP upstream",
			upstream: func(t *testing.T) string {
				return strings.Replace(mustUpstream(t, echoUpstream).URL, "http:", "https:", 1)
			},
			status: http.StatusBadGateway, message: "upstream unavailable", kind: KindTLS,
		},
		{
			name:     "response header timeout",
			upstream: func(t *testing.T) string { return mustUpstream(t, slowUpstream(5*time.Second)).URL },
			config:   func(c *Config) { c.ResponseHeaderTimeout = 100 * time.Millisecond },
			status:   http.StatusGatewayTimeout, message: "upstream timeout", kind: KindTimeout,
			maxTime: 2 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := []func(*Config){}
			if tc.config != nil {
				opts = append(opts, tc.config)
			}
			f := mustProxy(t, tc.upstream(t), opts...)
			start := time.Now()
			res, body := mustDo(t, f.srv.Client(), f.mustRequest(t, http.MethodGet, "/api/v1/apps?page=1", nil))
			elapsed := time.Since(start)

			require.Equal(t, tc.status, res.StatusCode, "body: %s", body)
			assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
			var got map[string]string
			require.NoError(t, json.Unmarshal(body, &got), "body: %s", body)
			assert.Equal(t, map[string]string{"error": tc.message, "request_id": res.Header.Get(RequestIDHeader)}, got)
			for _, leak := range []string{"dial", "127.0.0.1", "tcp", "tls", "x509", "EOF", "timeout awaiting"} {
				assert.NotContains(t, string(body), leak, "Go's error text reached the client")
			}
			if tc.maxTime > 0 {
				assert.Less(t, elapsed, tc.maxTime)
			}

			entry := f.mustAccessLog(t, got["request_id"])
			assert.EqualValues(t, tc.status, entry["status"])
			assert.Equal(t, tc.kind, entry["error"])
			assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_upstream_errors_total", "kind", tc.kind))
			assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_upstream_errors_total"), "errors of any kind")
			assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_requests_total", "method", "GET", "code", "5xx"))
		})
	}
}

func TestClientGoesAway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		upstream http.HandlerFunc
		// cancel runs the request and cancels it at the right moment.
		cancel func(t *testing.T, f *fixture, id string)
	}{
		{
			name:     "while the upstream is slow to answer",
			upstream: slowUpstream(5 * time.Second),
			cancel: func(t *testing.T, f *fixture, id string) {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/slow", nil)
				require.NoError(t, err)
				req.Header.Set(RequestIDHeader, id)
				_, err = f.srv.Client().Do(req)
				require.ErrorIs(t, err, context.DeadlineExceeded)
			},
		},
		{
			name: "in the middle of a download",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				rc := http.NewResponseController(w)
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
					if _, err := io.WriteString(w, strings.Repeat("x", 1024)); err != nil {
						return
					}
					if rc.Flush() != nil {
						return
					}
					select {
					case <-time.After(10 * time.Millisecond):
					case <-r.Context().Done():
						return
					}
				}
			},
			cancel: func(t *testing.T, f *fixture, id string) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/download", nil)
				require.NoError(t, err)
				req.Header.Set(RequestIDHeader, id)
				res, err := f.srv.Client().Do(req)
				require.NoError(t, err)
				defer res.Body.Close()
				_, err = io.ReadFull(res.Body, make([]byte, 4096))
				require.NoError(t, err)
				cancel()
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustProxy(t, mustUpstream(t, tc.upstream).URL)
			id := "gone-" + strings.ReplaceAll(tc.name, " ", "-")
			tc.cancel(t, f, id)

			entry := f.mustAccessLog(t, id)
			assert.EqualValues(t, StatusClientClosed, entry["status"])
			assert.Equal(t, KindClientClosed, entry["error"])
			f.mustInFlightZero(t)
			assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_client_closed_total"))
			assert.Equal(t, 0.0, mustMetric(t, f.reg, "sidecar_upstream_errors_total"), "a client leaving is no upstream error")
			assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_requests_total", "method", "GET", "code", "4xx"))
			assert.Zero(t, mustMetric(t, f.reg, "sidecar_requests_total", "code", "5xx"), "a client that left is no 5xx")
			assert.Empty(t, f.logs.FilterMessage("upstream error").All(), "a client that left is no upstream error")
		})
	}
}

// TestUpstreamResetMidBody: the upstream promises more bytes than it sends
// and drops the connection. The client must see the response break, never
// a short body that looks whole (golang/go#23643). When so little was sent
// that the headers are still in the server's buffer, the client sees no
// response at all, which is as good.
func TestUpstreamResetMidBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		declared    int
		sent        int
		headersSent bool // enough was sent that the headers are out
	}{
		{"10 of 1000 bytes", 1000, 10, false},
		{"10 KiB of 100 KiB", 100 << 10, 10 << 10, true},
		// Chunked: without the abort, the server would end the body with
		// its last chunk and the client would take it as complete.
		{"chunked, cut after 10 KiB", -1, 10 << 10, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.declared >= 0 {
					w.Header().Set("Content-Length", strconv.Itoa(tc.declared))
				}
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, strings.Repeat("x", tc.sent))
				_ = http.NewResponseController(w).Flush()
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
			})
			f := mustProxy(t, up.URL)
			id := "reset-" + strconv.Itoa(tc.sent)
			req := f.mustRequest(t, http.MethodGet, "/file", nil)
			req.Header.Set(RequestIDHeader, id)
			res, err := f.srv.Client().Do(req)
			if tc.headersSent {
				require.NoError(t, err)
			}
			if err == nil {
				assert.Equal(t, http.StatusOK, res.StatusCode)
				assert.Equal(t, int64(tc.declared), res.ContentLength)
				var body []byte
				body, err = io.ReadAll(res.Body)
				_ = res.Body.Close()
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "read %d bytes", len(body))
				if tc.declared >= 0 {
					assert.Less(t, len(body), tc.declared)
				}
			}
			assert.Error(t, err, "the client saw a whole response")

			entry := f.mustAccessLog(t, id)
			assert.Equal(t, KindReset, entry["error"])
			assert.EqualValues(t, http.StatusOK, entry["status"], "the status the proxy answered")
			assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_upstream_errors_total", "kind", KindReset))
			f.mustInFlightZero(t)
		})
	}
}

// TestLongRequest: nothing of the proxy's own times out a slow answer, as
// Proximity's deploy endpoint takes minutes.
func TestLongRequest(t *testing.T) {
	t.Parallel()
	const wait = 3 * time.Second
	f := mustProxy(t, mustUpstream(t, slowUpstream(wait)).URL, func(c *Config) { c.ResponseHeaderTimeout = 0 })
	start := time.Now()
	res, body := mustDo(t, f.srv.Client(), f.mustRequest(t, http.MethodPost, "/api/v1/apps/deploy", strings.NewReader(`{"catalog_id":"wordpress"}`)))
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, "finally", string(body))
	assert.GreaterOrEqual(t, time.Since(start), wait)
}

// TestPanicIsAnswered: a bug of the proxy's own answers 500 with the JSON
// body, is logged with its stack, and the server goes on serving.
func TestPanicIsAnswered(t *testing.T) {
	t.Parallel()
	p, logs, reg := mustNewProxy(t, mustUpstream(t, echoUpstream).URL)
	rewrite := p.rp.Rewrite
	p.rp.Rewrite = func(pr *httputil.ProxyRequest) {
		if pr.In.URL.Path == "/boom" {
			panic("boom")
		}
		rewrite(pr)
	}
	// Started after the change, so the handler goroutines see it.
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	srv.Client().Timeout = clientTimeout
	f := &fixture{p: p, srv: srv, logs: logs, reg: reg}

	req := f.mustRequest(t, http.MethodGet, "/boom", nil)
	req.Header.Set(RequestIDHeader, "panic-1")
	res, body := mustDo(t, f.srv.Client(), req)
	require.Equal(t, http.StatusInternalServerError, res.StatusCode)
	assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"error":"internal error","request_id":"panic-1"}`, string(body))
	assert.EqualValues(t, http.StatusInternalServerError, f.mustAccessLog(t, "panic-1")["status"])
	panics := f.logs.FilterMessage("panic serving request").All()
	require.Len(t, panics, 1)
	assert.Equal(t, "boom", panics[0].ContextMap()["panic"])
	assert.Contains(t, panics[0].ContextMap()["stack"], "TestPanicIsAnswered")

	res, body = mustDo(t, f.srv.Client(), f.mustRequest(t, http.MethodGet, "/fine", nil))
	assert.Equal(t, http.StatusOK, res.StatusCode, "body: %s", body)
	f.mustInFlightZero(t)
}
