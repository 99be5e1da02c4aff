// Package proxy is the sidecar's reverse proxy: it passes every request to
// the upstream API unchanged, streams bodies both ways, answers upstream
// failures with small JSON errors, and records each request for logs and
// metrics. It is an http.Handler, so it can run inside another Go server.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Config is what the proxy needs to know about its upstream.
type Config struct {
	// Upstream is the API's base URL; its path, if any, prefixes every
	// request path.
	Upstream *url.URL
	// PreserveHost sends the client's Host instead of the upstream's.
	PreserveHost bool
	// TrustedProxies are the peers whose X-Forwarded-* headers are believed.
	TrustedProxies []netip.Prefix
	// DialTimeout bounds connecting to the upstream.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers; zero is
	// no bound.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes pooled connections unused this long.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost is the pool size kept for the upstream.
	MaxIdleConnsPerHost int
	// HealthPath is probed with GET by Probe; empty means a TCP connect.
	HealthPath string
	// Report says what to tell Sentry; the zero value tells nothing.
	Report Report
}

// RequestIDHeader carries the request's id to the upstream and back to the
// client.
// It is written in canonical form so that Header.Get and Set do not
// canonicalise it into a new string on every request.
const RequestIDHeader = "X-Request-Id"

// Proxy forwards requests to one upstream.
type Proxy struct {
	cfg       Config
	rp        *httputil.ReverseProxy
	transport *http.Transport
	trusted   trustedNets
	log       *zap.Logger
	metrics   *metrics
	now       func() time.Time

	headDSC       map[string]string // what a trace the sidecar heads says of its sender
	reportMetrics *reportMetrics
	routeMetrics  *routeMetrics
	throttle      *throttle
	sampler       sampler
	actions       actions

	mu       sync.Mutex
	upgraded map[*upgradedConn]struct{}
	handlers sync.WaitGroup // requests being served, for Wait
	lastWarn sync.Map       // error kind → *atomic.Int64, unix nanoseconds of its last warning
}

var _ http.Handler = (*Proxy)(nil)

// New returns a proxy for cfg that logs to log and registers its metrics
// with reg.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Proxy, error) {
	if cfg.Upstream == nil || cfg.Upstream.Host == "" {
		return nil, errors.New("proxy: upstream URL has no host")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", err)
	}
	rm, err := newReportMetrics(reg, &cfg.Report)
	if err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", err)
	}
	if cfg.Report.MaxRoutes <= 0 {
		cfg.Report.MaxRoutes = 100
	}
	// The proxy keeps its own copy: the action series are keyed by pointer.
	cfg.Report.Actions = append([]Action(nil), cfg.Report.Actions...)
	routes, err := newRouteMetrics(reg, cfg.Report.MaxRoutes, cfg.Report.Actions)
	if err != nil {
		return nil, fmt.Errorf("proxy: register metrics: %w", err)
	}
	p := &Proxy{
		cfg:       cfg,
		transport: newTransport(cfg),
		trusted:   trustedNets(cfg.TrustedProxies),
		log:       log,
		metrics:   m,
		now:       time.Now,
		upgraded:  map[*upgradedConn]struct{}{},

		reportMetrics: rm,
		routeMetrics:  routes,
		sampler:       newSampler(cfg.Report.TracesSampleRate, cfg.Report.TracesSampler, cfg.Report.Routes),
		actions:       newActions(cfg.Report.Actions, cfg.Report.Routes),
	}
	if c := cfg.Report.Client; c != nil {
		p.headDSC = map[string]string{}
		o := c.Options()
		if dsn, err := sentry.NewDsn(o.Dsn); err == nil {
			p.headDSC["public_key"] = dsn.GetPublicKey()
		}
		if o.Release != "" {
			p.headDSC["release"] = o.Release
		}
		if o.Environment != "" {
			p.headDSC["environment"] = o.Environment
		}
	}
	p.throttle = newThrottle(cfg.Report.Throttle, func() time.Time { return p.now() })
	p.rp = &httputil.ReverseProxy{
		// Rewrite, not Director: with Director a client can strip headers
		// the proxy adds by naming them in Connection (golang/go#50580).
		Rewrite:        p.rewrite,
		Transport:      p.transport,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		BufferPool:     copyBuffers{},
		// The stdlib logs copy errors here ("read error during body copy");
		// they are already classified and counted, so debug is enough.
		ErrorLog: mustStdLogAt(log.Named("httputil"), zapcore.DebugLevel),
	}
	return p, nil
}

