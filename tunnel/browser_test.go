package tunnel

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBrowserConfigHandler(t *testing.T) {
	t.Parallel()
	const real = "https://0123456789abcdef0123456789abcdef@o1.ingest.sentry.io/42"
	key := PlaceholderKey(real)
	assert.Len(t, key, 32)
	assert.NotContains(t, key, "0123456789abcdef0123456789abcdef")
	assert.Equal(t, key, PlaceholderKey(real), "stable across replicas")
	assert.NotEqual(t, key, PlaceholderKey("https://other@o1.ingest.sentry.io/42"))

	h := BrowserConfigHandler(BrowserConfig{
		PlaceholderKey: key, Project: "42", Tunnel: "/api/v1/beacon",
		Environment: "production", Release: "proximity@0.1.0",
		TracesSampleRate: 0.1, ReplaysSessionSampleRate: 0.1, ReplaysOnErrorSampleRate: 1,
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/sentry-browser-config.js?format=json")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, "http://"+key+"@"+strings.TrimPrefix(srv.URL, "http://")+"/42", got["dsn"], "a placeholder on this origin")
	assert.Equal(t, "/api/v1/beacon", got["tunnel"])
	assert.Equal(t, "production", got["environment"])
	assert.Equal(t, "proximity@0.1.0", got["release"])
	assert.Equal(t, 0.1, got["tracesSampleRate"])
	assert.Equal(t, 1.0, got["replaysOnErrorSampleRate"])

	res, err = http.Get(srv.URL + "/sentry-browser-config.js")
	require.NoError(t, err)
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, "text/javascript; charset=utf-8", res.Header.Get("Content-Type"))
	assert.Equal(t, "public, max-age=300", res.Header.Get("Cache-Control"))
	assert.Contains(t, string(b), "window.SENTRY_SIDECAR = {")
	assert.NotContains(t, string(b), "0123456789abcdef0123456789abcdef", "the real key stays on the server")

	res, err = http.Post(srv.URL+"/sentry-browser-config.js", "text/plain", nil)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
}
