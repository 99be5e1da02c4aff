package demo_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixedNow is the clock of every test server that does not need real time,
// so that tokens and timestamps are reproducible.
func fixedNow() time.Time { return time.Date(2025, 10, 14, 12, 0, 0, 0, time.UTC) }

// response is what mustDo read from one exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// mustServer starts the demo API on 127.0.0.1 for the length of the test.
func mustServer(tb testing.TB, opts demo.Options) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(demo.New(opts))
	tb.Cleanup(srv.Close)
	return srv
}

// mustToken signs a token with demo.Token.
func mustToken(tb testing.TB, secret, username, role string, userID int, iat time.Time, ttl time.Duration) string {
	tb.Helper()
	tok, err := demo.Token(secret, username, role, userID, iat, ttl)
	require.NoError(tb, err)
	return tok
}

// mustSign signs arbitrary claims, for tokens demo.Token would not make.
func mustSign(tb testing.TB, method jwt.SigningMethod, secret string, claims jwt.MapClaims) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString([]byte(secret))
	require.NoError(tb, err)
	return tok
}

// mustDo sends one request to srv and reads the whole answer. A non-empty
// token is sent as a Bearer token.
func mustDo(tb testing.TB, srv *httptest.Server, method, path, token, body string) response {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), method, srv.URL+path, strings.NewReader(body))
	require.NoError(tb, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return mustSend(tb, srv, req)
}

