package transport

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

const benchEvents = 10000

// BenchmarkDelivery pushes 10 000 events through the Transport to a healthy
// double as fast as SendEvent takes them and flushes; it reports events/s
// (from the first SendEvent to the end of Flush) and the share delivered.
func BenchmarkDelivery(b *testing.B) {
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			srv := sentrytest.NewServer(b)
			tr, _ := mustTransport(b, Options{DSN: srv.DSN(testKey, 1), Workers: workers, QueueSize: benchEvents})
			var elapsed time.Duration
			var delivered, sent int
			for b.Loop() {
				b.StopTimer()
				srv.Reset()
				events := make([]*sentry.Event, benchEvents)
				for i := range events {
					events[i] = richEvent()
				}
				b.StartTimer()
				start := time.Now()
				for _, ev := range events {
					tr.SendEvent(ev)
				}
				if !tr.Flush(2 * time.Minute) {
					b.Fatal("flush timed out")
				}
				elapsed += time.Since(start)
				delivered += len(srv.Envelopes())
				sent += benchEvents
			}
			b.ReportMetric(float64(sent)/elapsed.Seconds(), "events/s")
			b.ReportMetric(100*float64(delivered)/float64(sent), "%delivered")
		})
	}
}

// BenchmarkDeliveryVersusSentryGo captures 10 000 events through a
// sentry-go client, once with this Transport and once with sentry-go's
// default (telemetry buffer + one sender), and reports the share the
// double received after Flush.
func BenchmarkDeliveryVersusSentryGo(b *testing.B) {
	for _, kind := range []string{"event", "transaction"} {
		for _, tc := range []struct {
			name    string
			sidecar bool
		}{{"sidecar", true}, {"sentry-go-default", false}} {
			b.Run(kind+"/"+tc.name, func(b *testing.B) {
				srv := sentrytest.NewServer(b)
				opts := sentry.ClientOptions{
					Dsn: srv.DSN(testKey, 1), Release: "x", Environment: "bench", DisableMetrics: true,
					DisableClientReports: true, HTTPClient: &http.Client{Timeout: 5 * time.Second},
				}
				if tc.sidecar {
					tr, _ := mustTransport(b, Options{DSN: opts.Dsn, QueueSize: benchEvents})
					opts.Transport = tr
				}
				client, err := sentry.NewClient(opts)
				if err != nil {
					b.Fatal(err)
				}
				defer client.Close()
				var elapsed time.Duration
				var delivered, sent int
				for b.Loop() {
					b.StopTimer()
					srv.Reset()
					events := make([]*sentry.Event, benchEvents)
					for i := range events {
						if kind == "transaction" {
							events[i] = newTransaction("GET /api/v1/apps")
						} else {
							events[i] = richEvent()
						}
					}
					b.StartTimer()
					start := time.Now()
					for _, ev := range events {
						client.CaptureEvent(ev, nil, nil)
					}
					client.Flush(2 * time.Minute)
					elapsed += time.Since(start)
					delivered += len(srv.Envelopes())
					sent += benchEvents
				}
				b.ReportMetric(float64(sent)/elapsed.Seconds(), "events/s")
				b.ReportMetric(100*float64(delivered)/float64(sent), "%delivered")
			})
		}
	}
}

// BenchmarkSendEvent is the cost on the request path: encoding an event
// and queueing it. "error" is a realistic upstream-5xx event (about 5 KB:
// 20 breadcrumbs, request, contexts, user); "transaction" is a request
// transaction with one child span as sentry-go finishes it.
func BenchmarkSendEvent(b *testing.B) {
	for name, ev := range map[string]*sentry.Event{"error": richEvent(), "transaction": mustFinishedTransaction(b)} {
		b.Run(name, func(b *testing.B) {
			tr, _ := mustTransport(b, Options{DSN: sentrytest.RefusingDSN(b, testKey, 1), QueueSize: 1, Workers: 1})
			b.ReportAllocs()
			for b.Loop() {
				tr.SendEvent(ev)
			}
		})
	}
}

// mustFinishedTransaction returns the event sentry-go hands its transport
// when a request transaction with one child span finishes.
func mustFinishedTransaction(tb testing.TB) *sentry.Event {
	tb.Helper()
	mock := &sentry.MockTransport{}
	client, err := sentry.NewClient(sentry.ClientOptions{Dsn: "http://k@127.0.0.1:1/1", Transport: mock, Release: "x",
		EnableTracing: true, TracesSampleRate: 1, DisableMetrics: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer client.Close()
	hub := sentry.NewHub(client, sentry.NewScope())
	ctx := sentry.SetHubOnContext(context.Background(), hub)
	tx := sentry.StartTransaction(ctx, "POST /api/v1/apps/deploy", sentry.WithOpName("http.server"))
	tx.SetData("http.request.method", "POST")
	child := tx.StartChild("http.client", sentry.WithDescription("POST http://127.0.0.1:8765/api/v1/apps/deploy"))
	child.Finish()
	tx.Finish()
	events := mock.Events()
	if len(events) != 1 {
		tb.Fatalf("got %d events", len(events))
	}
	return events[0]
}

// BenchmarkSendEventRateLimited is the cost of an event dropped by an
// active rate limit: no encoding at all.
func BenchmarkSendEventRateLimited(b *testing.B) {
	tr, _ := mustTransport(b, Options{DSN: sentrytest.RefusingDSN(b, testKey, 1)})
	tr.limits[CategoryAll] = time.Now().Add(time.Hour)
	ev := richEvent()
	b.ReportAllocs()
	for b.Loop() {
		tr.SendEvent(ev)
	}
}

// BenchmarkDeliveryWithLatency is BenchmarkDelivery against a Sentry that
// takes 2 ms per envelope, as a real one across a network does: here the
// number of workers decides the throughput.
func BenchmarkDeliveryWithLatency(b *testing.B) {
	const n = 2000
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			srv := sentrytest.NewServer(b)
			srv.SetDelay(2 * time.Millisecond)
			tr, _ := mustTransport(b, Options{DSN: srv.DSN(testKey, 1), Workers: workers, QueueSize: n})
			var elapsed time.Duration
			var delivered, sent int
			for b.Loop() {
				b.StopTimer()
				srv.Reset()
				events := make([]*sentry.Event, n)
				for i := range events {
					events[i] = richEvent()
				}
				b.StartTimer()
				start := time.Now()
				for _, ev := range events {
					tr.SendEvent(ev)
				}
				if !tr.Flush(2 * time.Minute) {
					b.Fatal("flush timed out")
				}
				elapsed += time.Since(start)
				delivered += len(srv.Envelopes())
				sent += n
			}
			b.ReportMetric(float64(sent)/elapsed.Seconds(), "events/s")
			b.ReportMetric(100*float64(delivered)/float64(sent), "%delivered")
		})
	}
}