// copyBufferSize is the size of the buffer ReverseProxy copies a body
// through, the size it allocates without a BufferPool.
const copyBufferSize = 32 << 10

// copyBufferPool holds the copy buffers of finished responses.
var copyBufferPool = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// copyBuffers reuses ReverseProxy's copy buffers. Without a pool every
// response allocates 32 KiB, most of what a small proxied request
// allocates in bytes, and the garbage collector runs that much more often:
// under load the bare proxy spent about a fifth of its CPU on collection
// (BENCHMARKS.md). Pointers to arrays go into the pool, so neither Get nor
// Put allocates.
type copyBuffers struct{}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[copyBufferSize]byte)[:] }

func (copyBuffers) Put(b []byte) {
	if len(b) == copyBufferSize {
		copyBufferPool.Put((*[copyBufferSize]byte)(b))
	}
}

func mustStdLogAt(log *zap.Logger, level zapcore.Level) *stdlog.Logger {
	l, err := zap.NewStdLogAt(log, level)
	if err != nil {
		panic(err) // only for an invalid level constant
	}
	return l
}

// newTransport is a pool tuned for one upstream. The default transport keeps
// two idle connections per host, which under load churns connections until
// ports run out (golang/go#6785).
func newTransport(cfg Config) *http.Transport {
	// Zero values get the sidecar's defaults, not net/http's (two idle
	// connections, the system's dial timeout), for programs that embed the
	// proxy without the config package.
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 64
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.IdleConnTimeout <= 0 {
		cfg.IdleConnTimeout = 90 * time.Second
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	// The upstream sits beside the sidecar; HTTP_PROXY from the environment
	// must not reroute it.
	t.Proxy = nil
	t.DialContext = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = cfg.MaxIdleConnsPerHost
	t.IdleConnTimeout = cfg.IdleConnTimeout
	t.ResponseHeaderTimeout = cfg.ResponseHeaderTimeout
	// Pass Accept-Encoding as the client sent it: with compression on, the
	// transport would ask for gzip itself and hand the client a decoded body.
	t.DisableCompression = true
	return t
}

// reqState is what the proxy learns about one request as it passes; the
// callbacks of httputil.ReverseProxy find it in the request context.
type reqState struct {
	id          string
	clientIP    netip.Addr
	peerTrusted bool
	start       time.Time
	upstreamDur time.Duration
	errKind     string
	body        *bodyReader

	path           string       // as the client sent it
	ignored        bool         // path is in ignore_paths: no event, no transaction
	captured       bool         // the upstream's status is one to report
	user           *enrich.User // from a valid token; nil: anonymous
	userVal        enrich.User  // storage for user, saving an allocation
	upstreamStatus int
	contentType    string
	tee            *teeBody // set when the answer will be reported

	ip string // clientIP as text, see ipString
	// hdr holds the values of the headers the proxy sets (X-Real-Ip and
	// X-Request-Id upstream, X-Request-Id back), so that setting them
	// allocates nothing (they were 3 of the 7 allocations the sidecar
	// added to a request). Each header gets a slice whose capacity ends
	// at its element, so that an Add copies rather than overwrites the
	// next.
	hdr         [3]string
	rec         recorder          // the response writer, kept here to save an allocation
	route       string            // the path's route template
	action      *Action           // the configured action of the route, if any
	fields      map[string]any    // the action's allowed request fields
	hub         *sentry.Hub       // set when the request is traced
	tx          *sentry.Span      // its transaction
	span        *sentry.Span      // its upstream call
	dsc         map[string]string // the trace's sampling context (see traceContext)
	headBaggage string            // dsc as baggage, when the sidecar heads the trace
}

// ipString is the client address as text, made once per request. When the
// peer is the client, it is the host part of RemoteAddr, which costs no
// allocation.
func (st *reqState) ipString(remoteAddr string) string {
	if st.ip != "" || !st.clientIP.IsValid() {
		return st.ip
	}
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil && !st.peerTrusted &&
		(st.clientIP.Is6() || !strings.Contains(host, ":")) {
		st.ip = host
	} else {
		st.ip = st.clientIP.String()
	}
	return st.ip
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	s, _ := ctx.Value(stateKey{}).(*reqState)
	return s
}

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := &reqState{id: requestID(r.Header.Get(RequestIDHeader)), start: p.now(), path: r.URL.Path}
	st.clientIP, st.peerTrusted = p.trusted.clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"])
	if v := p.cfg.Report.Users; v != nil {
		u, outcome := v.User(enrich.TokenFromRequest(r.Header, p.cfg.Report.Cookie))
		p.reportMetrics.tokens[outcome].Inc()
		if outcome == enrich.TokenVerified || outcome == enrich.TokenUnverified {
			st.userVal = u
			st.user = &st.userVal
		}
	}
	rp := &p.cfg.Report
	rp.mapPublicKey(r.Header)
	if rp.Routes != nil {
		st.route = rp.Routes.Template(enrich.ScrubPath(st.path))
	} else {
		st.route = enrich.ScrubPath(st.path)
	}
	if st.action = p.actions.match(r.Method, st.route); st.action != nil {
		st.fields, r.Body = peekFields(r, st.action)
	}
	if r.Body != nil && r.Body != http.NoBody {
		st.body = &bodyReader{rc: r.Body}
		r.Body = st.body
	}
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	st.ignored = rp.ignored(st.path)
	if rp.Client != nil && !st.ignored {
		if sampled, rate := p.sampler.sampled(r.Header, r.Method, st.route); sampled {
			r = p.startTransaction(r, st, rate)
		}
	}
	st.rec = recorder{ResponseWriter: w, proxy: p}
	rec := &st.rec

	p.metrics.inFlight.Inc()
	p.handlers.Add(1)
	defer p.handlers.Done()
	defer func() {
		p.metrics.inFlight.Dec()
		v := recover()
		status := rec.status
		switch {
		case v == nil:
		case v == http.ErrAbortHandler:
			// ReverseProxy aborts a response that failed after its headers
			// were sent; the server then cuts the connection so the client
			// sees a broken response, never a short one that looks whole
			// (golang/go#23643). Record it, then let the server do that.
			if st.errKind == "" {
				st.errKind = KindReset
				if rec.clientGone() || r.Context().Err() != nil || st.body.failed() {
					st.errKind = KindClientClosed
				}
			}
		default:
			// A bug of ours: logged and reported. Answer 500 if nothing
			// was sent and keep serving; if the answer had started, abort
			// it, or the server would end a chunked body as if complete.
			p.log.Error("panic serving request", zap.String("request_id", st.id), zap.Any("panic", v), zap.Stack("stack"))
			if c := p.cfg.Report.Client; c != nil {
				c.Recover(v, &sentry.EventHint{RecoveredException: v}, EventScope(p.cfg.Report.Scope, r.Header))
			}
			if !rec.written() {
				writeError(rec, http.StatusInternalServerError, "internal error", st.id)
			} else {
				v = http.ErrAbortHandler
			}
			status = http.StatusInternalServerError
		}
		if st.errKind == KindClientClosed {
			status = StatusClientClosed
		}
		if status == 0 {
			status = http.StatusOK
		}
		dur := p.finish(r, rec, st, status)
		if v == nil && (st.tee != nil || st.tx != nil) {
			// The answer leaves now; building and encoding its event or
			// transaction must not hold its last bytes in our buffer.
			_ = http.NewResponseController(rec).Flush()
		}
		p.report(r, st, status, dur)
		if st.tx != nil {
			finishTrace(st, status)
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
	}()
	p.rp.ServeHTTP(rec, r)
}

// ClientIP is the address the proxy believes sent r: the peer, or with a
// trusted peer the first untrusted hop of X-Forwarded-For. Other handlers
// on the same listener (the tunnel) use it so they agree with the proxy.
func (p *Proxy) ClientIP(r *http.Request) string {
	ip, _ := p.trusted.clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"])
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}

// finish writes the access-log line and the metrics of one request, and
// returns its duration.
func (p *Proxy) finish(r *http.Request, rec *recorder, st *reqState, status int) time.Duration {
	dur := p.now().Sub(st.start)
	p.metrics.observe(r.Method, status, dur.Seconds())
	p.routeMetrics.observe(r.Method, st.route, status, dur.Seconds())
	if st.action != nil {
		p.routeMetrics.observeAction(st.action, status, st.errKind == KindClientClosed, clientClass(st.clientIP), dur.Seconds())
	}
	switch st.errKind {
	case "":
	case KindClientClosed:
		p.metrics.clientClosed.Inc()
	default:
		p.metrics.upstream[st.errKind].Inc()
	}
	p.accessLog(r, rec, st, status, dur)
	return dur
}

// accessLog writes the one line per request: never a body, a token or a
// cookie; secret-looking query and path values filtered.
func (p *Proxy) accessLog(r *http.Request, rec *recorder, st *reqState, status int, dur time.Duration) {
	ce := p.log.Check(zapcore.InfoLevel, "request")
	if ce == nil {
		return
	}
	path := enrich.ScrubPath(r.URL.EscapedPath())
	if q := enrich.ScrubQuery(r.URL.RawQuery); q != "" {
		path += "?" + q
	}
	fields := make([]zap.Field, 0, 12)
	fields = append(fields,
		zap.String("request_id", st.id),
		zap.String("method", r.Method),
		zap.String("path", path),
		zap.Int("status", status),
		zap.Int64("bytes", rec.bytes),
		zap.Duration("duration", dur),
		zap.Duration("upstream_duration", st.upstreamDur),
		zap.String("client_ip", st.ipString(r.RemoteAddr)),
	)
	if st.body != nil {
		fields = append(fields, zap.Int64("bytes_read", st.body.n.Load()))
	}
	if st.errKind != "" {
		fields = append(fields, zap.String("error", st.errKind))
	}
	if st.user != nil {
		fields = append(fields, zap.String("user_id", st.user.ID))
	}
	ce.Write(fields...)
}

// Logged wraps a handler that serves on the proxy's listener without being
// proxied (the tunnel, the browser config) so that its requests get the same
// request id and access-log line as proxied ones.
func (p *Proxy) Logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &reqState{id: requestID(r.Header.Get(RequestIDHeader)), start: p.now()}
		st.clientIP, st.peerTrusted = p.trusted.clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"])
		w.Header().Set(RequestIDHeader, st.id)
		rec := &recorder{ResponseWriter: w}
		defer func() {
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			p.accessLog(r, rec, st, status, p.now().Sub(st.start))
		}()
		h.ServeHTTP(rec, r)
	})
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	pr.SetURL(p.cfg.Upstream)
	// Query strings pass byte for byte. ReverseProxy drops parameters Go
	// cannot parse (golang/go#54663: ";" separators); the sidecar takes no
	// decision from the query, and the API may accept what Go rejects.
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	if p.cfg.PreserveHost {
		pr.Out.Host = pr.In.Host
	}
	stripUnderscoreForwarding(pr.Out.Header)
	if st.peerTrusted {
		// The peer is a proxy we trust: keep the chain it reports.
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	if st.peerTrusted {
		for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := pr.In.Header.Get(h); v != "" {
				pr.Out.Header.Set(h, v)
			}
		}
	}
	// ReverseProxy strips only Forwarded and X-Forwarded-*: without this
	// Del, a peer with no address (a Unix socket) would pass the client's
	// own X-Real-IP on as the sidecar's.
	pr.Out.Header.Del("X-Real-Ip") // canonical keys: no new string per request
	if ip := st.ipString(pr.In.RemoteAddr); ip != "" {
		st.hdr[0] = ip
		pr.Out.Header["X-Real-Ip"] = st.hdr[0:1:1]
	}
	st.hdr[1] = st.id
	pr.Out.Header[RequestIDHeader] = st.hdr[1:2:2]
	if st.tx != nil {
		p.traceUpstream(pr.Out, pr.In, st)
	}
}

