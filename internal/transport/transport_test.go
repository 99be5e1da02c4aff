package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

const testKey = "publickey"

// TestDeliversThroughSentryGo runs the Transport under a real sentry-go
// client: an error with an attachment and a transaction arrive framed,
// authenticated and with their trace header.
func TestDeliversThroughSentryGo(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.AllowKey(testKey)
	dsn := srv.DSN(testKey, 7)
	tr, reg := mustTransport(t, Options{DSN: dsn, UserAgent: "sentry-sidecar/1.2.3"})
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn: dsn, Transport: tr, Release: "x", Environment: "test",
		EnableTracing: true, TracesSampleRate: 1, DisableMetrics: true,
	})
	require.NoError(t, err)
	defer client.Close()
	hub := sentry.NewHub(client, sentry.NewScope())

	hub.Scope().AddAttachment(&sentry.Attachment{Filename: "dump.bin", ContentType: "application/octet-stream", Payload: []byte("a\nb\x00\xff\n")})
	errID := hub.CaptureMessage("deploy failed")
	require.NotNil(t, errID)
	hub.Scope().ClearAttachments()

	ctx := sentry.SetHubOnContext(context.Background(), hub)
	tx := sentry.StartTransaction(ctx, "POST /api/v1/apps/deploy")
	tx.StartChild("http.client").Finish()
	tx.Finish()

	require.True(t, tr.Flush(5*time.Second))
	envs := srv.WaitEnvelopes(t, 2, 5*time.Second)
	require.Len(t, envs, 2)
	byType := map[string]sentrytest.Envelope{}
	for _, e := range envs {
		byType[e.Items[0].Type] = e
		assert.Equal(t, "/api/7/envelope/", e.URL)
		assert.Equal(t, "application/x-sentry-envelope", e.HTTPHeader.Get("Content-Type"))
		assert.Equal(t, "Sentry sentry_version=7, sentry_client=sentry-sidecar/1.2.3, sentry_key="+testKey, e.HTTPHeader.Get("X-Sentry-Auth"))
		assert.Equal(t, "sentry-sidecar/1.2.3", e.HTTPHeader.Get("User-Agent"))
		assert.Equal(t, dsn, e.Header["dsn"])
		assert.Equal(t, map[string]any{"name": "sentry.go", "version": sentry.SDKVersion}, e.Header["sdk"])
		sentAt, err := time.Parse(time.RFC3339Nano, e.Header["sent_at"].(string))
		require.NoError(t, err)
		assert.WithinDuration(t, time.Now(), sentAt, time.Minute)
		for _, it := range e.Items {
			assert.Equal(t, float64(len(it.Payload)), it.Header["length"], "%s item length", it.Type)
		}
	}

	ev := byType["event"]
	require.Len(t, ev.Items, 2)
	assert.Equal(t, string(*errID), ev.EventID())
	assert.Equal(t, "deploy failed", ev.Items[0].JSON()["message"])
	assert.Equal(t, "x", ev.Items[0].JSON()["release"])
	att := ev.Items[1]
	assert.Equal(t, "attachment", att.Type)
	assert.Equal(t, "dump.bin", att.Header["filename"])
	assert.Equal(t, "application/octet-stream", att.Header["content_type"])
	assert.Equal(t, []byte("a\nb\x00\xff\n"), att.Payload)

	txEnv := byType["transaction"]
	require.Len(t, txEnv.Items, 1)
	txJSON := txEnv.Items[0].JSON()
	assert.Equal(t, "POST /api/v1/apps/deploy", txJSON["transaction"])
	assert.Len(t, txJSON["spans"], 1)
	trace, _ := txEnv.Header["trace"].(map[string]any)
	assert.Equal(t, tx.TraceID.String(), trace["trace_id"])
	assert.Equal(t, testKey, trace["public_key"])
	assert.Equal(t, "x", trace["release"])

	assert.Equal(t, Stats{Sent: 2, Limits: Limits{}}, tr.Stats())
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryError, OutcomeSent))
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryTransaction, OutcomeSent))
}

