package tunnel

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Options configures a Handler.
type Options struct {
	// Target is the real browser-project DSN envelopes go to. "" means
	// Sink only: nothing is sent anywhere.
	Target string
	// PlaceholderKey is the public key of the placeholder DSN the browser
	// config hands out (see PlaceholderKey). An envelope whose dsn names it
	// with Target's project is accepted whatever the host (the placeholder
	// names the page's own origin) and rewritten to Target. It must differ
	// from Target's key: browsers see it.
	PlaceholderKey string
	// Allowed are other DSNs the browser may name: accepted when scheme,
	// key, host, port, path and project are exactly those of an entry, and
	// rewritten to Target too.
	Allowed []string
	// Limits bound what is read and accepted; zero fields take their
	// DefaultLimits() value.
	Limits Limits
	// HTTPClient sends to Sentry. nil: the Handler's own, with
	// DefaultTimeout, the environment's proxy and redirects refused. A
	// given client is used with redirects refused too (a shallow copy with
	// its own CheckRedirect), since following one would let Sentry's answer
	// choose a host (shelf.nu PR #2874, tunnel.md §B3.1).
	HTTPClient *http.Client
	// Timeout bounds each call to Sentry with the Handler's own client; 0
	// means DefaultTimeout. A given HTTPClient keeps its own.
	Timeout time.Duration
	// ClientIP returns the trusted client address of a request (the
	// proxy's trusted-proxy rules); nil means RemoteAddr's host.
	ClientIP func(*http.Request) string
	// User returns the verified user of the request's token; nil, or a nil
	// result, means none.
	User func(*http.Request) *enrich.User
	// Scrub filters event, transaction and feedback items with enrich's
	// deny-list before they leave (enrich.ScrubEventMap).
	Scrub bool
	// Sink gets each accepted envelope when Target is "" (the local
	// inbox); the browser then gets 200 {}.
	Sink func(e *Envelope)
	// AllowedOrigins are the origins, exactly as browsers send them
	// ("https://app.example.com"), that may use the tunnel cross-origin.
	// None by default: same origin needs no CORS.
	AllowedOrigins []string
	// PerIP limits each client address (each IPv6 /64); zero is off.
	PerIP Rate
	// Registerer gets the metrics; nil means they are not registered.
	Registerer prometheus.Registerer
	// Log gets one line per rejected envelope, rate-limited per reason,
	// never a body; nil means zap.NewNop().
	Log *zap.Logger
	// Now is the clock of rate limits; nil means time.Now.
	Now func() time.Time
}

// DefaultTimeout bounds one envelope's round trip to Sentry with the
// Handler's own client.
const DefaultTimeout = 10 * time.Second

const (
	// maxUpstreamBody caps what is read of Sentry's answer: an id or an
	// error detail, never more.
	maxUpstreamBody = 64 << 10
	// maxSDKClient caps the sentry_client value taken from the envelope.
	maxSDKClient = 64
	// defaultSDKClient names the sender when the envelope does not.
	defaultSDKClient = "sentry-sidecar"
	// rejectLogBurst and rejectLogEvery bound the rejection log per reason:
	// a flood of bad envelopes writes a few lines a second, each saying
	// how many were not logged.
	rejectLogBurst = 5
	rejectLogEvery = time.Second
)

// relayInternalKeys are envelope header keys Relay reads as request
// metadata between trusted hops (RequestMeta flattened into the header,
// plus retention and feature flags): coming from a browser they would let a
// page choose the client IP or user agent Sentry records (tunnel.md §A2,
// §G.5). They are removed.
var relayInternalKeys = []string{
	"forwarded_for", "remote_addr", "user_agent", "client", "version", "origin",
	"no_cache", "client_hints", "retention", "downsampled_retention", "required_features",
}