// stripUnderscoreForwarding removes X_Forwarded_For and its kin: servers
// that fold "_" into "-" (CGI, WSGI) would believe them (Traefik does this
// too).
func stripUnderscoreForwarding(h http.Header) {
	for k := range h {
		if !strings.Contains(k, "_") {
			continue
		}
		switch http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-")) {
		case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Forwarded":
			delete(h, k)
		}
	}
}

func (p *Proxy) modifyResponse(res *http.Response) error {
	st := stateFrom(res.Request.Context())
	st.upstreamDur = p.now().Sub(st.start)
	st.upstreamStatus = res.StatusCode
	st.hdr[2] = st.id
	res.Header[RequestIDHeader] = st.hdr[2:3:3]
	rp := &p.cfg.Report
	st.captured = rp.captures(res.StatusCode) && !st.ignored
	// A successful action without a user may be a login: keep the answer's
	// start to learn who logged in.
	login := st.action != nil && st.user == nil && rp.Trails != nil && res.StatusCode < 400
	// Never below 200: a 101's body is the upgraded connection itself, and
	// ReverseProxy needs it as it is (an io.ReadWriteCloser).
	if (st.captured || login) && res.StatusCode >= 200 {
		st.contentType = res.Header.Get("Content-Type")
		st.tee = &teeBody{ReadCloser: res.Body}
		res.Body = st.tee
	}
	return nil
}

