package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
	"github.com/sentry-sidecar/sentry-sidecar/internal/inbox"
	"github.com/sentry-sidecar/sentry-sidecar/internal/transport"
	"github.com/sentry-sidecar/sentry-sidecar/proxy"
	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// inboxDSN stands in when events stay local: sentry-go sends nothing
// without a DSN, and the inbox never dials it.
const inboxDSN = "http://inbox@127.0.0.1/0"

// reporting is the Sentry side of the sidecar, built once at start.
type reporting struct {
	client    *sentry.Client
	scope     *sentry.Scope
	inbox     *inbox.Inbox         // set when events stay local
	transport *transport.Transport // set when events go to Sentry
	users     *enrich.Verifier
	report    proxy.Report
}

// toSentry says whether events leave the machine: a DSN is set, and this
// is not development, unless sentry.debug asks for development too.
func toSentry(cfg config.Config) bool {
	return cfg.Sentry.DSN != "" && (cfg.Sentry.Environment != config.Development || cfg.Sentry.Debug)
}

// newReporting builds the client, its sink, the base scope and the token
// verifier. ctx bounds background work (JWKS refresh).
func newReporting(ctx context.Context, cfg config.Config, log *zap.Logger, reg prometheus.Registerer, hostname string) (*reporting, error) {
	rp := &reporting{}
	opts := sentry.ClientOptions{
		Dsn:              cfg.Sentry.DSN,
		Environment:      cfg.Sentry.Environment,
		Release:          cfg.Sentry.Release, // explicit: else the SDK runs git describe
		ServerName:       hostname,
		SampleRate:       1.0,
		EnableTracing:    true,
		TracesSampleRate: *cfg.Sentry.TracesSampleRate,
		SendDefaultPII:   false,
		// Every transaction, 404s included: the SDK drops those by default,
		// and the sidecar's routes are someone else's.
		TraceIgnoreStatusCodes: [][]int{},
		IgnoreErrors:           cfg.Sentry.IgnoreErrors,
		BeforeSend: func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event {
			return enrich.ScrubEvent(ev)
		},
		BeforeSendTransaction: func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event {
			return enrich.ScrubEvent(ev)
		},
		// The transport counts what it drops in Prometheus; client reports
		// would only be kept in memory by a custom transport.
		DisableClientReports: true,
		DisableMetrics:       true,
		Integrations:         proxy.Integrations,
	}
	if toSentry(cfg) {
		tr, err := transport.New(transport.Options{
			DSN: cfg.Sentry.DSN,
			// Close comes after a Flush bounded by shutdown.flush_timeout:
			// it only gives in-flight sends a moment, so the drain adds up
			// to drain_delay + grace_period + flush_timeout + about 2 s.
			CloseTimeout: 500 * time.Millisecond,
			Registerer:   reg,
			Log:          log.Named("sentry"),
			UserAgent:    "sentry-sidecar/" + version,
		})
		if err != nil {
			return nil, err
		}
		rp.transport, opts.Transport = tr, tr
	} else {
		ib, err := inbox.New(inbox.Options{Size: cfg.Inbox.Size, File: cfg.Inbox.File, Log: log.Named("inbox")})
		if err != nil {
			return nil, err
		}
		rp.inbox, opts.Transport = ib, ib
		if opts.Dsn == "" {
			opts.Dsn = inboxDSN
		}
	}
	client, err := sentry.NewClient(opts)
	if err != nil {
		opts.Transport.Close()
		return nil, fmt.Errorf("sentry client: %w", err)
	}
	client.SetSDKIdentifier("sentry.go.sidecar") // once, here: per request it races (sentry-go research §5.4)
	rp.client = client

	scope := sentry.NewScope()
	scope.SetTag("sidecar", version)
	scope.SetContext("app", sentry.Context{"name": cfg.App.Name, "version": cfg.App.Version, "debug_mode": cfg.App.Debug})
	for name, c := range cfg.Sentry.Contexts {
		scope.SetContext(name, sentry.Context(c))
	}
	rp.scope = scope

	users, err := newVerifier(ctx, cfg.JWT, log)
	if err != nil {
		rp.close(0)
		return nil, err
	}
	rp.users = users

	var captures []proxy.StatusRange
	for _, s := range cfg.Sentry.CaptureStatus {
		lo, hi, _ := config.ParseStatusRange(s) // validated
		captures = append(captures, proxy.StatusRange{Lo: lo, Hi: hi})
	}
	routes, err := enrich.NewRouter(routeTemplates(cfg), 4096)
	if err != nil {
		rp.close(0)
		return nil, err
	}
	rp.report = proxy.Report{
		Client:      client,
		Scope:       scope,
		Users:       users,
		Cookie:      cfg.JWT.Cookie,
		Trails:      enrich.NewTrails(cfg.Sentry.Trail.Size, cfg.Sentry.Trail.Users, cfg.Sentry.Trail.TTL.Std(), nil),
		Routes:      routes,
		Capture:     captures,
		IgnorePaths: cfg.Sentry.IgnorePaths,
		Throttle:    proxy.ThrottleConfig{Burst: cfg.Sentry.Throttle.Burst, Every: cfg.Sentry.Throttle.Every.Std()},

		TracesSampleRate: *cfg.Sentry.TracesSampleRate,
		MaxRoutes:        cfg.Metrics.MaxRoutes,
		PublicKeys:       placeholderKeys(cfg),
	}
	for _, r := range cfg.Sentry.TracesSampler {
		rule := proxy.SampleRule{Route: r.Route, Rate: r.Rate}
		if method, path, ok := strings.Cut(r.Route, " "); ok {
			rule.Method, rule.Route = method, path
		}
		rp.report.TracesSampler = append(rp.report.TracesSampler, rule)
	}
	for _, a := range cfg.Actions {
		method, path, _ := strings.Cut(a.Route, " ") // validated
		rp.report.Actions = append(rp.report.Actions, proxy.Action{Method: method, Route: path, Name: a.Name, Fields: a.Fields})
	}
	return rp, nil
}

