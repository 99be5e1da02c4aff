package transport

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// panicky panics when marshalled, like a broken user type in extra data.
type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("boom") }

// TestEventEncoding: newJob calls Event.MarshalJSON itself, which halves
// the cost of encoding (json.Marshal would compact and re-escape the
// method's output once more, BENCHMARKS.md). The bytes must be what
// json.Marshal gives, for an error event, a transaction, and an event
// whose text holds characters json.Marshal escapes (<, >, &, U+2028).
func TestEventEncoding(t *testing.T) {
	t.Parallel()
	escapes := richEvent()
	escapes.Message = "<script>&\u2028</script>"
	escapes.Contexts = map[string]sentry.Context{"html": {"b": "<b>&</b>", "nested": map[string]any{"z": 1, "a": []any{"<", 2.5}}}}
	for name, ev := range map[string]*sentry.Event{"error": richEvent(), "transaction": mustFinishedTransaction(t), "escapes": escapes} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(ev)
			require.NoError(t, err)
			j, err := newJob(ev, "http://k@127.0.0.1:1/1", sdkInfo{})
			require.NoError(t, err)
			_, payload, ok := bytes.Cut(j.items, []byte("\n"))
			require.True(t, ok)
			assert.Equal(t, string(want)+"\n", string(payload))
		})
	}
}

func TestNewJob(t *testing.T) {
	t.Parallel()
	fallback := sdkInfo{Name: "sentry-sidecar", Version: "1"}
	withType := func(typ string) *sentry.Event {
		ev := newEvent("")
		ev.Type = typ
		return ev
	}
	checkIn := withType("check_in")
	checkIn.CheckIn = &sentry.CheckIn{ID: "c0ffee", MonitorSlug: "nightly", Status: sentry.CheckInStatusOK}
	logs := withType("log")
	logs.Logs = []sentry.Log{{Body: "a"}, {Body: "b"}}
	attach := newEvent("with attachments")
	attach.Attachments = []*sentry.Attachment{{Payload: []byte("x\ny")}, nil, {Filename: "b.txt", ContentType: "text/plain"}}

	tests := []struct {
		name     string
		event    *sentry.Event
		category string
		items    []map[string]any // expected item headers, length checked separately
	}{
		{"error", newEvent("boom"), CategoryError, []map[string]any{{"type": "event"}}},
		{"transaction", newTransaction("GET /"), CategoryTransaction, []map[string]any{{"type": "transaction"}}},
		{"check-in", checkIn, CategoryMonitor, []map[string]any{{"type": "check_in"}}},
		{"logs", logs, CategoryLog, []map[string]any{{"type": "log", "item_count": 2.0, "content_type": contentTypeLog}}},
		{"unknown type travels as an event", withType("future"), CategoryUnknown, []map[string]any{{"type": "event"}}},
		{"attachments, nil skipped, filename defaulted", attach, CategoryError, []map[string]any{
			{"type": "event"},
			{"type": "attachment", "filename": "attachment"},
			{"type": "attachment", "filename": "b.txt", "content_type": "text/plain"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j, err := newJob(tc.event, "http://k@h/1", fallback)
			require.NoError(t, err)
			assert.Equal(t, tc.category, j.category)
			assert.Equal(t, tc.event.EventID, j.eventID)
			raw, err := j.body(time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC))
			require.NoError(t, err)

			env, err := sentrytest.ParseEnvelope(raw)
			require.NoError(t, err, "%q", raw)
			assert.Equal(t, "2026-03-01T12:00:00.000000005Z", env.Header["sent_at"])
			assert.Equal(t, "http://k@h/1", env.Header["dsn"])
			require.Len(t, env.Items, len(tc.items))
			for i, want := range tc.items {
				got := env.Items[i]
				for k, v := range want {
					assert.Equal(t, v, got.Header[k], "item %d %s", i, k)
				}
				assert.Equal(t, float64(len(got.Payload)), got.Header["length"], "item %d", i)
			}
			var payload map[string]any
			require.NoError(t, json.Unmarshal(env.Items[0].Payload, &payload))
			if tc.event.Type == "check_in" {
				assert.Equal(t, "nightly", payload["monitor_slug"])
			} else {
				assert.Equal(t, string(tc.event.EventID), payload["event_id"])
			}
		})
	}
}

func TestNewJobEncodingFailures(t *testing.T) {
	t.Parallel()
	ev := newEvent("extra that cannot be encoded")
	ev.Contexts = map[string]sentry.Context{"bad": {"value": panicky{}}}
	_, err := newJob(ev, "http://k@h/1", sdkInfo{})
	assert.ErrorContains(t, err, "panic: boom")

	ev = newEvent("NaN")
	ev.Contexts = map[string]sentry.Context{"bad": {"value": func() {}}}
	_, err = newJob(ev, "http://k@h/1", sdkInfo{})
	assert.ErrorContains(t, err, "encode event")
}

// TestSendEventCopiesTheEvent: the envelope is encoded before SendEvent
// returns, so a scope that changes the event afterwards changes nothing
// that is sent (sentry-go does not call MakeSerializationSafe for a custom
// transport).
func TestSendEventCopiesTheEvent(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetDelay(20 * time.Millisecond)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1)})
	ev := newEvent("original")
	ev.Tags = map[string]string{"k": "original"}
	tr.SendEvent(ev)
	ev.Message = "changed"
	ev.Tags["k"] = "changed"
	require.True(t, tr.Flush(5*time.Second))
	got := srv.Events()[0]
	assert.Equal(t, "original", got["message"])
	assert.Equal(t, map[string]any{"k": "original"}, got["tags"])
}

func TestDSNWithoutSecret(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://pub@o1.ingest.sentry.io/2", "https://pub@o1.ingest.sentry.io/2"},
		{"https://pub:sec@sentry.example.com:8443/sub/path/7", "https://pub@sentry.example.com:8443/sub/path/7"},
		{"http://pub@[::1]:9000/3", "http://pub@[::1]:9000/3"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, dsnWithoutSecret(tc.in))
		})
	}
}