// mustSend sends req with srv's client and reads the whole answer.
func mustSend(tb testing.TB, srv *httptest.Server, req *http.Request) response {
	tb.Helper()
	resp, err := srv.Client().Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// mustJSONMap decodes a JSON object.
func mustJSONMap(tb testing.TB, b []byte) map[string]any {
	tb.Helper()
	var m map[string]any
	require.NoError(tb, json.Unmarshal(b, &m), "body: %s", b)
	return m
}

// mustPayload returns the raw JSON payload of a compact JWS.
func mustPayload(tb testing.TB, token string) string {
	tb.Helper()
	parts := strings.Split(token, ".")
	require.Len(tb, parts, 3)
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(tb, err)
	return string(b)
}

func TestLogin(t *testing.T) {
	t.Parallel()
	srv := mustServer(t, demo.Options{Now: fixedNow})
	cases := []struct {
		name       string
		body       string
		status     int
		wantBody   string // exact JSON, when the body has no token
		wantUser   string // exact JSON of "user", on success
		wantBearer bool
	}{
		{
			name: "admin", body: `{"username":"admin","password":"admin123"}`, status: http.StatusOK,
			wantUser: `{"id":1,"username":"admin","email":"admin@example.com","role":"admin","is_active":true,"created_at":"2025-10-03T09:00:00"}`,
		},
		{
			name: "demo", body: `{"username":"demo","password":"demo1234"}`, status: http.StatusOK,
			wantUser: `{"id":2,"username":"demo","email":null,"role":"user","is_active":true,"created_at":"2025-10-05T14:30:00"}`,
		},
		{
			name: "wrong password", body: `{"username":"admin","password":"admin1234"}`, status: http.StatusUnauthorized,
			wantBody: `{"detail":"Incorrect username or password"}`, wantBearer: true,
		},
		{
			name: "unknown user", body: `{"username":"root","password":"admin123"}`, status: http.StatusUnauthorized,
			wantBody: `{"detail":"Incorrect username or password"}`, wantBearer: true,
		},
		{
			name: "invalid JSON", body: `{"username":`, status: http.StatusUnprocessableEntity,
			wantBody: `{"detail":[{"type":"json_invalid","loc":["body",12],"msg":"JSON decode error","input":{},"ctx":{"error":"unexpected end of JSON input"}}]}`,
		},
		{
			name: "invalid JSON mid-input", body: `{"username":x}`, status: http.StatusUnprocessableEntity,
			wantBody: `{"detail":[{"type":"json_invalid","loc":["body",12],"msg":"JSON decode error","input":{},"ctx":{"error":"invalid character 'x' looking for beginning of value"}}]}`,
		},
		{
			name: "missing password, numeric username", body: `{"username":7}`, status: http.StatusUnprocessableEntity,
			wantBody: `{"detail":[` +
				`{"type":"string_type","loc":["body","username"],"msg":"Input should be a valid string","input":7},` +
				`{"type":"missing","loc":["body","password"],"msg":"Field required","input":{"username":7}}]}`,
		},
		{
			name: "not an object", body: `["admin","admin123"]`, status: http.StatusUnprocessableEntity,
			wantBody: `{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":["admin","admin123"]}]}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := mustDo(t, srv, http.MethodPost, "/api/v1/auth/login", "", tc.body)
			assert.Equal(t, tc.status, resp.status)
			assert.Equal(t, "application/json", resp.header.Get("Content-Type"))
			if tc.wantBearer {
				assert.Equal(t, "Bearer", resp.header.Get("WWW-Authenticate"))
			}
			if tc.wantBody != "" {
				assert.JSONEq(t, tc.wantBody, string(resp.body))
				return
			}
			var got struct {
				AccessToken string          `json:"access_token"`
				TokenType   string          `json:"token_type"`
				ExpiresIn   int             `json:"expires_in"`
				User        json.RawMessage `json:"user"`
			}
			require.NoError(t, json.Unmarshal(resp.body, &got))
			assert.NotEmpty(t, got.AccessToken)
			assert.Equal(t, "bearer", got.TokenType)
			assert.Equal(t, 3600, got.ExpiresIn)
			assert.Equal(t, tc.wantUser, string(got.User))
		})
	}

	t.Run("empty body", func(t *testing.T) {
		t.Parallel()
		resp := mustDo(t, srv, http.MethodPost, "/api/v1/auth/login", "", "")
		assert.Equal(t, http.StatusUnprocessableEntity, resp.status)
		assert.JSONEq(t, `{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}`, string(resp.body))
	})
}

func TestTokenClaims(t *testing.T) {
	t.Parallel()
	now := fixedNow()
	iat, exp := now.Unix(), now.Add(time.Hour).Unix()

	t.Run("login", func(t *testing.T) {
		t.Parallel()
		srv := mustServer(t, demo.Options{Now: fixedNow})
		resp := mustDo(t, srv, http.MethodPost, "/api/v1/auth/login", "", `{"username":"demo","password":"demo1234"}`)
		require.Equal(t, http.StatusOK, resp.status)
		tok, isStr := mustJSONMap(t, resp.body)["access_token"].(string)
		require.True(t, isStr)
		// Byte for byte what python-jose signs for Proximity v1.
		assert.Equal(t, fmt.Sprintf(`{"sub":"demo","role":"user","user_id":2,"exp":%d,"iat":%d}`, exp, iat), mustPayload(t, tok))

		parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte(demo.DefaultSecret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(fixedNow))
		require.NoError(t, err)
		assert.Equal(t, map[string]any{"alg": "HS256", "typ": "JWT"}, parsed.Header)
	})

	t.Run("Token", func(t *testing.T) {
		t.Parallel()
		tok := mustToken(t, "s3cret", "alice", "admin", 42, now, time.Hour)
		assert.Equal(t, fmt.Sprintf(`{"sub":"alice","role":"admin","user_id":42,"exp":%d,"iat":%d}`, exp, iat), mustPayload(t, tok))
		_, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(fixedNow))
		assert.NoError(t, err)
	})
}

func TestProtected(t *testing.T) {
	t.Parallel()
	const secret = "test-secret"
	srv := mustServer(t, demo.Options{Secret: secret, Now: fixedNow})
	now := fixedNow()
	claims := func(drop string) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "demo", "role": "user", "user_id": 2, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		delete(c, drop)
		return c
	}
	noneToken := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"demo","role":"user","user_id":2}`)) + "."

	const (
		required = `{"detail":"Authentication required"}`
		invalid  = `{"detail":"Could not validate credentials"}`
	)
	cases := []struct {
		name          string
		authorization string
		status        int
		want          string
	}{
		{"no header", "", http.StatusUnauthorized, required},
		{"basic scheme", "Basic YWRtaW46YWRtaW4xMjM=", http.StatusUnauthorized, required},
		{"bearer without token", "Bearer", http.StatusUnauthorized, required},
		{"garbage", "Bearer not-a-jwt", http.StatusUnauthorized, invalid},
		{"wrong secret", "Bearer " + mustToken(t, "other-secret", "demo", "user", 2, now, time.Hour), http.StatusUnauthorized, invalid},
		{"expired", "Bearer " + mustToken(t, secret, "demo", "user", 2, now.Add(-2*time.Hour), time.Hour), http.StatusUnauthorized, invalid},
		{"alg none", "Bearer " + noneToken, http.StatusUnauthorized, invalid},
		{"HS512", "Bearer " + mustSign(t, jwt.SigningMethodHS512, secret, claims("")), http.StatusUnauthorized, invalid},
		{"no role claim", "Bearer " + mustSign(t, jwt.SigningMethodHS256, secret, claims("role")), http.StatusUnauthorized, invalid},
		{"no user_id claim", "Bearer " + mustSign(t, jwt.SigningMethodHS256, secret, claims("user_id")), http.StatusUnauthorized, invalid},
		{
			"valid", "Bearer " + mustToken(t, secret, "demo", "user", 2, now, time.Hour), http.StatusOK,
			`{"id":2,"username":"demo","email":null,"role":"user","is_active":true,"created_at":"2025-10-05T14:30:00"}`,
		},
		{
			"valid, lower-case scheme", "bearer " + mustToken(t, secret, "demo", "user", 2, now, time.Hour), http.StatusOK,
			`{"id":2,"username":"demo","email":null,"role":"user","is_active":true,"created_at":"2025-10-05T14:30:00"}`,
		},
		{
			"valid, user the demo does not know", "Bearer " + mustToken(t, secret, "alice", "admin", 42, now, time.Hour), http.StatusOK,
			`{"id":42,"username":"alice","email":null,"role":"admin","is_active":true,"created_at":"2025-10-03T09:00:00"}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/api/v1/auth/me", nil)
			require.NoError(t, err)
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp := mustSend(t, srv, req)
			assert.Equal(t, tc.status, resp.status)
			assert.Equal(t, "application/json", resp.header.Get("Content-Type"))
			assert.JSONEq(t, tc.want, string(resp.body))
			if tc.status == http.StatusUnauthorized {
				assert.Equal(t, "Bearer", resp.header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	token := mustToken(t, "", "admin", "admin", 1, fixedNow(), time.Hour)
	cases := []struct {
		name   string
		method string
		path   string
		token  string
		status int
		want   string // exact JSON, or a substring when wantSub
		sub    bool
	}{
		{name: "root health", method: http.MethodGet, path: "/health", status: http.StatusOK, want: `{"status":"healthy","version":"0.1.0"}`},
		{name: "system health", method: http.MethodGet, path: "/api/v1/system/health", status: http.StatusOK, want: `{"success":true,"message":"Proximity API is healthy","data":null,"error":null}`},
		{name: "sentry test endpoint", method: http.MethodGet, path: "/api/v1/test/sentry-backend", status: http.StatusInternalServerError, want: `{"success":false,"error":"Internal server error"}`},
		{name: "logout", method: http.MethodPost, path: "/api/v1/auth/logout", token: token, status: http.StatusOK, want: `{"success":true,"message":"Logged out successfully. Please discard your token.","data":null,"error":null}`},
		{name: "apps", method: http.MethodGet, path: "/api/v1/apps", token: token, status: http.StatusOK, want: `[{"id":"nginx-mysite",`, sub: true},
		{name: "apps with slash", method: http.MethodGet, path: "/api/v1/apps/", token: token, status: http.StatusOK, want: `[{"id":"nginx-mysite",`, sub: true},
		{name: "catalog", method: http.MethodGet, path: "/api/v1/apps/catalog", token: token, status: http.StatusOK, want: `"categories":["CMS","Monitoring","Web Server"],"total":4}`, sub: true},
		{name: "app", method: http.MethodGet, path: "/api/v1/apps/nginx-mysite", token: token, status: http.StatusOK, want: `"status":"running","url":"http://mysite.local","lxc_id":100,"node":"pve"`, sub: true},
		{name: "app status", method: http.MethodGet, path: "/api/v1/apps/nginx-mysite/status", token: token, status: http.StatusOK, want: `{"app_id":"nginx-mysite","status":"running","progress":100,"current_step":null,"logs":[],"error":null}`},
		{name: "unknown app", method: http.MethodGet, path: "/api/v1/apps/nginx-nope", token: token, status: http.StatusNotFound, want: `{"detail":"App nginx-nope not found"}`},
		{name: "deploy is an app id for GET", method: http.MethodGet, path: "/api/v1/apps/deploy", token: token, status: http.StatusNotFound, want: `{"detail":"App deploy not found"}`},
		{name: "nodes", method: http.MethodGet, path: "/api/v1/system/nodes", token: token, status: http.StatusOK, want: `[{"node":"pve","status":"online",`, sub: true},
		{name: "nodes, Proxmox down", method: http.MethodGet, path: "/api/v1/system/nodes?fail=1", token: token, status: http.StatusBadGateway, want: `{"success":false,"error":"Proxmox API error","details":"Connection to pve.local:8006 refused"}`},
		{name: "nodes need a token", method: http.MethodGet, path: "/api/v1/system/nodes?fail=1", status: http.StatusUnauthorized, want: `{"detail":"Authentication required"}`},
		{name: "unknown path", method: http.MethodGet, path: "/nope", status: http.StatusNotFound, want: `{"detail":"Not Found"}`},
		{name: "unknown path is 404 before auth", method: http.MethodGet, path: "/api/v1/apps/x/y/z", status: http.StatusNotFound, want: `{"detail":"Not Found"}`},
		{name: "trailing slash is not redirected", method: http.MethodGet, path: "/health/", status: http.StatusNotFound, want: `{"detail":"Not Found"}`},
		{name: "double slash is not cleaned", method: http.MethodGet, path: "/api/v1//apps", token: token, status: http.StatusNotFound, want: `{"detail":"Not Found"}`},
		{name: "dot segments are not cleaned", method: http.MethodGet, path: "/api/v1/apps/../system/health", status: http.StatusNotFound, want: `{"detail":"Not Found"}`},
		{name: "wrong method", method: http.MethodPost, path: "/health", status: http.StatusMethodNotAllowed, want: `{"detail":"Method Not Allowed"}`},
		{name: "wrong method is 405 before auth", method: http.MethodPut, path: "/api/v1/apps/catalog", status: http.StatusMethodNotAllowed, want: `{"detail":"Method Not Allowed"}`},
		{name: "OPTIONS needs no token", method: http.MethodOptions, path: "/api/v1/apps", status: http.StatusOK, want: `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mustServer(t, demo.Options{Now: fixedNow})
			resp := mustDo(t, srv, tc.method, tc.path, tc.token, "")
			assert.Equal(t, tc.status, resp.status)
			assert.Equal(t, "application/json", resp.header.Get("Content-Type"))
			if tc.sub {
				assert.Contains(t, string(resp.body), tc.want)
			} else {
				assert.JSONEq(t, tc.want, string(resp.body))
			}
			if tc.status == http.StatusMethodNotAllowed {
				assert.NotEmpty(t, resp.header.Get("Allow"))
			}
		})
	}
}

func TestHeadAndIndex(t *testing.T) {
	t.Parallel()
	srv := mustServer(t, demo.Options{})

	t.Run("HEAD on a GET route", func(t *testing.T) {
		t.Parallel()
		resp := mustDo(t, srv, http.MethodHead, "/health", "", "")
		assert.Equal(t, http.StatusOK, resp.status)
		assert.Empty(t, resp.body)
	})
	t.Run("index", func(t *testing.T) {
		t.Parallel()
		resp := mustDo(t, srv, http.MethodGet, "/", "", "")
		assert.Equal(t, http.StatusOK, resp.status)
		assert.Equal(t, "text/html; charset=utf-8", resp.header.Get("Content-Type"))
		assert.Contains(t, string(resp.body), "demo Proximity UI")
	})
}

func TestDeploy(t *testing.T) {
	t.Parallel()
	token := mustToken(t, "", "demo", "user", 2, fixedNow(), time.Hour)

	t.Run("success", func(t *testing.T) {
		t.Parallel()
		srv := mustServer(t, demo.Options{Now: fixedNow})
		resp := mustDo(t, srv, http.MethodPost, "/api/v1/apps/deploy", token,
			`{"catalog_id":"grafana","hostname":"Metrics","environment":{"GF_SECURITY_ADMIN_USER":"root"}}`)
		require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
		got := mustJSONMap(t, resp.body)
		assert.Equal(t, "grafana-metrics", got["id"])
		assert.Equal(t, "metrics", got["hostname"])
		assert.Equal(t, "running", got["status"])
		assert.Equal(t, "pve", got["node"])
		assert.Equal(t, "2025-10-14T12:00:00", got["created_at"])
		assert.Equal(t, map[string]any{"GF_SECURITY_ADMIN_USER": "root"}, got["environment"])

		status := mustDo(t, srv, http.MethodGet, "/api/v1/apps/grafana-metrics/status", token, "")
		assert.JSONEq(t, `{"app_id":"grafana-metrics","status":"running","progress":100,"current_step":null,"logs":[],"error":null}`, string(status.body))

		del := mustDo(t, srv, http.MethodDelete, "/api/v1/apps/grafana-metrics", token, "")
		assert.Equal(t, http.StatusOK, del.status)
		assert.JSONEq(t, `{"success":true,"message":"App grafana-metrics deleted successfully","data":null,"error":null}`, string(del.body))
		gone := mustDo(t, srv, http.MethodGet, "/api/v1/apps/grafana-metrics", token, "")
		assert.Equal(t, http.StatusNotFound, gone.status)
	})

	t.Run("failure", func(t *testing.T) {
		t.Parallel()
		srv := mustServer(t, demo.Options{Now: fixedNow})
		resp := mustDo(t, srv, http.MethodPost, "/api/v1/apps/deploy", token, `{"catalog_id":"nginx","hostname":"will-fail"}`)
		assert.Equal(t, http.StatusInternalServerError, resp.status)
		assert.JSONEq(t, `{"detail":"Deployment failed: LXC creation timed out on node pve"}`, string(resp.body))

		status := mustDo(t, srv, http.MethodGet, "/api/v1/apps/nginx-will-fail/status", token, "")
		assert.Equal(t, http.StatusOK, status.status)
		assert.JSONEq(t, `{"app_id":"nginx-will-fail","status":"error","progress":100,"current_step":null,"logs":[],"error":"LXC creation timed out on node pve"}`, string(status.body))
		app := mustDo(t, srv, http.MethodGet, "/api/v1/apps/nginx-will-fail", token, "")
		assert.Equal(t, http.StatusNotFound, app.status)
	})

	invalid := []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{
			"hostname too short", `{"catalog_id":"nginx","hostname":"ab"}`, http.StatusUnprocessableEntity,
			`{"detail":[{"type":"string_too_short","loc":["body","hostname"],"msg":"String should have at least 3 characters","input":"ab","ctx":{"min_length":3}}]}`,
		},
		{
			"hostname too long", `{"catalog_id":"nginx","hostname":"` + strings.Repeat("a", 64) + `"}`, http.StatusUnprocessableEntity,
			`{"detail":[{"type":"string_too_long","loc":["body","hostname"],"msg":"String should have at most 63 characters","input":"` + strings.Repeat("a", 64) + `","ctx":{"max_length":63}}]}`,
		},
		{
			"hostname with a dot", `{"catalog_id":"nginx","hostname":"my.site"}`, http.StatusUnprocessableEntity,
			`{"detail":[{"type":"value_error","loc":["body","hostname"],"msg":"Value error, Hostname must contain only alphanumeric characters, hyphens, and underscores","input":"my.site","ctx":{"error":{}}}]}`,
		},
		{
			"missing catalog_id", `{"hostname":"mysite"}`, http.StatusUnprocessableEntity,
			`{"detail":[{"type":"missing","loc":["body","catalog_id"],"msg":"Field required","input":{"hostname":"mysite"}}]}`,
		},
		{
			"unknown catalog item", `{"catalog_id":"doom","hostname":"mysite"}`, http.StatusNotFound,
			`{"detail":"Catalog item 'doom' not found"}`,
		},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mustServer(t, demo.Options{Now: fixedNow})
			resp := mustDo(t, srv, http.MethodPost, "/api/v1/apps/deploy", token, tc.body)
			assert.Equal(t, tc.status, resp.status)
			assert.JSONEq(t, tc.want, string(resp.body))
		})
	}
}

func TestDeployInProgress(t *testing.T) {
	t.Parallel()
	srv := mustServer(t, demo.Options{DeployDelay: 10 * time.Second})
	token := mustToken(t, "", "demo", "user", 2, time.Now(), time.Hour)

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/v1/apps/deploy", strings.NewReader(`{"catalog_id":"nginx","hostname":"slow"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	deployErr := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		deployErr <- err
	}()

	// statusOf polls like the UI does while the deploy request is open. It
	// runs inside Eventually's goroutine, so it reports rather than fails.
	statusOf := func() (int, map[string]any) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/api/v1/apps/nginx-slow/status", nil)
		if err != nil {
			return 0, nil
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return 0, nil
		}
		return resp.StatusCode, m
	}
	var status map[string]any
	require.Eventually(t, func() bool {
		code, m := statusOf()
		status = m
		return code == http.StatusOK
	}, 2*time.Second, 10*time.Millisecond)
	assert.Equal(t, "deploying", status["status"])
	assert.Equal(t, "Creating LXC container", status["current_step"])

	cancel()
	assert.ErrorIs(t, <-deployErr, context.Canceled)
	// A deploy the client gave up on leaves nothing behind.
	require.Eventually(t, func() bool {
		code, _ := statusOf()
		return code == http.StatusNotFound
	}, 2*time.Second, 10*time.Millisecond)
}