// errorHandler answers a round trip that failed before any of the response
// was sent. It gets the outgoing request (golang/go#53002 discussion); the
// state travels in its context.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateFrom(r.Context())
	st.upstreamDur = p.now().Sub(st.start)
	status, kind := classify(err, r.Context().Err() != nil || st.body.failed())
	st.errKind = kind
	if status == StatusClientClosed {
		p.log.Debug("client went away", zap.String("request_id", st.id), zap.Error(err))
		w.WriteHeader(status)
		return
	}
	if p.warnNow(kind) {
		// One line a second per kind: an outage must not write a warning
		// for every request (the access log has each one already).
		p.log.Warn("upstream error", zap.String("request_id", st.id), zap.String("kind", kind), zap.Error(err))
	}
	writeError(w, status, errorMessage(status), st.id)
}

// warnNow reports whether a warning of kind may be logged now: at most
// one a second per kind.
func (p *Proxy) warnNow(kind string) bool {
	now := p.now().UnixNano()
	v, _ := p.lastWarn.LoadOrStore(kind, new(atomic.Int64))
	last := v.(*atomic.Int64)
	prev := last.Load()
	return now-prev >= int64(time.Second) && last.CompareAndSwap(prev, now)
}

// writeError writes the small JSON error body the sidecar answers with.
func writeError(w http.ResponseWriter, status int, msg, requestID string) {
	body, _ := json.Marshal(struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}{msg, requestID})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set(RequestIDHeader, requestID)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// requestID keeps a well-formed incoming id (so a chain of proxies shares
