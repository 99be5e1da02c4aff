// Package transport is the sidecar's sentry.Transport. sentry-go's own
// transport sends one envelope at a time from one goroutine; under load it
// delivered about half of the sampled transactions (the rest fell out of its
// buffer), and a hanging Sentry kept Client.Close blocked for 45 s
// (research/sentry-go.md §4.2). This one never blocks the capturing
// goroutine, bounds its memory by a queue of encoded envelopes, sends with
// several workers over kept-alive connections, honours Sentry's rate limits,
// counts every envelope in Prometheus, and closes within a bound.
package transport

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults for Options. DefaultWorkers is high because a send waits a
// whole round trip: with 4, a loaded sidecar whose Sentry answered within
// milliseconds delivered 500 transactions/s and dropped the rest
// (BENCHMARKS.md); a real Sentry is 50–200 ms away. Idle workers cost a
// parked goroutine each.
const (
	DefaultWorkers      = 32
	DefaultQueueSize    = 1000
	DefaultTimeout      = 5 * time.Second
	DefaultCloseTimeout = 2 * time.Second
	DefaultUserAgent    = "sentry-sidecar"
)

const (
	// closeGrace is how long Close waits for workers after cancelling their
	// requests; a RoundTripper that ignores its context must not hang Close.
	closeGrace = 500 * time.Millisecond
	// recentOutcomes is how many final outcomes Outcome can still report.
	recentOutcomes = 1024
	// idleConnTimeout closes the own client's idle connections to Sentry.
	idleConnTimeout = 5 * time.Second
	// logEvery limits repeated warnings (a rejected envelope per event would
	// flood the log; the metrics count every one).
	logEvery = 10 * time.Second
)

// Options configures a Transport.
type Options struct {
	// DSN is where events go; required.
	DSN string
	// HTTPClient sends the envelopes. Nil means an own client with a
	// DefaultTimeout timeout, MaxIdleConnsPerHost >= Workers, the proxy from
	// the environment, and no redirects. A client without a Timeout still
	// has every send bounded by DefaultTimeout.
	HTTPClient *http.Client
	// Workers is how many envelopes are sent at once; 0 means DefaultWorkers.
	Workers int
	// QueueSize is how many encoded envelopes may wait; when it is full new
	// events are dropped and counted, never waited for. 0 means
	// DefaultQueueSize.
	QueueSize int
	// CloseTimeout bounds Close: queued envelopes are still sent for at most
	// this long, then in-flight sends are cancelled. 0 means
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Registerer receives the metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Log receives delivery problems; nil discards them. The DSN's key is
	// never logged.
	Log *zap.Logger
	// Now is the clock for rate limits and sent_at; nil means time.Now.
	Now func() time.Time
	// UserAgent is sent as User-Agent and as sentry_client in X-Sentry-Auth,
	// "sentry-sidecar/<version>"; empty means DefaultUserAgent.
	UserAgent string
}

// Transport delivers events to Sentry. Create it with New and hand it to
// sentry.ClientOptions.Transport; all its methods are safe for concurrent
// use.
type Transport struct {
	url          string
	auth         string
	headerDSN    string // the DSN without its secret, for envelope headers
	rawDSN       string
	client       *http.Client
	ownClient    bool
	sendTimeout  time.Duration
	closeTimeout time.Duration
	userAgent    string
	sdk          sdkInfo
	log          *zap.Logger
	now          func() time.Time
	metrics      *metrics

	queue  chan *job
	stop   chan struct{} // closed by Close: workers drain the queue and end
	ctx    context.Context
	cancel context.CancelFunc // aborts in-flight sends when Close gives up
	wg     sync.WaitGroup
	once   sync.Once

	mu        sync.Mutex
	closed    bool
	limits    Limits
	nextSeq   uint64              // sequence number of the next queued envelope
	doneUpTo  uint64              // every envelope with seq < doneUpTo is finished
	doneAhead map[uint64]struct{} // finished envelopes with seq > doneUpTo
	waiters   int
	changed   chan struct{} // closed and replaced when something finishes, if waiters > 0
	recent    map[sentry.EventID]Outcome
	ring      []sentry.EventID
	ringNext  int

	counts   [len(outcomes)]atomic.Uint64
	failing  atomic.Bool
	lastWarn sync.Map // kind string -> time.Time
}

var _ sentry.Transport = (*Transport)(nil)

