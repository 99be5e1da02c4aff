package enrich

import (
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const canary = "CANARY-7f3a9c"

func deployExchange() *Exchange {
	start := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	return &Exchange{
		Time:     start.Add(2 * time.Second),
		Method:   "POST",
		Scheme:   "https",
		Host:     "proximity.example",
		Path:     "/api/v1/apps/deploy",
		RawQuery: "dry_run=0&token=" + canary,
		Header: http.Header{
			"Authorization": {"Bearer " + canary},
			"Cookie":        {"proximity-auth-cookie=" + canary},
			"Content-Type":  {"application/json"},
			"X-Api-Key":     {canary},
			"User-Agent":    {"Mozilla/5.0"},
		},
		Route:       "/api/v1/apps/deploy",
		ClientIP:    "203.0.113.7",
		RequestID:   "req-1",
		Upstream:    "127.0.0.1:8765",
		Status:      500,
		ContentType: "application/json",
		Body:        []byte(`{"detail":"Deployment failed: LXC creation timed out on node pve","password":"` + canary + `","nested":{"api_key":"` + canary + `","ok":1}}`),
		Duration:    1500 * time.Millisecond,
		UpstreamDur: 1499 * time.Millisecond,
		User:        &User{ID: "2", Username: "demo", Role: "user", Verified: true},
		Trail: []Crumb{
			{Time: start, Method: "GET", Path: "/api/v1/apps", URL: "/api/v1/apps", Status: 200, Duration: 12 * time.Millisecond},
			{Time: start.Add(time.Second), Method: "GET", Path: "/api/v1/apps/catalog", URL: "/api/v1/apps/catalog?category=web", Status: 200, Duration: 8 * time.Millisecond},
		},
	}
}

func mustGolden(tb testing.TB, name string, got []byte) {
	tb.Helper()
	path := filepath.Join("testdata", "events", name)
	if *update {
		require.NoError(tb, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(tb, err, "run with -update to create it")
	assert.JSONEq(tb, string(want), string(got))
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(tb, err)
	return append(b, '\n')
}

func TestUpstreamEventGolden(t *testing.T) {
	t.Parallel()
	ev := UpstreamEvent(deployExchange())
	assert.Equal(t, "Deployment failed: LXC creation timed out on node pve", ev.Message)
	assert.Equal(t, []string{"POST", "/api/v1/apps/deploy", "500"}, ev.Fingerprint)
	assert.Equal(t, "POST /api/v1/apps/deploy", ev.Transaction)
	require.Len(t, ev.Breadcrumbs, 3)
	assert.Equal(t, "GET /api/v1/apps", ev.Breadcrumbs[0].Message)
	assert.Equal(t, "GET /api/v1/apps/catalog", ev.Breadcrumbs[1].Message)
	assert.Equal(t, "POST /api/v1/apps/deploy", ev.Breadcrumbs[2].Message, "the failing request comes last")
	b := mustJSON(t, ev)
	assert.NotContains(t, string(b), canary)
	mustGolden(t, "upstream_500.json", b)
}

func TestProxyErrorEventGolden(t *testing.T) {
	t.Parallel()
	x := deployExchange()
	x.Status, x.ErrorKind, x.Body, x.ContentType, x.User, x.Trail = 502, "refused", nil, "", nil, nil
	ev := ProxyErrorEvent(x)
	assert.Equal(t, []string{"proxy-error", "127.0.0.1:8765", "refused"}, ev.Fingerprint)
	assert.Equal(t, "upstream 127.0.0.1:8765 refused the connection", ev.Message)
	b := mustJSON(t, ev)
	assert.NotContains(t, string(b), canary)
	mustGolden(t, "proxy_error_refused.json", b)
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, ct string
		status         int
		want           string
	}{
		{"fastapi detail", `{"detail":"App not found"}`, "application/json", 500, "App not found"},
		{"proximity error with details", `{"success":false,"error":"Proxmox API error","details":"Connection refused"}`, "application/json", 502, "Proxmox API error: Connection refused"},
		{"proximity error", `{"success":false,"error":"Internal server error"}`, "application/json", 500, "Internal server error"},
		{"message key", `{"message":"boom"}`, "application/json; charset=utf-8", 503, "boom"},
		{"validation list", `{"detail":[{"loc":["body","hostname"],"msg":"field required","type":"missing"}]}`, "application/json", 500, "field required"},
		{"nested error object", `{"error":{"message":"db down","code":7}}`, "application/problem+json", 500, "db down"},
		{"json without content type", `{"detail":"x"}`, "", 500, "x"},
		{"html", `<html>oops</html>`, "text/html", 502, "Bad Gateway"},
		{"empty", ``, "application/json", 504, "Gateway Timeout"},
		{"truncated json", `{"detail":"a`, "application/json", 500, "Internal Server Error"},
		{"unknown status", ``, "", 599, "HTTP 599"},
		{"secret in detail", `{"detail":"bad token=` + canary + `"}`, "application/json", 500, "bad token=[Filtered]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, ErrorMessage([]byte(tc.body), tc.ct, tc.status))
		})
	}
	long := `{"detail":"` + strings.Repeat("é", 600) + `"}`
	msg := ErrorMessage([]byte(long), "application/json", 500)
	assert.LessOrEqual(t, len(msg), 512+len("…"))
	assert.True(t, strings.HasSuffix(msg, "…"))
}

func TestScrubBody(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, body, ct, want string }{
		{"json keys at any depth", `{"password":"` + canary + `","a":[{"token":"` + canary + `"}],"ok":"yes"}`, "application/json", `{"a":[{"token":"[Filtered]"}],"ok":"yes","password":"[Filtered]"}`},
		{"truncated json falls back to text", `{"detail":"x","password": "` + canary + `", "more": "`, "application/json", `{"detail":"x","password": "[Filtered]", "more": "`},
		{"text key=value", "failed: api_key=" + canary + " at step 3", "text/plain", "failed: api_key=[Filtered] at step 3"},
		{"bearer in text", "sent Authorization: Bearer " + canary, "text/plain", "sent Authorization: [Filtered] [Filtered]"},
		{"jwt in text", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig-nature_1 leaked", "text/plain", "token [Filtered] leaked"},
		{"binary", "\xff\xfe\x00\x01binary", "application/octet-stream", "[binary body: 10 bytes]"},
		{"utf-8 cut at the end", "caf\xc3", "text/plain", "caf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := ScrubBody([]byte(tc.body), tc.ct)
			assert.Equal(t, tc.want, got)
			assert.NotContains(t, got, canary)
		})
	}
}

func TestScrubEventIsALastLine(t *testing.T) {
	t.Parallel()
	ev := UpstreamEvent(deployExchange())
	// Whatever a later change adds, BeforeSend scrubs it.
	ev.Request.Data = `{"password":"` + canary + `"}`
	ev.Request.Cookies = "session=" + canary
	ev.Request.QueryString = "password=" + canary
	ev.Request.URL += "?secret=" + canary
	ev.Request.Headers["Authorization"] = "Bearer " + canary
	ev.Tags["api_key"] = canary
	ev.User.Data["session_token"] = canary
	ev.Contexts["extra"] = map[string]any{"credentials": canary, "list": []any{map[string]any{"token": canary}}}
	ev.Breadcrumbs[0].Data["url"] = "/x?token=" + canary
	ev.Breadcrumbs[0].Data["auth"] = canary
	ev.Message = "failed with bearer " + canary
	out := ScrubEvent(ev)
	b := mustJSON(t, out)
	assert.NotContains(t, string(b), canary)
	assert.Empty(t, out.Request.Data, "request bodies are never sent")
	assert.Nil(t, ScrubEvent(nil))
}
