package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/getsentry/sentry-go"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
	"github.com/sentry-sidecar/sentry-sidecar/internal/transport"
)

// proximityRoutes are the route templates the sidecar's default config
// names for Proximity (internal/config.Default).
var proximityRoutes = []string{
	"/api/v1/apps/catalog",
	"/api/v1/apps/catalog/{catalog_id}",
	"/api/v1/apps/deploy",
	"/api/v1/apps/{app_id}",
}

// authCookie is the cookie the reporting tests name in Report.Cookie.
const authCookie = "proximity-auth-cookie"

// reportStack is the proxy as the sidecar ships it: a real sentry.Client
// whose Transport is internal/transport, sending to a Sentry double that
// parses envelopes for real, with one observed logger and one registry
// for the proxy and the transport.
type reportStack struct {
	sentry *sentrytest.Server
	client *sentry.Client
	p      *Proxy
	srv    *httptest.Server
	logs   *observer.ObservedLogs
	reg    *prometheus.Registry
}

// mustReportStack serves a reporting proxy for upstream on 127.0.0.1 with
// users as its token verifier (nil: anonymous); opts adjust the Report.
// Cleanups run in the order that loses nothing: the proxy's server first
// (it waits for every handler, so every capture has happened), then the
// client (its transport drains its queue to the double), then the double.
func mustReportStack(tb testing.TB, upstream string, users *enrich.Verifier, opts ...func(*Report)) *reportStack {
	tb.Helper()
	s := &reportStack{sentry: sentrytest.NewServer(tb), reg: prometheus.NewRegistry()}
	core, logs := observer.New(zapcore.DebugLevel)
	s.logs = logs
	log := zap.New(core)

	s.client = mustSentryClient(tb, s.sentry.DSN("publickey", 42), log.Named("sentry"), s.reg)
	scope := sentry.NewScope()
	scope.SetTag("sidecar", "test")

	routes, err := enrich.NewRouter(proximityRoutes, 4096)
	require.NoError(tb, err)
	rp := Report{
		Client:  s.client,
		Scope:   scope,
		Users:   users,
		Cookie:  authCookie,
		Trails:  enrich.NewTrails(20, 100, 30*time.Minute, nil),
		Routes:  routes,
		Capture: []StatusRange{{500, 599}},
	}
	for _, opt := range opts {
		opt(&rp)
	}
	u, err := url.Parse(upstream)
	require.NoError(tb, err)
	s.p, err = New(Config{
		Upstream:            u,
		DialTimeout:         2 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		MaxIdleConnsPerHost: 16,
		Report:              rp,
	}, log, s.reg)
	require.NoError(tb, err)
	tb.Cleanup(s.p.CloseIdleConnections)
	s.srv = httptest.NewServer(s.p)
	tb.Cleanup(s.srv.Close)
	s.srv.Client().Timeout = clientTimeout
	return s
}

// mustSentryClient is a client configured as cmd/sentry-sidecar does it,
// sending through our transport to dsn. It is closed when tb ends.
func mustSentryClient(tb testing.TB, dsn string, log *zap.Logger, reg prometheus.Registerer) *sentry.Client {
	tb.Helper()
	tr, err := transport.New(transport.Options{DSN: dsn, Registerer: reg, Log: log, CloseTimeout: waitTimeout})
	require.NoError(tb, err)
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:            dsn,
		Transport:      tr,
		SampleRate:     1.0,
		SendDefaultPII: false,
		BeforeSend: func(ev *sentry.Event, _ *sentry.EventHint) *sentry.Event {
			return enrich.ScrubEvent(ev)
		},
		DisableClientReports: true,
		DisableMetrics:       true, // else the client starts a batch goroutine
	})
	if err != nil {
		tr.Close()
		require.NoError(tb, err)
	}
	tb.Cleanup(client.Close)
	return client
}

// drain waits for every request the proxy is serving to end, so every
// event is captured, then for the transport to hand them all to the
// double. After it, the double's record is final.
func (s *reportStack) drain(tb testing.TB) {
	tb.Helper()
	s.srv.Close() // blocks until every handler returned
	require.True(tb, s.client.Flush(waitTimeout), "the transport did not send its queue in time")
}