// Outcomes of an envelope: the "outcome" label of
// sidecar_tunnel_envelopes_total.
const (
	OutcomeForwarded         = "forwarded"           // Sentry answered 2xx, or a 4xx other than 429
	OutcomeInbox             = "inbox"               // given to Sink
	OutcomeEmpty             = "empty"               // no items: answered 200 {}, nothing sent (Relay does the same)
	OutcomeRejectedMalformed = "rejected_malformed"  // 400
	OutcomeRejectedTooLarge  = "rejected_too_large"  // 413
	OutcomeRejectedEncoding  = "rejected_encoding"   // 415
	OutcomeRejectedDSN       = "rejected_dsn"        // 403
	OutcomeRateLimitedSentry = "rate_limited_sentry" // 429: Sentry's limit, answered by Sentry or locally
	OutcomeRateLimitedClient = "rate_limited_client" // 429: the per-IP limit
	OutcomeUpstreamError     = "upstream_error"      // 502/504: unreachable, timeout, 5xx, redirect
)

var outcomes = []string{
	OutcomeForwarded, OutcomeInbox, OutcomeEmpty, OutcomeRejectedMalformed, OutcomeRejectedTooLarge,
	OutcomeRejectedEncoding, OutcomeRejectedDSN, OutcomeRateLimitedSentry, OutcomeRateLimitedClient,
	OutcomeUpstreamError,
}

// knownItemTypes bound the "type" label of sidecar_tunnel_items_total;
// anything else counts as "other".
var knownItemTypes = []string{
	"event", "transaction", "attachment", "session", "sessions", "client_report",
	"replay_event", "replay_recording", "replay_video", "profile", "profile_chunk",
	"check_in", "feedback", "user_report", "log", "span", "trace_metric", "otel_log",
}

// Handler is a Sentry tunnel endpoint: see New.
type Handler struct {
	target         *sentry.Dsn // nil: Sink only
	targetURL      string
	targetDSN      string // Target without its secret, as written into envelope headers
	targetKey      string
	placeholderKey string
	allowed        []*sentry.Dsn
	limits         Limits
	client         *http.Client
	ownTransport   *http.Transport
	clientIP       func(*http.Request) string
	user           func(*http.Request) *enrich.User
	scrub          bool
	sink           func(*Envelope)
	origins        map[string]bool
	allow          string // the Allow header of a 405
	perIP          *clientLimiter
	sentryLimits   sentryLimits
	m              *metrics
	log            *zap.Logger
	logs           *logThrottle
	now            func() time.Time
}

var _ http.Handler = (*Handler)(nil)

// New returns a tunnel handler: POST an envelope the browser SDK built
// (Sentry.init({tunnel: "/path"})) and it is checked, cleaned and sent to
// Target, or given to Sink. The envelope never chooses where it goes: the
// only URL ever called is Target's envelope endpoint.
func New(o Options) (*Handler, error) {
	h := &Handler{
		placeholderKey: o.PlaceholderKey,
		limits:         o.Limits,
		clientIP:       o.ClientIP,
		user:           o.User,
		scrub:          o.Scrub,
		sink:           o.Sink,
		allow:          http.MethodPost,
		log:            o.Log,
		now:            o.Now,
	}
	if h.clientIP == nil {
		h.clientIP = remoteHost
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.now == nil {
		h.now = time.Now
	}
	var problems []error
	if o.Target != "" {
		d, err := parseDSN(o.Target)
		if err != nil {
			problems = append(problems, fmt.Errorf("Target: %w", err))
		} else {
			h.target = d
			h.targetKey = d.GetPublicKey()
			h.targetURL = apiURL(d)
			h.targetDSN = publicDSN(d)
			if o.PlaceholderKey != "" && o.PlaceholderKey == h.targetKey {
				problems = append(problems, errors.New("PlaceholderKey: must differ from Target's public key, which browsers must never see"))
			}
		}
	} else if o.Sink == nil {
		problems = append(problems, errors.New("Target or Sink: one is needed"))
	}
	for i, a := range o.Allowed {
		d, err := parseDSN(a)
		if err != nil {
			problems = append(problems, fmt.Errorf("Allowed[%d]: %w", i, err))
			continue
		}
		h.allowed = append(h.allowed, d)
	}
	if r := o.PerIP; !r.off() && (r.Burst <= 0 || r.Every <= 0 || r.MaxClients < 0) {
		problems = append(problems, fmt.Errorf("PerIP: Burst and Every must both be positive (or both zero for off), got %d and %v", r.Burst, r.Every))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("tunnel: %w", errors.Join(problems...))
	}
	h.perIP = newClientLimiter(o.PerIP)
	if len(o.AllowedOrigins) > 0 {
		h.origins = make(map[string]bool, len(o.AllowedOrigins))
		for _, origin := range o.AllowedOrigins {
			h.origins[origin] = true
		}
		h.allow = http.MethodPost + ", " + http.MethodOptions
	}

	if o.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32 // browser traffic comes in bursts (page unloads)
		h.ownTransport = t
		h.client = &http.Client{Transport: t, Timeout: cmp.Or(o.Timeout, DefaultTimeout)}
	} else {
		c := *o.HTTPClient
		h.client = &c
	}
	h.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	h.m = m
	h.logs = &logThrottle{rate: Rate{Burst: rejectLogBurst, Every: rejectLogEvery}, kinds: map[string]*throttled{}}
	return h, nil
}

