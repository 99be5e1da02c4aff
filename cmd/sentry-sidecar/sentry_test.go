package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// reportingConfig is a production sidecar in front of api, sending to the
// Sentry double, verifying the demo's tokens.
// sentryExtra and jwtExtra are lines added to those sections.
func reportingConfig(api, dsn, sentryExtra, jwtExtra string) string {
	return upstreamConfig(api, fmt.Sprintf(`shutdown:
  drain_delay: 0s
  flush_timeout: 2s
sentry:
  dsn: %q
  environment: production
  contexts:
    proxmox: {host: pve.local, port: 8006}
%s
jwt:
  secret: %q
%s`, dsn, sentryExtra, demo.DefaultSecret, jwtExtra))
}

func mustDo(tb testing.TB, method, url, token, body string, header http.Header) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(tb, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(tb, err)
	return res.StatusCode, string(b)
}

func mustToken(tb testing.TB, username, role string, id int) string {
	tb.Helper()
	tok, err := demo.Token(demo.DefaultSecret, username, role, id, time.Now(), time.Hour)
	require.NoError(tb, err)
	return tok
}

// TestFailingDeployBecomesOneEvent is the on-call engineer's view: a
// logged-in user lists apps, opens the catalog, and a deploy fails. Sentry
// gets exactly one event, naming the user, with the trail in order, the
// API's own words and the configured contexts.
func TestFailingDeployBecomesOneEvent(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("publickey", 42), "", ""), nil)
	base := "http://" + s.main

	code, body := mustDo(t, "POST", base+"/api/v1/auth/login", "", `{"username":"demo","password":"demo1234"}`, nil)
	require.Equal(t, http.StatusOK, code, body)
	token := body[strings.Index(body, `"access_token":"`)+16:]
	token = token[:strings.IndexByte(token, '"')]

	code, _ = mustDo(t, "GET", base+"/api/v1/apps", token, "", nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = mustDo(t, "GET", base+"/api/v1/apps/catalog", token, "", nil)
	require.Equal(t, http.StatusOK, code)
	code, body = mustDo(t, "POST", base+"/api/v1/apps/deploy", token, `{"catalog_id":"wordpress","hostname":"will-fail"}`, nil)
	require.Equal(t, http.StatusInternalServerError, code)
	assert.JSONEq(t, `{"detail":"Deployment failed: LXC creation timed out on node pve"}`, body, "the client gets the API's body byte for byte")

	events := sentrySrv.WaitEvents(t, 1, 5*time.Second)
	ev := events[0]
	assert.Equal(t, "Deployment failed: LXC creation timed out on node pve", ev["message"])
	assert.Equal(t, "error", ev["level"])
	assert.Equal(t, "production", ev["environment"])
	assert.Equal(t, []any{"POST", "/api/v1/apps/deploy", "500"}, ev["fingerprint"])
	assert.Equal(t, "POST /api/v1/apps/deploy", ev["transaction"])

	user := ev["user"].(map[string]any)
	assert.Equal(t, "2", user["id"])
	assert.Equal(t, "demo", user["username"])
	assert.Equal(t, "127.0.0.1", user["ip_address"])
	assert.Equal(t, map[string]any{"role": "user", "verified": "true"}, user["data"])

	tags := ev["tags"].(map[string]any)
	assert.Equal(t, "500", tags["http.status_code"])
	assert.Equal(t, "POST", tags["http.method"])
	assert.Equal(t, "/api/v1/apps/deploy", tags["http.route"])
	assert.NotEmpty(t, tags["request_id"])
	assert.Equal(t, strings.TrimPrefix(api.URL, "http://"), tags["upstream"])
	assert.Equal(t, version, tags["sidecar"])

	var crumbs []string
	for _, c := range ev["breadcrumbs"].([]any) {
		c := c.(map[string]any)
		data := c["data"].(map[string]any)
		crumbs = append(crumbs, fmt.Sprintf("%s %v", c["message"], data["status_code"]))
	}
	assert.Equal(t, []string{"GET /api/v1/apps 200", "GET /api/v1/apps/catalog 200", "POST /api/v1/apps/deploy 500"}, crumbs,
		"the user's trail, in order, the failing request last (login was anonymous)")

	contexts := ev["contexts"].(map[string]any)
	assert.Equal(t, map[string]any{"name": "Proximity", "version": "0.1.0", "debug_mode": false}, contexts["app"])
	assert.Equal(t, map[string]any{"host": "pve.local", "port": float64(8006)}, contexts["proxmox"])
	response := contexts["response"].(map[string]any)
	assert.Equal(t, float64(500), response["status_code"])
	assert.Contains(t, response["body"], "LXC creation timed out")

	request := ev["request"].(map[string]any)
	assert.Equal(t, "[Filtered]", request["headers"].(map[string]any)["Authorization"])
	assert.NotContains(t, string(sentrySrv.AllBytes()), token)

	// Nothing else was reported: the 200s and the login are not events.
	time.Sleep(200 * time.Millisecond)
	assert.Len(t, sentrySrv.Events(), 1)
}