// upstreamSaw is what a recordingUpstream received of one request.
type upstreamSaw struct {
	Method     string
	RequestURI string // as written on the request line
	RawQuery   string
	Header     http.Header
	BodySHA256 string
}

// recordingUpstream keeps every request it gets, then answers with its
// handler.
type recordingUpstream struct {
	*httptest.Server
	mu  sync.Mutex
	saw []upstreamSaw
}

func mustRecordingUpstream(tb testing.TB, answer http.HandlerFunc) *recordingUpstream {
	tb.Helper()
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		if _, err := io.Copy(sum, r.Body); err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.saw = append(u.saw, upstreamSaw{
			Method:     r.Method,
			RequestURI: r.RequestURI,
			RawQuery:   r.URL.RawQuery,
			Header:     r.Header.Clone(),
			BodySHA256: hex.EncodeToString(sum.Sum(nil)),
		})
		u.mu.Unlock()
		answer(w, r)
	}))
	tb.Cleanup(u.Close)
	return u
}

// only returns the one request the upstream received.
func (u *recordingUpstream) only(tb testing.TB) upstreamSaw {
	tb.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	require.Len(tb, u.saw, 1, "requests the upstream received")
	return u.saw[0]
}

// answerBoom is a FastAPI 500.
func answerBoom(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, `{"detail":"boom"}`)
}

// proxyAddedHeaders are the headers the proxy itself sets on the way to
// the upstream; everything else must arrive as the client sent it.
var proxyAddedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}

// assertForwardedExactly checks that the upstream got the request as the
// client sent it: method, request URI, query, body, and every header with
// the same values (Content-Length made from the body, the proxy's own
// forwarding headers aside).
func assertForwardedExactly(tb testing.TB, sent *http.Request, target string, body []byte, got upstreamSaw) {
	tb.Helper()
	assert.Equal(tb, sent.Method, got.Method, "method")
	assert.Equal(tb, target, got.RequestURI, "request URI")
	assert.Equal(tb, sent.URL.RawQuery, got.RawQuery, "raw query")
	assert.Equal(tb, sha256Hex(body), got.BodySHA256, "body hash")
	assert.Equal(tb, sent.Header.Values("Authorization"), got.Header.Values("Authorization"), "Authorization")
	assert.Equal(tb, sent.Header.Values("Cookie"), got.Header.Values("Cookie"), "Cookie")
	want := sent.Header.Clone()
	want.Set("Content-Length", strconv.Itoa(len(body)))
	have := got.Header.Clone()
	for _, k := range proxyAddedHeaders {
		assert.NotEmpty(tb, have[k], "the proxy sets %s", k)
		delete(have, k)
	}
	assert.Equal(tb, want, have, "every other header, value for value")
}

// tokenKeys are what the reporting tests sign with.
type tokenKeys struct {
	rsa       *rsa.PrivateKey
	rsaPubPEM []byte
	ec        *ecdsa.PrivateKey
	jwks      *httptest.Server // serves the EC public key as kid ecKID
}

const ecKID = "ec-1"

func mustTokenKeys(tb testing.TB) *tokenKeys {
	tb.Helper()
	k := &tokenKeys{}
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(tb, err)
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	require.NoError(tb, err)
	k.rsaPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)

	jwk, err := jwkset.NewJWKFromKey(&k.ec.PublicKey, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: ecKID, ALG: jwkset.AlgES256, USE: jwkset.UseSig},
	})
	require.NoError(tb, err)
	set, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	require.NoError(tb, err)
	k.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	tb.Cleanup(k.jwks.Close)
	return k
}

// Key sources of a token case.
const (
	keysHMAC = "hmac" // Proximity's JWT_SECRET_KEY
	keysPEM  = "pem"  // the RSA public key
	keysJWKS = "jwks" // the EC key, from the JWKS server
)