func TestEnvelopeHeaderAndAuth(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	clock := newFakeClock()
	withSecret := strings.Replace(srv.DSN(testKey, 3), testKey+"@", testKey+":s3cret@", 1)
	tr, _ := mustTransport(t, Options{DSN: withSecret, Now: clock.Now})

	ev := newEvent("header check")
	ev.Sdk = sentry.SdkInfo{}
	tr.SendEvent(ev)
	require.True(t, tr.Flush(5*time.Second))

	env := srv.WaitEnvelopes(t, 1, time.Second)[0]
	assert.Equal(t, srv.DSN(testKey, 3), env.Header["dsn"], "the secret stays out of the payload")
	assert.Equal(t, clock.Now().Format(time.RFC3339Nano), env.Header["sent_at"])
	assert.Equal(t, string(ev.EventID), env.Header["event_id"])
	assert.Equal(t, map[string]any{"name": "sentry-sidecar", "version": ""}, env.Header["sdk"], "fallback SDK info")
	assert.NotContains(t, env.Header, "trace")
	assert.Equal(t, "Sentry sentry_version=7, sentry_client=sentry-sidecar, sentry_key="+testKey+", sentry_secret=s3cret",
		env.HTTPHeader.Get("X-Sentry-Auth"))
	assert.Equal(t, string(ev.EventID), env.HTTPHeader.Get("Idempotency-Key"))
}

// TestConcurrentSends: with 4 workers, 8 envelopes that each take 200 ms
// are delivered in about 2 x 200 ms, not 8 x.
func TestConcurrentSends(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetDelay(200 * time.Millisecond)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Workers: 4})

	start := time.Now()
	for range 8 {
		tr.SendEvent(newEvent("concurrent"))
	}
	require.True(t, tr.Flush(5*time.Second))
	elapsed := time.Since(start)
	t.Logf("8 envelopes x 200 ms on 4 workers: %v", elapsed)

	envs := srv.Envelopes()
	require.Len(t, envs, 8)
	assert.GreaterOrEqual(t, elapsed, 390*time.Millisecond)
	// 2 x 200 ms plus slack for a loaded machine; one worker would need
	// 1.6 s. The race detector on a busy 2-CPU machine has stretched this
	// past 1.6 s, so there the timeline below is the evidence.
	assert.Less(t, elapsed, 1200*time.Millisecond*raceFactor, "8 sends of 200 ms on 4 workers")
	// Load-proof evidence as well: the first four arrived before the first
	// answer could have been given.
	first := envs[0].ReceivedAt
	assert.Less(t, envs[3].ReceivedAt.Sub(first), 200*time.Millisecond, "4 sends in flight at once")
}

// TestWorkersInFlight: exactly Workers envelopes are in flight at once.
func TestWorkersInFlight(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 4, 8} {
		t.Run(strconv.Itoa(workers), func(t *testing.T) {
			t.Parallel()
			srv := sentrytest.NewServer(t)
			srv.SetHang(true)
			tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Workers: workers, CloseTimeout: 50 * time.Millisecond})
			for range 2 * workers {
				tr.SendEvent(newEvent("in flight"))
			}
			srv.WaitRequests(t, workers, 5*time.Second)
			time.Sleep(50 * time.Millisecond) // a worker too many would show up now
			assert.Equal(t, workers, srv.Requests())
			assert.Equal(t, workers, tr.Stats().Queued)
		})
	}
}

// TestKeepsConnectionsAlive: the own client keeps about one connection per
// worker instead of dialling per envelope.
func TestKeepsConnectionsAlive(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetDelay(5 * time.Millisecond)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Workers: 4})
	var dials atomic.Int32
	ht := tr.client.Transport.(*http.Transport)
	dial := ht.DialContext
	ht.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}

	for range 100 {
		tr.SendEvent(newEvent("keep-alive"))
	}
	require.True(t, tr.Flush(10*time.Second))
	assert.Len(t, srv.Envelopes(), 100)
	t.Logf("100 envelopes on 4 workers took %d connections", dials.Load())
	// About one per worker; net/http may dial a spare when a worker asks for
	// a connection a moment before its last one is back in the pool.
	assert.LessOrEqual(t, dials.Load(), int32(8), "connections are kept alive, not dialled per envelope")
}

