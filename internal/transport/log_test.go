package transport

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// TestLogsOnceAndWithoutTheKey: an outage is one warning when it starts and
// one line when it ends, not one per event, and no line names the key.
func TestLogsOnceAndWithoutTheKey(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	core, logs := observer.New(zapcore.DebugLevel)
	const key = "f00dfacef00dfacef00dfacef00dface"
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(key, 1), Log: zap.New(core)})
	client, err := sentry.NewClient(sentry.ClientOptions{Dsn: srv.DSN("other", 2), Transport: tr, Release: "x", DisableMetrics: true})
	require.NoError(t, err)
	defer client.Close()

	srv.SetStatus(http.StatusInternalServerError, nil)
	for range 5 {
		tr.SendEvent(newEvent("outage"))
	}
	require.True(t, tr.Flush(5*time.Second))
	srv.SetStatus(http.StatusTooManyRequests, http.Header{"X-Sentry-Rate-Limits": {"1:transaction:key"}})
	tr.SendEvent(newEvent("limit"))
	require.True(t, tr.Flush(5*time.Second))
	srv.SetStatus(0, nil)
	tr.SendEvent(newEvent("back"))
	require.True(t, tr.Flush(5*time.Second))

	var messages []string
	for _, e := range logs.All() {
		messages = append(messages, e.Message)
		for _, v := range e.ContextMap() {
			assert.NotContains(t, fmt.Sprint(v), key)
		}
		assert.NotContains(t, e.Message, key)
	}
	assert.Equal(t, []string{
		"sentry client DSN differs from the transport's; events go to the transport's",
		"sentry failing; events are counted as failed until it answers",
		"sentry rate limit; dropping events of these categories until it ends",
		"sentry reachable again",
	}, messages)
}

// TestConcurrentUse runs SendEvent, Flush, Outcome and Stats from many
// goroutines at once, then Close, for the race detector.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), QueueSize: 50, Workers: 3})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				ev := newEvent("concurrent")
				if i%7 == 0 {
					ev = newTransaction("GET /concurrent")
				}
				tr.SendEvent(ev)
				switch i % 10 {
				case 0:
					tr.Flush(time.Second)
				case 1:
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, _ = tr.Outcome(ctx, ev.EventID)
					cancel()
				case 2:
					_ = tr.Stats()
				}
				if g == 0 && i == 25 {
					srv.SetStatus(http.StatusOK, http.Header{"X-Sentry-Rate-Limits": {"1:transaction:key"}})
				}
			}
		})
	}
	wg.Wait()
	require.True(t, tr.Flush(5*time.Second))
	tr.Close()
	st := tr.Stats()
	assert.Equal(t, uint64(400), st.Sent+st.Rejected+st.Failed+st.RateLimited+st.QueueFull, "%+v", st)
	assert.Equal(t, int(st.Sent), len(srv.Envelopes()))
}
