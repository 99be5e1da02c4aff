package inbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func id(n int) string { return fmt.Sprintf("%032x", n) }

func TestCaptureThroughClientKeepsWhatSentryWouldReceive(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{})
	client := mustClient(t, in)

	// The user, a tag, a crumb and a context come from the scope, as they do
	// in the proxy; the rest rides on the event.
	scope := sentry.NewScope()
	scope.SetTag("upstream", "127.0.0.1:8765")
	ev := deployFailure(id(1))
	ev.Breadcrumbs = ev.Breadcrumbs[1:]
	scope.AddBreadcrumb(crumb(t0.Add(-40e9), "GET", "/api/v1/apps", 200, 38), 100)
	got := client.CaptureEvent(ev, nil, scope)
	require.NotNil(t, got)
	require.Equal(t, 1, in.Len())

	raw := in.Events()[0]
	var sent map[string]any
	require.NoError(t, json.Unmarshal(raw, &sent))
	assert.Equal(t, id(1), sent["event_id"])
	assert.Equal(t, "t", sent["release"])
	assert.Equal(t, "test", sent["environment"])
	assert.Equal(t, map[string]any{"id": "2", "username": "demo", "data": map[string]any{"role": "user", "verified": "true"}}, sent["user"])
	crumbs := sent["breadcrumbs"].([]any)
	require.Len(t, crumbs, 3)
	assert.Equal(t, "GET /api/v1/apps", crumbs[2].(map[string]any)["message"], "scope crumbs follow the event's own")
	assert.Contains(t, sent["contexts"], "response")
	assert.Contains(t, sent["contexts"], "app")

	// Later scope changes must not reach the stored bytes: the SDK shares
	// the scope's maps with a custom transport's event.
	scope.SetTag("upstream", "changed")
	scope.SetUser(sentry.User{ID: "99"})
	assert.JSONEq(t, string(raw), string(in.Events()[0]))

	s := in.find(id(1)).sum
	assert.Equal(t, Summary{
		EventID:     id(1),
		Type:        TypeError,
		Timestamp:   t0,
		ReceivedAt:  fixedNow(),
		Level:       "error",
		Message:     "Deployment failed: LXC creation timed out on node pve",
		User:        &User{ID: "2", Username: "demo", Role: "user", Verified: new(true)},
		Route:       "/api/v1/apps/deploy",
		Method:      "POST",
		Status:      "500",
		RequestID:   "req-7f3a",
		Breadcrumbs: 3,
		Bytes:       len(raw),
	}, s)
}

func TestRingKeepsNewest(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 3, 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			in := mustInbox(t, Options{Size: size})
			for n := range size + 10 {
				in.SendEvent(deployFailure(id(n)))
			}
			assert.Equal(t, size, in.Len())
			events := in.Events()
			require.Len(t, events, size)
			for k, raw := range events {
				assert.Equal(t, id(size+9-k), summarize(raw).EventID, "newest first")
			}
			snap := in.snapshot(0, 0)
			assert.Equal(t, 10, snap.dropped)
			assert.Nil(t, in.find(id(0)), "the oldest is gone")
		})
	}
}

func TestDefaultSize(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{})
	for n := range DefaultSize + 1 {
		in.SendEvent(deployFailure(id(n)))
	}
	assert.Equal(t, DefaultSize, in.Len())
}

func TestTransactionsDoNotPushErrorsOut(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{Size: 8})
	client := mustClient(t, in)
	for n := range 8 {
		client.CaptureEvent(deployFailure(id(n)), nil, nil)
	}
	for n := range 100 {
		client.CaptureEvent(transaction(id(1000+n), "GET /api/v1/apps", "200", 40e6), nil, nil)
	}

	assert.Equal(t, 8, in.Len(), "all errors kept")
	txs := in.Transactions()
	assert.Len(t, txs, 2, "transactions get Size/4")
	s := summarize(txs[0])
	assert.Equal(t, id(1099), s.EventID)
	assert.Equal(t, "transaction", s.Type)
	assert.Equal(t, "GET /api/v1/apps", s.Message)
	assert.Equal(t, 98, in.snapshot(0, 0).dropped)
}