// TestRetryAfter: a 429 with Retry-After stops every category for that long
// (counted as rate_limited, nothing sent), then sending resumes.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	clock := newFakeClock()
	tr, reg := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Now: clock.Now})

	srv.SetStatus(http.StatusTooManyRequests, http.Header{"Retry-After": {"30"}})
	first := newEvent("answered 429")
	tr.SendEvent(first)
	require.True(t, tr.Flush(5*time.Second))
	outcome, err := tr.Outcome(context.Background(), first.EventID)
	require.NoError(t, err)
	assert.Equal(t, OutcomeRateLimited, outcome)
	srv.SetStatus(0, nil)

	for range 3 {
		tr.SendEvent(newEvent("dropped while limited"))
	}
	tr.SendEvent(newTransaction("GET /also-limited"))
	clock.Advance(29 * time.Second)
	tr.SendEvent(newEvent("still limited"))
	require.True(t, tr.Flush(5*time.Second))
	assert.Equal(t, 1, srv.Requests(), "nothing sent while limited")
	assert.Equal(t, 5.0, mustCounter(t, reg, CategoryError, OutcomeRateLimited))
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryTransaction, OutcomeRateLimited))

	clock.Advance(2 * time.Second)
	after := newEvent("after the limit")
	tr.SendEvent(after)
	require.True(t, tr.Flush(5*time.Second))
	assert.Len(t, srv.Events(), 1)
	assert.Equal(t, "after the limit", srv.Events()[0]["message"])
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryError, OutcomeSent))
	st := tr.Stats()
	assert.Equal(t, uint64(6), st.RateLimited)
	assert.Equal(t, uint64(1), st.Sent)
}

// TestCategoryRateLimits: X-Sentry-Rate-Limits on a 200 limits only the
// categories it names: transactions are dropped, errors still go.
func TestCategoryRateLimits(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	clock := newFakeClock()
	tr, reg := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Now: clock.Now})

	srv.SetStatus(http.StatusOK, http.Header{"X-Sentry-Rate-Limits": {"60:transaction:key:quota_exceeded"}})
	tr.SendEvent(newEvent("brings the limit"))
	require.True(t, tr.Flush(5*time.Second))
	srv.SetStatus(0, nil)

	tr.SendEvent(newTransaction("GET /limited"))
	tr.SendEvent(newEvent("errors still go"))
	require.True(t, tr.Flush(5*time.Second))

	assert.Len(t, srv.Events(), 2)
	assert.Empty(t, srv.Transactions())
	assert.Equal(t, 2.0, mustCounter(t, reg, CategoryError, OutcomeSent))
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryTransaction, OutcomeRateLimited))
	assert.Equal(t, clock.Now().Add(60*time.Second), tr.Stats().Limits[CategoryTransaction])

	clock.Advance(61 * time.Second)
	tr.SendEvent(newTransaction("GET /after"))
	require.True(t, tr.Flush(5*time.Second))
	assert.Len(t, srv.Transactions(), 1)
}

func TestFailureOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(*sentrytest.Server)
		outcome Outcome
	}{
		{"500 fails", func(s *sentrytest.Server) { s.SetStatus(500, nil) }, OutcomeFailed},
		{"503 fails", func(s *sentrytest.Server) { s.SetStatus(503, http.Header{"Retry-After": {"5"}}) }, OutcomeFailed},
		{"400 is rejected", func(s *sentrytest.Server) { s.SetStatus(400, nil) }, OutcomeRejected},
		{"413 is rejected", func(s *sentrytest.Server) { s.SetStatus(413, nil) }, OutcomeRejected},
		{"unknown key is rejected", func(s *sentrytest.Server) { s.AllowKey("another") }, OutcomeRejected},
		{"429 is rate limited", func(s *sentrytest.Server) { s.SetStatus(429, nil) }, OutcomeRateLimited},
		{"reset connection fails", func(s *sentrytest.Server) { s.SetReset(true) }, OutcomeFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := sentrytest.NewServer(t)
			tc.setup(srv)
			tr, reg := mustTransport(t, Options{DSN: srv.DSN(testKey, 1)})
			ev := newEvent(tc.name)
			tr.SendEvent(ev)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := tr.Outcome(ctx, ev.EventID)
			require.NoError(t, err)
			assert.Equal(t, tc.outcome, got)
			assert.Equal(t, 1.0, mustCounter(t, reg, CategoryError, tc.outcome))
			assert.Empty(t, srv.Envelopes())
		})
	}
}

func TestRefusedConnectionFailsFast(t *testing.T) {
	t.Parallel()
	tr, reg := mustTransport(t, Options{DSN: sentrytest.RefusingDSN(t, testKey, 1)})
	start := time.Now()
	for range 10 {
		tr.SendEvent(newEvent("refused"))
	}
	require.True(t, tr.Flush(2*time.Second))
	assert.Less(t, time.Since(start), time.Second)
	assert.Equal(t, 10.0, mustCounter(t, reg, CategoryError, OutcomeFailed))
}