// Close releases the idle connections of the Handler's own client; a given
// HTTPClient is left alone. Requests in flight finish.
func (h *Handler) Close() {
	if h.ownTransport != nil {
		h.ownTransport.CloseIdleConnections()
	}
}

// parseDSN parses a configured DSN. The error never quotes it: a DSN holds a
// key (url.Parse's errors repeat their input).
func parseDSN(s string) (*sentry.Dsn, error) {
	d, err := sentry.NewDsn(s)
	if err != nil {
		var pe *sentry.DsnParseError
		if errors.As(err, &pe) && !strings.HasPrefix(pe.Message, "invalid url") {
			return nil, fmt.Errorf("not a valid DSN: %s", pe.Message)
		}
		return nil, errors.New("not a valid DSN: not a URL")
	}
	if _, err := strconv.ParseUint(d.GetProjectID(), 10, 64); err != nil {
		return nil, errors.New("not a valid DSN: the project id must be a number")
	}
	return d, nil
}

// apiURL is the envelope endpoint of d:
// {scheme}://{host}[:{port}]{path}/api/{project}/envelope/. GetAPIURL does
// not bracket an IPv6 host, so that case is built here.
func apiURL(d *sentry.Dsn) string {
	if !strings.Contains(d.GetHost(), ":") {
		return d.GetAPIURL().String()
	}
	return d.GetScheme() + "://" + hostPort(d) + d.GetPath() + "/api/" + d.GetProjectID() + "/envelope/"
}

// publicDSN is d without its secret, as the JS SDK's dsnToString writes a
// DSN into envelope headers: {scheme}://{key}@{host}[:{port}]{path}/{project}.
func publicDSN(d *sentry.Dsn) string {
	return d.GetScheme() + "://" + url.User(d.GetPublicKey()).String() + "@" + hostPort(d) + d.GetPath() + "/" + d.GetProjectID()
}

// hostPort is d's host, bracketed if IPv6, with its port unless it is the
// scheme's default.
func hostPort(d *sentry.Dsn) string {
	host := d.GetHost()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if (d.GetScheme() == "https" && d.GetPort() == 443) || (d.GetScheme() == "http" && d.GetPort() == 80) {
		return host
	}
	return host + ":" + strconv.Itoa(d.GetPort())
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ServeHTTP takes one envelope.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	corsOK := h.cors(w.Header(), r)
	switch {
	case r.Method == http.MethodPost:
	case r.Method == http.MethodOptions && corsOK:
		preflight(w)
		return
	default:
		// OPTIONS from an origin not allowed is a 405 like any other
		// method: the tunnel has nothing to offer it.
		w.Header().Set("Allow", h.allow)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed", nil)
		return
	}
	start := h.now()
	outcome := h.serve(w, r)
	h.m.envelopes.WithLabelValues(outcome).Inc()
	h.m.duration.Observe(h.now().Sub(start).Seconds())
}