func TestFileHoldsOneLinePerEvent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "inbox.jsonl")
	in := mustInbox(t, Options{File: path, MaxEventBytes: 4096})
	client := mustClient(t, in)
	big := deployFailure(id(99))
	big.Contexts["response"]["body"] = strings.Repeat("x", 8000)
	events := []*sentry.Event{deployFailure(id(1)), transaction(id(2), "GET /api/v1/apps", "200", 1e6), deployFailure(id(3)), big}
	for _, ev := range events {
		client.CaptureEvent(ev, nil, nil)
	}
	client.Close() // closes the file through Transport.Close

	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.NoError(t, sc.Err())
	require.Len(t, lines, len(events))
	for k, line := range lines {
		require.True(t, json.Valid([]byte(line)), "line %d", k)
		want, err := json.Marshal(events[k])
		require.NoError(t, err)
		assert.Equal(t, string(want), line, "line %d is byte for byte what Sentry would receive", k)
		if e := in.find(string(events[k].EventID)); !e.sum.Truncated {
			assert.Equal(t, line, string(e.raw), "line %d equals the stored event", k)
		}
	}
	assert.True(t, in.find(id(99)).sum.Truncated, "the file keeps the big event whole; memory does not")

	// Events after Close stay in memory but are not written.
	in.SendEvent(deployFailure(id(4)))
	assert.NotNil(t, in.find(id(4)))
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, len(events), strings.Count(string(after), "\n"))
}

func TestFileAppendsToExisting(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "inbox.jsonl")
	require.NoError(t, os.WriteFile(path, []byte("{\"earlier\":true}\n"), 0o600))
	in := mustInbox(t, Options{File: path})
	in.SendEvent(deployFailure(id(1)))
	in.Close()
	in.Close() // a second Close is harmless
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, `{"earlier":true}`, lines[0])
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"negative size", Options{Size: -1}, "inbox size must not be negative, got -1"},
		{"negative max bytes", Options{MaxEventBytes: -5}, "inbox max event bytes must not be negative, got -5"},
		{"file in missing dir", Options{File: "/nonexistent-dir/inbox.jsonl"}, "open inbox file /nonexistent-dir/inbox.jsonl: open /nonexistent-dir/inbox.jsonl: no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.o)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
		})
	}
	_, err := New(Options{File: "/nonexistent-dir/x"})
	assert.ErrorIs(t, err, os.ErrNotExist, "the cause is wrapped")
}

func TestTruncatedEventStaysValidJSON(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{MaxEventBytes: 2048})
	ev := deployFailure(id(1))
	for n := range 200 {
		ev.Breadcrumbs = append(ev.Breadcrumbs, crumb(t0, "GET", fmt.Sprintf("/api/v1/apps/%d", n), 200, 1))
	}
	in.SendEvent(ev)
	e := in.find(id(1))
	require.NotNil(t, e)
	assert.True(t, e.sum.Truncated)
	assert.Equal(t, []string{"breadcrumbs"}, e.sum.Omitted)
	assert.LessOrEqual(t, len(e.raw), 2048)
	assert.True(t, json.Valid(e.raw))
	assert.Equal(t, 203, e.sum.Breadcrumbs, "the summary describes the event as sent")
	assert.Equal(t, "Deployment failed: LXC creation timed out on node pve", summarize(e.raw).Message)
	full, err := json.Marshal(ev)
	require.NoError(t, err)
	assert.Equal(t, len(full), e.sum.Bytes)
}

func TestConcurrentSendEvent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "inbox.jsonl")
	in := mustInbox(t, Options{Size: 50, File: path})
	client := mustClient(t, in)
	h := in.Handler()
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// One scope per goroutine, like a hub cloned per request, while
			// the same goroutine keeps changing it.
			scope := sentry.NewScope()
			for n := range each {
				scope.SetTag("n", fmt.Sprint(n))
				scope.AddBreadcrumb(crumb(t0, "GET", "/x", 200, 1), 10)
				if n%4 == 0 {
					client.CaptureEvent(transaction(id(w*1000+n), "GET /x", "200", 1e6), nil, scope)
				} else {
					client.CaptureEvent(deployFailure(id(w*1000+n)), nil, scope)
				}
			}
		})
	}
	// Readers meanwhile; rendering under -race is slow, so only a few.
	for range 2 {
		wg.Go(func() {
			for range 5 {
				serve(h, "GET", "/inbox.html")
				serve(h, "GET", "/inbox?full=1")
				_ = in.Len()
			}
		})
	}
	wg.Wait()
	client.Close()

	assert.Equal(t, 50, in.Len())
	snap := in.snapshot(0, 0)
	assert.Equal(t, workers*each, snap.errsLen+snap.txsLen+snap.dropped, "every event is held or counted as dropped")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	assert.Len(t, lines, workers*each)
	for _, l := range lines {
		require.True(t, json.Valid([]byte(l)), "interleaved line: %.80s", l)
	}
}

