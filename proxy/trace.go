package proxy

import (
	"math/rand/v2"
	"net/http"
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

func (s *sampler) sampled(h http.Header, method, route string) bool {
	// The canonical key: Header.Get would canonicalise "sentry-trace" into
	// a new string on every request.
	if v := h["Sentry-Trace"]; len(v) > 0 {
		switch sampledFlag(v[0]) {
		case '1':
			return true
		case '0':
			return false
		}
	}
	rate := s.rate
	for _, r := range s.rules {
		if r.Route == route && (r.Method == "" || r.Method == method) {
			rate = r.Rate
			break
		}
	}
	return rate > 0 && (rate >= 1 || rand.Float64() < rate)
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
func (p *Proxy) startTransaction(r *http.Request, st *reqState) *http.Request {
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
	tx.SetData("url.path", st.path)
	st.hub, st.tx = hub, tx
	return r.WithContext(tx.Context())
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

	out.Header.Del(sentry.SentryTraceHeader)
	out.Header.Del(sentry.SentryBaggageHeader)
	out.Header.Set(sentry.SentryTraceHeader, span.ToSentryTrace())
	// The root's baggage: a child's ToBaggage overwrites the frozen
	// sampling context of the browser (sentry-go research §5.6).
	baggage, err := sentry.MergeBaggage(strings.Join(in.Header.Values(sentry.SentryBaggageHeader), ","), st.tx.ToBaggage())
	if err != nil {
		baggage = st.tx.ToBaggage()
	}
	if baggage != "" {
		out.Header.Set(sentry.SentryBaggageHeader, baggage)
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
	if dsc := st.dsc(); dsc != nil {
		st.tx.SetContext(enrich.DSCContext, dsc)
	}
	st.tx.Finish()
}

// dsc is the traced request's dynamic sampling context, from the root
// transaction: the caller's, frozen, when it continued a trace.
func (st *reqState) dsc() sentry.Context {
	return enrich.DSCFromBaggage(st.tx.ToBaggage())
}