// browserDSN is the real DSN of the browser project: tunnel.dsn, else
// sentry.dsn; "" when there is none.
func browserDSN(cfg config.Config) string {
	if cfg.Tunnel.DSN != "" {
		return cfg.Tunnel.DSN
	}
	return cfg.Sentry.DSN
}

// browserHandlers builds the tunnel and the browser config endpoint when
// their paths are set (nil otherwise), and tells the proxy to map the
// placeholder key in pages' baggage to the real one. Envelopes go where
// server events go: Sentry, or the inbox in development without
// sentry.debug or without a DSN.
func (rp *reporting) browserHandlers(cfg config.Config, px *proxy.Proxy, log *zap.Logger, reg prometheus.Registerer) (tunnelH *tunnel.Handler, configH http.Handler, err error) {
	real := browserDSN(cfg)
	placeholder := tunnel.PlaceholderKey(real)
	project := "0"
	if dsn, err := sentry.NewDsn(real); err == nil {
		project = dsn.GetProjectID()
	}
	if cfg.Tunnel.Path != "" {
		opts := tunnel.Options{
			PlaceholderKey: placeholder,
			Allowed:        cfg.Tunnel.AllowedDSNs,
			AllowedOrigins: cfg.Tunnel.AllowedOrigins,
			Scrub:          cfg.Tunnel.Scrub,
			Limits: tunnel.Limits{
				Body:         int64(cfg.Tunnel.Limits.Body),
				Decompressed: int64(cfg.Tunnel.Limits.Decompressed),
				Event:        int64(cfg.Tunnel.Limits.Event),
				Replay:       int64(cfg.Tunnel.Limits.Replay),
				Attachment:   int64(cfg.Tunnel.Limits.Attachment),
				Session:      int64(cfg.Tunnel.Limits.Session),
				Items:        cfg.Tunnel.Limits.Items,
			},
			// The tunnel's own client, not a bare http.Client: that would
			// share http.DefaultTransport, which keeps 2 idle connections
			// per host, and a burst of envelopes would dial Sentry anew.
			Timeout:    cfg.Tunnel.Timeout.Std(),
			ClientIP:   px.ClientIP,
			Registerer: reg,
			Log:        log.Named("tunnel"),
		}
		if cfg.Tunnel.ClientRate.Burst > 0 { // 0 turns the limit off, whatever every says
			opts.PerIP = tunnel.Rate{Burst: cfg.Tunnel.ClientRate.Burst, Every: cfg.Tunnel.ClientRate.Every.Std()}
		}
		if cfg.Tunnel.SetUser && rp.users != nil {
			users, cookie := rp.users, cfg.JWT.Cookie
			opts.User = func(r *http.Request) *enrich.User {
				u, outcome := users.User(enrich.TokenFromRequest(r.Header, cookie))
				if outcome != enrich.TokenVerified && outcome != enrich.TokenUnverified {
					return nil
				}
				return &u
			}
		}
		if rp.transport != nil && real != "" {
			opts.Target = real
		} else {
			ib := rp.inbox
			opts.Sink = func(e *tunnel.Envelope) {
				for _, it := range e.Items {
					ib.AddItem(it.Type, it.Payload)
				}
			}
		}
		if tunnelH, err = tunnel.New(opts); err != nil {
			return nil, nil, fmt.Errorf("tunnel: %w", err)
		}
	}
	if cfg.Browser.ConfigPath != "" {
		configH = tunnel.BrowserConfigHandler(tunnel.BrowserConfig{
			PlaceholderKey:           placeholder,
			Project:                  project,
			Tunnel:                   cfg.Tunnel.Path,
			Environment:              cfg.Sentry.Environment,
			Release:                  cfg.Sentry.Release,
			TracesSampleRate:         *cfg.Sentry.TracesSampleRate,
			ReplaysSessionSampleRate: cfg.Browser.ReplaysSessionSampleRate,
			ReplaysOnErrorSampleRate: cfg.Browser.ReplaysOnErrorSampleRate,
		})
	}
	return tunnelH, configH, nil
}