func TestLogLineNamesTheEventOnly(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	in := mustInbox(t, Options{Log: zap.New(core)})
	client := mustClient(t, in)
	client.CaptureEvent(deployFailure(id(1)), nil, nil)
	client.CaptureEvent(transaction(id(2), "GET /api/v1/apps", "200", 1e6), nil, nil)

	entries := logs.AllUntimed()
	require.Len(t, entries, 2)
	assert.Equal(t, zapcore.InfoLevel, entries[0].Level)
	assert.Equal(t, "event kept in local inbox", entries[0].Message)
	assert.Equal(t, map[string]any{
		"event_id": id(1),
		"type":     "error",
		"level":    "error",
		"message":  "Deployment failed: LXC creation timed out on node pve",
		"user_id":  "2",
		"route":    "/api/v1/apps/deploy",
		"method":   "POST",
		"status":   "500",
	}, entries[0].ContextMap(), "no breadcrumbs, contexts, request or username in the log")

	assert.Equal(t, zapcore.DebugLevel, entries[1].Level, "transactions are as many as requests")
	assert.Equal(t, "GET /api/v1/apps", entries[1].ContextMap()["message"])
}

func TestTransportMethods(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{})
	in.Configure(sentry.ClientOptions{Dsn: "http://other@127.0.0.1:1/2"})
	in.SendEvent(nil)
	assert.True(t, in.Flush(0))
	assert.True(t, in.FlushWithContext(t.Context()))
	assert.Equal(t, 0, in.Len())
}

func TestTelemetryWithoutTypeFieldIsNotAnError(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{})
	// sentry-go marshals neither of these with a "type" member.
	in.SendEvent(&sentry.Event{Type: "check_in", EventID: "c1", CheckIn: &sentry.CheckIn{ID: "c1", MonitorSlug: "nightly", Status: sentry.CheckInStatusOK}})
	in.SendEvent(&sentry.Event{Type: "log", EventID: sentry.EventID(id(7)), Logs: []sentry.Log{{Body: "hello", Level: sentry.LogLevelInfo}}})

	assert.Equal(t, 0, in.Len())
	require.Len(t, in.Transactions(), 2)
	assert.Equal(t, "log", in.find(id(7)).sum.Type)
	checkIn := in.find("c1")
	require.NotNil(t, checkIn, "found by its check-in id")
	assert.Equal(t, "check_in", checkIn.sum.Type)
}

func TestFileModeWarning(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "inbox.jsonl")
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Chmod(path, 0o644)) // whatever the umask
	core, logs := observer.New(zapcore.WarnLevel)
	mustInbox(t, Options{File: path, Log: zap.New(core)})
	entries := logs.AllUntimed()
	require.Len(t, entries, 1)
	assert.Equal(t, "inbox file is readable by others; events hold user ids and URLs", entries[0].Message)
	assert.Equal(t, "-rw-r--r--", entries[0].ContextMap()["mode"])
}

func TestFileWriteFailureKeepsEventsAndLogsOnce(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to make writes fail")
	}
	core, logs := observer.New(zapcore.WarnLevel)
	in := mustInbox(t, Options{File: "/dev/full", Log: zap.New(core)})
	for n := range 3 {
		in.SendEvent(deployFailure(id(n)))
	}
	assert.Equal(t, 3, in.Len())
	failures := logs.FilterMessage("inbox file write failed; events stay in memory").AllUntimed()
	require.Len(t, failures, 1, "a full disk logs once, not once per event")
	assert.Contains(t, failures[0].ContextMap()["error"], "no space left on device")
}

func TestAddItemFromTheTunnel(t *testing.T) {
	t.Parallel()
	ib, err := New(Options{Size: 10})
	require.NoError(t, err)
	defer ib.Close()
	payload := []byte(`{"event_id":"0123456789abcdef0123456789abcdef","message":"from the browser","level":"error","platform":"javascript"}`)
	ib.AddItem("event", payload)
	ib.AddItem("replay_recording", []byte("\x00binary"))
	ib.AddItem("transaction", []byte(`{"event_id":"fedcba9876543210fedcba9876543210","type":"transaction","transaction":"/page"}`))
	payload[0] = 'X' // the inbox kept its own copy
	require.Equal(t, 1, ib.Len())
	assert.JSONEq(t, `{"event_id":"0123456789abcdef0123456789abcdef","message":"from the browser","level":"error","platform":"javascript"}`, string(ib.Events()[0]))
	assert.Len(t, ib.Transactions(), 1)
}
