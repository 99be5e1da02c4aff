//go:build faults

package faults

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// sfExitSlack is what shutdown may take beyond drain_delay + grace_period +
// flush_timeout: the transport's close (0.5 s, then 0.5 s for sends that
// ignore cancellation), the wait for handlers cut by Close (at most 1 s)
// and the admin listener's shutdown. README: "about 2 s".
const sfExitSlack = 2 * time.Second

// sfShutdownConfig is the sidecar of the shutdown scenarios: no traces (the
// double counts events only), every 500 an event.
func sfShutdownConfig(upstream, dsn string, drain, grace, flush time.Duration) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstream:
  url: %q
sentry:
  dsn: %q
  environment: production
  release: "faults@test"
  traces_sample_rate: 0
  throttle:
    burst: 0
jwt:
  secret: %q
shutdown:
  drain_delay: %s
  grace_period: %s
  flush_timeout: %s
log:
  format: json
`, upstream, dsn, sfJWTSecret, drain, grace, flush)
}

// sfPost sends a POST with a JSON body and a bearer token.
func sfPost(c *http.Client, url, token, requestID, body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", requestID)
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// sfWaitMetric polls the admin /metrics until cond holds for the series.
func sfWaitMetric(tb testing.TB, admin, series string, timeout time.Duration, cond func(float64) bool) float64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := sfMetrics(tb, admin)[series]
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s is %v after %v", series, v, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sfReadyz is the status of the admin /readyz, or 0 when it did not answer.
func sfReadyz(admin string) int {
	res, err := sfAdminClient.Get(admin + "/readyz")
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// TestShutdownHangingSentry: SIGTERM while Sentry accepts and never
// answers (20 events queued or in flight) and while a request outlives the
// grace period still ends the process with exit code 0 within drain_delay +
// grace_period + flush_timeout + sfExitSlack.
func TestShutdownHangingSentry(t *testing.T) {
	const (
		drain, grace, flush = 500 * time.Millisecond, 2 * time.Second, time.Second
		events              = 20
	)
	up := sfStartUpstream(t, demo.Options{DeployDelay: 30 * time.Second}, 1)
	u := up.users[0]
	srv := sentrytest.NewServer(t)
	srv.AllowKey(sfSentryKey)
	srv.SetHang(true)
	sc := sfStartSidecar(t, sfShutdownConfig(up.url, srv.DSN(sfSentryKey, sfProject), drain, grace, flush))

	client := sfKeepAliveClient()
	defer client.CloseIdleConnections()
	for i := range events {
		code, body := sfGet(t, client, sc.url+sfErrorRoute, u.token, fmt.Sprintf("sf-hang-%d", i))
		require.Equal(t, http.StatusInternalServerError, code, body)
	}
	// Every worker of the transport hangs on a send; the rest wait queued.
	srv.WaitRequests(t, 4, 5*time.Second)
	sfWaitMetric(t, sc.admin, `sidecar_sentry_events_total{kind="upstream_5xx",outcome="captured"}`, 5*time.Second,
		func(v float64) bool { return v == events })

	// A deploy the API holds for 30 s: the grace period runs out on it.
	type answer struct {
		code int
		body string
		err  error
	}
	held := make(chan answer, 1)
	go func() {
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		code, body, err := sfPost(c, sc.url+"/api/v1/apps/deploy", u.token, "sf-hang-deploy", `{"catalog_id":"nginx","hostname":"held-open"}`)
		held <- answer{code, body, err}
	}()
	sfWaitMetric(t, sc.admin, "sidecar_requests_in_flight", 5*time.Second, func(v float64) bool { return v == 1 })
	queued := sfMetrics(t, sc.admin)["sidecar_sentry_queue_length"]

	start := time.Now()
	require.NoError(t, syscall.Kill(sc.Cmd.Process.Pid, syscall.SIGTERM))
	code, exited := sc.Wait(drain + grace + flush + 10*time.Second)
	elapsed := time.Since(start)
	require.True(t, exited, "the sidecar still runs %v after SIGTERM", elapsed)
	limit := drain + grace + flush + sfExitSlack
	t.Logf("exit code %d %v after SIGTERM (drain %v + grace %v + flush %v = %v; bound %v); %d events captured, %v queued and 4 sends hanging at the signal; the double got %d requests and accepted %d events",
		code, elapsed.Round(time.Millisecond), drain, grace, flush, drain+grace+flush, limit, events, queued, srv.Requests(), len(srv.Events()))
	assert.Equal(t, 0, code, "exit code")
	assert.LessOrEqual(t, elapsed, limit, "shutdown with a hanging Sentry is bounded")
	assert.GreaterOrEqual(t, elapsed, drain+grace, "the held request kept the sidecar for the whole grace period")
	out := sc.Out.String()
	assert.Contains(t, out, `"msg":"grace period over, closing open connections"`)
	assert.Contains(t, out, `"msg":"stopped"`)

	a := <-held
	t.Logf("the request held past the grace period: %d %q %v", a.code, a.body, a.err)
	assert.False(t, a.err == nil && a.code == http.StatusOK, "a request cut by the end of the grace period must not look like a success")

	recordRow(faultRow{
		Scenario:        "shutdown, Sentry hanging",
		Requests:        events + 1,
		Errors:          0,
		EventsExpected:  events,
		EventsDelivered: len(srv.Events()),
		Note: fmt.Sprintf("exit 0 in %v (bound %v = drain+grace+flush+%v); deploy held past grace cut as intended",
			elapsed.Round(10*time.Millisecond), limit, sfExitSlack),
	})
}

// sfInflight is one of the requests in flight at the signal.
type sfInflight struct {
	id       string
	method   string
	path     string
	body     string // request body, POST only
	wantCode int
	want     func(body string) bool // the real answer
	// filled in when it returns
	code     int
	got      string
	err      error
	finished time.Time
}

// TestShutdownUnderLoad: SIGTERM while 200 requests are in flight (40
// deploys held 2 s by the API, half of which fail with a 500 event, and 160
// event streams of 0.8-1.6 s) and while 40 events captured before the signal
// still wait for a slow Sentry (200 ms a post). /readyz turns 503 before any
// of them ends, the listener keeps serving through drain_delay, every one of
// them completes with the API's own answer, every event reaches the double,
// and the process exits 0 in time.
func TestShutdownUnderLoad(t *testing.T) {
	const (
		drain, grace, flush = time.Second, 5 * time.Second, 5 * time.Second
		pre                 = 40  // 500s answered before the signal
		inflight            = 200 // requests in flight at the signal
		deploys             = 40  // of them; the odd ones fail
		deployDelay         = 2 * time.Second
	)
	up := sfStartUpstream(t, demo.Options{DeployDelay: deployDelay}, 10)
	srv := sentrytest.NewServer(t)
	srv.AllowKey(sfSentryKey)
	srv.SetDelay(200 * time.Millisecond)
	sc := sfStartSidecar(t, sfShutdownConfig(up.url, srv.DSN(sfSentryKey, sfProject), drain, grace, flush))
	stopRSS := sfRSSSampler(sc.Cmd.Process.Pid)

	// Events captured before the signal: the double takes 200 ms each, so
	// with 4 senders most of them are still queued when SIGTERM comes.
	client := sfKeepAliveClient()
	defer client.CloseIdleConnections()
	var preIDs []string
	for i := range pre {
		id := fmt.Sprintf("sf-pre-%d", i)
		u := up.users[i%len(up.users)]
		code, body := sfGet(t, client, sc.url+sfErrorRoute, u.token, id)
		require.Equal(t, http.StatusInternalServerError, code)
		require.Equal(t, u.errBody, body)
		preIDs = append(preIDs, id)
	}
	sfWaitMetric(t, sc.admin, `sidecar_sentry_events_total{kind="upstream_5xx",outcome="captured"}`, 5*time.Second,
		func(v float64) bool { return v == pre })
	require.Equal(t, http.StatusOK, sfReadyz(sc.admin), "/readyz before the signal")

	// 200 requests in flight, each on its own connection.
	reqs := make([]*sfInflight, inflight)
	var deployFailIDs []string
	for i := range reqs {
		r := &sfInflight{id: fmt.Sprintf("sf-inflight-%d", i), method: http.MethodGet, wantCode: http.StatusOK}
		switch {
		case i < deploys && i%2 == 1:
			host := fmt.Sprintf("sf-fail-%d", i)
			r.method, r.path = http.MethodPost, "/api/v1/apps/deploy"
			r.body = fmt.Sprintf(`{"catalog_id":"nginx","hostname":%q}`, host)
			r.wantCode = http.StatusInternalServerError
			r.want = func(b string) bool {
				return b == `{"detail":"Deployment failed: LXC creation timed out on node pve"}`
			}
			deployFailIDs = append(deployFailIDs, r.id)
		case i < deploys:
			host := fmt.Sprintf("sf-app-%d", i)
			r.method, r.path = http.MethodPost, "/api/v1/apps/deploy"
			r.body = fmt.Sprintf(`{"catalog_id":"nginx","hostname":%q}`, host)
			r.want = func(b string) bool {
				return strings.Contains(b, `"hostname":"`+host+`"`) && strings.Contains(b, `"status":"running"`)
			}
		default:
			n := 2 + i%3 // 2..4 ticks 400 ms apart, after the first: 0.8-1.6 s
			r.path = fmt.Sprintf("/api/v1/events?count=%d&interval=400ms", n+1)
			var want strings.Builder
			for k := 1; k <= n+1; k++ {
				fmt.Fprintf(&want, "event: tick\ndata: {\"n\":%d}\n\n", k)
			}
			r.want = func(b string) bool { return b == want.String() }
		}
		reqs[i] = r
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: inflight}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	var wg sync.WaitGroup
	launched := time.Now()
	for i, r := range reqs {
		wg.Go(func() {
			u := up.users[i%len(up.users)]
			req, err := http.NewRequest(r.method, sc.url+r.path, strings.NewReader(r.body))
			if err != nil {
				r.err = err
				return
			}
			req.Header.Set("Authorization", "Bearer "+u.token)
			req.Header.Set("X-Request-ID", r.id)
			if r.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			res, err := c.Do(req)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(res.Body)
				res.Body.Close()
				r.code, r.got = res.StatusCode, string(b)
			}
			r.err, r.finished = err, time.Now()
		})
	}
	sfWaitMetric(t, sc.admin, "sidecar_requests_in_flight", 5*time.Second, func(v float64) bool { return v >= inflight })
	undeliveredAtSignal := pre - sfCount(sfEventIDs(srv), preIDs)

	// SIGTERM; readiness must say 503 before any in-flight request ends.
	signalled := time.Now()
	require.NoError(t, syscall.Kill(sc.Cmd.Process.Pid, syscall.SIGTERM))
	var readyAt time.Time
	for time.Since(signalled) < time.Second {
		if sfReadyz(sc.admin) == http.StatusServiceUnavailable {
			readyAt = time.Now()
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	require.False(t, readyAt.IsZero(), "/readyz did not turn 503 within 1 s of SIGTERM")
	// The listener still serves during drain_delay (load balancers are
	// still sending): a new request on a new connection is answered.
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	u0 := up.users[0]
	drainCode, drainBody, drainErr := sfDo(fresh, sc.url+sfOKRoute, u0.token, "sf-during-drain")

	wg.Wait()
	code, exited := sc.Wait(drain + grace + flush + 10*time.Second)
	elapsed := time.Since(signalled)
	peak := stopRSS()
	require.True(t, exited, "the sidecar still runs %v after SIGTERM", elapsed)

	// Every in-flight request got its real answer, after readiness flipped.
	var wrong []string
	first, last := reqs[0].finished, reqs[0].finished
	for _, r := range reqs {
		if r.err != nil || r.code != r.wantCode || !r.want(r.got) {
			wrong = append(wrong, fmt.Sprintf("%s %s %s: %d %q %v", r.id, r.method, r.path, r.code, sfTail(r.got, 200), r.err))
		}
		if r.finished.Before(first) {
			first = r.finished
		}
		if r.finished.After(last) {
			last = r.finished
		}
	}
	ids := sfEventIDs(srv)
	delivered := sfCount(ids, preIDs) + sfCount(ids, deployFailIDs)
	limit := drain + grace + flush + sfExitSlack
	t.Logf("SIGTERM %v after launching %d requests; /readyz 503 %v after it; in-flight answers from %v to %v after it; a request during drain_delay: %d (%v); exit code %d %v after it (bound %v); events: %d captured before the signal (%d of them not yet delivered then) + %d failing deploys, %d/%d delivered; peak RSS %.1f MiB",
		signalled.Sub(launched).Round(time.Millisecond), inflight, readyAt.Sub(signalled).Round(100*time.Microsecond),
		first.Sub(signalled).Round(time.Millisecond), last.Sub(signalled).Round(time.Millisecond), drainCode, drainErr,
		code, elapsed.Round(time.Millisecond), limit, pre, undeliveredAtSignal, len(deployFailIDs), delivered, pre+len(deployFailIDs), float64(peak)/(1<<20))

	assert.Empty(t, wrong, "every in-flight request completes with its real answer")
	assert.True(t, readyAt.Before(first), "/readyz turned 503 (%v) before the first in-flight request ended (%v)", readyAt.Sub(signalled), first.Sub(signalled))
	assert.NoError(t, drainErr, "a request during drain_delay")
	assert.Equal(t, http.StatusOK, drainCode, "a request during drain_delay is served: %s", drainBody)
	assert.Equal(t, u0.okBody, drainBody)
	assert.Equal(t, 0, code, "exit code")
	assert.LessOrEqual(t, elapsed, limit, "exit within drain_delay + grace_period + flush_timeout + %v", sfExitSlack)
	assert.Positive(t, undeliveredAtSignal, "events were still queued at the signal (else the flush is not tested)")
	assert.Equal(t, pre, sfCount(ids, preIDs), "every event captured before the signal is delivered")
	assert.Equal(t, len(deployFailIDs), sfCount(ids, deployFailIDs), "every event captured during the grace period is delivered")
	out := sc.Out.String()
	assert.NotContains(t, out, "grace period over", "the grace period was enough for every request")
	assert.Contains(t, out, `"msg":"stopped"`)

	recordRow(faultRow{
		Scenario:        "shutdown under load",
		Requests:        pre + inflight + 1,
		Errors:          len(wrong),
		PeakRSS:         peak,
		EventsExpected:  pre + len(deployFailIDs),
		EventsDelivered: delivered,
		Note: fmt.Sprintf("readyz 503 %v after SIGTERM; %d in flight all answered; %d events queued at SIGTERM; exit 0 in %v (bound %v)",
			readyAt.Sub(signalled).Round(100*time.Microsecond), inflight, undeliveredAtSignal, elapsed.Round(10*time.Millisecond), limit),
	})
}
