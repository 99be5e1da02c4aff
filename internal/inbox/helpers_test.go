package inbox

import (
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the fixed clock of every test.
var t0 = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0.Add(90 * time.Second) }

func mustInbox(tb testing.TB, o Options) *Inbox {
	tb.Helper()
	if o.Now == nil {
		o.Now = fixedNow
	}
	in, err := New(o)
	require.NoError(tb, err)
	tb.Cleanup(in.Close)
	return in
}

// mustClient returns a real sentry-go client whose transport is the inbox,
// closed at the end of the test so goleak sees its batcher goroutine go.
func mustClient(tb testing.TB, in *Inbox) *sentry.Client {
	tb.Helper()
	c, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:         "http://public@127.0.0.1:1/1", // any valid DSN; the inbox never dials
		Transport:   in,
		Release:     "t",
		Environment: "test",
	})
	require.NoError(tb, err)
	tb.Cleanup(c.Close)
	return c
}

// deployFailure is the event the proxy builds for Proximity's failing
// deploy: a user from the JWT, route tags, the user's trail, the response
// and app contexts.
func deployFailure(id string) *sentry.Event {
	ev := sentry.NewEvent()
	ev.EventID = sentry.EventID(id)
	ev.Level = sentry.LevelError
	ev.Message = "Deployment failed: LXC creation timed out on node pve"
	ev.Timestamp = t0
	ev.User = sentry.User{ID: "2", Username: "demo", Data: map[string]string{"role": "user", "verified": "true"}}
	ev.Tags = map[string]string{
		"http.route":       "/api/v1/apps/deploy",
		"http.method":      "POST",
		"http.status_code": "500",
		"request_id":       "req-7f3a",
		"upstream":         "127.0.0.1:8765",
	}
	ev.Breadcrumbs = []*sentry.Breadcrumb{
		crumb(t0.Add(-40*time.Second), "GET", "/api/v1/apps", 200, 38),
		crumb(t0.Add(-25*time.Second), "GET", "/api/v1/apps/catalog", 200, 112),
		crumb(t0.Add(-30*time.Millisecond), "POST", "/api/v1/apps/deploy", 500, 30012),
	}
	ev.Contexts = map[string]sentry.Context{
		"app":      {"name": "Proximity", "version": "0.1.0", "debug_mode": false},
		"response": {"status_code": 500, "content_type": "application/json", "body": `{"detail":"Deployment failed: LXC creation timed out on node pve"}`, "duration_ms": 30012},
		"proxmox":  {"host": "pve.local", "port": 8006},
	}
	ev.Request = &sentry.Request{
		Method:  "POST",
		URL:     "http://localhost:8080/api/v1/apps/deploy",
		Headers: map[string]string{"Authorization": "[Filtered]", "User-Agent": "Mozilla/5.0", "X-Request-Id": "req-7f3a"},
	}
	ev.Fingerprint = []string{"POST", "/api/v1/apps/deploy", "500"}
	return ev
}

func crumb(at time.Time, method, path string, status int, ms float64) *sentry.Breadcrumb {
	return &sentry.Breadcrumb{
		Type:      "http",
		Category:  "request",
		Message:   method + " " + path,
		Timestamp: at,
		Data:      map[string]any{"method": method, "url": path, "status_code": status, "duration_ms": ms},
	}
}

func transaction(id, name string, status string, d time.Duration) *sentry.Event {
	ev := sentry.NewEvent()
	ev.EventID = sentry.EventID(id)
	ev.Type = "transaction"
	ev.Transaction = name
	ev.StartTime = t0
	ev.Timestamp = t0.Add(d)
	ev.Tags = map[string]string{"http.status_code": status}
	ev.Contexts = map[string]sentry.Context{"trace": {"op": "http.server", "trace_id": "0123456789abcdef0123456789abcdef", "span_id": "0123456789abcdef"}}
	return ev
}
