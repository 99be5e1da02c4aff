package transport

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is an injectable clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// mustTransport starts a Transport with its own registry and closes it when
// tb ends.
func mustTransport(tb testing.TB, opts Options) (*Transport, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	tr, err := New(opts)
	if err != nil {
		tb.Fatalf("transport.New: %v", err)
	}
	tb.Cleanup(tr.Close)
	return tr, reg
}

// mustCounter reads sidecar_sentry_envelopes_total{category, outcome} from reg.
func mustCounter(tb testing.TB, reg prometheus.Gatherer, category string, outcome Outcome) float64 {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != "sidecar_sentry_envelopes_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["category"] == category && labels["outcome"] == string(outcome) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func newEventID() sentry.EventID {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return sentry.EventID(hex.EncodeToString(b))
}

// newEvent is an error event as sentry-go's client would hand it over.
func newEvent(message string) *sentry.Event {
	ev := sentry.NewEvent()
	ev.EventID = newEventID()
	ev.Message = message
	ev.Level = sentry.LevelError
	ev.Timestamp = time.Now()
	ev.Sdk = sentry.SdkInfo{Name: "sentry.go", Version: sentry.SDKVersion}
	return ev
}

// newTransaction is a finished transaction event.
func newTransaction(name string) *sentry.Event {
	ev := newEvent("")
	ev.Type = "transaction"
	ev.Transaction = name
	ev.StartTime = ev.Timestamp.Add(-time.Second)
	return ev
}

// richEvent is an event the size of a real upstream-5xx event: a trail of
// breadcrumbs, tags, a request, contexts and a user.
func richEvent() *sentry.Event {
	ev := newEvent("POST /api/v1/apps/deploy answered 500: deployment failed")
	ev.Tags = map[string]string{"http.status_code": "500", "http.method": "POST", "http.route": "/api/v1/apps/deploy",
		"upstream": "http://127.0.0.1:8765", "request_id": "4f1c2a", "environment": "production"}
	ev.User = sentry.User{ID: "42", Username: "alice", Data: map[string]string{"role": "admin", "verified": "true"}}
	ev.Request = &sentry.Request{URL: "http://app.local/api/v1/apps/deploy", Method: "POST",
		Headers: map[string]string{"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "Mozilla/5.0",
			"Authorization": "[Filtered]", "X-Request-Id": "4f1c2a", "X-Forwarded-For": "10.0.0.7"}}
	ev.Contexts = map[string]sentry.Context{
		"response": {"status_code": 500, "content_type": "application/json", "body": `{"detail":"deployment failed: LXC 104 exists"}`, "duration_ms": 1834},
		"app":      {"app_name": "Proximity", "app_version": "0.1.0", "debug_mode": false},
		"proxmox":  {"host": "pve.local", "port": 8006},
	}
	for i := range 20 {
		ev.Breadcrumbs = append(ev.Breadcrumbs, &sentry.Breadcrumb{Type: "http", Category: "request",
			Message: "GET /api/v1/apps", Timestamp: ev.Timestamp.Add(time.Duration(-i) * time.Second),
			Data: map[string]any{"method": "GET", "url": "/api/v1/apps?page=2", "status_code": 200, "duration_ms": 12.5}})
	}
	ev.Fingerprint = []string{"POST", "/api/v1/apps/deploy", "500"}
	return ev
}
