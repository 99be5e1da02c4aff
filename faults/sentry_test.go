//go:build faults

package faults

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

const (
	sfJWTSecret  = "faults-jwt-secret-not-for-production"
	sfSentryKey  = "faultskey"
	sfProject    = 6
	sfErrorRoute = "/api/v1/test/sentry-backend" // always 500: one event each
	sfOKRoute    = "/api/v1/auth/me"             // 200 with the token's user

	// The steady load of the Sentry scenarios: sfRate requests per second
	// from sfWorkers keep-alive clients for sfLoadTime, half of them 500s.
	sfRate     = 200
	sfWorkers  = 8
	sfLoadTime = 6 * time.Second
	sfWarmup   = time.Second
	sfLoadLate = 2 * time.Second

	// The bounds asserted on every faulted run.
	sfP99Factor    = 1.2                  // p99 faulted <= 1.2 × p99 healthy + sfP99Slack
	sfP99Slack     = 2 * time.Millisecond // timer and scheduler noise on a loaded 2-CPU runner
	sfRSSCeiling   = 150 << 20            // bytes of VmRSS
	sfGoroutineTol = 10                   // go_goroutines after <= before + this
	// sfIdle is upstream.idle_conn_timeout (1 s) and a margin: the wait
	// before go_goroutines is read for the baseline.
	sfIdle = 1500 * time.Millisecond
)

// sfUser is a token and the answers the API gives it, fetched from the API
// directly: what every proxied answer must equal byte for byte.
type sfUser struct {
	token    string
	okBody   string // GET sfOKRoute
	errBody  string // GET sfErrorRoute
	username string
}

// sfUpstream is the demo API on a loopback httptest server.
type sfUpstream struct {
	url   string
	users []sfUser
}

// sfStartUpstream serves the demo API with the suite's JWT secret and
// prepares n users with their expected answers.
func sfStartUpstream(tb testing.TB, opts demo.Options, n int) *sfUpstream {
	tb.Helper()
	opts.Secret = sfJWTSecret
	srv := httptest.NewServer(demo.New(opts))
	tb.Cleanup(srv.Close)
	up := &sfUpstream{url: srv.URL}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	for i := range n {
		name := fmt.Sprintf("faults-user-%d", i)
		tok, err := demo.Token(sfJWTSecret, name, "user", 1000+i, time.Now(), time.Hour)
		require.NoError(tb, err)
		u := sfUser{token: tok, username: name}
		var code int
		code, u.okBody = sfGet(tb, client, srv.URL+sfOKRoute, tok, "")
		require.Equal(tb, http.StatusOK, code, u.okBody)
		code, u.errBody = sfGet(tb, client, srv.URL+sfErrorRoute, tok, "")
		require.Equal(tb, http.StatusInternalServerError, code, u.errBody)
		up.users = append(up.users, u)
	}
	return up
}

// sfGet sends one GET with a bearer token and an X-Request-ID and returns
// the status and body; it fails tb on a transport error.
func sfGet(tb testing.TB, c *http.Client, url, token, requestID string) (int, string) {
	tb.Helper()
	code, body, err := sfDo(c, url, token, requestID)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	return code, body
}

func sfDo(c *http.Client, url, token, requestID string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if requestID != "" {
		req.Header.Set("X-Request-ID", requestID)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// sfKeepAliveClient is one load worker's client: loopback, no environment
// proxy, connections kept alive. The timeout is far above any latency the
// sidecar may add, so a regression shows as latency, not as an error.
func sfKeepAliveClient() *http.Client {
	return &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second},
	}
}

// sfLoadResult is what a load run saw.
type sfLoadResult struct {
	requests, errors int
	latencies        []time.Duration // of every request, answered or not
	errorIDs         []string        // X-Request-IDs of the 500s sent (events expected)
	problems         []string        // the first few wrong answers
}

// sfP99 is the 99th percentile (nearest rank) of the latencies.
func (r sfLoadResult) sfP99() time.Duration { return sfPercentile(r.latencies, 0.99) }

func sfPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// sfRunLoad sends rate requests per second for d from workers keep-alive
// clients, on a fixed schedule (request k at k/rate; a late worker sends at
// once), alternating sfOKRoute and sfErrorRoute over the users, each with
// X-Request-ID idPrefix-k. Latency is from sending to the last body byte.
// Every answer is compared with what the API itself gives. A worker more
// than sfLoadLate behind the end of the schedule stops and counts the
// requests it did not send as errors: the run is bounded even when the
// sidecar is not.
func sfRunLoad(up *sfUpstream, target, idPrefix string, rate, workers int, d time.Duration) sfLoadResult {
	total := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	start := time.Now().Add(10 * time.Millisecond)
	stopAt := start.Add(d + sfLoadLate)
	var (
		mu  sync.Mutex
		res = sfLoadResult{latencies: make([]time.Duration, 0, total)}
		wg  sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			client := sfKeepAliveClient()
			defer client.CloseIdleConnections()
			for k := w; k < total; k += workers {
				if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				if time.Now().After(stopAt) {
					// The sidecar is far behind: stop, so that the run stays
					// bounded, and count what was never sent as wrong.
					mu.Lock()
					unsent := (total - k + workers - 1) / workers
					res.errors += unsent
					res.problems = append(res.problems, fmt.Sprintf("worker %d: %d requests not sent, %v behind schedule", w, unsent, sfLoadLate))
					mu.Unlock()
					return
				}
				u := up.users[(k/2)%len(up.users)]
				route, wantCode, wantBody := sfOKRoute, http.StatusOK, u.okBody
				if k%2 == 1 {
					route, wantCode, wantBody = sfErrorRoute, http.StatusInternalServerError, u.errBody
				}
				id := fmt.Sprintf("%s-%d", idPrefix, k)
				sent := time.Now()
				code, body, err := sfDo(client, target+route, u.token, id)
				lat := time.Since(sent)

				mu.Lock()
				res.requests++
				res.latencies = append(res.latencies, lat)
				if k%2 == 1 {
					res.errorIDs = append(res.errorIDs, id)
				}
				if err != nil || code != wantCode || body != wantBody {
					res.errors++
					if len(res.problems) < 5 {
						res.problems = append(res.problems, fmt.Sprintf("%s %s: got %d %q (err %v), want %d %q", id, route, code, body, err, wantCode, wantBody))
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return res
}

// sfEventIDs maps the request_id tag of every event the double accepted
// to how many events carry it.
func sfEventIDs(srv *sentrytest.Server) map[string]int {
	ids := map[string]int{}
	for _, ev := range srv.Events() {
		if tags, ok := ev["tags"].(map[string]any); ok {
			if id, ok := tags["request_id"].(string); ok {
				ids[id]++
			}
		}
	}
	return ids
}

// sfCount is how many of ids appear in seen.
func sfCount(seen map[string]int, ids []string) int {
	n := 0
	for _, id := range ids {
		if seen[id] > 0 {
			n++
		}
	}
	return n
}

// The outcomes of sidecar_sentry_envelopes_total.
var sfOutcomes = []string{"sent", "rejected", "failed", "rate_limited", "queue_full"}

// sfEnvelopes sums sidecar_sentry_envelopes_total over the categories, by
// outcome.
func sfEnvelopes(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if !strings.HasPrefix(k, "sidecar_sentry_envelopes_total{") {
			continue
		}
		for _, o := range sfOutcomes {
			if strings.Contains(k, `outcome="`+o+`"`) {
				out[o] += v
			}
		}
	}
	return out
}

// sfErrorEnvelopes is the number of error envelopes with a final outcome.
func sfErrorEnvelopes(m map[string]float64) float64 {
	var n float64
	for _, o := range sfOutcomes {
		n += m[`sidecar_sentry_envelopes_total{category="error",outcome="`+o+`"}`]
	}
	return n
}

// sfCaptured is the number of events the sidecar handed to its transport.
func sfCaptured(m map[string]float64) float64 {
	return m[`sidecar_sentry_events_total{kind="upstream_5xx",outcome="captured"}`] +
		m[`sidecar_sentry_events_total{kind="proxy_error",outcome="captured"}`]
}

// sfWaitSettled waits until every captured event has a final outcome in
// the transport's metrics and its queue is empty: nothing is in flight and
// nothing was lost without being counted. It returns the last scrape.
func sfWaitSettled(tb testing.TB, admin string, timeout time.Duration) map[string]float64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := sfMetrics(tb, admin)
		if sfErrorEnvelopes(m) == sfCaptured(m) && m["sidecar_sentry_queue_length"] == 0 {
			return m
		}
		if time.Now().After(deadline) {
			tb.Fatalf("within %v the transport did not account for every captured event: %v captured, %v error envelopes with an outcome (%v), queue %v",
				timeout, sfCaptured(m), sfErrorEnvelopes(m), sfEnvelopes(m), m["sidecar_sentry_queue_length"])
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sfSentry is the Sentry double of one run and the DSN the sidecar gets:
// the double's own, or an address that refuses connections until recover
// serves the double there.
type sfSentry struct {
	srv      *sentrytest.Server
	dsn      string
	refusing string // the refusing address, for the "refuses" mode
}

// sfServeOn makes the double answer on addr (an address that refused
// until now) and stops doing so when tb ends.
func (s *sfSentry) sfServeOn(tb testing.TB, addr string) {
	tb.Helper()
	l, err := net.Listen("tcp", addr)
	require.NoError(tb, err, "listen on the refusing address again")
	hs := &http.Server{Handler: s.srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	tb.Cleanup(func() { _ = hs.Close() })
}

// sfMode is one way Sentry misbehaves.
type sfMode struct {
	name    string
	refuse  bool                               // the DSN refuses connections from the start
	fault   func(s *sfSentry)                  // turns the fault on, after the warm-up
	recover func(tb testing.TB, s *sfSentry)   // ends it
	drops   []string                           // envelope outcomes that must have grown
	check   func(t *testing.T, r sfModeResult) // more assertions, optional
}

// sfModeResult is what one run measured.
type sfModeResult struct {
	load                    sfLoadResult
	peakRSS                 int64
	goroutinesBefore, after int
	drops                   map[string]float64 // envelope outcomes grown during the fault and recovery
	delivered               int                // events of the load the double accepted
	recoveredIn             time.Duration      // from the end of the fault to the first new event
	posts                   int                // requests the double got during the load
}

// sfSidecarConfig is the sidecar of the Sentry scenarios: every 500 an
// event (throttle off), every request a transaction (so that the
// transport's queue of 1000 overflows within the load when Sentry does not
// answer), production. Idle connections to the API close after 1 s, so
// that the goroutine counts before and after do not depend on how many
// connections a burst of the load happened to open.
func sfSidecarConfig(upstream, dsn string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstream:
  url: %q
  idle_conn_timeout: 1s
sentry:
  dsn: %q
  environment: production
  release: "faults@test"
  traces_sample_rate: 1.0
  throttle:
    burst: 0
jwt:
  secret: %q
shutdown:
  drain_delay: 0s
  grace_period: 2s
  flush_timeout: 1s
log:
  format: json
`, upstream, dsn, sfJWTSecret)
}

// sfRunMode starts a double and a sidecar, warms them up healthy, turns the
// fault on, runs the load, ends the fault, checks that new events arrive
// and that the sidecar comes back to its baseline.
func sfRunMode(t *testing.T, up *sfUpstream, m sfMode) sfModeResult {
	t.Helper()
	s := &sfSentry{srv: sentrytest.NewServer(t)}
	s.srv.AllowKey(sfSentryKey)
	s.dsn = s.srv.DSN(sfSentryKey, sfProject)
	if m.refuse {
		s.refusing = sentrytest.RefusingAddr(t)
		s.dsn = fmt.Sprintf("http://%s@%s/%d", sfSentryKey, s.refusing, sfProject)
	}
	sc := sfStartSidecar(t, sfSidecarConfig(up.url, s.dsn))
	stopRSS := sfRSSSampler(sc.Cmd.Process.Pid)
	prefix := "sf-" + strings.ReplaceAll(m.name, " ", "-")

	// Warm-up: connections to the API and to Sentry, the token cache and
	// the trails exist before the baseline is taken.
	warm := sfRunLoad(up, sc.url, prefix+"-warmup", sfRate, sfWorkers, sfWarmup)
	require.Zero(t, warm.errors, "warm-up: %v", warm.problems)
	before := sfWaitSettled(t, sc.admin, 15*time.Second)
	time.Sleep(sfIdle) // the API's idle connections close
	res := sfModeResult{goroutinesBefore: int(sfMetrics(t, sc.admin)["go_goroutines"])}

	posts := s.srv.Requests()
	if m.fault != nil {
		m.fault(s)
	}
	res.load = sfRunLoad(up, sc.url, prefix, sfRate, sfWorkers, sfLoadTime)
	faulted := sfMetrics(t, sc.admin)
	res.posts = s.srv.Requests() - posts
	endFault := time.Now()
	if m.recover != nil {
		m.recover(t, s)
	}

	// New events arrive: a 500 every 100 ms until Sentry has one of them.
	rc := sfKeepAliveClient()
	var recoveryIDs []string
	u := up.users[0]
	deadline := time.Now().Add(15 * time.Second)
	for n := 0; ; n++ {
		id := fmt.Sprintf("%s-recovered-%d", prefix, n)
		code, body := sfGet(t, rc, sc.url+sfErrorRoute, u.token, id)
		require.Equal(t, http.StatusInternalServerError, code, body)
		recoveryIDs = append(recoveryIDs, id)
		time.Sleep(100 * time.Millisecond)
		if sfCount(sfEventIDs(s.srv), recoveryIDs) > 0 {
			res.recoveredIn = time.Since(endFault)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event sent after Sentry recovered arrived within 15 s (%d sent); the double has %d events", len(recoveryIDs), len(s.srv.Events()))
		}
	}
	rc.CloseIdleConnections()
	after := sfWaitSettled(t, sc.admin, 15*time.Second)
	res.drops = map[string]float64{}
	eb, ea := sfEnvelopes(before), sfEnvelopes(after)
	for _, o := range sfOutcomes {
		res.drops[o] = ea[o] - eb[o]
	}
	res.delivered = sfCount(sfEventIDs(s.srv), res.load.errorIDs)

	// Goroutines come back: the hanging sends, the queue's workers and the
	// clients' connections are gone or idle again.
	goDeadline := time.Now().Add(10 * time.Second)
	for {
		res.after = int(sfMetrics(t, sc.admin)["go_goroutines"])
		if res.after <= res.goroutinesBefore+sfGoroutineTol || time.Now().After(goDeadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.peakRSS = stopRSS()

	l := res.load
	t.Logf("%s: %d requests, %d wrong; p50 %v p99 %v max %v; peak RSS %.1f MiB; goroutines %d → %d; events of the load %d/%d delivered; %d posts reached the double during the load; first new event %v after the fault ended; envelopes during fault+recovery %v; queue at the end of the load %v",
		m.name, l.requests, l.errors, sfPercentile(l.latencies, 0.5).Round(time.Microsecond), l.sfP99().Round(time.Microsecond),
		sfPercentile(l.latencies, 1).Round(time.Microsecond), float64(res.peakRSS)/(1<<20), res.goroutinesBefore, res.after,
		res.delivered, len(l.errorIDs), res.posts, res.recoveredIn.Round(time.Millisecond), res.drops, faulted["sidecar_sentry_queue_length"])

	// What holds in every mode, the healthy one included.
	assert.Zero(t, l.errors, "every proxied request gets the API's answer: %v", l.problems)
	assert.Equal(t, int(sfRate*sfLoadTime.Seconds()), l.requests)
	assert.LessOrEqual(t, res.peakRSS, int64(sfRSSCeiling), "peak VmRSS %.1f MiB over the %d MiB ceiling", float64(res.peakRSS)/(1<<20), sfRSSCeiling>>20)
	assert.LessOrEqual(t, res.after, res.goroutinesBefore+sfGoroutineTol, "go_goroutines back to the baseline (+%d) within 10 s", sfGoroutineTol)
	for _, o := range m.drops {
		assert.Positive(t, res.drops[o], "sidecar_sentry_envelopes_total{outcome=%q} counts the drops of this mode: %v", o, res.drops)
	}
	if m.check != nil {
		m.check(t, res)
	}
	return res
}

// TestSentryMisbehaves runs the same steady load (200 req/s for 6 s, half
// of them 500s that become events) against a sidecar whose Sentry is
// healthy, then against one whose Sentry refuses, hangs, rate-limits,
// fails or answers after 5 s. See faults/README.md.
func TestSentryMisbehaves(t *testing.T) {
	up := sfStartUpstream(t, demo.Options{}, 20)

	healthyMode := sfMode{
		name: "healthy",
		check: func(t *testing.T, r sfModeResult) {
			assert.Equal(t, len(r.load.errorIDs), r.delivered, "a healthy Sentry gets every event")
			assert.Zero(t, r.drops["failed"]+r.drops["rate_limited"]+r.drops["queue_full"]+r.drops["rejected"], "nothing dropped: %v", r.drops)
		},
	}
	var healthy sfModeResult
	t.Run("healthy", func(t *testing.T) {
		healthy = sfRunMode(t, up, healthyMode)
		sfRecordSentryRow("Sentry healthy (reference)", healthy, 0, "")
	})
	if healthy.load.requests == 0 {
		t.Fatal("no healthy reference: the faulted runs have nothing to compare with")
	}

	rateLimits := http.Header{}
	rateLimits.Set("Retry-After", "2")
	rateLimits.Set("X-Sentry-Rate-Limits", "2:error;transaction:organization:quota_exceeded")
	modes := []sfMode{
		{
			name:    "a refuses connections",
			refuse:  true,
			recover: func(tb testing.TB, s *sfSentry) { s.sfServeOn(tb, s.refusing) },
			drops:   []string{"failed"},
		},
		{
			name:    "b accepts and never answers",
			fault:   func(s *sfSentry) { s.srv.SetHang(true) },
			recover: func(_ testing.TB, s *sfSentry) { s.srv.SetHang(false) },
			drops:   []string{"queue_full", "failed"},
		},
		{
			name:    "c answers 429 with rate limits",
			fault:   func(s *sfSentry) { s.srv.SetStatus(http.StatusTooManyRequests, rateLimits) },
			recover: func(_ testing.TB, s *sfSentry) { s.srv.SetStatus(0, nil) },
			drops:   []string{"rate_limited"},
			check: func(t *testing.T, r sfModeResult) {
				// Once limited, the transport drops without sending: the
				// double sees a few posts (one per expired limit), not one
				// per event.
				assert.Greater(t, r.drops["rate_limited"], float64(len(r.load.errorIDs))/2, "events dropped under the limit are counted: %v", r.drops)
				// At most the 4 senders per category each time a 2 s limit
				// ends, over the 6 s of load: the limit is honoured, Sentry
				// is not hammered.
				assert.LessOrEqual(t, r.posts, 2*4*(int(sfLoadTime/(2*time.Second))+1), "posts to a rate-limiting Sentry")
			},
		},
		{
			name:    "d answers 500",
			fault:   func(s *sfSentry) { s.srv.SetStatus(http.StatusInternalServerError, nil) },
			recover: func(_ testing.TB, s *sfSentry) { s.srv.SetStatus(0, nil) },
			drops:   []string{"failed"},
		},
		{
			name:    "e answers after 5 s",
			fault:   func(s *sfSentry) { s.srv.SetDelay(5 * time.Second) },
			recover: func(_ testing.TB, s *sfSentry) { s.srv.SetDelay(0) },
			drops:   []string{"queue_full"},
		},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ref := healthy.load.sfP99()
			r := sfRunMode(t, up, m)
			if p99 := r.load.sfP99(); p99 > sfBound(ref) {
				// A shared runner has bursts of CPU contention that have
				// nothing to do with Sentry. A real regression (a send on
				// the request path) fails again; a burst does not come back
				// in the same place.
				t.Logf("p99 %v is over the bound %v: measuring the healthy reference and this mode again, back to back", p99, sfBound(ref))
				ref = sfRunMode(t, up, healthyMode).load.sfP99()
				r = sfRunMode(t, up, m)
			}
			p99 := r.load.sfP99()
			assert.LessOrEqual(t, p99, sfBound(ref), "p99 %v with Sentry faulted must stay within %.1f× the healthy p99 %v + %v = %v",
				p99, sfP99Factor, ref, sfP99Slack, sfBound(ref))
			sfRecordSentryRow("Sentry "+m.name, r, ref, "")
		})
	}
}

// sfBound is the largest p99 allowed with a faulted Sentry.
func sfBound(healthyP99 time.Duration) time.Duration {
	return time.Duration(float64(healthyP99)*sfP99Factor) + sfP99Slack
}

// sfRecordSentryRow puts a run into the suite's table.
func sfRecordSentryRow(name string, r sfModeResult, healthyP99 time.Duration, note string) {
	var drops []string
	for _, o := range sfOutcomes[1:] {
		if r.drops[o] > 0 {
			drops = append(drops, fmt.Sprintf("%s %.0f", o, r.drops[o]))
		}
	}
	if note == "" {
		note = "drops: none"
		if len(drops) > 0 {
			note = "drops: " + strings.Join(drops, ", ")
		}
		note += fmt.Sprintf("; new event %v after recovery", r.recoveredIn.Round(10*time.Millisecond))
	}
	row := faultRow{
		Scenario:         name,
		Requests:         r.load.requests,
		Errors:           r.load.errors,
		P99Healthy:       healthyP99,
		P99Faulted:       r.load.sfP99(),
		PeakRSS:          r.peakRSS,
		GoroutinesBefore: r.goroutinesBefore,
		GoroutinesAfter:  r.after,
		EventsExpected:   len(r.load.errorIDs),
		EventsDelivered:  r.delivered,
		Note:             note,
	}
	if healthyP99 == 0 { // the reference itself
		row.P99Healthy, row.P99Faulted = r.load.sfP99(), 0
	}
	recordRow(row)
}