// TestHangingSentry: a Sentry that accepts and never answers must not slow
// the request path, grow memory past the queue, or hang Close.
func TestHangingSentry(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetHang(true)
	const (
		total        = 1000
		queue        = 100
		workers      = 4
		closeTimeout = 300 * time.Millisecond
	)
	tr, _ := mustTransport(t, Options{
		DSN: srv.DSN(testKey, 1), Workers: workers, QueueSize: queue, CloseTimeout: closeTimeout,
		HTTPClient: &http.Client{Timeout: 30 * time.Second},
	})
	events := make([]*sentry.Event, total)
	for i := range events {
		events[i] = newEvent("into the void")
	}

	start := time.Now()
	for _, ev := range events {
		tr.SendEvent(ev)
	}
	sendTime := time.Since(start)
	t.Logf("%d SendEvent calls against a hanging Sentry: %v", total, sendTime)
	assert.Less(t, sendTime, 100*time.Millisecond*raceFactor, "SendEvent must never wait for Sentry")

	srv.WaitRequests(t, workers, 5*time.Second)
	st := tr.Stats()
	assert.LessOrEqual(t, st.Queued, queue, "memory is bounded by the queue")
	assert.GreaterOrEqual(t, st.QueueFull, uint64(total-queue-workers))
	assert.False(t, tr.Flush(50*time.Millisecond), "nothing can be flushed")

	start = time.Now()
	tr.Close()
	closeTime := time.Since(start)
	t.Logf("Close against a hanging Sentry: %v", closeTime)
	assert.Less(t, closeTime, closeTimeout+closeGrace+200*time.Millisecond)

	st = tr.Stats()
	assert.Equal(t, uint64(total), st.Sent+st.Rejected+st.Failed+st.RateLimited+st.QueueFull, "every event counted: %+v", st)
	assert.Equal(t, uint64(total)-st.QueueFull, st.Failed)
	assert.Zero(t, st.Sent)
}

// TestSlowSentryBoundedBySendTimeout: each send is bounded by the client's
// timeout, so workers move on and later events still go out.
func TestSlowSentryBoundedBySendTimeout(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetHang(true)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Workers: 1,
		HTTPClient: &http.Client{Timeout: 100 * time.Millisecond}})
	stuck := newEvent("times out")
	tr.SendEvent(stuck)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := tr.Outcome(ctx, stuck.EventID)
	require.NoError(t, err)
	assert.Equal(t, OutcomeFailed, got)
	srv.WaitRejections(t, 1, 5*time.Second) // the double saw the client give up

	srv.SetHang(false)
	tr.SendEvent(newEvent("goes through"))
	require.True(t, tr.Flush(5*time.Second))
	events := srv.WaitEvents(t, 1, time.Second)
	require.Len(t, events, 1)
	assert.Equal(t, "goes through", events[0]["message"])
}

func TestQueueFull(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetHang(true)
	tr, reg := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Workers: 1, QueueSize: 2, CloseTimeout: 50 * time.Millisecond})
	tr.SendEvent(newEvent("in flight"))
	srv.WaitRequests(t, 1, 5*time.Second)
	tr.SendEvent(newEvent("queued 1"))
	tr.SendEvent(newEvent("queued 2"))
	dropped := newEvent("dropped")
	tr.SendEvent(dropped)

	got, err := tr.Outcome(context.Background(), dropped.EventID)
	require.NoError(t, err)
	assert.Equal(t, OutcomeQueueFull, got)
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryError, OutcomeQueueFull))
	assert.Equal(t, 2, tr.Stats().Queued)
}