func TestDeployCancelled(t *testing.T) {
	t.Parallel()
	h := demo.New(demo.Options{DeployDelay: 10 * time.Second})
	returned := make(chan time.Time, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		returned <- time.Now()
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/v1/apps/deploy", strings.NewReader(`{"catalog_id":"nginx","hostname":"mysite"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+mustToken(t, "", "demo", "user", 2, time.Now(), time.Hour))
	resp, err := srv.Client().Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	cancelled := time.Now()

	select {
	case at := <-returned:
		assert.Less(t, at.Sub(cancelled), 2*time.Second)
	case <-time.After(2 * time.Second):
		t.Fatal("deploy handler still running 2s after the client went away")
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()

	t.Run("first event before the stream ends", func(t *testing.T) {
		t.Parallel()
		srv := mustServer(t, demo.Options{})
		const count, interval = 3, 200 * time.Millisecond
		full := (count - 1) * interval

		start := time.Now()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/api/v1/events?count=3&interval=200ms", nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))

		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		require.NoError(t, err)
		assert.Less(t, time.Since(start), full/2, "first event held back")
		assert.Equal(t, "event: tick\n", first)

		rest, err := io.ReadAll(br)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(start), full)
		assert.Equal(t, "data: {\"n\":1}\n\n"+
			"event: tick\ndata: {\"n\":2}\n\n"+
			"event: tick\ndata: {\"n\":3}\n\n", string(rest))
	})

	t.Run("stops when the client goes", func(t *testing.T) {
		t.Parallel()
		h := demo.New(demo.Options{})
		returned := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			close(returned)
		}))
		t.Cleanup(srv.Close)

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/events?count=100&interval=10s", nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		_, err = bufio.NewReader(resp.Body).ReadString('\n')
		require.NoError(t, err)
		cancel()
		select {
		case <-returned:
		case <-time.After(2 * time.Second):
			t.Fatal("event stream still running 2s after the client went away")
		}
	})

	bad := []struct {
		name, query, want string
	}{
		{"count too high", "?count=101", `{"detail":[{"type":"less_than_equal","loc":["query","count"],"msg":"Input should be less than or equal to 100","input":"101","ctx":{"le":100}}]}`},
		{"count not a number", "?count=many", `{"detail":[{"type":"int_parsing","loc":["query","count"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"many"}]}`},
		{"interval too long", "?interval=11s", `{"detail":[{"type":"value_error","loc":["query","interval"],"msg":"Value error, interval must be a Go duration between 0s and 10s","input":"11s","ctx":{"error":{}}}]}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mustServer(t, demo.Options{})
			resp := mustDo(t, srv, http.MethodGet, "/api/v1/events"+tc.query, "", "")
			assert.Equal(t, http.StatusUnprocessableEntity, resp.status)
			assert.JSONEq(t, tc.want, string(resp.body))
		})
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	srv := mustServer(t, demo.Options{})
	body := bytes.Repeat([]byte("sentry envelope \x00\xff\n"), 1000)

	cases := []struct {
		name, method, path string
		body               []byte
		wantPath           string
		wantRawPath        string
		wantQuery          string
	}{
		{"GET root", http.MethodGet, "/api/v1/echo", nil, "/api/v1/echo", "", ""},
		{"POST with encoded slash", http.MethodPost, "/api/v1/echo/a%2Fb/c?x=1&y=%20&x=2", body, "/api/v1/echo/a/b/c", "/api/v1/echo/a%2Fb/c", "x=1&y=%20&x=2"},
		{"OPTIONS", http.MethodOptions, "/api/v1/echo/preflight", nil, "/api/v1/echo/preflight", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, bytes.NewReader(tc.body))
			require.NoError(t, err)
			req.Header.Add("X-Test", "one")
			req.Header.Add("X-Test", "two")
			resp := mustSend(t, srv, req)
			require.Equal(t, http.StatusOK, resp.status)
			assert.Equal(t, "application/json", resp.header.Get("Content-Type"))

			var got struct {
				Method     string              `json:"method"`
				Path       string              `json:"path"`
				RawPath    string              `json:"raw_path"`
				RequestURI string              `json:"request_uri"`
				Query      string              `json:"query"`
				Host       string              `json:"host"`
				Headers    map[string][]string `json:"headers"`
				BodyBytes  int                 `json:"body_bytes"`
				BodySHA256 string              `json:"body_sha256"`
			}
			require.NoError(t, json.Unmarshal(resp.body, &got))
			wantSum := sha256.Sum256(tc.body)
			assert.Equal(t, tc.method, got.Method)
			assert.Equal(t, tc.wantPath, got.Path)
			assert.Equal(t, tc.wantRawPath, got.RawPath)
			assert.Equal(t, tc.path, got.RequestURI)
			assert.Equal(t, tc.wantQuery, got.Query)
			assert.Equal(t, strings.TrimPrefix(srv.URL, "http://"), got.Host)
			assert.Equal(t, []string{"one", "two"}, got.Headers["X-Test"])
			assert.Equal(t, len(tc.body), got.BodyBytes)
			assert.Equal(t, hex.EncodeToString(wantSum[:]), got.BodySHA256)
		})
	}
}

// FuzzDeployBody checks that no body makes the deploy route answer
// anything but one of its documented statuses, with a JSON body.
func FuzzDeployBody(f *testing.F) {
	for _, seed := range []string{
		`{"catalog_id":"nginx","hostname":"mysite"}`,
		`{"catalog_id":"nginx","hostname":"x-fail-x","config":{"a":1},"environment":{"K":"V"},"node":"pve2"}`,
		`{"catalog_id":1,"hostname":["a"],"config":[],"environment":{"K":1},"node":3}`,
		`{"hostname":"-bad-"}`,
		`{"catalog_id":"nginx","hostname":"ünïcode"}`,
		`[]`, `null`, `{`, ``, `{} {}`,
	} {
		f.Add(seed)
	}
	h := demo.New(demo.Options{})
	token, err := demo.Token("", "demo", "user", 2, time.Now(), time.Hour)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/api/v1/apps/deploy", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Contains(t, []int{http.StatusOK, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusInternalServerError}, rec.Code)
		assert.True(t, json.Valid(rec.Body.Bytes()), "body: %s", rec.Body.Bytes())
	})
}
