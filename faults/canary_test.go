//go:build faults

package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/proctest"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// The canary suite: every place a secret can enter the sidecar carries a
// unique value; after a full scripted session (login, list, a deploy that
// fails, a tunnelled browser event, the admin endpoints) no canary may be
// found in anything the Sentry double received, anything the sidecar
// wrote to stderr or stdout, any admin answer, the inbox file, or the
// output of `check` with the same config and environment. The session runs
// twice: sending to the double, and in inbox mode (development without
// sentry.debug).
//
// The one expected appearance: the DSN's public key authenticates the
// sidecar to Sentry. Sentry's protocol carries it in X-Sentry-Auth and in
// the envelope header (dsn, trace.public_key: sentry-go, the JS SDK and the
// tunnel's rewrite all write it there). It must be nowhere else: not in an
// item payload, a URL, another header, a log line, an admin answer or
// check's output, and in inbox mode not even there.

// hxCanaries are the secrets of one session, by where they enter.
type hxCanaries map[string]string

// hxNewCanaries makes fresh values. Each is shaped like the real thing
// (a 32-hex DSN key, a signed JWT, bearer characters) so that a scrubber
// keyed on shape is tested as much as one keyed on names.
func hxNewCanaries(tb testing.TB) hxCanaries {
	tb.Helper()
	c := hxCanaries{
		"dsn key (SENTRY_DSN)":                  hxHex(tb, 16),
		"JWT_SECRET_KEY":                        "cnry-jwtsecret-" + hxHex(tb, 8),
		"admin.token (SIDECAR_ADMIN_TOKEN)":     "cnry-admintoken-" + hxHex(tb, 8),
		"upstream.url password":                 "cnry-upstreampw-" + hxHex(tb, 8),
		"login body password":                   "cnry-loginpw-" + hxHex(tb, 8),
		"opaque Authorization bearer":           "cnry_opaque_" + hxHex(tb, 8),
		"Cookie sid":                            "cnry-cookie-" + hxHex(tb, 8),
		"X-Api-Key header":                      "cnry-apikey-" + hxHex(tb, 8),
		"?password=":                            "cnry-qpassword-" + hxHex(tb, 8),
		"?token=":                               "cnry-qtoken-" + hxHex(tb, 8),
		"deploy body root_password":             "cnry-rootpw-" + hxHex(tb, 8),
		"5xx JSON body password":                "cnry-resppw-" + hxHex(tb, 8),
		"5xx JSON body token":                   "cnry-resptoken-" + hxHex(tb, 8),
		"5xx text body password=":               "cnry-resptext-" + hxHex(tb, 8),
		"5xx Set-Cookie":                        "cnry-setcookie-" + hxHex(tb, 8),
		"tunnel event extra.password":           "cnry-tunnelpw-" + hxHex(tb, 8),
		"tunnel event request Authorization":    "cnry_tunnelauth_" + hxHex(tb, 8),
		"tunnel event request cookies":          "cnry-tunnelcookie-" + hxHex(tb, 8),
		"tunnel event query token":              "cnry-tunnelq-" + hxHex(tb, 8),
		"tunnel event message password=":        "cnry-tunnelmsg-" + hxHex(tb, 8),
		"tunnel event breadcrumb data.password": "cnry-tunnelcrumb-" + hxHex(tb, 8),
	}
	return c
}