// TestFlushWaitsForDelivery: after Flush returns true everything queued
// before it has reached Sentry.
func TestFlushWaitsForDelivery(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1), Workers: 2})
	assert.True(t, tr.Flush(time.Millisecond), "nothing queued: immediate")

	srv.SetDelay(100 * time.Millisecond)
	for range 5 {
		tr.SendEvent(newEvent("flush me"))
	}
	require.True(t, tr.Flush(5*time.Second))
	assert.Len(t, srv.Envelopes(), 5, "delivered before Flush returned")

	srv.SetHang(true)
	tr.SendEvent(newEvent("hangs"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.False(t, tr.FlushWithContext(ctx))
	srv.SetHang(false)
}

func TestOutcomeOfUnknownEvent(t *testing.T) {
	t.Parallel()
	tr, _ := mustTransport(t, Options{DSN: sentrytest.RefusingDSN(t, testKey, 1)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := tr.Outcome(ctx, newEventID())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCloseStopsAccepting(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	tr, _ := mustTransport(t, Options{DSN: srv.DSN(testKey, 1)})
	tr.SendEvent(newEvent("before close"))
	tr.Close()
	tr.Close()
	late := newEvent("after close")
	tr.SendEvent(late)
	tr.SendEvent(nil)

	assert.Len(t, srv.Envelopes(), 1, "queued events are sent by Close")
	got, err := tr.Outcome(context.Background(), late.EventID)
	require.NoError(t, err)
	assert.Equal(t, OutcomeFailed, got)
	assert.True(t, tr.Flush(time.Millisecond))
}

func TestMetricsRegistered(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	tr, reg := mustTransport(t, Options{DSN: srv.DSN(testKey, 1)})
	tr.SendEvent(newEvent("metrics"))
	require.True(t, tr.Flush(5*time.Second))

	families, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]int{}
	for _, f := range families {
		got[f.GetName()] = len(f.GetMetric())
		switch f.GetName() {
		case "sidecar_sentry_queue_length":
			assert.Equal(t, 0.0, f.GetMetric()[0].GetGauge().GetValue())
		case "sidecar_sentry_send_duration_seconds":
			assert.Equal(t, uint64(1), f.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	assert.Equal(t, map[string]int{
		"sidecar_sentry_envelopes_total":       2 * len(outcomes), // error and transaction series exist from the start
		"sidecar_sentry_queue_length":          1,
		"sidecar_sentry_send_duration_seconds": 1,
	}, got)
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryError, OutcomeSent))
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	dup := prometheus.NewRegistry()
	first, err := New(Options{DSN: "http://k@127.0.0.1:1/1", Registerer: dup})
	require.NoError(t, err)
	defer first.Close()

	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"empty DSN", Options{}, "parse DSN"},
		{"DSN without key", Options{DSN: "http://127.0.0.1/1"}, "parse DSN"},
		{"negative workers", Options{DSN: "http://k@h/1", Workers: -1}, "workers must not be negative"},
		{"negative queue", Options{DSN: "http://k@h/1", QueueSize: -1}, "queue size must not be negative"},
		{"negative close timeout", Options{DSN: "http://k@h/1", CloseTimeout: -time.Second}, "close timeout must not be negative"},
		{"metrics registered twice", Options{DSN: "http://k@h/1", Registerer: dup}, "register sentry transport metrics"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr, err := New(tc.opts)
			require.Error(t, err)
			assert.Nil(t, tr)
			assert.Contains(t, err.Error(), tc.want)
			var already prometheus.AlreadyRegisteredError
			if tc.name == "metrics registered twice" {
				assert.True(t, errors.As(err, &already))
			}
		})
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   Outcome
	}{
		{200, OutcomeSent}, {202, OutcomeSent}, {299, OutcomeSent},
		{400, OutcomeRejected}, {401, OutcomeRejected}, {403, OutcomeRejected}, {413, OutcomeRejected},
		{429, OutcomeRateLimited},
		{500, OutcomeFailed}, {502, OutcomeFailed}, {503, OutcomeFailed},
		{302, OutcomeFailed}, {101, OutcomeFailed},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, classify(tc.status))
		})
	}
}

// TestErrorsFirst: with Sentry hanging, transactions fill at most half the
// queue, so errors captured later still find room.
func TestErrorsFirst(t *testing.T) {
	t.Parallel()
	srv := sentrytest.NewServer(t)
	srv.SetHang(true)
	const queue = 10
	tr, reg := mustTransport(t, Options{
		DSN: srv.DSN(testKey, 1), Workers: 1, QueueSize: queue, CloseTimeout: 100 * time.Millisecond,
		HTTPClient: &http.Client{Timeout: 30 * time.Second},
	})
	tr.SendEvent(newEvent("occupies the one worker"))
	srv.WaitRequests(t, 1, 5*time.Second)
	for range 3 * queue {
		tr.SendEvent(newTransaction("GET /x"))
	}
	assert.Equal(t, queue/2, tr.Stats().Queued, "transactions take half the queue")
	for range queue / 2 {
		tr.SendEvent(newEvent("still fits"))
	}
	assert.Equal(t, queue, tr.Stats().Queued, "errors take the rest")
	assert.Equal(t, float64(3*queue-queue/2), mustCounter(t, reg, CategoryTransaction, OutcomeQueueFull))
	assert.Equal(t, 0.0, mustCounter(t, reg, CategoryError, OutcomeQueueFull))
	tr.SendEvent(newEvent("one too many"))
	assert.Equal(t, 1.0, mustCounter(t, reg, CategoryError, OutcomeQueueFull), "a full queue is full for errors too")
}