// New starts a Transport's workers; Close stops them.
func New(opts Options) (*Transport, error) {
	dsn, err := sentry.NewDsn(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("sentry transport: parse DSN: %w", err)
	}
	switch {
	case opts.Workers < 0:
		return nil, fmt.Errorf("sentry transport: workers must not be negative, got %d", opts.Workers)
	case opts.QueueSize < 0:
		return nil, fmt.Errorf("sentry transport: queue size must not be negative, got %d", opts.QueueSize)
	case opts.CloseTimeout < 0:
		return nil, fmt.Errorf("sentry transport: close timeout must not be negative, got %v", opts.CloseTimeout)
	}
	workers := cmp.Or(opts.Workers, DefaultWorkers)
	ua := cmp.Or(opts.UserAgent, DefaultUserAgent)
	name, version, _ := strings.Cut(ua, "/")

	t := &Transport{
		url:          dsn.GetAPIURL().String(),
		auth:         authHeader(dsn, ua),
		headerDSN:    dsnWithoutSecret(opts.DSN),
		rawDSN:       opts.DSN,
		client:       opts.HTTPClient,
		closeTimeout: cmp.Or(opts.CloseTimeout, DefaultCloseTimeout),
		userAgent:    ua,
		sdk:          sdkInfo{Name: name, Version: version},
		log:          opts.Log,
		now:          opts.Now,
		queue:        make(chan *job, cmp.Or(opts.QueueSize, DefaultQueueSize)),
		stop:         make(chan struct{}),
		limits:       Limits{},
		doneAhead:    map[uint64]struct{}{},
		changed:      make(chan struct{}),
		recent:       make(map[sentry.EventID]Outcome, recentOutcomes),
		ring:         make([]sentry.EventID, recentOutcomes),
	}
	if t.client == nil {
		t.client, t.ownClient = newClient(workers), true
	}
	t.sendTimeout = cmp.Or(t.client.Timeout, DefaultTimeout)
	if t.log == nil {
		t.log = zap.NewNop()
	}
	if t.now == nil {
		t.now = time.Now
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if t.metrics, err = newMetrics(reg, func() float64 { return float64(len(t.queue)) }); err != nil {
		return nil, err
	}

	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(workers)
	for range workers {
		go t.worker()
	}
	return t, nil
}

// newClient is a client for one host: as many idle connections as workers,
// so every worker keeps its connection alive between sends (the default
// transport keeps 2 per host); the proxy from the environment, which suits
// Sentry (not loopback); no redirects, which an ingest endpoint never sends
// on purpose.
func newClient(workers int) *http.Client {
	return &http.Client{
		Timeout: DefaultTimeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        max(workers, 2),
			MaxIdleConnsPerHost: max(workers, 2),
			// Short: after a burst (or a Sentry that hung and came back)
			// up to Workers connections are left idle, two goroutines
			// each; a sender busy enough to need them keeps them busy.
			IdleConnTimeout:       idleConnTimeout,
			TLSHandshakeTimeout:   3 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Configure is called by sentry.NewClient. The Transport is configured by
// New alone, so ClientOptions' Dsn, HTTPClient and HTTPTransport are not
// used; a different Dsn is logged (without the key) because the
// Transport's wins.
func (t *Transport) Configure(options sentry.ClientOptions) {
	if options.Dsn != "" && options.Dsn != t.rawDSN {
		t.log.Warn("sentry client DSN differs from the transport's; events go to the transport's",
			zap.String("url", t.url))
	}
}

// SendEvent encodes the event and queues it. It never blocks: an event of
// a rate-limited category, or one that finds the queue full, is dropped and
// counted. It runs on the capturing goroutine (the request path), so its
// cost is one json.Marshal of the event (see newJob).
func (t *Transport) SendEvent(event *sentry.Event) {
	if event == nil {
		return
	}
	category := categoryOf(event)
	t.mu.Lock()
	closed := t.closed
	limited := t.limits.Limited(category, t.now())
	t.mu.Unlock()
	switch {
	case closed:
		t.finish(event.EventID, category, OutcomeFailed, nil)
		t.log.Debug("sentry event after Close dropped", zap.String("event_id", string(event.EventID)))
		return
	case limited:
		t.finish(event.EventID, category, OutcomeRateLimited, nil)
		return
	}

	j, err := newJob(event, t.headerDSN, t.sdk)
	if err != nil {
		t.finish(event.EventID, category, OutcomeFailed, nil)
		t.warn("encode", "sentry event not sent: cannot encode it", zap.Error(err))
		return
	}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.finish(event.EventID, category, OutcomeFailed, nil)
		return
	}
	// Holding mu across the non-blocking send keeps Close from slipping in
	// between the check and the send: nothing is queued after the workers
	// were told to drain.
	j.seq = t.nextSeq
	t.nextSeq++
	if category != CategoryError && len(t.queue) >= cap(t.queue)/2 {
		// Errors first: with Sentry slow or down and tracing on,
		// transactions outnumber errors and would fill the queue, so they
		// get half of it and errors keep the rest.
		t.mu.Unlock()
		t.finish(j.eventID, category, OutcomeQueueFull, j)
		return
	}
	select {
	case t.queue <- j:
		t.mu.Unlock()
	default:
		t.mu.Unlock()
		t.finish(j.eventID, category, OutcomeQueueFull, j)
	}
}

// Flush waits until every envelope queued before the call was attempted
// (sent, refused or failed), or until timeout; it reports whether they all
// were.
func (t *Transport) Flush(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.FlushWithContext(ctx)
}

// FlushWithContext is Flush bounded by ctx.
func (t *Transport) FlushWithContext(ctx context.Context) bool {
	t.mu.Lock()
	target := t.nextSeq
	t.mu.Unlock()
	return t.waitUntil(ctx, func() bool { return t.doneUpTo >= target })
}

// Outcome waits for the final outcome of the event with id, for the admin
// "POST /test-event": capture the event through the hub as usual (so it
// gets the scope, BeforeSend scrubbing, release and environment of a real
// event), then
//
//	outcome, err := tr.Outcome(ctx, *hub.CaptureMessage("test"))
//	delivered := err == nil && outcome == transport.OutcomeSent
//
// It remembers the last 1024 outcomes, so an event already sent is found.
// An event the Transport never got (sampled out, dropped by BeforeSend)
// waits until ctx ends and returns ctx's error.
func (t *Transport) Outcome(ctx context.Context, id sentry.EventID) (Outcome, error) {
	var out Outcome
	found := t.waitUntil(ctx, func() bool {
		o, ok := t.recent[id]
		out = o
		return ok
	})
	if !found {
		return "", fmt.Errorf("wait for the outcome of event %s: %w", id, context.Cause(ctx))
	}
	return out, nil
}

// Close stops accepting events and lets the workers send what is queued for
// at most CloseTimeout; then it cancels the sends still running, counts
// what is left as failed and returns. It never waits longer than
// CloseTimeout plus a short grace, whatever Sentry does. Call Flush first
// to give queued events a longer chance.
func (t *Transport) Close() {
	t.once.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		close(t.stop)

		done := make(chan struct{})
		go func() {
			t.wg.Wait()
			close(done)
		}()
		timer := time.NewTimer(t.closeTimeout)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			t.cancel()
			grace := time.NewTimer(closeGrace)
			defer grace.Stop()
			select {
			case <-done:
			case <-grace.C:
				t.log.Warn("sentry transport closed with sends still running", zap.Duration("waited", t.closeTimeout+closeGrace))
			}
		}
		t.cancel()
		if t.ownClient {
			t.client.CloseIdleConnections()
		}
	})
}