// serve checks, cleans and delivers one envelope, cheapest checks first,
// and returns its outcome. Nothing is sent before every check passed.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) string {
	ip := h.clientIP(r)
	if h.perIP != nil {
		if ok, wait := h.perIP.allow(clientKey(ip), h.now()); !ok {
			// An empty category list limits every category (rate-limiting.mdx),
			// which is what this limit is.
			secs := seconds(wait)
			w.Header().Set("Retry-After", secs)
			w.Header().Set("X-Sentry-Rate-Limits", secs+"::organization")
			h.logReject(OutcomeRateLimitedClient, zap.String("client_ip", ip))
			writeError(w, http.StatusTooManyRequests, "too many envelopes from this client", nil)
			return OutcomeRateLimitedClient
		}
	}

	body, err := ReadBody(r, h.limits)
	if err != nil {
		return h.rejectBody(w, ip, err)
	}
	h.m.bytes.WithLabelValues("in").Add(float64(len(body)))
	env, err := Parse(body)
	if err != nil {
		return h.rejectBody(w, ip, err)
	}
	if why, ok := h.acceptDSN(env.Header); !ok {
		h.logReject(OutcomeRejectedDSN, zap.String("client_ip", ip), zap.String("dsn_without_key", why))
		writeError(w, http.StatusForbidden, "dsn not allowed", nil)
		return OutcomeRejectedDSN
	}
	if err := h.limits.Check(env); err != nil {
		return h.rejectBody(w, ip, err)
	}
	if len(env.Items) == 0 {
		// "Without Items, an Envelope is considered empty and can safely be
		// discarded" (envelopes.mdx); Relay answers 200.
		writeJSON(w, http.StatusOK, struct{}{})
		return OutcomeEmpty
	}
	for _, it := range env.Items {
		h.m.items.WithLabelValues(itemLabel(it.Type)).Inc()
	}
	h.rewriteHeader(env)

	if h.target != nil {
		if wait, limited := h.dropLimited(env); limited {
			w.Header().Set("Retry-After", seconds(wait))
			if v := h.sentryLimits.header(h.now()); v != "" {
				w.Header().Set("X-Sentry-Rate-Limits", v)
			}
			writeError(w, http.StatusTooManyRequests, "sentry rate limit in force", nil)
			return OutcomeRateLimitedSentry
		}
	}
	if err := h.enrich(env, r, ip); err != nil {
		h.logReject(OutcomeRejectedMalformed, zap.String("client_ip", ip), zap.String("error", err.Error()))
		writeError(w, http.StatusBadRequest, "invalid envelope", []string{err.Error()})
		return OutcomeRejectedMalformed
	}

	if h.target == nil {
		h.m.bytes.WithLabelValues("out").Add(float64(len(env.Bytes())))
		h.sink(env)
		writeJSON(w, http.StatusOK, struct{}{})
		return OutcomeInbox
	}
	return h.forward(w, r, env, ip)
}

// rejectBody answers an envelope that could not be read, parsed or fit the
// limits: 413 naming the limit, 415 for an encoding, 400 with Relay's
// {"detail","causes"} for anything else.
func (h *Handler) rejectBody(w http.ResponseWriter, ip string, err error) string {
	var tooLarge *TooLargeError
	var encoding *UnsupportedEncodingError
	var parse *ParseError
	switch {
	case errors.As(err, &tooLarge):
		// Relay's wording ("envelope exceeded size limits for type ..."),
		// naming the limit: body, decompressed, items or item:<type>.
		limit := printable(tooLarge.Limit, 64)
		h.logReject(OutcomeRejectedTooLarge, zap.String("client_ip", ip), zap.String("limit", limit), zap.Int64("max", tooLarge.Max))
		writeError(w, http.StatusRequestEntityTooLarge, "envelope exceeded size limits ("+limit+")", []string{printable(tooLarge.Error(), 200)})
		return OutcomeRejectedTooLarge
	case errors.As(err, &encoding):
		h.logReject(OutcomeRejectedEncoding, zap.String("client_ip", ip), zap.String("encoding", printable(encoding.Encoding, 32)))
		writeError(w, http.StatusUnsupportedMediaType, "unsupported content encoding", []string{printable(encoding.Encoding, 32)})
		return OutcomeRejectedEncoding
	case errors.As(err, &parse):
		causes := make([]string, len(parse.Causes))
		for i, c := range parse.Causes {
			causes[i] = printable(c, 200)
		}
		h.logReject(OutcomeRejectedMalformed, zap.String("client_ip", ip), zap.Strings("causes", causes))
		writeError(w, http.StatusBadRequest, "invalid envelope", causes)
		return OutcomeRejectedMalformed
	default:
		cause := printable(err.Error(), 200)
		h.logReject(OutcomeRejectedMalformed, zap.String("client_ip", ip), zap.String("error", cause))
		writeError(w, http.StatusBadRequest, "invalid envelope", []string{cause})
		return OutcomeRejectedMalformed
	}
}

