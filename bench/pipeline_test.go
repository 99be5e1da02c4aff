package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/transport"
	"github.com/sentry-sidecar/sentry-sidecar/proxy"
	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// tracesSampleRate is sentry.traces_sample_rate in production when the
// config leaves it null (config.Resolve).
const tracesSampleRate = 0.1

// settleTimeout bounds the wait for a sidecar's reports after a loop: the
// handlers finishing, then the transport sending what it was given.
const settleTimeout = 5 * time.Second

// mustUpstream serves h on 127.0.0.1 as the API.
func mustUpstream(tb testing.TB, h http.HandlerFunc) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// mustAPI is the API of every case, by path: GET1K's app (200, 1 KiB),
// POST64K's upload (reads the whole body, 200 with its size; 400 when the
// body is not the 64 KiB sent) and All500's deploy (reads the body, 500
// with FastAPI's detail).
func mustAPI(tb testing.TB) *httptest.Server {
	tb.Helper()
	app := body1K()
	appLength := strconv.Itoa(len(app))
	upload := uploadAnswer()
	return mustUpstream(tb, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		switch r.URL.Path {
		case appPath:
			h["Content-Length"] = []string{appLength}
			_, _ = w.Write(app)
		case uploadPath:
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil || n != size64K || r.ContentLength != size64K {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = fmt.Fprintf(w, `{"detail":"read %d of %d bytes: %v"}`, n, r.ContentLength, err)
				return
			}
			_, _ = w.Write(upload)
		case deployPath:
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, failBody)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"detail":"Not Found"}`)
		}
	})
}

// mustFront serves h on 127.0.0.1 with the settings of cmd/sentry-sidecar's
// main listener (config.Default's server section), so the bare proxy and
// the sidecar sit behind the same server.
func mustFront(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Config.IdleTimeout = 120 * time.Second
	srv.Config.MaxHeaderBytes = 1 << 20
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv
}

// mustBareProxy is BareProxy, the baseline, for upstream.
func mustBareProxy(tb testing.TB, upstream string) http.Handler {
	tb.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		tb.Fatal(err)
	}
	h, t := BareProxy(u)
	tb.Cleanup(t.CloseIdleConnections)
	return h
}

// productionLogger is cmd/sentry-sidecar's newLogger at info in JSON,
// writing to io.Discard: encoding the access-log line is part of the cost.
func productionLogger() *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.MillisDurationEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.Lock(zapcore.AddSync(io.Discard)), zapcore.InfoLevel))
}

// proximityRoutes are config.example.yaml's sentry.route_templates.
func proximityRoutes() []string {
	return []string{
		"/api/v1/apps/catalog",
		"/api/v1/apps/catalog/{catalog_id}",
		"/api/v1/apps/deploy",
		"/api/v1/apps/{app_id}",
	}
}

// proximityActions are config.example.yaml's actions.
func proximityActions() []proxy.Action {
	return []proxy.Action{
		{Method: http.MethodPost, Route: "/api/v1/apps/deploy", Name: "app.deploy", Fields: []string{"catalog_id", "hostname", "node"}},
		{Method: http.MethodDelete, Route: "/api/v1/apps/{id}", Name: "app.delete"},
		{Method: http.MethodPost, Route: "/api/v1/auth/login", Name: "auth.login", Fields: []string{"username"}},
	}
}

// sidecarOptions are what the benchmarked sidecars differ in.
type sidecarOptions struct {
	upstream string
	sentry   *sentryDouble
	// tracesSampleRate goes to the client and to the proxy's sampler, as
	// sentry.traces_sample_rate does.
	tracesSampleRate float64
	// scrub is tunnel.scrub.
	scrub bool
}

// sidecar is the request path of cmd/sentry-sidecar with every feature
// on, wired as its newReporting, browserHandlers and serve wire it: the
// production transport delivering to the double, one registry for all.
type sidecar struct {
	proxy     *proxy.Proxy
	client    *sentry.Client
	transport *transport.Transport
	reg       *prometheus.Registry
	sentry    *sentryDouble
	// placeholder is the public key of the DSN browsers are handed.
	placeholder string
	// handler is the main listener's: the tunnel at tunnelPath, behind
	// the proxy's access log, and the proxy everywhere else.
	handler http.Handler
}

// mustSidecar builds a sidecar for o; everything it starts is stopped by
// tb's cleanup.
func mustSidecar(tb testing.TB, o sidecarOptions) *sidecar {
	tb.Helper()
	fail := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	u, err := url.Parse(o.upstream)
	fail(err)
	log := productionLogger()
	reg := prometheus.NewRegistry()
	serverDSN := o.sentry.DSN(serverKey, serverProject)
	tr, err := transport.New(transport.Options{
		DSN:          serverDSN,
		CloseTimeout: 500 * time.Millisecond,
		Registerer:   reg,
		Log:          log.Named("sentry"),
		UserAgent:    "sentry-sidecar/bench",
	})
	fail(err)
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:                    serverDSN,
		Environment:            "production",
		Release:                "0.1.0",
		ServerName:             "bench",
		SampleRate:             1.0,
		EnableTracing:          true,
		TracesSampleRate:       o.tracesSampleRate,
		TraceIgnoreStatusCodes: [][]int{}, // nil would drop 404s
		BeforeSend:             func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event { return enrich.ScrubEvent(ev) },
		BeforeSendTransaction:  func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event { return enrich.ScrubEvent(ev) },
		DisableClientReports:   true,
		DisableMetrics:         true,
		Transport:              tr,
		Integrations:           proxy.Integrations, // as cmd/sentry-sidecar sets it
	})
	if err != nil {
		tr.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(client.Close) // closes the transport
	client.SetSDKIdentifier("sentry.go.sidecar")
	scope := sentry.NewScope()
	scope.SetTag("sidecar", "bench")
	scope.SetContext("app", sentry.Context{"name": "Proximity", "version": "0.1.0", "debug_mode": false})

	users := enrich.NewVerifier(enrich.VerifierOptions{
		Keys:   enrich.HMACKeys([]byte(demo.DefaultSecret)),
		Verify: true,
		Claims: enrich.DefaultClaims(),
		Leeway: 30 * time.Second,
	})
	tb.Cleanup(users.Close)
	actions := proximityActions()
	templates := proximityRoutes()
	for _, a := range actions { // the actions' paths name routes too (routeTemplates)
		templates = append(templates, a.Route)
	}
	routes, err := enrich.NewRouter(templates, 4096)
	fail(err)
	browserDSN := o.sentry.DSN(browserKey, browserProject)
	placeholder := tunnel.PlaceholderKey(browserDSN)

	p, err := proxy.New(proxy.Config{
		Upstream:            u,
		DialTimeout:         5 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 64,
		Report: proxy.Report{
			Client:   client,
			Scope:    scope,
			Users:    users,
			Trails:   enrich.NewTrails(20, 10000, 30*time.Minute, nil),
			Routes:   routes,
			Capture:  []proxy.StatusRange{{Lo: 500, Hi: 599}},
			Throttle: proxy.ThrottleConfig{Burst: 5, Every: 20 * time.Second},

			TracesSampleRate: o.tracesSampleRate,
			MaxRoutes:        100,
			Actions:          actions,
			PublicKeys:       map[string]string{placeholder: browserKey},
		},
	}, log, reg)
	fail(err)
	tb.Cleanup(p.CloseIdleConnections)

	th, err := tunnel.New(tunnel.Options{
		Target:         browserDSN,
		PlaceholderKey: placeholder,
		Scrub:          o.scrub,
		Limits:         tunnel.DefaultLimits(),
		// nil: the tunnel's own pool (32 idle connections), where
		// cmd/sentry-sidecar passes a client with only a Timeout and so
		// gets http.DefaultTransport's 2; one connection at a time either
		// way.
		HTTPClient: nil,
		ClientIP:   p.ClientIP,
		User: func(r *http.Request) *enrich.User {
			u, outcome := users.User(enrich.TokenFromRequest(r.Header, ""))
			if outcome != enrich.TokenVerified && outcome != enrich.TokenUnverified {
				return nil
			}
			return &u
		},
		// On, as in production, but far above the benchmark's rate (the
		// default, 100 then 10/s, would answer 429 within a millisecond).
		PerIP:      tunnel.Rate{Burst: 1 << 20, Every: time.Microsecond},
		Registerer: reg,
		Log:        log.Named("tunnel"),
	})
	fail(err)
	tb.Cleanup(th.Close)
	logged := p.Logged(th)

	return &sidecar{
		proxy:     p,
		client:    client,
		transport: tr,
		reg:       reg,
		sentry:    o.sentry,

		placeholder: placeholder,
		// As cmd/sentry-sidecar's mainHandler: no ServeMux, which would
		// clean paths and redirect.
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == tunnelPath {
				logged.ServeHTTP(w, r)
				return
			}
			p.ServeHTTP(w, r)
		}),
	}
}

// placeholderDSN is the DSN the browser config hands a page served from
// front (BrowserConfigHandler): the placeholder key at the page's own
// origin, with the browser project's id.
func (s *sidecar) placeholderDSN(front string) string {
	u, _ := url.Parse(front) // httptest's own URL
	return u.Scheme + "://" + s.placeholder + "@" + u.Host + "/" + browserProject
}

// mustOneEventEach fails tb unless the double accepted exactly one
// envelope with one event item, and nothing else, per request. The tunnel
// answers after Sentry did, so the counts are final when the last answer
// is read.
func mustOneEventEach(tb testing.TB, d *sentryDouble, requests int) {
	tb.Helper()
	want := doubleCounts{envelopes: int64(requests), events: int64(requests)}
	if got := d.counts(); got != want {
		tb.Fatalf("the double counted %+v for %d envelopes, want %+v", got, requests, want)
	}
}

// delivery is what became of a sidecar's reports once it settled.
type delivery struct {
	// txGiven and eventsGiven are the envelopes the transport was given
	// (sidecar_sentry_envelopes_total over all outcomes), by category.
	txGiven, eventsGiven float64
	// captured and throttled are the proxy's upstream_5xx events
	// (sidecar_sentry_events_total).
	captured, throttled float64
	// got is what the double counted.
	got doubleCounts
}

// mustSettle waits for the sidecar's handlers to finish (a client may read
// the last answer before its handler has finished the trace), flushes the
// client and returns what was given and delivered. It fails tb when the
// healthy double received less than the transport was given, or refused
// anything.
func (s *sidecar) mustSettle(tb testing.TB) delivery {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := s.proxy.Wait(ctx); err != nil {
		tb.Fatalf("handlers still running after %v: %v", settleTimeout, err)
	}
	if !s.client.Flush(settleTimeout) {
		tb.Fatalf("flush did not finish in %v: %+v", settleTimeout, s.transport.Stats())
	}
	d := delivery{
		txGiven:     mustCounter(tb, s.reg, "sidecar_sentry_envelopes_total", "category", transport.CategoryTransaction),
		eventsGiven: mustCounter(tb, s.reg, "sidecar_sentry_envelopes_total", "category", transport.CategoryError),
		captured:    mustCounter(tb, s.reg, "sidecar_sentry_events_total", "kind", "upstream_5xx", "outcome", "captured"),
		throttled:   mustCounter(tb, s.reg, "sidecar_sentry_events_total", "kind", "upstream_5xx", "outcome", "throttled"),
		got:         s.sentry.counts(),
	}
	switch {
	case d.got.rejected != 0:
		tb.Fatalf("the double refused %d envelopes", d.got.rejected)
	case float64(d.got.transactions) < d.txGiven || float64(d.got.events) < d.eventsGiven:
		tb.Fatalf("delivered %d transactions and %d events of %.0f and %.0f given to the transport: %+v",
			d.got.transactions, d.got.events, d.txGiven, d.eventsGiven, s.transport.Stats())
	case d.captured != d.eventsGiven:
		tb.Fatalf("the proxy captured %.0f events, the transport was given %.0f", d.captured, d.eventsGiven)
	}
	return d
}

// mustCounter sums the counter name of reg over the series whose labels
// match labelPairs (name, value, name, value...).
func mustCounter(tb testing.TB, reg prometheus.Gatherer, name string, labelPairs ...string) float64 {
	tb.Helper()
	families, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	found := false
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		found = true
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labelPairs[i] && l.GetValue() == labelPairs[i+1] {
						ok = true
					}
				}
				if !ok {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	if !found {
		tb.Fatalf("no metric %s", name)
	}
	return sum
}

// client sends exchanges one at a time over one kept-alive connection and
// checks each answer byte for byte, reading into a buffer it keeps, so a
// check costs the same allocations for every case.
type client struct {
	hc  *http.Client
	buf []byte
}

// mustClient is a keep-alive client that asks for no compression (the
// answers are checked as the upstream wrote them).
func mustClient(tb testing.TB) *client {
	tb.Helper()
	t := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true}
	tb.Cleanup(t.CloseIdleConnections)
	return &client{hc: &http.Client{Transport: t}}
}

// request is x's request: body-less ones are built once and reused, ones
// with a body are built anew around it (a body is read once).
func (x *exchange) request() (*http.Request, error) {
	if x.body == nil && x.req != nil {
		return x.req, nil
	}
	var body io.Reader
	if x.body != nil {
		body = bytes.NewReader(x.body) // sets ContentLength and GetBody
	}
	req, err := http.NewRequest(x.method, x.url, body)
	if err != nil {
		return nil, err
	}
	req.Header = x.header
	if x.body == nil {
		x.req = req
	}
	return req, nil
}

// do sends x once and says how its answer differs from x's, if it does.
func (c *client) do(x *exchange) error {
	req, err := x.request()
	if err != nil {
		return err
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if cap(c.buf) < len(x.want)+1 {
		c.buf = make([]byte, len(x.want)+1)
	}
	buf := c.buf[:len(x.want)+1] // one more: a longer answer is wrong too
	n, err := io.ReadFull(res.Body, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && res.StatusCode == x.status && bytes.Equal(buf[:n], x.want) {
		return nil
	}
	rest, _ := io.Copy(io.Discard, res.Body)
	return fmt.Errorf("%s %s: status %d, %d bytes (%v), want %d with %d bytes; starts %.200q",
		x.method, x.url, res.StatusCode, int64(n)+rest, err, x.status, len(x.want), buf[:n])
}

// mustDo sends x once and fails tb if the answer is not x's.
func (c *client) mustDo(tb testing.TB, x *exchange) {
	tb.Helper()
	if err := c.do(x); err != nil {
		tb.Fatal(err)
	}
}

// result is what one sub-benchmark measured per op over its timed loop.
type result struct {
	ns, allocs float64
	// requests counts every request sent, the warm-up included.
	requests int
}

// mustMeasure sends x once to warm the connections and caches, then once
// per iteration of b.Loop; a wrong answer fails b. It measures ns/op and
// allocs/op itself (over the same loop as the testing package, and
// counting every goroutine as it does), since a parent benchmark cannot
// read its sub-benchmarks' results.
func mustMeasure(b *testing.B, c *client, x *exchange) result {
	b.Helper()
	c.mustDo(b, x)
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for b.Loop() {
		if err := c.do(x); err != nil {
			b.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	return result{
		ns:       float64(b.Elapsed().Nanoseconds()) / float64(b.N),
		allocs:   float64(after.Mallocs-before.Mallocs) / float64(b.N),
		requests: b.N + 1,
	}
}

// comparison collects the results of a case's sub-benchmarks and prints
// each subject against the baseline once all of them have run. Under
// -count n, the testing package runs each sub-benchmark n times in a row
// (bare, bare, bare, sidecar, ...), not in turn; the k-th runs are
// compared with each other, one line each.
type comparison struct {
	name     string
	base     string
	subjects []string
	results  map[string][]result
}

// newComparison compares subjects with base under the case's name.
func newComparison(name, base string, subjects ...string) *comparison {
	return &comparison{name: name, base: base, subjects: subjects, results: map[string][]result{}}
}

// record keeps what a run of the sub-benchmark label measured.
func (c *comparison) record(label string, r result) {
	c.results[label] = append(c.results[label], r)
}

// lines are the comparison's lines: for each subject that ran, one per
// run it and the baseline both had; none unless the baseline ran too.
func (c *comparison) lines() []string {
	bases := c.results[c.base]
	var out []string
	for _, s := range c.subjects {
		runs := c.results[s]
		n := min(len(runs), len(bases))
		for i := range n {
			r, base := runs[i], bases[i]
			line := fmt.Sprintf("%s: %s/%s time %.2f×, allocs %+.0f/op (%s vs %s, %.0f vs %.0f allocs/op)",
				c.name, s, c.base, r.ns/base.ns, r.allocs-base.allocs,
				time.Duration(r.ns).Round(100*time.Nanosecond), time.Duration(base.ns).Round(100*time.Nanosecond),
				r.allocs, base.allocs)
			if n > 1 {
				line += fmt.Sprintf(" [run %d of %d]", i+1, n)
			}
			out = append(out, line)
		}
	}
	return out
}

// print writes the comparison's lines to stdout, between the benchmark
// lines. Not b.Log: a parent benchmark's log is shown only with -v. The
// lines start with the case's name in capitals, so benchstat, which reads
// "key: value" lines with a lower-case key as configuration, skips them.
func (c *comparison) print() {
	for _, l := range c.lines() {
		fmt.Println(l)
	}
}