// Stats is a snapshot of a Transport's counters, over all categories.
type Stats struct {
	Sent, Rejected, Failed, RateLimited, QueueFull uint64
	// Queued is the number of envelopes waiting for a worker.
	Queued int
	// Limits are the rate limits in force or expired, by category.
	Limits Limits
}

// Stats returns the counters so far.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	limits := make(Limits, len(t.limits))
	for c, until := range t.limits {
		limits[c] = until
	}
	t.mu.Unlock()
	return Stats{
		Sent:        t.counts[0].Load(),
		Rejected:    t.counts[1].Load(),
		Failed:      t.counts[2].Load(),
		RateLimited: t.counts[3].Load(),
		QueueFull:   t.counts[4].Load(),
		Queued:      len(t.queue),
		Limits:      limits,
	}
}

func (t *Transport) worker() {
	defer t.wg.Done()
	for {
		select {
		case j := <-t.queue:
			t.deliver(j)
		case <-t.stop:
			for {
				select {
				case j := <-t.queue:
					t.deliver(j)
				default:
					return
				}
			}
		}
	}
}

// deliver sends one envelope unless its category became rate limited
// while it waited, or Close gave up on it.
func (t *Transport) deliver(j *job) {
	t.mu.Lock()
	limited := t.limits.Limited(j.category, t.now())
	t.mu.Unlock()
	switch {
	case t.ctx.Err() != nil:
		t.finish(j.eventID, j.category, OutcomeFailed, j)
	case limited:
		t.finish(j.eventID, j.category, OutcomeRateLimited, j)
	default:
		t.finish(j.eventID, j.category, t.send(j), j)
	}
}

