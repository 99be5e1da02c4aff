package inbox

import (
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/page.golden.html")

func mustPage(tb testing.TB, in *Inbox, target string) string {
	tb.Helper()
	rec := serve(in.Handler(), http.MethodGet, target)
	require.Equal(tb, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(tb, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	return rec.Body.String()
}

// proxyFailure is an anonymous request the sidecar answered 502 itself.
func proxyFailure(id string) *sentry.Event {
	ev := sentry.NewEvent()
	ev.EventID = sentry.EventID(id)
	ev.Level = sentry.LevelError
	ev.Timestamp = t0.Add(-3 * time.Minute)
	ev.Release = "0.1.0"
	ev.Environment = "development"
	ev.Exception = []sentry.Exception{
		{Type: "*net.OpError", Value: "dial tcp 127.0.0.1:8765: connect: connection refused"},
		{Type: "upstream unreachable", Value: "GET /api/v1/apps/{id}/status: dial tcp 127.0.0.1:8765: connect: connection refused"},
	}
	ev.Tags = map[string]string{"http.route": "/api/v1/apps/{id}/status", "http.method": "GET", "http.status_code": "502", "request_id": "req-19c2", "kind": "proxy"}
	ev.Breadcrumbs = []*sentry.Breadcrumb{crumb(ev.Timestamp.Add(-2*time.Millisecond), "GET", "/api/v1/apps/wordpress-myblog/status", 502, 1.4)}
	ev.Contexts = map[string]sentry.Context{"app": {"name": "Proximity", "version": "0.1.0", "debug_mode": true}}
	return ev
}

// mustDemo fills an inbox the way a demo run does.
func mustDemo(tb testing.TB) *Inbox {
	tb.Helper()
	in := mustInbox(tb, Options{})
	// Each request of the trail in deployFailure, as its transaction.
	tx := func(n int, name, status string, start time.Time, d time.Duration) {
		ev := transaction(id(n), name, status, d)
		ev.StartTime, ev.Timestamp = start, start.Add(d)
		in.SendEvent(ev)
	}
	in.SendEvent(proxyFailure(id(2)))
	tx(20, "GET /api/v1/apps", "200", t0.Add(-40*time.Second), 38*time.Millisecond)
	tx(21, "GET /api/v1/apps/catalog", "200", t0.Add(-25*time.Second), 112*time.Millisecond)
	deploy := deployFailure(id(1))
	deploy.Release = "0.1.0"
	deploy.Environment = "development"
	in.SendEvent(deploy)
	tx(22, "POST /api/v1/apps/deploy", "500", t0.Add(-30042*time.Millisecond), 30012*time.Millisecond)
	return in
}

func TestPageGolden(t *testing.T) {
	t.Parallel()
	got := mustPage(t, mustDemo(t), "/inbox.html")
	path := filepath.Join("testdata", "page.golden.html")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), got)
}

func TestPageShowsWhatAPersonNeeds(t *testing.T) {
	t.Parallel()
	page := mustPage(t, mustDemo(t), "/inbox.html")

	deploy := strings.Index(page, "Deployment failed: LXC creation timed out on node pve")
	proxy := strings.Index(page, "upstream unreachable: GET /api/v1/apps/{id}/status")
	require.Positive(t, deploy)
	require.Positive(t, proxy)
	assert.Less(t, deploy, proxy, "newest first")

	first := page[deploy:proxy]
	for _, want := range []string{
		"<strong>demo</strong> · id <code>2</code> · role <code>user</code>",
		"<code>POST /api/v1/apps/deploy</code> → <span class=\"st bad\">500</span>",
		"<code>req-7f3a</code>",
		"2026-05-04 12:00:00 UTC",
		"1m ago",
		`href="inbox/` + id(1) + `"`,
		"<summary>response</summary>",
		"<summary>app</summary>",
		"<summary>proxmox</summary>",
		"<summary>request</summary>",
	} {
		assert.Contains(t, first, want)
	}
	assert.Less(t, strings.Index(first, "<summary>response</summary>"), strings.Index(first, "<summary>app</summary>"), "response context first")

	// The trail reads in order and ends on this event's request.
	trail := regexp.MustCompile(`<td class="mono">([A-Z]+ [^<]+)(<span class="here">)?`).FindAllStringSubmatch(first, -1)
	require.Len(t, trail, 3)
	assert.Equal(t, "GET /api/v1/apps", trail[0][1])
	assert.Equal(t, "GET /api/v1/apps/catalog", trail[1][1])
	assert.Equal(t, "POST /api/v1/apps/deploy", trail[2][1])
	assert.Empty(t, trail[1][2])
	assert.NotEmpty(t, trail[2][2], "the failing request is marked")
	assert.Contains(t, first, `<td class="num">30.0 s</td>`)
	assert.Contains(t, first, `<td class="num">38 ms</td>`)

	second := page[proxy:]
	assert.Contains(t, second, `<span class="muted">anonymous</span>`)
	assert.Contains(t, second, "Recent transactions")
	assert.Regexp(t, `POST /api/v1/apps/deploy</td><td class="st bad">500</td><td class="num">30.0 s</td>`, second)
}

func TestPageEscapesHostileContent(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{})
	ev := deployFailure(id(1))
	ev.Message = "<script>alert(1)</script>"
	ev.User.Username = `"><img src=x onerror=alert(2)>`
	ev.Tags["http.route"] = "/</code><script>alert(3)</script>"
	ev.Breadcrumbs[0].Message = "GET /<script>alert(4)</script>"
	ev.Contexts["response"]["body"] = "</pre><script>alert(5)</script>"
	in.SendEvent(ev)
	// Tunneled events will carry ids the sidecar did not make.
	in.add([]byte(`{"event_id":"\"><script>alert(6)</script>","message":"javascript:alert(7)"}`), "", "")

	rec := serve(in.Handler(), http.MethodGet, "/inbox.html")
	require.Equal(t, http.StatusOK, rec.Code)
	page := rec.Body.String()
	lower := strings.ToLower(page)
	assert.NotContains(t, lower, "<script")
	assert.NotContains(t, lower, "<img")
	assert.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
	assert.Contains(t, page, "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;")
	assert.Contains(t, page, "&lt;/pre&gt;&lt;script&gt;alert(5)&lt;/script&gt;")
	assert.Contains(t, page, `href="inbox/%22%3E%3Cscript%3Ealert%286%29%3C%2Fscript%3E"`, "ids are path-escaped in links")
	assert.Contains(t, rec.Header().Get("Content-Security-Policy"), "default-src 'none'", "no script runs even if escaping failed")
}