// one) or makes a new one.
func requestID(in string) string {
	if in != "" && len(in) <= 128 && printable(in) {
		return in
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// bodyReader counts the request body and remembers whether reading it
// failed: a failed read means the client went away mid-upload, which must
// be a 499, not an upstream error.
// The transport reads it on its own goroutine, which can outlive the
// handler (golang/go#46866), hence the atomics.
type bodyReader struct {
	rc     io.ReadCloser
	n      atomic.Int64
	broken atomic.Bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		b.broken.Store(true)
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

func (b *bodyReader) failed() bool { return b != nil && b.broken.Load() }

// Probe checks that the upstream answers: a GET of the health path (any
// status below 500 counts) or, without one, a TCP connect.
func (p *Proxy) Probe(ctx context.Context) error {
	if p.cfg.HealthPath == "" {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", hostPort(p.cfg.Upstream))
		if err != nil {
			return err
		}
		return conn.Close()
	}
	u := *p.cfg.Upstream
	u.Path = strings.TrimSuffix(u.Path, "/") + p.cfg.HealthPath
	u.RawPath = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	res, err := p.transport.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode >= 500 {
		return fmt.Errorf("GET %s: status %d", p.cfg.HealthPath, res.StatusCode)
	}
	return nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// upgradedConn is a client connection handed over for a protocol switch
// (WebSocket). http.Server.Shutdown neither waits for nor closes these, so
// the proxy keeps them to close at the end of the drain.
type upgradedConn struct {
	net.Conn
	p    *Proxy
	once sync.Once
}

func (c *upgradedConn) Close() error {
	c.once.Do(func() {
		c.p.mu.Lock()
		delete(c.p.upgraded, c)
		c.p.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite passes a half-close on to the client. ReverseProxy propagates
// the upstream's EOF by looking for CloseWrite on the client connection;
// without it, the wrapper made it close both directions at once and drop
// what the client was still sending.
func (c *upgradedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("close write: %w", errors.ErrUnsupported)
}

func (p *Proxy) trackUpgraded(conn net.Conn) net.Conn {
	c := &upgradedConn{Conn: conn, p: p}
	p.mu.Lock()
	p.upgraded[c] = struct{}{}
	p.mu.Unlock()
	return c
}

// CloseUpgraded closes every upgraded connection still open; call it after
// http.Server.Shutdown.
func (p *Proxy) CloseUpgraded() {
	p.mu.Lock()
	conns := make([]*upgradedConn, 0, len(p.upgraded))
	for c := range p.upgraded {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Wait blocks until every request the proxy is serving has finished,
// reports included, or ctx ends. After http.Server.Close the cut handlers
// still run their deferred reporting on their own goroutines; waiting lets
// their events reach Sentry before it is flushed.
func (p *Proxy) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		p.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CloseIdleConnections closes the pool's idle upstream connections.
func (p *Proxy) CloseIdleConnections() { p.transport.CloseIdleConnections() }