// hxCanaryAPI is the Proximity-like API of the session: it issues HS256
// tokens signed with the session's JWT_SECRET_KEY, fails the deploy with a
// FastAPI body holding secrets, and answers 502 with a text body holding
// one.
func hxCanaryAPI(tb testing.TB, c hxCanaries, token func(user string) string) *hxUpstream {
	return hxNewUpstream(tb, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/auth/login":
			var in struct{ Username, Password string }
			_ = json.Unmarshal(body, &in)
			if in.Password != c["login body password"] {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(`{"detail":"Incorrect username or password"}`))
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"access_token": token(in.Username), "token_type": "bearer"})
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/apps":
			_, _ = w.Write([]byte(`[{"id":"wordpress-myblog","status":"running"}]`))
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/apps/catalog":
			_, _ = w.Write([]byte(`[{"id":"nginx"},{"id":"wordpress"}]`))
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/apps/deploy":
			http.SetCookie(w, &http.Cookie{Name: "session", Value: c["5xx Set-Cookie"]})
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"detail":   "Deployment failed: LXC create returned exit code 255",
				"password": c["5xx JSON body password"],
				"context":  map[string]any{"token": c["5xx JSON body token"], "node": "pve"},
			})
		case r.URL.Path == "/api/v1/system/nodes":
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = fmt.Fprintf(w, "proxmox login failed: password=%s host=pve.local", c["5xx text body password="])
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"Not Found"}`))
		}
	})
}

// hxPlace is something the session produced that must hold no canary.
type hxPlace struct {
	name string
	b    []byte
}

// hxCanaryResult is what one session found.
type hxCanaryResult struct {
	places   []hxPlace
	leaks    []string
	bytes    int
	canaries int
}

// TestCanarySecretsNeverLeave runs the session to the double and in inbox
// mode.
func TestCanarySecretsNeverLeave(t *testing.T) {
	for _, mode := range []string{"sentry", "inbox"} {
		t.Run(mode, func(t *testing.T) {
			res := hxCanarySession(t, mode)
			var b strings.Builder
			tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "place\tbytes scanned")
			for _, p := range res.places {
				fmt.Fprintf(tw, "%s\t%d\n", p.name, len(p.b))
			}
			tw.Flush()
			t.Logf("%s mode: %d canaries × %d places, %d bytes scanned, %d leaks\n%s", mode, res.canaries, len(res.places), res.bytes, len(res.leaks), b.String())
			for _, l := range res.leaks {
				t.Error(l)
			}
			recordRow(faultRow{Scenario: "secrets never leave (" + mode + ")", Errors: len(res.leaks),
				Note: fmt.Sprintf("%d canaries in %d places, %d bytes scanned", res.canaries, len(res.places), res.bytes)})
		})
	}
}

// hxCanarySession runs the scripted session and scans every place.
func hxCanarySession(t *testing.T, mode string) hxCanaryResult {
	c := hxNewCanaries(t)
	double := sentrytest.NewServer(t)
	const project = 3
	dsn := double.DSN(c["dsn key (SENTRY_DSN)"], project)

	now := time.Now().Unix()
	token := func(user string) string {
		return hxJWT(t, map[string]any{"alg": "HS256", "typ": "JWT"},
			map[string]any{"sub": user, "user_id": 42, "role": "user", "iat": now, "exp": now + 3600, "jti": hxHex(t, 8)},
			hxHS256([]byte(c["JWT_SECRET_KEY"])))
	}
	api := hxCanaryAPI(t, c, token)
	apiURL, err := url.Parse(api.srv.URL)
	require.NoError(t, err)
	apiURL.User = url.UserPassword("sidecar", c["upstream.url password"])

	environment := "production"
	if mode == "inbox" {
		environment = "development" // with a DSN but without sentry.debug: the inbox
	}
	config := fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstream:
  url: %q
shutdown:
  drain_delay: 0s
  grace_period: 2s
  flush_timeout: 5s
sentry:
  environment: %s
  traces_sample_rate: 1.0
  contexts:
    proxmox: {host: pve.local, port: 8006}
jwt:
  cookie: proximity-auth-cookie
tunnel:
  path: /api/v1/beacon
browser:
  config_path: /sentry-browser-config.js
actions:
  - route: "POST /api/v1/auth/login"
    name: auth.login
    fields: [username]
  - route: "POST /api/v1/apps/deploy"
    name: app.deploy
    fields: [catalog_id, hostname]
log:
  level: debug
  format: json
`, apiURL.String(), environment)
	inboxFile := filepath.Join(t.TempDir(), "inbox.jsonl")
	env := map[string]string{
		"SENTRY_DSN":          dsn,
		"JWT_SECRET_KEY":      c["JWT_SECRET_KEY"],
		"SIDECAR_ADMIN_TOKEN": c["admin.token (SIDECAR_ADMIN_TOKEN)"],
		"SIDECAR_INBOX_FILE":  inboxFile,
	}
	s := hxStartSidecar(t, config, env)
	adminAuth := http.Header{"Authorization": {"Bearer " + c["admin.token (SIDECAR_ADMIN_TOKEN)"]}}

	var places []hxPlace
	keep := func(name string, res *http.Response, body []byte) {
		var h bytes.Buffer
		_ = res.Header.Write(&h)
		places = append(places, hxPlace{name, append(h.Bytes(), body...)})
	}

	// 1. Login: the password in the body; the answer carries the token.
	res, body := hxDo(t, http.MethodPost, s.url+"/api/v1/auth/login", http.Header{"Content-Type": {"application/json"}},
		[]byte(fmt.Sprintf(`{"username":"alice","password":%q}`, c["login body password"])))
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	var login struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.Unmarshal(body, &login))
	accessToken := login.AccessToken
	cookieToken := token("alice")
	sig := func(tok string) string { return tok[strings.LastIndexByte(tok, '.')+1:] }
	// The tokens are secrets too, whole and by their signature.
	c["access token (Authorization: Bearer JWT)"] = accessToken
	c["access token signature"] = sig(accessToken)
	c["cookie JWT signature (proximity-auth-cookie)"] = sig(cookieToken)

	// 2. The list, with the token, cookies, an API key and secrets in
	// the query.
	res, body = hxDo(t, http.MethodGet, s.url+"/api/v1/apps?password="+c["?password="]+"&token="+c["?token="]+"&page=1", http.Header{
		"Authorization": {"Bearer " + accessToken},
		"Cookie":        {"sid=" + c["Cookie sid"] + "; proximity-auth-cookie=" + cookieToken},
		"X-Api-Key":     {c["X-Api-Key header"]},
	}, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	// A non-JWT bearer: no user, and never sent anywhere either.
	res, _ = hxDo(t, http.MethodGet, s.url+"/api/v1/apps/catalog", http.Header{"Authorization": {"Bearer " + c["opaque Authorization bearer"]}}, nil)
	require.Equal(t, http.StatusOK, res.StatusCode)

	// 3. The deploy that fails: secrets in the request body and in the
	// API's 5xx body and Set-Cookie. Then a 502 whose text holds one, with
	// every request secret at once.
	res, body = hxDo(t, http.MethodPost, s.url+"/api/v1/apps/deploy?token="+c["?token="], http.Header{
		"Authorization": {"Bearer " + accessToken},
		"Content-Type":  {"application/json"},
		"Cookie":        {"sid=" + c["Cookie sid"]},
	}, []byte(fmt.Sprintf(`{"catalog_id":"nginx","hostname":"will-fail","root_password":%q,"config":{"admin_password":%q}}`, c["deploy body root_password"], c["deploy body root_password"])))
	require.Equal(t, http.StatusInternalServerError, res.StatusCode)
	require.Contains(t, string(body), c["5xx JSON body password"], "the client gets the API's body byte for byte")
	res, _ = hxDo(t, http.MethodGet, s.url+"/api/v1/system/nodes?password="+c["?password="], http.Header{
		"Authorization": {"Bearer " + accessToken},
		"X-Api-Key":     {c["X-Api-Key header"]},
		"Cookie":        {"sid=" + c["Cookie sid"]},
	}, nil)
	require.Equal(t, http.StatusBadGateway, res.StatusCode)

	// 4. The browser: its config (public), then a tunnelled event full of
	// secrets, posted with the user's token.
	res, body = hxDo(t, http.MethodGet, s.url+"/sentry-browser-config.js?format=json", nil, nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	keep("browser config answer", res, body)
	var browser struct {
		DSN string `json:"dsn"`
	}
	require.NoError(t, json.Unmarshal(body, &browser))
	require.NotEmpty(t, browser.DSN)
	tunnelEventID := hxHex(t, 16)
	envelope := hxEnvelope(t, browser.DSN, tunnelEventID, map[string]any{
		"platform": "javascript",
		"level":    "error",
		"message":  "login failed for password=" + c["tunnel event message password="],
		"request": map[string]any{
			"url":          "http://app.local/apps?token=" + c["tunnel event query token"],
			"query_string": "token=" + c["tunnel event query token"],
			"headers": map[string]any{
				"Authorization": "Bearer " + c["tunnel event request Authorization"],
				"User-Agent":    "Mozilla/5.0",
			},
			"cookies": "sid=" + c["tunnel event request cookies"],
		},
		"extra": map[string]any{"password": c["tunnel event extra.password"], "page": "apps"},
		"breadcrumbs": map[string]any{"values": []any{map[string]any{
			"category": "ui.input", "message": "typed", "data": map[string]any{"password": c["tunnel event breadcrumb data.password"]},
		}}},
	})
	res, body = hxDo(t, http.MethodPost, s.url+"/api/v1/beacon", http.Header{
		"Content-Type":  {"application/x-sentry-envelope"},
		"Authorization": {"Bearer " + accessToken},
	}, envelope)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	keep("tunnel answer", res, body)

	// 5. The admin listener: without the token nothing but the probes,
	// with it everything.
	for _, path := range []string{"/metrics", "/sentry-info", "/inbox"} {
		res, body := hxDo(t, http.MethodGet, s.admin+path, nil, nil)
		assert.Equal(t, http.StatusUnauthorized, res.StatusCode, "admin %s without the token", path)
		assert.True(t, strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer"))
		keep("admin "+path+" without token", res, body)
	}
	res, body = hxDo(t, http.MethodPost, s.admin+"/test-event", http.Header{"Authorization": {"Bearer wrong"}}, nil)
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode, "no test event with a wrong token")
	keep("admin POST /test-event with a wrong token", res, body)

	res, body = hxDo(t, http.MethodPost, s.admin+"/test-event", adminAuth, nil)
	assert.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	keep("admin POST /test-event", res, body)

	// Wait until everything the session caused has arrived: the deploy
	// and 502 events, the tunnelled one and the test event.
	var inboxIDs []string
	if mode == "sentry" {
		double.WaitEvents(t, 4, 20*time.Second)
		hxWaitEnvelope(t, double, tunnelEventID)
	} else {
		require.Eventually(t, func() bool {
			_, b := hxDo(t, http.MethodGet, s.admin+"/inbox?full=1", adminAuth, nil)
			return bytes.Contains(b, []byte(tunnelEventID)) && bytes.Contains(b, []byte("Deployment failed")) && bytes.Contains(b, []byte("proxmox login failed"))
		}, 20*time.Second, 50*time.Millisecond, "the session's events in the inbox")
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/sentry-info", "/inbox", "/inbox?full=1", "/inbox?type=transaction&full=1", "/inbox.html"} {
		res, body := hxDo(t, http.MethodGet, s.admin+path, adminAuth, nil)
		if mode == "sentry" && strings.HasPrefix(path, "/inbox") {
			assert.Equal(t, http.StatusNotImplemented, res.StatusCode, "admin %s", path)
		} else {
			assert.Equal(t, http.StatusOK, res.StatusCode, "admin %s", path)
		}
		keep("admin "+path, res, body)
		if path == "/inbox" && mode == "inbox" {
			var list struct {
				Events []struct {
					EventID string `json:"event_id"`
				} `json:"events"`
			}
			require.NoError(t, json.Unmarshal(body, &list), "%s", body)
			for _, ev := range list.Events {
				inboxIDs = append(inboxIDs, ev.EventID)
			}
		}
	}
	for _, id := range inboxIDs {
		res, body := hxDo(t, http.MethodGet, s.admin+"/inbox/"+id, adminAuth, nil)
		assert.Equal(t, http.StatusOK, res.StatusCode)
		keep("admin /inbox/{id}", res, body)
	}

	// The secrets reached the API unchanged: it is the API's business.
	apiGot := func(pred func(hxRecorded) bool) bool {
		for _, r := range api.Requests() {
			if pred(r) {
				return true
			}
		}
		return false
	}
	assert.True(t, apiGot(func(r hxRecorded) bool { return bytes.Contains(r.Body, []byte(c["login body password"])) }), "the API got the login password")
	assert.True(t, apiGot(func(r hxRecorded) bool { return r.Header.Get("Authorization") == "Bearer "+accessToken }), "the API got the token")
	assert.True(t, apiGot(func(r hxRecorded) bool { return strings.Contains(r.RequestURI, c["?password="]) }), "the API got the query")
	assert.True(t, apiGot(func(r hxRecorded) bool { return strings.Contains(r.Header.Get("Cookie"), c["Cookie sid"]) }), "the API got the cookie")
	assert.False(t, apiGot(func(r hxRecorded) bool {
		return strings.Contains(r.Header.Get("Authorization"), c["upstream.url password"])
	}), "upstream.url's credentials are config, never sent as the client's")

	// Stop, so the last flush and log lines are in.
	s.Stop(t)
	require.NoError(t, s.Err(), "exit status after SIGTERM")

	// What the session reported, where it went: the events carry the user
	// and [Filtered] where the secrets were (else the scan below proves
	// nothing).
	var sentEvents []byte
	if mode == "sentry" {
		for _, ev := range double.Events() {
			b, _ := json.Marshal(ev)
			sentEvents = append(sentEvents, b...)
		}
		assert.Empty(t, double.Rejections(), "the double rejected nothing")
		assert.Contains(t, double.Envelopes()[0].HTTPHeader.Get("X-Sentry-Auth"), "sentry_key="+c["dsn key (SENTRY_DSN)"], "the key authenticates: where it belongs")
	} else {
		assert.Zero(t, double.Requests(), "inbox mode sends nothing to Sentry")
		ib, err := os.ReadFile(inboxFile)
		require.NoError(t, err)
		sentEvents = ib
		places = append(places, hxPlace{"inbox file (SIDECAR_INBOX_FILE)", ib})
	}
	for _, want := range []string{"Deployment failed", "proxmox login failed", `"id":"42"`, tunnelEventID, "[Filtered]", "will-fail"} {
		assert.Contains(t, string(sentEvents), want, "positive control: the events are there")
	}

	places = append(places,
		hxPlace{"sidecar stdout and stderr (access log and every other log line)", s.Out.Bytes()},
	)
	// check with the same config and environment.
	chk := exec.Command(sidecarBin, "check", "-config", s.config)
	chk.Env = proctest.Env(s.dir, env)
	var chkOut, chkErr bytes.Buffer
	chk.Stdout, chk.Stderr = &chkOut, &chkErr
	require.NoError(t, chk.Run(), "check: %s", chkErr.String())
	assert.Contains(t, chkOut.String(), "REDACTED", "positive control: check printed the secrets' keys")
	assert.Contains(t, chkOut.String(), "token: REDACTED")
	places = append(places, hxPlace{"check stdout", chkOut.Bytes()}, hxPlace{"check stderr", chkErr.Bytes()})

	var r hxCanaryResult
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, p := range places {
		r.bytes += len(p.b)
		for _, n := range names {
			if i := bytes.Index(p.b, []byte(c[n])); i >= 0 {
				r.leaks = append(r.leaks, fmt.Sprintf("canary %q found in %s: …%s…", n, p.name, hxAround(p.b, i, len(c[n]))))
			}
		}
	}
	if mode == "sentry" {
		r.bytes += len(double.AllBytes())
		r.leaks = append(r.leaks, hxDoubleLeaks(double, c, "dsn key (SENTRY_DSN)")...)
		places = append(places, hxPlace{"everything the Sentry double received (AllBytes)", double.AllBytes()})
	}
	r.places = places
	r.canaries = len(c)
	return r
}

// hxDoubleLeaks scans what the double received. The DSN key may only be
// in X-Sentry-Auth and in the envelope header's dsn and trace.public_key;
// every other canary nowhere. The count of the key in AllBytes must equal
// the count in those places, so that no place is overlooked.
func hxDoubleLeaks(d *sentrytest.Server, c hxCanaries, keyName string) []string {
	var leaks []string
	key := c[keyName]
	scan := func(where string, b []byte, allowKey bool) {
		for n, v := range c {
			if allowKey && n == keyName {
				continue
			}
			if i := bytes.Index(b, []byte(v)); i >= 0 {
				leaks = append(leaks, fmt.Sprintf("canary %q sent to Sentry in %s: …%s…", n, where, hxAround(b, i, len(v))))
			}
		}
	}
	allowed := 0
	for _, env := range d.Envelopes() {
		h := env.HTTPHeader.Clone()
		auth := h.Get("X-Sentry-Auth")
		h.Del("X-Sentry-Auth")
		var hb bytes.Buffer
		_ = h.Write(&hb)
		scan("an HTTP header", hb.Bytes(), false)
		scan("X-Sentry-Auth", []byte(auth), true)
		allowed += strings.Count(auth, key)
		scan("the URL", []byte(env.URL), false)

		hdr := map[string]any{}
		for k, v := range env.Header {
			hdr[k] = v
		}
		if dsn, ok := hdr["dsn"].(string); ok {
			allowed += strings.Count(dsn, key)
			scan("the envelope header's dsn", []byte(dsn), true)
			delete(hdr, "dsn")
		}
		if tr, ok := hdr["trace"].(map[string]any); ok {
			t := map[string]any{}
			for k, v := range tr {
				t[k] = v
			}
			if pk, ok := t["public_key"].(string); ok {
				allowed += strings.Count(pk, key)
				delete(t, "public_key")
			}
			hdr["trace"] = t
		}
		hb.Reset()
		_ = json.NewEncoder(&hb).Encode(hdr)
		scan("the rest of the envelope header", hb.Bytes(), false)
		for _, it := range env.Items {
			ib, _ := json.Marshal(it.Header)
			scan("an item header ("+it.Type+")", ib, false)
			scan("an item payload ("+it.Type+")", it.Payload, false)
		}
	}
	for _, rej := range d.Rejections() {
		var hb bytes.Buffer
		_ = rej.HTTPHeader.Write(&hb)
		scan("a rejected request", append(hb.Bytes(), rej.Raw...), false)
	}
	all := d.AllBytes()
	scan("the raw requests", all, true)
	if got := bytes.Count(all, []byte(key)); got != allowed {
		leaks = append(leaks, fmt.Sprintf("the DSN key is %d times in what Sentry received but only %d times where the protocol puts it", got, allowed))
	}
	return leaks
}

// hxAround shows the bytes around a find, for the failure message.
func hxAround(b []byte, i, n int) string {
	lo, hi := max(0, i-60), min(len(b), i+n+60)
	return strings.ToValidUTF8(string(b[lo:hi]), "?")
}
