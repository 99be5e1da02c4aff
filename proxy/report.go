package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Report is what the proxy tells Sentry about the requests it carries. The
// zero Report reports nothing: no user, no trail, no event.
type Report struct {
	// Client sends the events; nil turns events off.
	Client *sentry.Client
	// Scope is applied to every event: the tags and contexts set once at
	// start (app, sidecar, extra contexts). Never a request's scope.
	Scope *sentry.Scope
	// Users turns the API's token into the Sentry user; nil: anonymous.
	Users *enrich.Verifier
	// Cookie names a cookie that may carry the token besides Authorization.
	Cookie string
	// Trails keeps each user's recent requests; nil: none.
	Trails *enrich.Trails
	// Routes templates paths for grouping; nil: the path is the route.
	Routes *enrich.Router
	// Capture lists the upstream statuses that become events.
	Capture []StatusRange
	// IgnorePaths are never reported: an exact path, or a prefix when the
	// entry ends with "*".
	IgnorePaths []string
	// Throttle bounds the events of one fingerprint.
	Throttle ThrottleConfig

	// TracesSampleRate is the share of requests traced when neither the
	// caller's sentry-trace nor a rule decides; 0 traces nothing.
	TracesSampleRate float64
	// TracesSampler are per-route rates, first match wins.
	TracesSampler []SampleRule
	// Actions name routes as user actions for breadcrumbs and metrics.
	Actions []Action
	// MaxRoutes caps the route templates in per-route series; 0 means 100.
	MaxRoutes int
	// PublicKeys maps the public key of the placeholder DSN the browser
	// config hands out to the real browser project's key. Pages send it in
	// the sentry-public_key member of their baggage; the trace the sidecar
	// continues and the baggage the API gets carry the real one, so Sentry
	// sees one consistent trace head.
	PublicKeys map[string]string
}

// StatusRange is an inclusive range of HTTP statuses.
type StatusRange struct{ Lo, Hi int }

func (r *Report) captures(status int) bool {
	if r.Client == nil {
		return false
	}
	for _, s := range r.Capture {
		if status >= s.Lo && status <= s.Hi {
			return true
		}
	}
	return false
}

func (r *Report) ignored(path string) bool {
	for _, p := range r.IgnorePaths {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(path, prefix) {
				return true
			}
		} else if p == path {
			return true
		}
	}
	return false
}

// Event kinds, a label of sidecar_sentry_events_total.
const (
	eventUpstream   = "upstream_5xx"
	eventProxyError = "proxy_error"
)

// reportMetrics count what the reporting did.
type reportMetrics struct {
	events map[string]map[string]prometheus.Counter // kind → outcome
	tokens map[enrich.TokenOutcome]prometheus.Counter
}

