package sentrytest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testEventID = "9ec79c33ec9942ab8353589fcb2e04dc"
	testKey     = "publickey"
)

// answer is what the double said to one request.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	err    error
}

// mustPost posts body to url with header, closing everything it opens.
func mustPost(tb testing.TB, client *http.Client, url string, header http.Header, body []byte) answer {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(tb, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(raw) > 0 {
		require.NoError(tb, json.Unmarshal(raw, &a.body), "body %q", raw)
	}
	return a
}

func authHeader7(key string) http.Header {
	return http.Header{"X-Sentry-Auth": {"Sentry sentry_version=7, sentry_client=test/1, sentry_key=" + key}}
}

// eventEnvelope is a well-formed envelope with one event item.
func eventEnvelope(message string) []byte {
	payload := `{"event_id":"` + testEventID + `","message":"` + message + `"}`
	return []byte(`{"event_id":"` + testEventID + `","sent_at":"2026-01-01T00:00:00Z"}` + "\n" +
		`{"type":"event","length":` + strconv.Itoa(len(payload)) + `}` + "\n" + payload + "\n")
}

func TestServerAcceptsEnvelope(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	body := append(eventEnvelope("hello"),
		[]byte(`{"type":"attachment","length":4,"filename":"b.bin"}`+"\n\x00\n\xff\x01\n")...)
	a := mustPost(t, nil, srv.EnvelopeURL(42)+"?extra=1", authHeader7(testKey), body)
	require.NoError(t, a.err)
	assert.Equal(t, http.StatusOK, a.status)
	assert.Equal(t, map[string]any{"id": testEventID}, a.body)

	envs := srv.Envelopes()
	require.Len(t, envs, 1)
	env := envs[0]
	assert.Equal(t, testEventID, env.EventID())
	assert.Equal(t, body, env.Raw)
	assert.Equal(t, "/api/42/envelope/?extra=1", env.URL)
	assert.Contains(t, env.HTTPHeader.Get("X-Sentry-Auth"), "sentry_key="+testKey)
	assert.WithinDuration(t, time.Now(), env.ReceivedAt, 5*time.Second)
	require.Len(t, env.Items, 2)
	assert.Equal(t, []byte("\x00\n\xff\x01"), env.Items[1].Payload)
	assert.Equal(t, []map[string]any{{"event_id": testEventID, "message": "hello"}}, srv.Events())
	assert.Empty(t, srv.Transactions())
	assert.Len(t, srv.Items("attachment"), 1)
	assert.Equal(t, 1, srv.Requests())
	assert.Empty(t, srv.Rejections())

	srv.Reset()
	assert.Zero(t, srv.Requests())
	assert.Empty(t, srv.Envelopes())
	assert.Empty(t, srv.AllBytes())
}

func TestServerEncodings(t *testing.T) {
	t.Parallel()
	plain := eventEnvelope("compressed")
	var gz, zl bytes.Buffer
	gw := gzip.NewWriter(&gz)
	_, _ = gw.Write(plain)
	require.NoError(t, gw.Close())
	zw := zlib.NewWriter(&zl)
	_, _ = zw.Write(plain)
	require.NoError(t, zw.Close())

	tests := []struct {
		name     string
		encoding string
		body     []byte
		status   int
	}{
		{"identity", "identity", plain, http.StatusOK},
		{"none", "", plain, http.StatusOK},
		{"utf-8 as sent by old SDKs", "utf-8", plain, http.StatusOK},
		{"gzip", "gzip", gz.Bytes(), http.StatusOK},
		{"x-gzip", "x-gzip", gz.Bytes(), http.StatusOK},
		{"deflate is zlib", "deflate", zl.Bytes(), http.StatusOK},
		{"brotli unsupported", "br", plain, http.StatusUnsupportedMediaType},
		{"unknown encoding", "compress", plain, http.StatusUnsupportedMediaType},
		{"corrupt gzip", "gzip", plain, http.StatusBadRequest},
		{"truncated gzip", "gzip", gz.Bytes()[:gz.Len()/2], http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t)
			h := authHeader7(testKey)
			if tc.encoding != "" {
				h.Set("Content-Encoding", tc.encoding)
			}
			a := mustPost(t, nil, srv.EnvelopeURL(1), h, tc.body)
			require.NoError(t, a.err)
			assert.Equal(t, tc.status, a.status, "body %v", a.body)
			if tc.status == http.StatusOK {
				require.Len(t, srv.Envelopes(), 1)
				assert.Equal(t, plain, srv.Envelopes()[0].Raw)
				assert.Equal(t, "compressed", srv.Events()[0]["message"])
			} else {
				require.Len(t, srv.Rejections(), 1)
				assert.Equal(t, tc.status, srv.Rejections()[0].Status)
				assert.Empty(t, srv.Envelopes())
			}
		})
	}
}