// placeholderKeys maps the browser placeholder key to the real browser
// key, for the proxy (see proxy.Report.PublicKeys); nil without a DSN.
func placeholderKeys(cfg config.Config) map[string]string {
	dsn, err := sentry.NewDsn(browserDSN(cfg))
	if err != nil {
		return nil
	}
	return map[string]string{tunnel.PlaceholderKey(browserDSN(cfg)): dsn.GetPublicKey()}
}

// routeTemplates are the configured templates plus the paths of the
// actions, which name routes too.
func routeTemplates(cfg config.Config) []string {
	out := append([]string(nil), cfg.Sentry.RouteTemplates...)
	for _, a := range cfg.Actions {
		if _, path, ok := strings.Cut(a.Route, " "); ok {
			out = append(out, path)
		}
	}
	return out
}

// newVerifier builds the token verifier from the jwt section: an HMAC
// secret, a PEM public key, or a JWKS URL refreshed in the background.
func newVerifier(ctx context.Context, cfg config.JWT, log *zap.Logger) (*enrich.Verifier, error) {
	if cfg.Verify && cfg.Secret == "" && cfg.PublicKeyFile == "" && cfg.JWKSURL == "" {
		return nil, nil // nothing to verify with: no users (check warns), and no token counted invalid
	}
	var keys enrich.Keys
	switch {
	case !cfg.Verify:
	case cfg.Secret != "":
		keys = enrich.HMACKeys([]byte(cfg.Secret))
	case cfg.PublicKeyFile != "":
		pem, err := os.ReadFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jwt.public_key_file: %w", err)
		}
		if keys, err = enrich.PEMKeys(pem); err != nil {
			return nil, fmt.Errorf("jwt.public_key_file %s: %w", cfg.PublicKeyFile, err)
		}
	case cfg.JWKSURL != "":
		var err error
		jwksLog := log.Named("jwks")
		keys, err = enrich.JWKSKeys(ctx, cfg.JWKSURL, enrich.JWKSOptions{
			OnError: func(err error) { jwksLog.Warn("fetch JWKS", zap.Error(err)) },
		})
		if err != nil {
			return nil, fmt.Errorf("jwt.jwks_url: %w", err)
		}
	}
	claims := enrich.Claims{
		ID:       cfg.Claims["id"],
		Username: cfg.Claims["username"],
		Email:    cfg.Claims["email"],
		Role:     cfg.Claims["role"],
	}
	leeway := cfg.Leeway.Std()
	if leeway == 0 {
		leeway = -1 // the Verifier reads 0 as its default; the config said none
	}
	return enrich.NewVerifier(enrich.VerifierOptions{Keys: keys, Verify: cfg.Verify, Claims: claims, Leeway: leeway}), nil
}

// close sends what is queued, bounded by timeout, then closes the client
// and stops the JWKS refresh.
func (rp *reporting) close(timeout time.Duration) {
	if rp.client != nil {
		if timeout > 0 {
			rp.client.Flush(timeout)
		}
		rp.client.Close()
	}
	if rp.users != nil {
		rp.users.Close()
	}
}

// testEventMessage is the deliberate event of POST /test-event and
// check -send-test-event, in the words of the seed's own test endpoint.
const testEventMessage = "This is a deliberate test event from sentry-sidecar. If you see this in Sentry, the integration is working correctly!"

// testEventResult is the answer of POST /test-event.
type testEventResult struct {
	EventID   string `json:"event_id"`
	Sink      string `json:"sink"`
	Delivered bool   `json:"delivered"`
	Outcome   string `json:"outcome,omitempty"`
	Error     string `json:"error,omitempty"`
}

// sendTestEvent captures the test event and waits, at most timeout, to
// learn whether the sink took it.
func (rp *reporting) sendTestEvent(ctx context.Context, timeout time.Duration) testEventResult {
	ev := sentry.NewEvent()
	ev.Level = sentry.LevelError
	ev.Message = testEventMessage
	ev.Logger = "sentry-sidecar"
	ev.Tags = map[string]string{"test": "true"}
	ev.Fingerprint = []string{"sentry-sidecar-test-event"}
	id := rp.client.CaptureEvent(ev, nil, proxy.EventScope(rp.scope, http.Header{}))
	res := testEventResult{Sink: "inbox"}
	if rp.transport != nil {
		res.Sink = "sentry"
	}
	if id == nil {
		res.Error = "the event was dropped before sending (sample rate or ignore_errors)"
		return res
	}
	res.EventID = string(*id)
	if rp.transport == nil {
		res.Delivered = true
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	outcome, err := rp.transport.Outcome(ctx, *id)
	res.Outcome = string(outcome)
	res.Delivered = err == nil && outcome == transport.OutcomeSent
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

func (rp *reporting) testEventHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := rp.sendTestEvent(r.Context(), 10*time.Second)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !res.Delivered {
			w.WriteHeader(http.StatusBadGateway)
		}
		_ = json.NewEncoder(w).Encode(res)
	})
}