// acceptDSN decides whether the envelope may go to Target. Its header's
// dsn must be the placeholder (PlaceholderKey with Target's project, any
// host: it names the page's own origin) or exactly an Allowed DSN; no dsn
// at all means Target (Relay would then authenticate by X-Sentry-Auth,
// which the tunnel sets). Anything else, unparsable included, is refused:
// the allow-list is what keeps the tunnel from being an open relay into
// other projects (tunnel.md §B3.2). On refusal why names the DSN's host and
// project, never its key, for the log.
func (h *Handler) acceptDSN(header map[string]any) (why string, ok bool) {
	v, present := header["dsn"]
	if !present || v == nil {
		return "", true
	}
	s, isString := v.(string)
	if !isString {
		return "not a string", false
	}
	d, err := sentry.NewDsn(s)
	if err != nil {
		return "unparsable", false
	}
	if h.isPlaceholder(d) {
		return "", true
	}
	for _, a := range h.allowed {
		if sameDSN(a, d) {
			return "", true
		}
	}
	return fmt.Sprintf("%s://%s/%s", d.GetScheme(), printable(net.JoinHostPort(d.GetHost(), strconv.Itoa(d.GetPort())), 100), printable(d.GetProjectID(), 20)), false
}

func (h *Handler) isPlaceholder(d *sentry.Dsn) bool {
	if h.placeholderKey == "" || d.GetPublicKey() != h.placeholderKey {
		return false
	}
	// Without a Target any project will do: the inbox has no project.
	return h.target == nil || d.GetProjectID() == h.target.GetProjectID()
}

// sameDSN compares DSNs as sentry-go normalises them (default port filled
// in), ignoring the secret and the host's case.
func sameDSN(a, b *sentry.Dsn) bool {
	return a.GetPublicKey() == b.GetPublicKey() && a.GetScheme() == b.GetScheme() &&
		strings.EqualFold(a.GetHost(), b.GetHost()) && a.GetPort() == b.GetPort() &&
		a.GetPath() == b.GetPath() && a.GetProjectID() == b.GetProjectID()
}

// mappedKey reports whether a trace.public_key is one the tunnel stands in
// for. Another key stays: a trace started by a backend carries that
// backend's key, and it is Sentry's business.
func (h *Handler) mappedKey(k string) bool {
	if k == "" {
		return false
	}
	if k == h.placeholderKey {
		return true
	}
	for _, a := range h.allowed {
		if a.GetPublicKey() == k {
			return true
		}
	}
	return false
}

// rewriteHeader rewrites the envelope header line, and only it (the items'
// bytes are untouched, as sentry-mirror does): dsn becomes Target without
// its secret, a trace.public_key of the placeholder or an allowed DSN
// becomes Target's key, and Relay-internal keys go. A header that needs
// none of this keeps its bytes.
func (h *Handler) rewriteHeader(env *Envelope) {
	hdr := make(map[string]any, len(env.Header))
	for k, v := range env.Header {
		hdr[k] = v
	}
	changed := false
	for _, k := range relayInternalKeys {
		if _, ok := hdr[k]; ok {
			delete(hdr, k)
			changed = true
		}
	}
	if h.target != nil {
		if v, ok := hdr["dsn"]; ok && v != h.targetDSN {
			hdr["dsn"] = h.targetDSN
			changed = true
		}
		if trace, ok := hdr["trace"].(map[string]any); ok {
			if pk, _ := trace["public_key"].(string); h.mappedKey(pk) {
				t := make(map[string]any, len(trace))
				for k, v := range trace {
					t[k] = v
				}
				t["public_key"] = h.targetKey
				hdr["trace"] = t
				changed = true
			}
		}
	}
	if changed {
		env.SetHeader(hdr)
	}
}