// mustVerifier is the sidecar's verifier for the key source, closed when
// tb ends.
func (k *tokenKeys) mustVerifier(tb testing.TB, source string) *enrich.Verifier {
	tb.Helper()
	var keys enrich.Keys
	switch source {
	case keysHMAC:
		keys = enrich.HMACKeys([]byte(demo.DefaultSecret))
	case keysPEM:
		var err error
		keys, err = enrich.PEMKeys(k.rsaPubPEM)
		require.NoError(tb, err)
	case keysJWKS:
		var err error
		keys, err = enrich.JWKSKeys(context.Background(), k.jwks.URL, enrich.JWKSOptions{
			Client:  k.jwks.Client(), // its idle connections close with the server
			OnError: func(err error) { tb.Errorf("JWKS: %v", err) },
		})
		require.NoError(tb, err)
	default:
		tb.Fatalf("unknown key source %q", source)
	}
	v := enrich.NewVerifier(enrich.VerifierOptions{Keys: keys, Verify: true})
	tb.Cleanup(v.Close)
	return v
}

// proximityClaimsAt are exactly the claims Proximity's FastAPI backend
// signs, issued at iat for an hour.
func proximityClaimsAt(iat time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": "demo", "role": "user", "user_id": 2, "exp": iat.Add(time.Hour).Unix(), "iat": iat.Unix()}
}

func mustSignToken(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	tb.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(tb, err)
	return s
}

// mustDemoToken is a token as Proximity issues it, via the demo API's own
// signer.
func mustDemoToken(tb testing.TB, secret string, iat time.Time) string {
	tb.Helper()
	tok, err := demo.Token(secret, "demo", "user", 2, iat, time.Hour)
	require.NoError(tb, err)
	return tok
}

// mustUnsignedToken hand-crafts {"alg":"none"}: jwt/v5 signs it only with
// a special key.
func mustUnsignedToken(tb testing.TB, claims jwt.MapClaims) string {
	tb.Helper()
	payload, err := json.Marshal(claims)
	require.NoError(tb, err)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + "."
}

// wantUser is the Sentry user an event must name.
type wantUser struct {
	id, username, role string
}

var demoUser = &wantUser{id: "2", username: "demo", role: "user"}