func TestPageEmptyAndLimited(t *testing.T) {
	t.Parallel()
	empty := mustPage(t, mustInbox(t, Options{}), "/inbox.html")
	assert.Contains(t, empty, "No errors yet")
	assert.NotContains(t, empty, "Recent transactions")

	in := mustInbox(t, Options{})
	for n := range pageErrors + 5 {
		in.SendEvent(deployFailure(id(n)))
	}
	page := mustPage(t, in, "/inbox.html")
	assert.Equal(t, pageErrors, strings.Count(page, `<article class="event`))
	assert.Contains(t, page, `5 older errors are not shown. <a href="inbox.html?limit=55">Show all</a>`)
	assert.Equal(t, pageErrors+5, strings.Count(mustPage(t, in, "/inbox.html?limit=55"), `<article class="event`))
}

func TestPageTruncatedEvent(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{MaxEventBytes: 2048})
	ev := deployFailure(id(1))
	ev.Contexts["response"]["body"] = strings.Repeat("x", 4000)
	in.SendEvent(ev)
	page := mustPage(t, in, "/inbox.html")
	assert.Contains(t, page, "memory holds it without: <code>contexts</code>")
	assert.Contains(t, page, "POST /api/v1/apps/deploy", "what was kept is still shown")
}

func TestPageUnverifiedUser(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{})
	ev := deployFailure(id(1))
	ev.User.Data["verified"] = "false"
	in.SendEvent(ev)
	assert.Contains(t, mustPage(t, in, "/inbox.html"), "unverified token")
}