// dropLimited applies the rate limits Sentry announced, as Relay does
// before forwarding (tunnel.md §C3): items of a limited category are
// dropped; when nothing is left the envelope is limited as a whole and wait
// is the longest time left on its categories (Relay's Retry-After).
func (h *Handler) dropLimited(env *Envelope) (wait time.Duration, limited bool) {
	now := h.now()
	kept := env.Items[:0:0]
	for _, it := range env.Items {
		until := h.sentryLimits.until(it.Category())
		if until.After(now) {
			wait = max(wait, until.Sub(now))
			continue
		}
		kept = append(kept, it)
	}
	switch {
	case len(kept) == 0:
		return wait, true
	case len(kept) < len(env.Items):
		env.Items = kept // Bytes notices the removal; the other items keep their bytes
	}
	return 0, false
}

// enrich sets the verified user on event items and scrubs event,
// transaction and feedback items. Only those items are decoded and
// re-encoded (with a new length); every other item keeps its bytes. An item
// that must be changed but is not a JSON object refuses the envelope: it
// could not be scrubbed, and Sentry could not read it either.
func (h *Handler) enrich(env *Envelope, r *http.Request, ip string) error {
	var user *enrich.User
	if h.user != nil {
		user = h.user(r)
	}
	var users, scrubbed int
	for i, it := range env.Items {
		setUser := user != nil && it.Type == "event"
		scrub := h.scrub && (it.Type == "event" || it.Type == "transaction" || it.Type == "feedback")
		if !setUser && !scrub {
			continue
		}
		var u any
		if setUser {
			// The page's own user (whatever it claims) is replaced.
			u = user.Sentry(ip)
			users++
		}
		if scrub {
			scrubbed++
		}
		p, err := rewriteEvent(it.Payload, u, scrub)
		if err != nil {
			return fmt.Errorf("item %d (%s): %w", i, it.Type, err)
		}
		it.SetPayload(p)
	}
	h.m.usersSet.Add(float64(users))
	h.m.scrubbed.Add(float64(scrubbed))
	return nil
}

// forward sends the envelope to Target and relays the answer. The send is
// not tied to the browser's request: a page that unloads meanwhile should
// not lose its error; the client's timeout bounds it.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, env *Envelope, ip string) string {
	body := env.Bytes()
	req, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), http.MethodPost, h.targetURL, bytes.NewReader(body))
	if err != nil {
		// Only a broken targetURL gets here, and New checked it.
		writeError(w, http.StatusBadGateway, "sentry unreachable", nil)
		return OutcomeUpstreamError
	}
	req.Header = h.upstreamHeader(r, env, ip)
	h.m.bytes.WithLabelValues("out").Add(float64(len(body)))
	res, err := h.client.Do(req)
	if err != nil {
		status, detail, code := http.StatusBadGateway, "sentry unreachable", "unreachable"
		if isTimeout(err) {
			status, detail, code = http.StatusGatewayTimeout, "sentry did not answer in time", "timeout"
		}
		h.m.upstream.WithLabelValues(code).Inc()
		h.logUpstream(code, ip, zap.String("error", h.redact(err.Error())))
		writeError(w, status, detail, nil)
		return OutcomeUpstreamError
	}
	defer res.Body.Close()
	answer, readErr := io.ReadAll(io.LimitReader(res.Body, maxUpstreamBody))
	now := h.now()
	h.sentryLimits.update(res.StatusCode, res.Header, now)
	h.m.upstream.WithLabelValues(statusClass(res.StatusCode)).Inc()

	hdr := w.Header()
	for _, k := range []string{"Retry-After", "X-Sentry-Rate-Limits"} {
		if v := res.Header.Get(k); v != "" {
			hdr.Set(k, h.redact(v))
		}
	}
	if hdr.Get("X-Sentry-Rate-Limits") == "" {
		// Limits still in force (those that dropped items of this envelope,
		// say) are told on every answer, as Relay does.
		if v := h.sentryLimits.header(now); v != "" {
			hdr.Set("X-Sentry-Rate-Limits", v)
		}
	}

	switch s := res.StatusCode; {
	case s >= 200 && s <= 299, s >= 400 && s <= 499:
		// Sentry's own answer: its status and body ({"id":...} or
		// {"detail":...}) are what an SDK posting directly would get, so
		// 429 stays 429 and 413 stays 413.
		if readErr != nil {
			answer = nil // a cut answer is no answer
		}
		if len(answer) == 0 {
			answer = []byte("{}")
		}
		ct := res.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/json"
		}
		hdr.Set("Content-Type", ct)
		hdr.Set("X-Content-Type-Options", "nosniff")
		if s >= 400 {
			hdr.Set("X-Sentry-Error", printable(h.redact(detailOf(answer, s)), 200))
		}
		w.WriteHeader(s)
		_, _ = w.Write(h.redactBytes(answer))
		if s == http.StatusTooManyRequests {
			h.logUpstream("429", ip)
			return OutcomeRateLimitedSentry
		}
		return OutcomeForwarded
	case s >= 300 && s <= 399:
		// Never followed (CheckRedirect) and never passed on: a 3xx turned
		// into the browser's problem would be a redirect the envelope chose.
		h.logUpstream("redirect", ip, zap.Int("status", s))
		writeError(w, http.StatusBadGateway, "sentry answered a redirect; not followed", nil)
		return OutcomeUpstreamError
	default:
		// Sentry's 5xx status goes back as it is (the browser SDK treats it
		// as a send error and does not retry, tunnel.md §A4), but not its
		// body, often a load balancer's HTML page. Retry-After and rate
		// limits were copied above, so a browser backs off when asked.
		h.logUpstream(statusClass(s), ip, zap.Int("status", s))
		writeError(w, s, "sentry answered "+strconv.Itoa(s), nil)
		return OutcomeUpstreamError
	}
}

