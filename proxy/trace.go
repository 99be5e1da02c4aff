package proxy

import (
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/getsentry/sentry-go"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// SampleRule is a trace sample rate for a route: Method "" matches any.
type SampleRule struct {
	Method, Route string
	Rate          float64
}

// sampler decides, for a request, whether it is traced. The decision of
// the caller's sentry-trace header wins (the browser sampled this trace, or
// chose not to); then the first rule for the route; then the default rate.
type sampler struct {
	rate  float64
	rules []SampleRule
}

// newSampler templates the rules' routes like requests' routes, so a rule
// for "/apps/{id}" meets the configured "/apps/{app_id}".
func newSampler(rate float64, rules []SampleRule, routes *enrich.Router) sampler {
	s := sampler{rate: rate, rules: append([]SampleRule(nil), rules...)}
	if routes != nil {
		for i := range s.rules {
			s.rules[i].Route = routes.Template(s.rules[i].Route)
		}
	}
	return s
}

// sampled decides whether the request is traced, and at what rate: the
// rate goes into the sampling context when the sidecar heads the trace, so
// Sentry counts each transaction for 1/rate requests.
func (s *sampler) sampled(h http.Header, method, route string) (bool, float64) {
	// The canonical key: Header.Get would canonicalise "sentry-trace" into
	// a new string on every request.
	if v := h["Sentry-Trace"]; len(v) > 0 {
		switch sampledFlag(v[0]) {
		case '1':
			return true, 1
		case '0':
			return false, 0
		}
	}
	rate := s.rate
	for _, r := range s.rules {
		if r.Route == route && (r.Method == "" || r.Method == method) {
			rate = r.Rate
			break
		}
	}
	return rate > 0 && (rate >= 1 || rand.Float64() < rate), rate
}

// sampledFlag returns the third field of "traceid-spanid-sampled", or 0
// when there is none (a deferred decision, left to us).
func sampledFlag(v string) byte {
	v = strings.TrimSpace(v)
	if len(v) == 32+1+16+2 && v[32] == '-' && v[49] == '-' {
		return v[50]
	}
	return 0
}

// startTransaction begins the transaction of a sampled request on a hub of
// its own, continuing the caller's trace. It returns the request with the
// transaction's context. Only sampled requests get here: nothing is built
// for the others.
func (p *Proxy) startTransaction(r *http.Request, st *reqState, rate float64) *http.Request {
	rp := &p.cfg.Report
	scope := sentry.NewScope()
	if rp.Scope != nil {
		scope = rp.Scope.Clone()
	}
	hub := sentry.NewHub(rp.Client, scope)
	if st.user != nil {
		scope.SetUser(st.user.Sentry(st.ipString(r.RemoteAddr)))
	}
	// The request for the transaction, without its body: Scope.SetRequest
	// would copy up to 10 KiB of it into the event (sentry-go research
	// §2.2). Headers and query are scrubbed in BeforeSendTransaction.
	noBody := *r
	noBody.Body = http.NoBody
	u := *r.URL
	u.Path, u.RawPath, u.RawQuery = enrich.ScrubPath(u.Path), "", enrich.ScrubQuery(u.RawQuery)
	noBody.URL = &u
	scope.SetRequest(&noBody)

	// A hub on the context before StartTransaction, or the span lands on
	// the global scope and stays there (sentry-go research §5.7).
	ctx := sentry.SetHubOnContext(r.Context(), hub)
	tx := sentry.StartTransaction(ctx, r.Method+" "+st.route,
		sentry.ContinueTrace(hub, r.Header.Get(sentry.SentryTraceHeader), r.Header.Get(sentry.SentryBaggageHeader)),
		sentry.WithOpName("http.server"),
		sentry.WithTransactionSource(sentry.SourceRoute),
		sentry.WithSpanSampled(sentry.SampledTrue), // decided above, by the same rules
		sentry.WithSpanOrigin("auto.http.sentry_sidecar"),
	)
	tx.SetData("http.request.method", r.Method)
	tx.SetData("url.path", enrich.ScrubPath(st.path))
	st.hub, st.tx = hub, tx
	p.traceContext(st, r.Header, rate)
	return r.WithContext(tx.Context())
}

// traceContext settles the trace's dynamic sampling context once: the
// caller's, frozen, when its baggage has one (and its baggage then goes
// upstream as it is); else ours as head of the trace, with the rate the
// sidecar decided at. The SDK would record 1.0 for a decision it gets as
// explicit (WithSpanSampled), and Sentry would count each transaction as
// one request instead of 1/rate; its ToBaggage also costs ~240 allocations
// a call.
func (p *Proxy) traceContext(st *reqState, h http.Header, rate float64) {
	if in := strings.Join(h.Values(sentry.SentryBaggageHeader), ","); strings.Contains(in, "sentry-") {
		// The caller's context only if the SDK really continued its trace:
		// it refuses a malformed sentry-trace, and then our transaction is
		// a new trace that the caller's baggage does not describe.
		if dsc, err := sentry.DynamicSamplingContextFromHeader([]byte(in)); err == nil && dsc.HasEntries() &&
			dsc.Entries["trace_id"] == st.tx.TraceID.String() && st.tx.ParentSpanID != (sentry.SpanID{}) {
			st.dsc = dsc.Entries
			return
		}
	}
	st.dsc = map[string]string{
		"trace_id":    st.tx.TraceID.String(),
		"sample_rate": strconv.FormatFloat(rate, 'f', -1, 64),
		"sampled":     "true",
		"transaction": st.tx.Name,
	}
	for k, v := range p.headDSC {
		st.dsc[k] = v
	}
	var b strings.Builder
	b.Grow(256) // one allocation for the whole line, not one per member
	for i, k := range slices.Sorted(maps.Keys(st.dsc)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("sentry-")
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(url.PathEscape(st.dsc[k]))
	}
	st.headBaggage = b.String()
}

// traceUpstream starts the http.client span of the upstream call and sets
// the trace headers the upstream gets: exactly one sentry-trace, naming our
// span as parent, and the baggage of the root transaction merged with the
// caller's non-Sentry members. Set, never added: sentryhttpclient adds, and
// the upstream then sees two parents (sentry-go research §5.5).
func (p *Proxy) traceUpstream(out *http.Request, in *http.Request, st *reqState) {
	span := st.tx.StartChild("http.client",
		sentry.WithDescription(in.Method+" "+p.cfg.Upstream.Host+st.route),
		sentry.WithSpanOrigin("auto.http.sentry_sidecar"))
	span.SetData("http.request.method", in.Method)
	span.SetData("server.address", p.cfg.Upstream.Host)
	st.span = span

	out.Header.Set(sentry.SentryTraceHeader, span.ToSentryTrace())
	// A continued trace's baggage goes on as the caller sent it (its
	// sampling context is frozen); as head, ours joins the caller's other
	// members. Never a child span's: its ToBaggage overwrites the frozen
	// context (sentry-go research §5.6).
	baggage := strings.Join(in.Header.Values(sentry.SentryBaggageHeader), ",")
	if st.headBaggage != "" {
		// As head, the caller's own sentry- members (a baggage without a
		// sentry-trace) are stale: only its other members stay.
		var kept []string
		for _, m := range strings.Split(baggage, ",") {
			if m = strings.TrimSpace(m); m != "" && !strings.HasPrefix(m, "sentry-") {
				kept = append(kept, m)
			}
		}
		baggage = strings.Join(append(kept, st.headBaggage), ",")
	}
	if baggage != "" {
		out.Header.Set(sentry.SentryBaggageHeader, baggage) // one line, like sentry-trace
	}
}

// finishTrace ends the spans of a traced request with its statuses.
func finishTrace(st *reqState, status int) {
	if st.span != nil {
		upstream := st.upstreamStatus
		if upstream == 0 {
			upstream = status
		}
		st.span.Status = sentry.HTTPtoSpanStatus(upstream)
		st.span.SetData("http.response.status_code", upstream)
		if st.errKind != "" {
			st.span.SetData("error.type", st.errKind)
		}
		st.span.Finish()
	}
	st.tx.Status = sentry.HTTPtoSpanStatus(status)
	st.tx.SetData("http.response.status_code", status)
	st.tx.SetContext(enrich.DSCContext, st.dscContext())
	st.tx.Finish()
}

// dscContext is the traced request's dynamic sampling context, from the
// root transaction (the caller's, frozen, when it continued a trace), as
// the context that carries it to the transport.
func (st *reqState) dscContext() sentry.Context {
	return enrich.StashDSC(st.dsc)
}