// send POSTs one envelope and learns the rate limits from the answer.
func (t *Transport) send(j *job) Outcome {
	body, err := j.body(t.now())
	if err != nil {
		t.warn("encode", "sentry envelope not sent: cannot encode its header", zap.Error(err))
		return OutcomeFailed
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.sendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		t.warn("request", "sentry envelope not sent", zap.Error(err))
		return OutcomeFailed
	}
	req.Header.Set("Content-Type", "application/x-sentry-envelope")
	req.Header.Set("X-Sentry-Auth", t.auth)
	req.Header.Set("User-Agent", t.userAgent)
	if j.eventID != "" {
		// Makes the POST replayable for net/http, which then retries it once
		// when a kept-alive connection turns out closed by the server
		// (net/http Transport docs, "Idempotency-Key"); Sentry drops
		// duplicates by event_id, so a retry cannot double an event.
		req.Header.Set("Idempotency-Key", string(j.eventID))
	}

	start := time.Now()
	resp, err := t.client.Do(req)
	t.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		if t.ctx.Err() == nil && !t.failing.Swap(true) {
			t.log.Warn("sentry unreachable; events are counted as failed until it answers", zap.String("url", t.url), zap.Error(err))
		}
		return OutcomeFailed
	}
	detail := readDetail(resp)

	if limits := ParseRateLimits(resp.StatusCode, resp.Header, t.now()); len(limits) > 0 {
		t.mu.Lock()
		extended := t.limits.Merge(limits)
		t.mu.Unlock()
		if len(extended) > 0 {
			t.log.Warn("sentry rate limit; dropping events of these categories until it ends",
				zap.Int("status", resp.StatusCode), zap.Strings("categories", categoryNames(extended)),
				zap.Time("until", limits.Until(extended[0])))
		}
	}
	outcome := classify(resp.StatusCode)
	switch outcome {
	case OutcomeSent:
		if t.failing.Swap(false) {
			t.log.Info("sentry reachable again", zap.String("url", t.url))
		}
	case OutcomeRejected:
		t.warn("rejected", "sentry rejected an envelope", zap.Int("status", resp.StatusCode), zap.String("detail", detail))
	case OutcomeFailed:
		if !t.failing.Swap(true) {
			t.log.Warn("sentry failing; events are counted as failed until it answers", zap.Int("status", resp.StatusCode), zap.String("detail", detail))
		}
	}
	return outcome
}

// readDetail reads a little of the answer for the log and drains a bounded
// rest so the connection can be reused.
func readDetail(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// finish counts an envelope's outcome, remembers it for Outcome and, if it
// was queued, marks it done for Flush.
func (t *Transport) finish(id sentry.EventID, category string, o Outcome, j *job) {
	t.metrics.envelopes.WithLabelValues(category, string(o)).Inc()
	for i, known := range outcomes {
		if known == o {
			t.counts[i].Add(1)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if j != nil {
		if j.seq == t.doneUpTo {
			t.doneUpTo++
			for {
				if _, ok := t.doneAhead[t.doneUpTo]; !ok {
					break
				}
				delete(t.doneAhead, t.doneUpTo)
				t.doneUpTo++
			}
		} else {
			t.doneAhead[j.seq] = struct{}{}
		}
	}
	if id != "" {
		if old := t.ring[t.ringNext]; old != "" {
			delete(t.recent, old)
		}
		t.ring[t.ringNext] = id
		t.ringNext = (t.ringNext + 1) % len(t.ring)
		t.recent[id] = o
	}
	if t.waiters > 0 {
		close(t.changed)
		t.changed = make(chan struct{})
	}
}

// waitUntil waits until cond, checked under mu, holds or ctx ends.
func (t *Transport) waitUntil(ctx context.Context, cond func() bool) bool {
	t.mu.Lock()
	t.waiters++
	defer func() {
		t.mu.Lock()
		t.waiters--
		t.mu.Unlock()
	}()
	for {
		if cond() {
			t.mu.Unlock()
			return true
		}
		changed := t.changed
		t.mu.Unlock()
		select {
		case <-changed:
			t.mu.Lock()
		case <-ctx.Done():
			return false
		}
	}
}

// warn logs at most once per logEvery for each kind of problem.
func (t *Transport) warn(kind, msg string, fields ...zap.Field) {
	now := t.now()
	if last, ok := t.lastWarn.Load(kind); ok && now.Sub(last.(time.Time)) < logEvery {
		return
	}
	t.lastWarn.Store(kind, now)
	t.log.Warn(msg, fields...)
}

// authHeader builds X-Sentry-Auth. sentry_secret is deprecated but older
// self-hosted Sentry still wants it when the DSN has one (sentry-go does the
// same).
func authHeader(dsn *sentry.Dsn, client string) string {
	auth := "Sentry sentry_version=7, sentry_client=" + client + ", sentry_key=" + dsn.GetPublicKey()
	if s := dsn.GetSecretKey(); s != "" {
		auth += ", sentry_secret=" + s
	}
	return auth
}

// dsnWithoutSecret is the DSN for envelope headers: Relay authenticates
// with the public key alone, and a secret has no business in a payload.
func dsnWithoutSecret(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

func categoryNames(cs []string) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = cmp.Or(c, "all")
	}
	return out
}