func TestServerAuth(t *testing.T) {
	t.Parallel()
	withDSN := func(dsn string) []byte {
		return []byte(`{"dsn":"` + dsn + `"}` + "\n" + `{"type":"event"}` + "\n{}\n")
	}
	tests := []struct {
		name    string
		allow   []string
		path    string // default /api/1/envelope/
		header  http.Header
		body    []byte // default eventEnvelope
		status  int
		message string
	}{
		{name: "X-Sentry-Auth", header: authHeader7(testKey), status: 200},
		{name: "Authorization: Sentry", header: http.Header{"Authorization": {"sentry sentry_key=" + testKey + ",sentry_version=7"}}, status: 200},
		{name: "query parameter", path: "/api/1/envelope/?sentry_key=" + testKey + "&sentry_version=7", status: 200},
		{name: "envelope dsn only", body: withDSN("https://" + testKey + "@o1.ingest.sentry.io/1"), status: 200},
		{name: "envelope dsn agrees with header", header: authHeader7(testKey), body: withDSN("http://" + testKey + "@h/1"), status: 200},
		{name: "known key", allow: []string{"other", testKey}, header: authHeader7(testKey), status: 200},
		{name: "trailing slash optional", path: "/api/1/envelope", header: authHeader7(testKey), status: 200},

		{name: "no authentication", status: 401, message: "missing authorization information"},
		{name: "Bearer is not Sentry auth", header: http.Header{"Authorization": {"Bearer abc"}}, status: 401, message: "missing authorization information"},
		{name: "auth header without key", header: http.Header{"X-Sentry-Auth": {"Sentry sentry_version=7"}}, status: 401, message: "missing public key"},
		{name: "header and query", path: "/api/1/envelope/?sentry_key=" + testKey, header: authHeader7(testKey), status: 401, message: "multiple authorization payloads detected"},
		{name: "unknown key", allow: []string{"other"}, header: authHeader7(testKey), status: 401, message: "unknown public key"},
		{name: "dsn names another project", body: withDSN("http://" + testKey + "@h/2"), status: 400, message: "project id header mismatch between envelope and request"},
		{name: "dsn names another key", header: authHeader7(testKey), body: withDSN("http://other@h/1"), status: 400, message: "public key header mismatch between envelope and request"},
		{name: "dsn without key", body: withDSN("http://h/1"), status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t)
			for _, k := range tc.allow {
				srv.AllowKey(k)
			}
			path, body := tc.path, tc.body
			if path == "" {
				path = "/api/1/envelope/"
			}
			if body == nil {
				body = eventEnvelope("auth")
			}
			a := mustPost(t, nil, srv.URL()+path, tc.header, body)
			require.NoError(t, a.err)
			assert.Equal(t, tc.status, a.status, "body %v", a.body)
			if tc.message != "" {
				assert.Equal(t, tc.message, a.body["detail"])
			}
			if tc.status == 200 {
				assert.Len(t, srv.Envelopes(), 1)
			} else {
				assert.Empty(t, srv.Envelopes())
				assert.Len(t, srv.Rejections(), 1)
			}
		})
	}
}

func TestServerRejectsBadRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		status int
		detail string
		cause  string
	}{
		{"GET", http.MethodGet, "/api/1/envelope/", "", 405, "method not allowed", ""},
		{"store endpoint", http.MethodPost, "/api/1/store/", `{"message":"x"}`, 400, "sentrytest accepts envelopes only; the store endpoint is not implemented", ""},
		{"unknown path", http.MethodPost, "/api/1/other/", "{}", 404, "not found", ""},
		{"project not numeric", http.MethodPost, "/api/x/envelope/", "{}", 404, "not found", ""},
		{"empty body", http.MethodPost, "/api/1/envelope/", "", 400, "empty event data", ""},
		{"malformed", http.MethodPost, "/api/1/envelope/", "{}\n{\"type\":\"event\",\"length\":9}\n{}", 400, "invalid event envelope", "unexpected end of file"},
		{"missing type", http.MethodPost, "/api/1/envelope/", "{}\n{}\n", 400, "invalid event envelope", "invalid item header"},
		{"bad event id", http.MethodPost, "/api/1/envelope/", `{"event_id":"nope"}`, 400, "invalid event id", ""},
		{"header-only envelope is fine", http.MethodPost, "/api/1/envelope/", "{}\n", 200, "", ""},
		{"dashed event id is fine", http.MethodPost, "/api/1/envelope/", `{"event_id":"9ec79c33-ec99-42ab-8353-589fcb2e04dc"}`, 200, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t)
			req, err := http.NewRequest(tc.method, srv.URL()+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			req.Header = authHeader7(testKey)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			var got struct {
				Detail string   `json:"detail"`
				Causes []string `json:"causes"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, tc.detail, got.Detail)
			if tc.cause != "" {
				require.Len(t, got.Causes, 1)
				assert.Contains(t, got.Causes[0], tc.cause)
			}
			assert.Equal(t, 1, srv.Requests())
			if tc.status != 200 {
				require.Len(t, srv.Rejections(), 1)
				rej := srv.Rejections()[0]
				assert.Equal(t, tc.status, rej.Status)
				assert.Equal(t, tc.detail, rej.Detail)
				assert.Equal(t, tc.body, string(rej.Raw))
			}
		})
	}
}

func TestServerStatusFault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		headers  http.Header
		accepted bool
	}{
		{"429 with rate limits", 429, http.Header{"Retry-After": {"30"}, "X-Sentry-Rate-Limits": {"30:transaction:key"}}, false},
		{"500", 500, nil, false},
		{"503", 503, http.Header{"Retry-After": {"5"}}, false},
		{"200 announcing a limit still accepts", 200, http.Header{"X-Sentry-Rate-Limits": {"60:error:organization"}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t)
			srv.SetStatus(tc.status, tc.headers)
			a := mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("fault"))
			require.NoError(t, a.err)
			assert.Equal(t, tc.status, a.status)
			for k := range tc.headers {
				assert.Equal(t, tc.headers.Get(k), a.header.Get(k), k)
			}
			if tc.accepted {
				assert.Len(t, srv.Envelopes(), 1)
				assert.Equal(t, testEventID, a.body["id"])
			} else {
				assert.Empty(t, srv.Envelopes())
				require.Len(t, srv.Rejections(), 1)
				assert.Equal(t, tc.status, srv.Rejections()[0].Status)
				assert.NotEmpty(t, a.body["detail"])
			}

			// A malformed envelope keeps its 400 whatever the fault.
			bad := mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), []byte("[]"))
			assert.Equal(t, http.StatusBadRequest, bad.status)

			srv.SetStatus(0, nil)
			ok := mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("fault"))
			assert.Equal(t, http.StatusOK, ok.status)
			assert.Empty(t, ok.header.Get("X-Sentry-Rate-Limits"))
		})
	}
}

func TestServerDelay(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	srv.SetDelay(150 * time.Millisecond)

	start := time.Now()
	a := mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("slow"))
	require.NoError(t, a.err)
	assert.Equal(t, http.StatusOK, a.status)
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)

	impatient := &http.Client{Timeout: 50 * time.Millisecond}
	a = mustPost(t, impatient, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("slow"))
	require.Error(t, a.err)
	srv.WaitRejections(t, 1, 5*time.Second)
	assert.Equal(t, 499, srv.Rejections()[0].Status)
	assert.Len(t, srv.Envelopes(), 1, "the abandoned envelope is not recorded as accepted")
}

func TestServerHang(t *testing.T) {
	t.Parallel()
	t.Run("client gives up", func(t *testing.T) {
		t.Parallel()
		srv := NewServer(t)
		srv.SetHang(true)
		start := time.Now()
		a := mustPost(t, &http.Client{Timeout: 100 * time.Millisecond}, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("hang"))
		require.Error(t, a.err)
		assert.Less(t, time.Since(start), 2*time.Second)
		srv.WaitRejections(t, 1, 5*time.Second)
		assert.Equal(t, 499, srv.Rejections()[0].Status)
		assert.Equal(t, 1, srv.Requests())
	})
	t.Run("released by SetHang(false)", func(t *testing.T) {
		t.Parallel()
		srv := NewServer(t)
		srv.SetHang(true)
		done := make(chan answer, 1)
		go func() { done <- mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("hang")) }()
		srv.WaitRequests(t, 1, 5*time.Second)
		select {
		case a := <-done:
			t.Fatalf("answered while hanging: %+v", a)
		case <-time.After(50 * time.Millisecond):
		}
		srv.SetHang(false)
		a := <-done
		require.NoError(t, a.err)
		assert.Equal(t, http.StatusOK, a.status)
		assert.Len(t, srv.Envelopes(), 1)
	})
	t.Run("released by Close", func(t *testing.T) {
		t.Parallel()
		srv := NewServer(t)
		srv.SetHang(true)
		done := make(chan answer, 1)
		go func() { done <- mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("hang")) }()
		srv.WaitRequests(t, 1, 5*time.Second)
		start := time.Now()
		srv.Close()
		assert.Less(t, time.Since(start), time.Second)
		a := <-done
		assert.True(t, a.err != nil || a.status == 0, "no answer expected, got %+v", a)
	})
}

func TestServerReset(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	srv.SetReset(true)
	a := mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("reset"))
	require.Error(t, a.err)
	require.Len(t, srv.Rejections(), 1)
	assert.Zero(t, srv.Rejections()[0].Status)

	srv.SetReset(false)
	a = mustPost(t, nil, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("reset"))
	require.NoError(t, a.err)
	assert.Equal(t, http.StatusOK, a.status)
}

func TestRefusingDSN(t *testing.T) {
	t.Parallel()
	dsn := RefusingDSN(t, testKey, 1)
	d, err := sentry.NewDsn(dsn)
	require.NoError(t, err)
	a := mustPost(t, nil, d.GetAPIURL().String(), authHeader7(testKey), eventEnvelope("refused"))
	require.Error(t, a.err)
	assert.True(t, errors.Is(a.err, syscall.ECONNREFUSED), "error %v", a.err)
}

func TestServerAllBytes(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	_, _ = gw.Write(eventEnvelope("canary-in-gzip-body"))
	require.NoError(t, gw.Close())
	h := authHeader7(testKey)
	h.Set("Content-Encoding", "gzip")
	h.Set("X-Canary", "canary-in-header")
	mustPost(t, nil, srv.EnvelopeURL(1)+"?q=canary-in-query", h, gz.Bytes())
	mustPost(t, nil, srv.EnvelopeURL(1), nil, []byte("canary-in-rejected-body"))

	all := srv.AllBytes()
	for _, canary := range []string{"canary-in-gzip-body", "canary-in-header", "canary-in-query", "canary-in-rejected-body"} {
		assert.Contains(t, string(all), canary)
	}
	assert.NotContains(t, string(all), "absent-canary")
}

func TestServerWaitFailsOnTimeout(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	tb := &fatalRecorder{TB: t}
	srv.WaitEvents(tb, 1, 20*time.Millisecond)
	assert.Contains(t, tb.msg, "waited 20ms for 1 events")
}

// fatalRecorder records Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

func TestServerConcurrent(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if i%10 == 0 {
				srv.SetStatus(200, http.Header{"X-Sentry-Rate-Limits": {"1::key"}})
				srv.SetDelay(time.Millisecond)
			}
			a := mustPost(t, client, srv.EnvelopeURL(1), authHeader7(testKey), eventEnvelope("concurrent"))
			assert.NoError(t, a.err)
			_ = srv.Events()
			_ = srv.AllBytes()
		})
	}
	wg.Wait()
	assert.Len(t, srv.WaitEvents(t, 40, time.Second), 40)
	client.CloseIdleConnections()
}

// TestSentryGoRoundTrip sends an event with the real sentry-go client (its
// default telemetry path and HTTP transport) and reads it back parsed.
func TestSentryGoRoundTrip(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	srv.AllowKey(testKey)
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:         srv.DSN(testKey, 42),
		Release:     "x",
		Environment: "test",
		HTTPClient:  &http.Client{Timeout: 2 * time.Second},
	})
	require.NoError(t, err)
	defer client.Close()

	id := client.CaptureMessage("round trip from sentry-go", nil, nil)
	require.NotNil(t, id)
	require.True(t, client.Flush(5*time.Second))

	events := srv.WaitEvents(t, 1, 5*time.Second)
	ev := events[0]
	assert.Equal(t, "round trip from sentry-go", ev["message"])
	assert.Equal(t, string(*id), ev["event_id"])
	assert.Equal(t, "x", ev["release"])
	assert.Equal(t, "test", ev["environment"])

	env := srv.Envelopes()[0]
	assert.Equal(t, string(*id), env.EventID())
	assert.Equal(t, srv.DSN(testKey, 42), env.Header["dsn"])
	assert.Contains(t, env.HTTPHeader.Get("X-Sentry-Auth"), "sentry_key="+testKey)
	assert.Equal(t, "application/x-sentry-envelope", env.HTTPHeader.Get("Content-Type"))
	assert.Equal(t, "/api/42/envelope/", env.URL)
}
