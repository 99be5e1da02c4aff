package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

const tunnelConfig = `tunnel:
  path: /api/v1/beacon
browser:
  config_path: /sentry-browser-config.js
`

// browserEnvelope is what the browser SDK posts: its DSN in the header, an
// event claiming a user, a binary item.
func browserEnvelope(dsn string) string {
	return fmt.Sprintf(`{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":%q,"sent_at":"2026-12-04T10:00:00Z","sdk":{"name":"sentry.javascript.browser","version":"11.0.0"}}
{"type":"event"}
{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","message":"TypeError: x is undefined","platform":"javascript","user":{"id":"evil"},"request":{"url":"http://app/x?token=abc","headers":{"Authorization":"Bearer abc"}}}
{"type":"attachment","length":10,"filename":"a.bin"}
`+"\x00\x01\n\xffbinary", dsn)
}

func mustBrowserConfig(tb testing.TB, base string) map[string]any {
	tb.Helper()
	code, body := mustGet(tb, base+"/sentry-browser-config.js?format=json")
	require.Equal(tb, http.StatusOK, code, body)
	var c map[string]any
	require.NoError(tb, json.Unmarshal([]byte(body), &c))
	return c
}

// TestTunnelForwardsWithTheRealDSN: the page's config names a placeholder;
// an envelope naming it goes to Sentry under the real DSN, with the
// verified user and scrubbed, binary items byte for byte.
func TestTunnelForwardsWithTheRealDSN(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	realDSN := sentrySrv.DSN("realbrowserkey0123456789abcdef00", 42)
	s := mustStartSidecar(t, reportingConfig(api.URL, realDSN, "", "")+tunnelConfig, nil)
	base := "http://" + s.main

	cfg := mustBrowserConfig(t, base)
	assert.Equal(t, "/api/v1/beacon", cfg["tunnel"])
	assert.Equal(t, "production", cfg["environment"])
	placeholder := cfg["dsn"].(string)
	assert.NotContains(t, placeholder, "realbrowserkey")
	assert.True(t, strings.HasSuffix(placeholder, "@"+s.main+"/42"), placeholder)

	token := mustToken(t, "demo", "user", 2)
	code, body := mustDo(t, "POST", base+"/api/v1/beacon", token, browserEnvelope(placeholder), http.Header{"Content-Type": {"text/plain;charset=UTF-8"}})
	require.Equal(t, http.StatusOK, code, body)
	assert.NotContains(t, body, "realbrowserkey")

	env := sentrySrv.WaitEnvelopes(t, 1, 5*time.Second)[0]
	assert.Equal(t, "http://realbrowserkey0123456789abcdef00@"+strings.TrimPrefix(sentrySrv.URL(), "http://")+"/42", env.Header["dsn"])
	assert.Equal(t, "127.0.0.1", env.HTTPHeader.Get("X-Sentry-Forwarded-For"))
	require.Len(t, env.Items, 2)
	ev := env.Items[0].JSON()
	assert.Equal(t, map[string]any{"id": "2", "username": "demo", "ip_address": "127.0.0.1", "data": map[string]any{"role": "user", "verified": "true"}}, ev["user"], "the verified user replaces the page's claim")
	assert.NotContains(t, string(sentrySrv.AllBytes()), "Bearer abc")
	assert.NotContains(t, string(sentrySrv.AllBytes()), "token=abc")
	assert.Equal(t, []byte("\x00\x01\n\xffbinary"), env.Items[1].Payload, "binary items byte for byte")

	// A DSN the sidecar did not hand out is refused and nothing is sent.
	code, _ = mustDo(t, "POST", base+"/api/v1/beacon", "", browserEnvelope("https://otherkey@o1.ingest.sentry.io/42"), nil)
	assert.Equal(t, http.StatusForbidden, code)
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, sentrySrv.Envelopes(), 1)

	// The page's API calls carry the placeholder key in their baggage; the
	// API gets the real one.
	// (Not sampled by the page, so the baggage is passed on, mapped.)
	code, body = mustDo(t, "GET", base+"/api/v1/echo", "", "", http.Header{
		"Sentry-Trace": {"0123456789abcdef0123456789abcdef-89abcdef01234567-0"},
		"Baggage":      {"sentry-public_key=" + strings.Split(strings.TrimPrefix(placeholder, "http://"), "@")[0] + ",other=1"},
	})
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "sentry-public_key=realbrowserkey0123456789abcdef00,other=1")
}

// TestTunnelClientRateOff: client_rate.burst 0 turns the per-IP limit
// off, as documented, with every left at its default. It once made the
// tunnel refuse to start ("Burst and Every must both be positive").
func TestTunnelClientRateOff(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 0s\nsentry:\n  environment: development\n"+
		"tunnel:\n  path: /api/v1/beacon\n  client_rate:\n    burst: 0\nbrowser:\n  config_path: /sentry-browser-config.js\n"), nil)
	base := "http://" + s.main
	placeholder := mustBrowserConfig(t, base)["dsn"].(string)
	for i := range 150 { // past the default burst of 100
		code, body := mustDo(t, "POST", base+"/api/v1/beacon", "", browserEnvelope(placeholder), nil)
		require.Equal(t, http.StatusOK, code, "envelope %d: %s", i, body)
	}
}

// TestTunnelToInboxInDevelopment: without sending to Sentry, browser
// events land in the local inbox like server events.
func TestTunnelToInboxInDevelopment(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 0s\nsentry:\n  environment: development\n"+tunnelConfig), nil)
	base := "http://" + s.main
	placeholder := mustBrowserConfig(t, base)["dsn"].(string)
	code, body := mustDo(t, "POST", base+"/api/v1/beacon", "", browserEnvelope(placeholder), nil)
	require.Equal(t, http.StatusOK, code, body)
	res, err := http.Get("http://" + s.admin + "/inbox")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Contains(t, string(b), "TypeError: x is undefined")
}

// TestHangingSentryLeavesTheAPIAlone: with Sentry accepting and never
// answering, the tunnel answers 504 within its timeout while API requests
// through the same listener go on at their usual pace.
func TestHangingSentryLeavesTheAPIAlone(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	sentrySrv.SetHang(true)
	defer sentrySrv.SetHang(false)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("realkey", 42), "", "")+"tunnel:\n  path: /api/v1/beacon\n  timeout: 300ms\nbrowser:\n  config_path: /sentry-browser-config.js\n", nil)
	base := "http://" + s.main
	placeholder := mustBrowserConfig(t, base)["dsn"].(string)

	tunnelDone := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		code, _ := mustDo(t, "POST", base+"/api/v1/beacon", "", browserEnvelope(placeholder), nil)
		assert.Equal(t, http.StatusGatewayTimeout, code)
		tunnelDone <- time.Since(start)
	}()
	for range 20 {
		start := time.Now()
		code, _ := mustGet(t, base+"/health")
		assert.Equal(t, http.StatusOK, code)
		assert.Less(t, time.Since(start), 250*time.Millisecond, "API traffic is not held by Sentry")
	}
	select {
	case d := <-tunnelDone:
		assert.Less(t, d, 3*time.Second)
		t.Logf("tunnel answered 504 after %s", d.Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not answer")
	}
}