// TestReportTokens sends each kind of token through the whole proxy to an
// upstream that fails, and checks the user of the event, the token
// metric, and that the upstream got the request exactly as sent: the
// sidecar only reads the token.
func TestReportTokens(t *testing.T) {
	t.Parallel()
	keys := mustTokenKeys(t)
	now := time.Now()
	valid := mustDemoToken(t, demo.DefaultSecret, now)

	nbf := proximityClaimsAt(now)
	nbf["nbf"] = now.Add(10 * time.Minute).Unix() // far beyond the 30 s leeway

	huge := proximityClaimsAt(now)
	huge["pad"] = strings.Repeat("p", 49<<10) // ~65 KiB once base64url-encoded
	hugeToken := mustSignToken(t, jwt.SigningMethodHS256, []byte(demo.DefaultSecret), huge, "")
	require.GreaterOrEqual(t, len(hugeToken), 64<<10)

	random := make([]byte, 96)
	_, err := rand.Read(random)
	require.NoError(t, err)

	tests := []struct {
		name    string
		keys    string
		auth    string // Authorization value; empty: none
		cookie  string // Cookie value; empty: none
		outcome enrich.TokenOutcome
		user    *wantUser // nil: the event names no user
	}{
		{name: "valid HS256 from Proximity", keys: keysHMAC, auth: "Bearer " + valid, cookie: "theme=dark",
			outcome: enrich.TokenVerified, user: demoUser},
		{name: "RS256 with a PEM public key", keys: keysPEM,
			auth:    "Bearer " + mustSignToken(t, jwt.SigningMethodRS256, keys.rsa, proximityClaimsAt(now), ""),
			outcome: enrich.TokenVerified, user: demoUser},
		{name: "ES256 from a JWKS", keys: keysJWKS,
			auth:    "Bearer " + mustSignToken(t, jwt.SigningMethodES256, keys.ec, proximityClaimsAt(now), ecKID),
			outcome: enrich.TokenVerified, user: demoUser},
		{name: "expired HS256", keys: keysHMAC, auth: "Bearer " + mustDemoToken(t, demo.DefaultSecret, now.Add(-2*time.Hour)),
			outcome: enrich.TokenExpired},
		{name: "nbf in the future", keys: keysHMAC,
			auth:    "Bearer " + mustSignToken(t, jwt.SigningMethodHS256, []byte(demo.DefaultSecret), nbf, ""),
			outcome: enrich.TokenInvalid},
		{name: "HS256 signed with another secret", keys: keysHMAC, auth: "Bearer " + mustDemoToken(t, "another-secret", now),
			outcome: enrich.TokenInvalid},
		{name: "alg none", keys: keysHMAC, auth: "Bearer " + mustUnsignedToken(t, proximityClaimsAt(now)),
			outcome: enrich.TokenInvalid},
		{name: "HS256 keyed with the RSA public key PEM", keys: keysPEM,
			auth:    "Bearer " + mustSignToken(t, jwt.SigningMethodHS256, keys.rsaPubPEM, proximityClaimsAt(now), ""),
			outcome: enrich.TokenInvalid},
		{name: "garbage word", keys: keysHMAC, auth: "Bearer not-a-token", outcome: enrich.TokenInvalid},
		{name: "garbage three segments", keys: keysHMAC, auth: "Bearer a.b.c", outcome: enrich.TokenInvalid},
		{name: "garbage random base64", keys: keysHMAC, auth: "Bearer " + base64.StdEncoding.EncodeToString(random),
			outcome: enrich.TokenInvalid},
		{name: "64 KiB token with a good signature", keys: keysHMAC, auth: "Bearer " + hugeToken,
			outcome: enrich.TokenInvalid},
		{name: "token in the cookie", keys: keysHMAC, cookie: "theme=dark; " + authCookie + "=" + valid,
			outcome: enrich.TokenVerified, user: demoUser},
		{name: "Basic credentials", keys: keysHMAC, auth: "Basic ZGVtbzpkZW1vMTIzNA==", cookie: "theme=dark",
			outcome: enrich.TokenAbsent},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := mustRecordingUpstream(t, answerBoom)
			s := mustReportStack(t, up.URL, keys.mustVerifier(t, tc.keys))

			const target = "/api/v1/apps/wordpress-blog/restart?force=true&note=a%20b&k=1&k=2"
			body := []byte(`{"reason":"maintenance","at":"2026-03-01T12:00:00Z"}`)
			req, err := http.NewRequest(http.MethodPost, s.srv.URL+target, bytes.NewReader(body))
			require.NoError(t, err)
			require.Equal(t, target, req.URL.RequestURI())
			id := "token-case-" + strconv.Itoa(i)
			req.Header = http.Header{
				"Accept":          {"application/json"},
				"Accept-Encoding": {"identity"},
				"Content-Type":    {"application/json"},
				"User-Agent":      {"report-test/1"},
				"X-Request-Id":    {id},
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.cookie != "" {
				req.Header.Set("Cookie", tc.cookie)
			}

			res, resBody := mustDo(t, s.srv.Client(), req)
			assert.Equal(t, http.StatusInternalServerError, res.StatusCode)
			assert.Equal(t, `{"detail":"boom"}`, string(resBody), "the API's body, byte for byte")
			assertForwardedExactly(t, req, target, body, up.only(t))

			s.drain(t)
			events := s.sentry.Events()
			require.Len(t, events, 1, "one event for the 500")
			ev := events[0]
			assert.Equal(t, "boom", ev["message"])
			assert.Equal(t, id, mapAt(ev, "tags")["request_id"])
			assert.Equal(t, "/api/v1/apps/{app_id}/restart", mapAt(ev, "tags")["http.route"])

			user := mapAt(ev, "user")
			assert.Equal(t, "127.0.0.1", user["ip_address"], "the client's address, with or without a user")
			if tc.user != nil {
				assert.Equal(t, tc.user.id, user["id"], "user id")
				assert.Equal(t, tc.user.username, user["username"], "username")
				assert.Equal(t, map[string]any{"role": tc.user.role, "verified": "true"}, user["data"])
			} else {
				for _, k := range []string{"id", "username", "email", "data"} {
					assert.NotContains(t, user, k, "no user from this token: %v", user)
				}
			}

			assert.Equal(t, 1.0, mustMetric(t, s.reg, "sidecar_jwt_tokens_total", "outcome", string(tc.outcome)), "this case's outcome")
			assert.Equal(t, 1.0, mustMetric(t, s.reg, "sidecar_jwt_tokens_total"), "one token outcome per request")
			assert.Equal(t, 1.0, mustMetric(t, s.reg, "sidecar_sentry_events_total", "kind", eventUpstream, "outcome", "captured"))
		})
	}
}