func newReportMetrics(reg prometheus.Registerer, r *Report) (*reportMetrics, error) {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_sentry_events_total",
		Help: "Events built from proxied requests by kind (upstream_5xx, proxy_error) and outcome (captured, throttled).",
	}, []string{"kind", "outcome"})
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_jwt_tokens_total",
		Help: "Requests by what became of their token: absent, verified, unverified, expired, invalid.",
	}, []string{"outcome"})
	cs := []prometheus.Collector{events, tokens}
	if t := r.Trails; t != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sidecar_trail_users",
				Help: "Users whose recent requests are kept for breadcrumbs.",
			}, func() float64 { return float64(t.Users()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sidecar_trail_evictions_total",
				Help: "User trails dropped to stay within the bound or after idling past the TTL.",
			}, func() float64 { return float64(t.Evictions()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m := &reportMetrics{events: map[string]map[string]prometheus.Counter{}, tokens: map[enrich.TokenOutcome]prometheus.Counter{}}
	for _, kind := range []string{eventUpstream, eventProxyError} {
		m.events[kind] = map[string]prometheus.Counter{}
		for _, outcome := range []string{"captured", "throttled"} {
			m.events[kind][outcome] = events.WithLabelValues(kind, outcome)
		}
	}
	for _, o := range []enrich.TokenOutcome{enrich.TokenAbsent, enrich.TokenVerified, enrich.TokenUnverified, enrich.TokenExpired, enrich.TokenInvalid} {
		m.tokens[o] = tokens.WithLabelValues(string(o))
	}
	return m, nil
}

// teeBody keeps the first enrich.MaxBodyExcerpt bytes of a captured
// response while they stream to the client: the client gets every byte as
// the upstream sent it, and nothing waits for the excerpt. Reads go to the
// upstream's own body, so its trailers still arrive.
type teeBody struct {
	io.ReadCloser
	buf []byte
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if room := enrich.MaxBodyExcerpt - len(t.buf); room > 0 && n > 0 {
		t.buf = append(t.buf, p[:min(n, room)]...)
	}
	return n, err
}

// report builds and captures the event for a finished request, if it is
// one to report, and adds the request to its user's trail.
func (p *Proxy) report(r *http.Request, st *reqState, status int, dur time.Duration) {
	rp := &p.cfg.Report
	var user string
	if st.user != nil {
		user = st.user.ID
	}
	kind := ""
	switch {
	case rp.Client == nil || st.ignored:
	case st.captured && st.tee != nil:
		kind, status = eventUpstream, st.upstreamStatus
	case st.errKind != "" && st.errKind != KindClientClosed:
		kind = eventProxyError // refused, timeout, or an answer cut mid-body
	}
	if user == "" && kind == "" && st.action != nil && st.tee != nil && status < 400 {
		// A login: the answer names who logged in.
		if u, ok := loginUser(st.tee.buf, rp.Users); ok {
			user = u.ID
		}
	}
	keepTrail := rp.Trails != nil && user != ""
	if kind == "" && !keepTrail {
		return
	}
	crumb := enrich.NewCrumb(st.start, r.Method, st.path, r.URL.RawQuery, status, dur)
	crumb.Action, crumb.Fields = p.actionOf(st)
	if kind == "" {
		rp.Trails.Add(user, crumb)
		return
	}

	// The throttle decides before anything is built, the trail's copy
	// included: a storm of one failure costs a map lookup per request, not
	// an event (the copy alone was 4% of the CPU of all-500 traffic).
	key := r.Method + "\x00" + st.route + "\x00" + strconv.Itoa(status)
	if kind == eventProxyError {
		key = "proxy-error\x00" + p.cfg.Upstream.Host + "\x00" + st.errKind
	}
	suppressed, ok := p.throttle.allow(key)
	var trail []enrich.Crumb
	if keepTrail {
		if ok {
			trail = rp.Trails.Trail(user, nil) // before this request joins it
		}
		rp.Trails.Add(user, crumb)
	}
	if !ok {
		p.reportMetrics.events[kind]["throttled"].Inc()
		return
	}

	x := &enrich.Exchange{
		Time:        st.start,
		Method:      r.Method,
		Scheme:      scheme(r, st.peerTrusted),
		Host:        r.Host,
		Path:        st.path,
		RawQuery:    r.URL.RawQuery,
		Header:      r.Header,
		Route:       st.route,
		ClientIP:    st.ipString(r.RemoteAddr),
		RequestID:   st.id,
		Upstream:    p.cfg.Upstream.Host,
		Status:      status,
		Duration:    dur,
		UpstreamDur: st.upstreamDur,
		ErrorKind:   st.errKind,
		User:        st.user,
		Trail:       trail,
		Action:      crumb.Action,
		Fields:      crumb.Fields,
	}
	if st.tee != nil {
		x.Body, x.ContentType = st.tee.buf, st.contentType
	}
	var ev *sentry.Event
	if kind == eventProxyError {
		ev = enrich.ProxyErrorEvent(x)
	} else {
		ev = enrich.UpstreamEvent(x)
	}
	if suppressed > 0 {
		ev.Contexts["throttle"] = sentry.Context{"suppressed_since_last_event": suppressed}
	}
	p.reportMetrics.events[kind]["captured"].Inc()
	if st.hub != nil {
		// Traced: the request's own scope, whose span links the event to
		// the transaction, and the trace's sampling context for the
		// envelope (see enrich.DSCContext).
		ev.Contexts[enrich.DSCContext] = st.dscContext()
		st.hub.Client().CaptureEvent(ev, &sentry.EventHint{Context: r.Context()}, st.hub.Scope())
		return
	}
	rp.Client.CaptureEvent(ev, &sentry.EventHint{Context: r.Context()}, EventScope(rp.Scope, r.Header))
}

// actionOf is the action name and recorded fields of a request, if any.
func (p *Proxy) actionOf(st *reqState) (string, map[string]any) {
	if st.action == nil {
		return "", nil
	}
	return st.action.Name, st.fields
}

// EventScope is the scope one event is captured with: base (the tags and
// contexts set at start) and the trace of the request, continued from its
// sentry-trace and baggage headers or new. Without its own propagation
// context every event would share the base scope's trace id, and Sentry
// would link them all as one trace.
func EventScope(base *sentry.Scope, h http.Header) *sentry.Scope {
	var scope *sentry.Scope
	if base != nil {
		scope = base.Clone()
	} else {
		scope = sentry.NewScope()
	}
	pc, err := sentry.PropagationContextFromHeaders(h.Get(sentry.SentryTraceHeader), h.Get(sentry.SentryBaggageHeader))
	if err != nil || h.Get(sentry.SentryTraceHeader) == "" {
		pc = sentry.NewPropagationContext()
	}
	scope.SetPropagationContext(pc)
	return scope
}

// scheme is the scheme the client used: TLS on our listener, or what a
// trusted proxy in front says.
func scheme(r *http.Request, peerTrusted bool) string {
	if r.TLS != nil {
		return "https"
	}
	if peerTrusted {
		if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
			return p
		}
	}
	return "http"
}

// ThrottleConfig bounds events per fingerprint with a token bucket: Burst
// events at once, then one per Every.
type ThrottleConfig struct {
	Burst int
	Every time.Duration
}

// throttle is a token bucket per fingerprint. Storms of one failure (an
// upstream down, a route failing for everyone) become a few events and a
// count, never thousands of events.
type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// maxBuckets bounds the fingerprints tracked; past it, full buckets (idle
// fingerprints) are forgotten.
const maxBuckets = 10000

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	return &throttle{cfg: cfg, now: now, buckets: map[string]*bucket{}}
}