// TestPIICanary sends a canary in every place a secret travels; none of it
// may reach Sentry.
func TestPIICanary(t *testing.T) {
	t.Parallel()
	const canary = "c4n4ry-5ecret-value"
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "session="+canary)
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"detail":"db down","password":%q,"user":{"api_key":%q,"name":"ok"},"access_token":%q}`, canary, canary, canary)
	}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("publickey", 42), "", "  cookie: proximity-auth-cookie"), nil)

	h := http.Header{
		"Cookie":              {"proximity-auth-cookie=" + canary + "; theme=dark"},
		"X-Api-Key":           {canary},
		"X-Auth-Token":        {canary},
		"X-Csrftoken":         {canary},
		"Proxy-Authorization": {"Basic " + canary},
	}
	code, _ := mustDo(t, "POST", "http://"+s.main+"/api/v1/apps/deploy?password="+canary+"&token="+canary+"&page=2", canary, `{"password":"`+canary+`"}`, h)
	require.Equal(t, http.StatusInternalServerError, code)
	code, _ = mustDo(t, "GET", "http://"+s.main+"/api/v1/settings;secret="+canary, "", "", nil)
	require.Equal(t, http.StatusInternalServerError, code)

	events := sentrySrv.WaitEvents(t, 2, 5*time.Second)
	assert.Equal(t, "db down", events[0]["message"])
	all := string(sentrySrv.AllBytes())
	assert.NotContains(t, all, canary)
	assert.Contains(t, all, "page=2", "what is not secret is kept")
	assert.NotContains(t, s.logs.String(), canary, "nor in the sidecar's logs")
}

// TestStormIsThrottled: 1000 identical failures become a handful of events
// and a count.
func TestStormIsThrottled(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("publickey", 42), "  throttle: {burst: 3, every: 1h}", ""), nil)

	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range 1000 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := http.Get("http://" + s.main + "/api/v1/test/sentry-backend")
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				assert.Equal(t, http.StatusInternalServerError, res.StatusCode)
			}
		})
	}
	wg.Wait()
	sentrySrv.WaitEvents(t, 3, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	assert.Len(t, sentrySrv.Events(), 3, "burst 3, no refill within the hour")

	var metrics string
	assert.Eventually(t, func() bool {
		_, metrics = mustGet(t, "http://"+s.admin+"/metrics")
		return strings.Contains(metrics, `sidecar_sentry_events_total{kind="upstream_5xx",outcome="throttled"} 997`)
	}, 5*time.Second, 20*time.Millisecond, "the rest are counted")
	assert.Contains(t, metrics, `sidecar_sentry_events_total{kind="upstream_5xx",outcome="captured"} 3`)
}

// TestConcurrentUsersKeepTheirOwnTrails: 50 users at once; each event
// carries its own user and only that user's requests.
func TestConcurrentUsersKeepTheirOwnTrails(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("publickey", 42), "  throttle: {burst: 0}", ""), nil)

	const users = 50
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			token := mustToken(t, fmt.Sprintf("user%d", u), "user", 1000+u)
			for i := range 3 {
				code, _ := mustDo(t, "GET", fmt.Sprintf("http://%s/api/v1/apps?u=%d&i=%d", s.main, u, i), token, "", nil)
				assert.Equal(t, http.StatusOK, code)
			}
			code, _ := mustDo(t, "GET", fmt.Sprintf("http://%s/api/v1/test/sentry-backend?u=%d", s.main, u), token, "", nil)
			assert.Equal(t, http.StatusInternalServerError, code)
		})
	}
	wg.Wait()
	events := sentrySrv.WaitEvents(t, users, 10*time.Second)
	require.Len(t, events, users)
	seen := map[string]bool{}
	for _, ev := range events {
		user := ev["user"].(map[string]any)
		id := user["id"].(string)
		var u int
		_, err := fmt.Sscanf(id, "1%03d", &u)
		require.NoError(t, err, id)
		assert.Equal(t, fmt.Sprintf("user%d", u), user["username"])
		seen[id] = true
		crumbs := ev["breadcrumbs"].([]any)
		require.Len(t, crumbs, 4, "three GETs and the failure")
		for i, c := range crumbs {
			url := c.(map[string]any)["data"].(map[string]any)["url"].(string)
			assert.Contains(t, url, fmt.Sprintf("u=%d", u), "event of user %d carries %s", u, url)
			if i < 3 {
				assert.Contains(t, url, fmt.Sprintf("i=%d", i), "in order")
			}
		}
	}
	assert.Len(t, seen, users)
}

// TestTestEvent: POST /test-event captures the deliberate event and says
// whether Sentry accepted it.
func TestTestEvent(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("publickey", 42), "", ""), nil)

	code, body := mustDo(t, "POST", "http://"+s.admin+"/test-event", "", "", nil)
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"delivered":true`)
	assert.Contains(t, body, `"sink":"sentry"`)
	ev := sentrySrv.WaitEvents(t, 1, 5*time.Second)[0]
	assert.Contains(t, ev["message"], "deliberate test event")
	assert.Contains(t, body, ev["event_id"])

	sentrySrv.SetStatus(http.StatusForbidden, nil)
	code, body = mustDo(t, "POST", "http://"+s.admin+"/test-event", "", "", nil)
	assert.Equal(t, http.StatusBadGateway, code)
	assert.Contains(t, body, `"delivered":false`)
}