// upstreamHeader is the whole header sent to Sentry: nothing of the
// browser's request is copied but its User-Agent (for Sentry's inbound
// filters) and Content-Type; the client IP is the trusted one, never the
// browser's own X-Forwarded-For (tunnel.md §B3.4, §G.5).
func (h *Handler) upstreamHeader(r *http.Request, env *Envelope, ip string) http.Header {
	hd := make(http.Header, 6)
	hd.Set("X-Sentry-Auth", "Sentry sentry_version=7, sentry_key="+h.targetKey+", sentry_client="+sdkClient(env.Header))
	hd.Set("Content-Type", contentType(r.Header.Get("Content-Type")))
	// An empty value makes net/http send no User-Agent rather than its own.
	hd["User-Agent"] = []string{r.Header.Get("User-Agent")}
	if ip != "" {
		hd.Set("X-Forwarded-For", ip)
		hd.Set("X-Sentry-Forwarded-For", ip)
	}
	return hd
}

// contentType keeps the browser's Content-Type when Relay takes it as an
// envelope (text/plain from cross-origin SDKs, issue
// getsentry/sentry-javascript#4640); binary bodies come without one.
func contentType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil && (mt == "application/x-sentry-envelope" || mt == "text/plain") {
		return ct
	}
	return "application/x-sentry-envelope"
}

// sdkClient is the sender named in X-Sentry-Auth: the envelope's
// sdk.name/sdk.version, limited to characters that cannot end the value or
// add another field to the header.
func sdkClient(header map[string]any) string {
	sdk, _ := header["sdk"].(map[string]any)
	name, _ := sdk["name"].(string)
	version, _ := sdk["version"].(string)
	s := name
	if name != "" && version != "" {
		s += "/" + version
	}
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._-/+@:", r):
			return r
		}
		return -1
	}, s)
	if len(s) > maxSDKClient {
		s = s[:maxSDKClient]
	}
	if s == "" {
		return defaultSDKClient
	}
	return s
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// statusClass is the "code" label of sidecar_tunnel_upstream_responses_total:
// the class, with 429 on its own.
func statusClass(s int) string {
	if s == http.StatusTooManyRequests {
		return "429"
	}
	if s < 100 || s > 599 {
		return "other"
	}
	return strconv.Itoa(s/100) + "xx"
}

func itemLabel(t string) string {
	if slices.Contains(knownItemTypes, t) {
		return t
	}
	return "other"
}

// detailOf takes the "detail" of Sentry's error body, else the status text.
func detailOf(body []byte, status int) string {
	var e struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &e) == nil && e.Detail != "" {
		return e.Detail
	}
	return http.StatusText(status)
}