// allow takes a token for key. It reports whether the event may go and how
// many events of key were suppressed since the last one that went.
func (t *throttle) allow(key string) (suppressed int, ok bool) {
	if t.cfg.Burst <= 0 {
		return 0, true
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	b, found := t.buckets[key]
	if !found {
		if len(t.buckets) >= maxBuckets {
			t.forgetIdle(now)
		}
		b = &bucket{tokens: float64(t.cfg.Burst), last: now}
		t.buckets[key] = b
	}
	t.refill(b, now)
	if b.tokens < 1 {
		b.suppressed++
		return 0, false
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return suppressed, true
}

func (t *throttle) refill(b *bucket, now time.Time) {
	if t.cfg.Every > 0 {
		b.tokens = min(float64(t.cfg.Burst), b.tokens+float64(now.Sub(b.last))/float64(t.cfg.Every))
	}
	b.last = now
}

func (t *throttle) forgetIdle(now time.Time) {
	for k, b := range t.buckets {
		t.refill(b, now)
		if b.tokens >= float64(t.cfg.Burst) && b.suppressed == 0 {
			delete(t.buckets, k)
		}
	}
	if len(t.buckets) >= maxBuckets {
		clear(t.buckets) // everything is busy: a flood of distinct failures
	}
}

// mapPublicKey rewrites the sentry-public_key member of the request's
// baggage when it names a placeholder key. Baggage without one is left as
// it is, without allocating.
func (r *Report) mapPublicKey(h http.Header) {
	if len(r.PublicKeys) == 0 {
		return
	}
	values := h["Baggage"]
	for i, v := range values {
		const member = "sentry-public_key="
		j := strings.Index(v, member)
		if j < 0 {
			continue
		}
		start := j + len(member)
		end := strings.IndexAny(v[start:], ",;")
		if end < 0 {
			end = len(v)
		} else {
			end += start
		}
		if real, ok := r.PublicKeys[strings.TrimSpace(v[start:end])]; ok {
			values[i] = v[:start] + real + v[end:]
		}
	}
}

// Integrations is the sentry.ClientOptions.Integrations filter for a client
// that reports for the proxy: sentry-go's defaults without
//
//   - GlobalTags, which reads SENTRY_TAGS_* from the environment behind the
//     configuration's back;
//   - Environment and Modules, the sidecar's own Go runtime, host and module
//     list, on events about someone else's API: misleading there, and
//     encoding them was a fifth of each transaction's allocations
//     (BENCHMARKS.md). The base scope's tags say which sidecar sent an
//     event.
func Integrations(in []sentry.Integration) []sentry.Integration {
	out := in[:0]
	for _, i := range in {
		switch i.Name() {
		case "GlobalTags", "Environment", "Modules":
		default:
			out = append(out, i)
		}
	}
	return out
}
