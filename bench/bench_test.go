//go:build !race

// The race detector changes what allocates (sync.Pool drops items at
// random under it) and slows everything down several times, so allocation
// counts and timings mean nothing there. The tests of the fixtures and of
// the answers (answers_test.go) have no such tag: they run under -race too.

package bench

import "testing"

// BenchmarkGET1K: GET of an app with a valid token, answered 200 with
// 1 KiB of JSON; about one request in ten is traced.
func BenchmarkGET1K(b *testing.B) {
	benchProxies(b, "GET1K", getApp, func(b *testing.B, d delivery, r result) {
		if d.eventsGiven != 0 {
			b.Fatalf("%.0f events for 200s", d.eventsGiven)
		}
	})
}

// BenchmarkPOST64K: POST of 64 KiB of JSON that the upstream reads whole;
// /api/v1/upload is no action, so the sidecar streams the body unread.
func BenchmarkPOST64K(b *testing.B) {
	benchProxies(b, "POST64K", postUpload, func(b *testing.B, d delivery, r result) {
		if d.eventsGiven != 0 {
			b.Fatalf("%.0f events for 200s", d.eventsGiven)
		}
	})
}

// BenchmarkAll500: every deploy fails with FastAPI's 500. The sidecar
// captures the first five (the throttle's burst) and counts the rest as
// throttled; events/op is what the double received per request.
func BenchmarkAll500(b *testing.B) {
	benchProxies(b, "All500", postDeploy, func(b *testing.B, d delivery, r result) {
		if d.captured+d.throttled != float64(r.requests) {
			b.Fatalf("%.0f captured and %.0f throttled for %d failed requests", d.captured, d.throttled, r.requests)
		}
		if want := min(5, float64(r.requests)); d.captured < want {
			b.Fatalf("%.0f events captured of %d requests, want the throttle's burst of 5 (or every one, if fewer)", d.captured, r.requests)
		}
		b.ReportMetric(float64(d.got.events)/float64(r.requests), "events/op")
	})
}

// benchProxies runs the case name through the bare proxy and through the
// sidecar, one sub-benchmark each, and prints their comparison. newX
// builds the case's exchange for a front server's URL and a token; check
// looks at what the sidecar reported once it settled.
func benchProxies(b *testing.B, name string, newX func(base, token string) *exchange, check func(*testing.B, delivery, result)) {
	api := mustAPI(b)
	token := mustToken(b)
	cmp := newComparison(name, "bare", "sidecar")
	b.Run("proxy=bare", func(b *testing.B) {
		front := mustFront(b, mustBareProxy(b, api.URL))
		cmp.record("bare", mustMeasure(b, mustClient(b), newX(front.URL, token)))
	})
	b.Run("proxy=sidecar", func(b *testing.B) {
		sc := mustSidecar(b, sidecarOptions{
			upstream:         api.URL,
			sentry:           mustSentryDouble(b, nil),
			tracesSampleRate: tracesSampleRate,
			scrub:            true,
		})
		front := mustFront(b, sc.handler)
		r := mustMeasure(b, mustClient(b), newX(front.URL, token))
		d := sc.mustSettle(b)
		check(b, d, r)
		b.ReportMetric(d.txGiven/float64(r.requests), "tx/op")
		if d.txGiven > 0 {
			b.ReportMetric(100*float64(d.got.transactions)/d.txGiven, "%delivered")
		}
		cmp.record("sidecar", r)
	})
	cmp.print()
}

// BenchmarkTunnel10K: a 10 KiB browser error envelope, posted straight to
// Sentry (the double) or through the sidecar's tunnel, which checks,
// rewrites and (by default) scrubs it, then forwards it to the same
// double before it answers.
func BenchmarkTunnel10K(b *testing.B) {
	cmp := newComparison("Tunnel10K", "direct", "tunnel", "tunnel-noscrub")
	b.Run("path=direct", func(b *testing.B) {
		double := mustSentryDouble(b, nil)
		envelope := mustBrowserEnvelope(b, double.DSN(browserKey, browserProject))
		r := mustMeasure(b, mustClient(b), postEnvelope(double.envelopeURL(browserKey, browserProject), envelope))
		mustOneEventEach(b, double, r.requests)
		cmp.record("direct", r)
	})
	for _, tc := range []struct {
		label string
		scrub bool
	}{{"tunnel", true}, {"tunnel-noscrub", false}} {
		b.Run("path="+tc.label, func(b *testing.B) {
			double := mustSentryDouble(b, nil)
			sc := mustSidecar(b, sidecarOptions{
				upstream:         mustAPI(b).URL, // never called
				sentry:           double,
				tracesSampleRate: tracesSampleRate,
				scrub:            tc.scrub,
			})
			front := mustFront(b, sc.handler)
			envelope := mustBrowserEnvelope(b, sc.placeholderDSN(front.URL))
			r := mustMeasure(b, mustClient(b), postEnvelope(front.URL+tunnelPath, envelope))
			mustOneEventEach(b, double, r.requests)
			cmp.record(tc.label, r)
		})
	}
	cmp.print()
}