// redact removes Target's key from text bound for the browser or the log:
// Sentry has no reason to echo it, and it must never leave.
func (h *Handler) redact(s string) string {
	if h.targetKey == "" || !strings.Contains(s, h.targetKey) {
		return s
	}
	return strings.ReplaceAll(s, h.targetKey, enrich.Filtered)
}

func (h *Handler) redactBytes(b []byte) []byte {
	if h.targetKey == "" || !bytes.Contains(b, []byte(h.targetKey)) {
		return b
	}
	return bytes.ReplaceAll(b, []byte(h.targetKey), []byte(enrich.Filtered))
}

// printable makes text from the envelope or the network safe for a header,
// a log line and a JSON answer: control characters become spaces and it is
// cut to n bytes.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}

type errorBody struct {
	Detail string   `json:"detail"`
	Causes []string `json:"causes,omitempty"`
}

// writeError answers Relay's way (ApiErrorResponse, tunnel.md §C2), with
// the detail in X-Sentry-Error too.
func writeError(w http.ResponseWriter, status int, detail string, causes []string) {
	w.Header().Set("X-Sentry-Error", detail)
	writeJSON(w, status, errorBody{Detail: detail, Causes: causes})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// logReject logs a rejected envelope (never its body), at most a few lines
// a second per reason.
func (h *Handler) logReject(kind string, fields ...zap.Field) {
	if n, ok := h.logs.allow(kind, h.now()); ok {
		h.log.Info("tunnel: envelope rejected", append(fields, zap.String("reason", kind), zap.Int("suppressed", n))...)
	}
}

func (h *Handler) logUpstream(kind, ip string, fields ...zap.Field) {
	if n, ok := h.logs.allow("upstream_"+kind, h.now()); ok {
		h.log.Warn("tunnel: sentry did not take the envelope",
			append(fields, zap.String("reason", kind), zap.String("client_ip", ip), zap.Int("suppressed", n))...)
	}
}

// logThrottle is a token bucket per log reason; it counts the lines it
// swallowed and reports them with the next one it lets through.
type logThrottle struct {
	rate  Rate
	mu    sync.Mutex
	kinds map[string]*throttled // bounded: the reasons are constants
}

type throttled struct {
	b          bucket
	suppressed int
}

func (l *logThrottle) allow(kind string, now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.kinds[kind]
	if t == nil {
		t = &throttled{b: newBucket(l.rate, now)}
		l.kinds[kind] = t
	}
	if ok, _ := t.b.take(l.rate, now); !ok {
		t.suppressed++
		return 0, false
	}
	n := t.suppressed
	t.suppressed = 0
	return n, true
}

type metrics struct {
	envelopes *prometheus.CounterVec
	items     *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	upstream  *prometheus.CounterVec
	duration  prometheus.Histogram
	usersSet  prometheus.Counter
	scrubbed  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		envelopes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_tunnel_envelopes_total",
			Help: "Envelopes posted to the tunnel, by outcome.",
		}, []string{"outcome"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_tunnel_items_total",
			Help: "Items of envelopes that passed parsing, the DSN check and the size limits, by item type (other types as \"other\").",
		}, []string{"type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_tunnel_bytes_total",
			Help: "Envelope bytes: in = decoded bodies read from browsers, out = bodies sent to Sentry or the inbox.",
		}, []string{"direction"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_tunnel_upstream_responses_total",
			Help: "Sentry's answers to tunneled envelopes by status class (429 on its own), or timeout / unreachable.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sidecar_tunnel_duration_seconds",
			Help:    "Time to answer one tunnel POST, Sentry's round trip included.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		usersSet: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_tunnel_users_set_total",
			Help: "Event items given the verified user of the request's token.",
		}),
		scrubbed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_tunnel_items_scrubbed_total",
			Help: "Event, transaction and feedback items passed through the scrubber.",
		}),
	}
	for _, o := range outcomes {
		m.envelopes.WithLabelValues(o)
	}
	for _, d := range []string{"in", "out"} {
		m.bytes.WithLabelValues(d)
	}
	for _, c := range []string{"2xx", "429", "4xx", "5xx", "timeout", "unreachable"} {
		m.upstream.WithLabelValues(c)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.envelopes, m.items, m.bytes, m.upstream, m.duration, m.usersSet, m.scrubbed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register tunnel metrics: %w", err)
		}
	}
	return m, nil
}