// mapAt returns the JSON object under key, or nil.
func mapAt(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

// TestReportTokenNeverLeaves puts a valid token everywhere a client or the
// API might (Authorization, the auth cookie, a query parameter, a free-text
// header, the API's error body) and checks that it reaches neither Sentry,
// in any byte the double received, nor any log line; while the event still
// names the user, so the check is not passing on an empty event.
func TestReportTokenNeverLeaves(t *testing.T) {
	t.Parallel()
	keys := mustTokenKeys(t)
	tok := mustDemoToken(t, demo.DefaultSecret, time.Now())
	sig := tok[strings.LastIndexByte(tok, '.')+1:]

	up := mustRecordingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `[]`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		// An API that echoes what it was given, as error handlers do.
		_, _ = io.WriteString(w, `{"detail":"boom: token `+tok+` rejected","access_token":"`+tok+`"}`)
	})
	s := mustReportStack(t, up.URL, keys.mustVerifier(t, keysHMAC))

	send := func(method, target, id string) {
		req, err := http.NewRequest(method, s.srv.URL+target, strings.NewReader(`{"x":1}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Cookie", "theme=dark; "+authCookie+"="+tok)
		req.Header.Set("X-Client-Note", "retrying with "+tok)
		req.Header.Set(RequestIDHeader, id)
		_, _ = mustDo(t, s.srv.Client(), req)
	}
	// The first request goes into the user's trail, the second fails: the
	// event carries both, the breadcrumb of the first included.
	send(http.MethodGet, "/api/v1/apps?access_token="+tok, "leak-1")
	send(http.MethodPost, "/api/v1/apps/deploy?access_token="+tok+"&dry=1", "leak-2")
	s.drain(t)

	events := s.sentry.Events()
	require.Len(t, events, 1)
	ev := events[0]
	assert.Equal(t, "2", mapAt(ev, "user")["id"], "the token was read")
	request := mapAt(ev, "request")
	assert.Equal(t, enrich.Filtered, mapAt(request, "headers")["Authorization"])
	assert.Equal(t, enrich.Filtered, mapAt(request, "headers")["Cookie"])
	assert.Equal(t, "access_token="+enrich.Filtered+"&dry=1", request["query_string"])
	require.Len(t, ev["breadcrumbs"], 2, "the trail and the failing request")

	wire := s.sentry.AllBytes()
	require.NotEmpty(t, wire)
	assert.False(t, bytes.Contains(wire, []byte(tok)), "the token reached Sentry")
	assert.False(t, bytes.Contains(wire, []byte(sig)), "the token's signature reached Sentry")

	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	entries := s.logs.All()
	require.NotEmpty(t, s.logs.FilterMessage("request").FilterField(zap.String("user_id", "2")).All(), "access log names the user")
	for _, e := range entries {
		line, err := enc.EncodeEntry(e.Entry, e.Context)
		require.NoError(t, err)
		assert.NotContains(t, line.String(), sig, "the token is in a log line")
		line.Free()
	}
}

// TestReportProxyErrors covers the answers the sidecar makes itself: a
// storm of refused connections is one event and a count, while a client
// that went away and the API's own 4xx are no event at all.
func TestReportProxyErrors(t *testing.T) {
	t.Parallel()

	t.Run("upstream down is one event for many requests", func(t *testing.T) {
		t.Parallel()
		host := mustClosedPort(t)
		s := mustReportStack(t, "http://"+host, nil, func(r *Report) {
			r.Throttle = ThrottleConfig{Burst: 1, Every: time.Hour}
		})
		const n = 20
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := range n {
			wg.Go(func() {
				req, err := http.NewRequest(http.MethodGet, s.srv.URL+"/api/v1/apps/"+strconv.Itoa(i), nil)
				if !assert.NoError(t, err) {
					return
				}
				res, err := s.srv.Client().Do(req)
				if !assert.NoError(t, err) {
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				statuses[i] = res.StatusCode
			})
		}
		wg.Wait()
		for i, code := range statuses {
			assert.Equal(t, http.StatusBadGateway, code, "request %d", i)
		}
		s.drain(t)

		events := s.sentry.Events()
		require.Len(t, events, 1, "one event for the storm")
		ev := events[0]
		assert.Equal(t, []any{"proxy-error", host, KindRefused}, ev["fingerprint"])
		assert.Equal(t, "upstream "+host+" refused the connection", ev["message"])
		assert.Equal(t, KindRefused, mapAt(ev, "tags")["error.kind"])
		assert.Equal(t, 1.0, mustMetric(t, s.reg, "sidecar_sentry_events_total", "kind", eventProxyError, "outcome", "captured"))
		assert.Equal(t, float64(n-1), mustMetric(t, s.reg, "sidecar_sentry_events_total", "kind", eventProxyError, "outcome", "throttled"))
		assert.Zero(t, mustMetric(t, s.reg, "sidecar_sentry_events_total", "kind", eventUpstream))
	})

	t.Run("client gone and API 4xx are no event", func(t *testing.T) {
		t.Parallel()
		up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/slow":
				slowUpstream(5*time.Second)(w, r)
			case "/missing":
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"detail":"App x not found"}`)
			default:
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnprocessableEntity)
				_, _ = io.WriteString(w, `{"detail":[{"loc":["body","hostname"],"msg":"field required","type":"value_error.missing"}]}`)
			}
		})
		s := mustReportStack(t, up.URL, nil)

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.srv.URL+"/slow", nil)
		require.NoError(t, err)
		req.Header.Set(RequestIDHeader, "gone")
		_, err = s.srv.Client().Do(req)
		require.ErrorIs(t, err, context.DeadlineExceeded)

		for path, want := range map[string]int{"/missing": http.StatusNotFound, "/deploy": http.StatusUnprocessableEntity} {
			req, err := http.NewRequest(http.MethodPost, s.srv.URL+path, strings.NewReader(`{}`))
			require.NoError(t, err)
			res, _ := mustDo(t, s.srv.Client(), req)
			assert.Equal(t, want, res.StatusCode, path)
		}
		s.drain(t)

		gone := s.logs.FilterMessage("request").FilterField(zap.String("request_id", "gone")).All()
		require.Len(t, gone, 1)
		assert.EqualValues(t, StatusClientClosed, gone[0].ContextMap()["status"])
		assert.Zero(t, s.sentry.Requests(), "nothing was sent to Sentry")
		assert.Zero(t, mustMetric(t, s.reg, "sidecar_sentry_events_total"), "no event captured or throttled")
	})
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestReportTrace: an event continues the trace a browser SDK started
// (sentry-trace header), and requests without one get a trace each, never
// one shared by every event.
func TestReportTrace(t *testing.T) {
	t.Parallel()
	s := mustReportStack(t, mustRecordingUpstream(t, answerBoom).URL, nil)
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
	)
	for _, id := range []string{"traced", "plain-1", "plain-2"} {
		req, err := http.NewRequest(http.MethodGet, s.srv.URL+"/api/v1/apps", nil)
		require.NoError(t, err)
		req.Header.Set(RequestIDHeader, id)
		if id == "traced" {
			req.Header.Set("sentry-trace", traceID+"-"+spanID+"-1")
		}
		res, _ := mustDo(t, s.srv.Client(), req)
		require.Equal(t, http.StatusInternalServerError, res.StatusCode)
	}
	s.drain(t)

	trace := map[string]map[string]any{}
	for _, ev := range s.sentry.Events() {
		id, _ := mapAt(ev, "tags")["request_id"].(string)
		trace[id] = mapAt(mapAt(ev, "contexts"), "trace")
	}
	require.Len(t, trace, 3)
	assert.Equal(t, traceID, trace["traced"]["trace_id"], "the browser's trace continues")
	assert.Equal(t, spanID, trace["traced"]["parent_span_id"])
	one, two := trace["plain-1"]["trace_id"], trace["plain-2"]["trace_id"]
	assert.Regexp(t, hex32, one)
	assert.Regexp(t, hex32, two)
	assert.NotEqual(t, one, two, "requests without a sentry-trace get a trace each")
	assert.NotEqual(t, traceID, one)
}
