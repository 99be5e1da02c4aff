//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// The browser half of the suite: Debian's Chromium, driven by playwright-core
// from e2e/browser/run.mjs, loads a page with @sentry/browser through the
// sidecar. .ci/e2e installs all of it.
const (
	node     = "/usr/bin/node"
	chromium = "/usr/bin/chromium"

	// browserRealKey is the real public key of the browser's Sentry
	// project (here sentry.dsn, which tunnel.dsn defaults to): the sidecar
	// knows it, the browser must never see it.
	browserRealKey = "5f0c3e1a9b8d47e2a6c4d1f0e9b7a3c2"
	browserProject = 7

	tunnelPath        = "/api/v1/beacon" // no "sentry" or "envelope": ad-blockers match those
	browserConfigPath = "/sentry-browser-config.js"
	browserRelease    = "web@e2e"

	browserRunTimeout = 90 * time.Second // bound on one run.mjs
)

// TestBrowser loads a page that uses @sentry/browser through the sidecar in
// a real Chromium: the SDK takes its settings from the sidecar's browser
// config, sends its envelopes to the tunnel, and the Sentry double checks
// what the sidecar made of them. Each scenario has its own double and
// sidecar; the upstream (the demo API plus the test page) is shared.
func TestBrowser(t *testing.T) {
	t.Logf("browser tools: %s", mustCheckBrowserTools(t))
	up := mustStartPageUpstream(t)
	t.Logf("upstream (demo API and test page) at %s", up.URL)

	t.Run("error through the tunnel", func(t *testing.T) { testErrorThroughTunnel(t, up) })
	t.Run("verified user replaces the page's", func(t *testing.T) { testVerifiedUser(t, up) })
	t.Run("replay recording byte-exact", func(t *testing.T) { testReplayByteExact(t, up) })
}

// testErrorThroughTunnel: no token, no replay. One uncaught error in a click
// handler arrives at Sentry once, through the tunnel, under the real DSN,
// with the browser's stack and breadcrumbs; the browser never learns the
// real key.
func testErrorThroughTunnel(t *testing.T, up *pageUpstream) {
	b := startBrowserScenario(t, up)
	failure := "F" + randomHex(6)
	run := b.mustRun(t, browserInput{Query: url.Values{"failure": {failure}}, WaitFor: []string{"event"}})

	b.checkConfig(t, run)
	b.checkTunnelTraffic(t, run)
	ev := b.mustOneEvent(t, run, failure)
	assert.Nil(t, nested(ev.payload, "user", "id"), "no token was sent and the page set no user, so no user id: %v", ev.payload["user"])
	b.checkAccessLog(t, run)
	t.Logf("event %s: %q with %d frames, breadcrumbs %s, user %v; browser: %s",
		ev.payload["event_id"], nested(firstException(ev.payload), "value"), len(frames(ev.payload)),
		breadcrumbSummary(ev.payload), ev.payload["user"], run.summary())
}

// testVerifiedUser: the page sends the API token it got at login on its
// tunnel posts and also calls Sentry.setUser with a forged user; the event
// names the token's user, and the token never reaches Sentry.
func testVerifiedUser(t *testing.T, up *pageUpstream) {
	b := startBrowserScenario(t, up)
	code, body, _ := mustDo(t, http.MethodPost, b.sc.url+"/api/v1/auth/login",
		http.Header{"Content-Type": {"application/json"}}, `{"username":"demo","password":"demo1234"}`)
	require.Equal(t, http.StatusOK, code, "login through the sidecar: %s", body)
	var login struct {
		AccessToken string `json:"access_token"`
	}
	mustJSON(t, body, &login)
	require.NotEmpty(t, login.AccessToken)

	failure := "U" + randomHex(6)
	run := b.mustRun(t, browserInput{
		Query:   url.Values{"failure": {failure}, "evil": {"1"}},
		Token:   login.AccessToken,
		WaitFor: []string{"event"},
	})
	b.checkConfig(t, run)
	b.checkTunnelTraffic(t, run)
	for _, post := range run.Tunnel {
		assert.Equal(t, "Bearer "+login.AccessToken, post.Headers["authorization"], "the SDK sends the token on every tunnel post (transportOptions.headers)")
	}
	ev := b.mustOneEvent(t, run, failure)
	user, _ := ev.payload["user"].(map[string]any)
	assert.Equal(t, "2", nested(user, "id"), "the verified user from the token, not the page's Sentry.setUser: %v", user)
	assert.Equal(t, "demo", nested(user, "username"), "user: %v", user)
	assert.NotContains(t, fmt.Sprint(user), "evil", "nothing of the forged user survives: %v", user)
	assert.NotContains(t, fmt.Sprint(user), "mallory", "nothing of the forged user survives: %v", user)

	all := b.srv.AllBytes()
	assert.False(t, bytes.Contains(all, []byte(login.AccessToken)), "the token reached the Sentry double")
	for _, env := range b.srv.Envelopes() {
		assert.Empty(t, env.HTTPHeader.Values("Authorization"), "the page's Authorization header is not forwarded to Sentry")
	}
	b.checkAccessLog(t, run)
	t.Logf("event %s: user %v (the page had set id \"evil\"); token on %d tunnel posts, in no byte the double received; browser: %s",
		ev.payload["event_id"], user, len(run.Tunnel), run.summary())
}

// testReplayByteExact: with the replay integration and an error sample rate
// of 1, the error sends the buffered replay; its recording (binary,
// compressed by the SDK's worker, framed with "length") reaches Sentry with
// the same bytes the browser posted.
func testReplayByteExact(t *testing.T, up *pageUpstream) {
	b := startBrowserScenario(t, up)
	failure := "R" + randomHex(6)
	run := b.mustRun(t, browserInput{
		Query:   url.Values{"failure": {failure}, "replay": {"1"}},
		WaitFor: []string{"event", "replay_recording"},
	})
	b.checkConfig(t, run)
	b.checkTunnelTraffic(t, run)
	ev := b.mustOneEvent(t, run, failure)
	require.NotNil(t, run.ReplayID, "the page has a replay id")
	assert.Equal(t, *run.ReplayID, nested(ev.payload, "tags", "replayId"), "the event links to the replay")

	// Every replay envelope the browser posted, found at the double by its
	// event_id (the replay id) and segment.
	atDouble := map[string]sentrytest.Envelope{}
	for _, env := range b.srv.Envelopes() {
		if seg, ok := replaySegment(env); ok {
			atDouble[env.EventID()+"/"+seg] = env
		}
	}
	var recordings, recordingBytes int
	for i, post := range run.Tunnel {
		sent, err := sentrytest.ParseEnvelope(post.Body)
		require.NoError(t, err, "the browser's tunnel post %d does not parse", i)
		seg, ok := replaySegment(sent)
		if !ok {
			continue
		}
		got, found := atDouble[sent.EventID()+"/"+seg]
		if !assert.True(t, found, "replay %s segment %s was posted to the tunnel (answered %d) but did not reach the double", sent.EventID(), seg, post.Status) {
			continue
		}
		require.Equal(t, len(sent.Items), len(got.Items), "items in replay %s segment %s", sent.EventID(), seg)
		for j, it := range sent.Items {
			assert.Equal(t, it.Header, got.Items[j].Header, "item %d (%s) header", j, it.Type)
			assert.True(t, bytes.Equal(it.Payload, got.Items[j].Payload), "item %d (%s): %d bytes sent, %d bytes at the double, first difference at byte %d",
				j, it.Type, len(it.Payload), len(got.Items[j].Payload), firstDiff(it.Payload, got.Items[j].Payload))
			if it.Type != "replay_recording" {
				continue
			}
			recordings++
			recordingBytes += len(it.Payload)
			// The recording is {"segment_id":N}\n and then the worker's
			// compressed rrweb data: binary, which is what must survive.
			_, data, _ := bytes.Cut(it.Payload, []byte("\n"))
			assert.False(t, utf8.Valid(data), "the recording data is compressed binary (not valid UTF-8), so the byte-exact path was exercised")
			assert.Contains(t, it.Header, "length", "a binary item carries an explicit length")
		}
		// Past the envelope header line (where the dsn is rewritten) the
		// envelope is what the browser sent, byte for byte.
		_, sentRest, _ := bytes.Cut(post.Body, []byte("\n"))
		_, gotRest, _ := bytes.Cut(got.Raw, []byte("\n"))
		assert.True(t, bytes.Equal(sentRest, gotRest), "replay envelope past its header line: %d bytes sent, %d at the double, first difference at byte %d",
			len(sentRest), len(gotRest), firstDiff(sentRest, gotRest))
		t.Logf("replay %s segment %s: %d bytes posted with Content-Type %q, items %v, identical past the header line: %t",
			sent.EventID(), seg, len(post.Body), post.Headers["content-type"], post.Types, bytes.Equal(sentRest, gotRest))
	}
	assert.Positive(t, recordings, "the browser posted at least one replay_recording")
	b.checkAccessLog(t, run)
	t.Logf("event %s, replay %s: %d recording(s) of %d bytes in all, compared with the double byte for byte; browser: %s",
		ev.payload["event_id"], *run.ReplayID, recordings, recordingBytes, run.summary())
}

// mustCheckBrowserTools fails (never skips: CI must run this suite) unless
// node, Debian's Chromium and the npm packages are there, builds the page's
// bundle and returns the versions.
func mustCheckBrowserTools(tb testing.TB) string {
	tb.Helper()
	for _, bin := range []string{node, chromium} {
		if _, err := os.Stat(bin); err != nil {
			tb.Fatalf("%s is missing (%v): run .ci/e2e, or apt-get install nodejs chromium chromium-driver", bin, err)
		}
	}
	dir := filepath.Join(repoRoot, "e2e", "browser")
	var versions []string
	for _, pkg := range []string{"@sentry/browser", "esbuild", "playwright-core"} {
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
		if err != nil {
			tb.Fatalf("npm package %s is missing (%v): run .ci/e2e, or npm ci in e2e/browser", pkg, err)
		}
		var p struct {
			Version string `json:"version"`
		}
		mustJSON(tb, b, &p)
		versions = append(versions, pkg+" "+p.Version)
	}
	out, err := exec.Command(node, "--version").CombinedOutput()
	if err != nil {
		tb.Fatalf("%s --version: %v\n%s", node, err, out)
	}
	versions = append([]string{"node " + strings.TrimSpace(string(out))}, versions...)
	out, err = exec.Command(chromium, "--version").CombinedOutput()
	if err != nil {
		tb.Fatalf("%s --version: %v\n%s", chromium, err, out)
	}
	// Debian's launcher script may print a complaint of its own first (its
	// /dev/shm check); the version is the line that names Chromium.
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "Chromium ") {
			versions = append(versions, strings.TrimSpace(line))
		}
	}
	// The bundle is built here too, so a run never uses one older than
	// app.js.
	build := exec.Command(node, "build.mjs")
	build.Dir = dir
	build.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + tb.TempDir()}
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("bundle the page (node build.mjs in e2e/browser): %v\n%s", err, out)
	}
	return strings.Join(versions, ", ")
}

// pageUpstream is the API behind the sidecar: the demo API, plus the test
// page at / and its bundle at /app.js. It records every path it served, to
// show that the config and the tunnel never reached it.
type pageUpstream struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

// testPage loads the sidecar's browser config, then the app.
const testPage = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>sentry-sidecar e2e</title><link rel="icon" href="data:,"></head>
<body>
<h1>Apps</h1>
<p id="status">idle</p>
<button id="deploy" type="button">Deploy</button>
<script src="` + browserConfigPath + `"></script>
<script src="/app.js"></script>
</body>
</html>
`

func mustStartPageUpstream(tb testing.TB) *pageUpstream {
	tb.Helper()
	bundle, err := os.ReadFile(filepath.Join(repoRoot, "e2e", "browser", "dist", "app.js"))
	require.NoError(tb, err, "the page's bundle (node build.mjs in e2e/browser)")
	api := demo.New(demo.Options{Secret: jwtSecret})
	u := &pageUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.paths = append(u.paths, r.Method+" "+r.URL.Path)
		u.mu.Unlock()
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprint(w, testPage)
		case r.Method == http.MethodGet && r.URL.Path == "/app.js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Write(bundle)
		default:
			api.ServeHTTP(w, r)
		}
	}))
	tb.Cleanup(u.Close)
	return u
}

func (u *pageUpstream) served() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.paths)
}

// browserScenario is one scenario's double and sidecar.
type browserScenario struct {
	srv     *sentrytest.Server
	sc      *sidecar
	up      *pageUpstream
	realDSN string
	upFrom  int // len(up.served()) when the scenario started
}

func startBrowserScenario(t *testing.T, up *pageUpstream) *browserScenario {
	t.Helper()
	srv := sentrytest.NewServer(t)
	srv.AllowKey(browserRealKey) // anything else, the placeholder key above all, is a 401
	realDSN := srv.DSN(browserRealKey, browserProject)
	sc := mustStartSidecar(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstream:
  url: %q
sentry:
  dsn: %q
  environment: production
  release: %q
  traces_sample_rate: 0
jwt:
  secret: %q
tunnel:
  path: %q
browser:
  config_path: %q
  replays_session_sample_rate: 0
  replays_on_error_sample_rate: 1
shutdown:
  drain_delay: 0s
  grace_period: 5s
  flush_timeout: 5s
log:
  format: json
`, up.URL, realDSN, browserRelease, jwtSecret, tunnelPath, browserConfigPath))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sidecar output:\n%s", sc.Out.String())
		}
	})
	return &browserScenario{srv: srv, sc: sc, up: up, realDSN: realDSN, upFrom: len(up.served())}
}

// browserInput is what a scenario asks of run.mjs.
type browserInput struct {
	Query   url.Values // the page's URL parameters
	Token   string     // kept in the page's localStorage; "" for none
	WaitFor []string   // item types that must go through the tunnel
}

// browserRun is what run.mjs wrote. []byte fields arrive base64-encoded.
type browserRun struct {
	Playwright string         `json:"playwright"`
	Chromium   string         `json:"chromium"`
	Config     map[string]any `json:"config"` // window.SENTRY_SIDECAR as the page saw it
	Responses  []struct {
		URL        string            `json:"url"`
		Status     int               `json:"status"`
		Headers    map[string]string `json:"headers"`
		Body       []byte            `json:"body"`
		Unreadable string            `json:"unreadable"`
	} `json:"responses"`
	Tunnel     []tunnelPost   `json:"tunnel"`
	Requests   []string       `json:"requests"`
	Console    []string       `json:"console"`
	PageErrors []string       `json:"pageErrors"`
	ReplayID   *string        `json:"replayId"`
	Timings    map[string]int `json:"timings"` // ms since run.mjs started
	Error      string         `json:"error"`
}

// tunnelPost is one POST the browser made to the tunnel and its answer.
type tunnelPost struct {
	URL             string            `json:"url"`
	Headers         map[string]string `json:"headers"`
	Body            []byte            `json:"body"`
	Types           []string          `json:"types"`
	Status          int               `json:"status"`
	ResponseHeaders map[string]string `json:"responseHeaders"`
	ResponseBody    []byte            `json:"responseBody"`
	Failure         string            `json:"failure"`
}

func (r *browserRun) summary() string {
	var types []string
	for _, p := range r.Tunnel {
		types = append(types, fmt.Sprintf("%v→%d", p.Types, p.Status))
	}
	return fmt.Sprintf("%s, playwright-core %s; launch %dms, page ready %dms, click %dms, flushed %dms, closed %dms; tunnel posts %s",
		r.Chromium, r.Playwright, r.Timings["launched"], r.Timings["ready"], r.Timings["clicked"], r.Timings["flushed"], r.Timings["closed"],
		strings.Join(types, " "))
}

// mustRun loads the page through the sidecar in a fresh Chromium profile,
// clicks Deploy and waits until in.WaitFor went through the tunnel.
func (b *browserScenario) mustRun(t *testing.T, in browserInput) *browserRun {
	t.Helper()
	dir := t.TempDir()
	profile := filepath.Join(dir, "profile")
	require.NoError(t, os.Mkdir(profile, 0o700))
	output := filepath.Join(dir, "run.json")
	input, err := json.Marshal(map[string]any{
		"url":         b.sc.url + "/?" + in.Query.Encode(),
		"tunnelPath":  tunnelPath,
		"token":       in.Token,
		"waitFor":     in.WaitFor,
		"userDataDir": profile,
		"output":      output,
		"timeoutMs":   (browserRunTimeout - 10*time.Second).Milliseconds(),
	})
	require.NoError(t, err)
	inputPath := filepath.Join(dir, "input.json")
	require.NoError(t, os.WriteFile(inputPath, input, 0o600))

	p := mustStartProcess(t, "browser", filepath.Join(repoRoot, "e2e", "browser"),
		[]string{"PATH=/usr/bin:/bin", "HOME=" + dir, "TMPDIR=" + dir}, node, "run.mjs", inputPath)
	select {
	case <-p.Done():
	case <-time.After(browserRunTimeout):
		t.Fatalf("run.mjs did not end within %s:\n%s", browserRunTimeout, p.Out.String())
	}
	raw, err := os.ReadFile(output)
	if err != nil {
		t.Fatalf("run.mjs wrote no result (%v; exit %v):\n%s", err, p.Err(), p.Out.String())
	}
	var run browserRun
	mustJSON(t, raw, &run)
	if run.Error != "" || p.Err() != nil {
		t.Fatalf("the browser run failed (exit %v): %s\nconsole: %q\nrequests: %q\ntunnel: %s\nrun.mjs output:\n%s",
			p.Err(), run.Error, run.Console, run.Requests, run.summary(), p.Out.String())
	}
	return &run
}

// checkConfig: the page got the sidecar's settings with a placeholder DSN,
// the same object as ?format=json, and the real key is nowhere in anything
// the browser received.
func (b *browserScenario) checkConfig(t *testing.T, run *browserRun) {
	t.Helper()
	require.NotNil(t, run.Config, "the page saw no window.SENTRY_SIDECAR")
	code, body, _ := mustDo(t, http.MethodGet, b.sc.url+browserConfigPath+"?format=json", nil, "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	var asJSON map[string]any
	mustJSON(t, body, &asJSON)
	assert.Equal(t, asJSON, run.Config, "?format=json is the object the JavaScript sets")

	assert.Equal(t, tunnelPath, run.Config["tunnel"])
	assert.Equal(t, "production", run.Config["environment"])
	assert.Equal(t, browserRelease, run.Config["release"])
	assert.Equal(t, 0.0, run.Config["tracesSampleRate"])
	assert.Equal(t, 0.0, run.Config["replaysSessionSampleRate"])
	assert.Equal(t, 1.0, run.Config["replaysOnErrorSampleRate"])
	dsn, _ := run.Config["dsn"].(string)
	placeholder := mustDSNKey(t, dsn)
	assert.NotEqual(t, browserRealKey, placeholder, "the browser gets a placeholder key, not the real one")
	assert.NotContains(t, dsn, browserRealKey)

	for _, res := range run.Responses {
		assert.Empty(t, res.Unreadable, "response %s", res.URL)
		assert.False(t, bytes.Contains(res.Body, []byte(browserRealKey)), "the real key is in the body of %s", res.URL)
		assert.NotContains(t, fmt.Sprint(res.Headers), browserRealKey, "the real key is in the headers of %s", res.URL)
	}
	for _, post := range run.Tunnel {
		assert.False(t, bytes.Contains(post.ResponseBody, []byte(browserRealKey)), "the real key is in a tunnel answer: %s", post.ResponseBody)
		assert.NotContains(t, fmt.Sprint(post.ResponseHeaders), browserRealKey, "the real key is in a tunnel answer's headers")
	}
	t.Logf("the page's window.SENTRY_SIDECAR: %s (real key %s)", bytes.TrimSpace(body), browserRealKey)
	// The sidecar served the config and the tunnel itself.
	for _, p := range b.up.served()[b.upFrom:] {
		path := strings.SplitN(p, " ", 2)[1]
		assert.NotEqual(t, browserConfigPath, path, "the browser config reached the upstream")
		assert.NotEqual(t, tunnelPath, path, "a tunnel post reached the upstream")
	}
}

// checkTunnelTraffic: the browser talked to the sidecar only, every tunnel
// post was answered 2xx, and every envelope at the double came through the
// tunnel under the real DSN, with the client's address, and without the
// placeholder key.
func (b *browserScenario) checkTunnelTraffic(t *testing.T, run *browserRun) {
	t.Helper()
	for _, r := range run.Requests {
		_, u, _ := strings.Cut(r, " ")
		u = strings.TrimPrefix(u, "blob:") // the replay's compression worker
		assert.True(t, strings.HasPrefix(u, b.sc.url+"/"), "the browser asked something other than the sidecar: %s", r)
	}
	require.NotEmpty(t, run.Tunnel, "the browser posted nothing to the tunnel")
	for i, post := range run.Tunnel {
		assert.Empty(t, post.Failure, "tunnel post %d failed", i)
		assert.True(t, post.Status >= 200 && post.Status < 300, "tunnel post %d %v answered %d: %s", i, post.Types, post.Status, post.ResponseBody)
		sent, err := sentrytest.ParseEnvelope(post.Body)
		require.NoError(t, err, "tunnel post %d", i)
		assert.Equal(t, run.Config["dsn"], sent.Header["dsn"], "the browser names the placeholder DSN")
	}

	dsn, _ := run.Config["dsn"].(string)
	placeholder := mustDSNKey(t, dsn)
	assert.Empty(t, b.srv.Rejections(), "the double rejected something: %v", rejectionSummary(b.srv.Rejections()))
	envs := b.srv.Envelopes()
	require.NotEmpty(t, envs, "nothing reached the double")
	for _, env := range envs {
		assert.Equal(t, b.realDSN, env.Header["dsn"], "the envelope header dsn is the real DSN")
		assert.Equal(t, fmt.Sprintf("/api/%d/envelope/", browserProject), strings.SplitN(env.URL, "?", 2)[0], "posted to the real project")
		assert.Equal(t, "sentry.javascript.browser", nested(env.Header, "sdk", "name"), "only the browser's envelopes reach the double (the sidecar samples no transactions here)")
		if tr, ok := env.Header["trace"].(map[string]any); ok {
			assert.Equal(t, browserRealKey, tr["public_key"], "the trace header's public_key is mapped to the real key, as in baggage (DESIGN.md traps)")
		}
		assert.Equal(t, "127.0.0.1", env.HTTPHeader.Get("X-Forwarded-For"), "the client's address goes along")
		assert.Equal(t, "127.0.0.1", env.HTTPHeader.Get("X-Sentry-Forwarded-For"), "the client's address goes along")
		for _, k := range []string{"forwarded_for", "remote_addr", "user_agent"} {
			assert.NotContains(t, env.Header, k, "the envelope header key %s is stripped", k)
		}
	}
	assert.False(t, bytes.Contains(b.srv.AllBytes(), []byte(placeholder)), "the placeholder key %s reached the double", placeholder)
	// Every post the browser made arrived: same envelope (by sent_at, which
	// the SDK sets per send, to the millisecond: two sends may share one)
	// and the same item types.
	byStamp := map[string][]string{}
	for _, env := range envs {
		stamp, _ := env.Header["sent_at"].(string)
		byStamp[stamp] = append(byStamp[stamp], strings.Join(itemTypesOf(env), ","))
	}
	for i, post := range run.Tunnel {
		sent, _ := sentrytest.ParseEnvelope(post.Body)
		stamp, _ := sent.Header["sent_at"].(string)
		assert.Contains(t, byStamp[stamp], strings.Join(itemTypesOf(sent), ","),
			"tunnel post %d %v (sent_at %s) reached the double with the same item types", i, post.Types, stamp)
	}
}

// mustOneEvent: exactly one event arrived, the browser's error, with its
// stack and breadcrumbs.
func (b *browserScenario) mustOneEvent(t *testing.T, run *browserRun, failure string) received {
	t.Helper()
	var sent int
	for _, post := range run.Tunnel {
		for _, typ := range post.Types {
			if typ == "event" {
				sent++
			}
		}
	}
	b.srv.WaitItems(t, "event", 1, arrival)
	var found []received
	for _, env := range b.srv.Envelopes() {
		for _, it := range env.Items {
			if it.Type == "event" {
				found = append(found, received{project: projectOf(env), header: env.Header, payload: it.JSON()})
			}
		}
	}
	require.Equal(t, 1, sent, "the browser posted one event item")
	require.Len(t, found, 1, "exactly one event at the double")
	ev := found[0]
	assert.Equal(t, fmt.Sprint(browserProject), ev.project)

	ex := firstException(ev.payload)
	assert.Equal(t, "Error", nested(ex, "type"))
	assert.Equal(t, "e2e: deliberate browser failure "+failure, nested(ex, "value"), "the browser's error message")
	assert.Equal(t, false, nested(ex, "mechanism", "handled"), "an uncaught error")
	var fns []string
	for _, f := range frames(ev.payload) {
		fns = append(fns, fmt.Sprint(f["function"]))
		if f["function"] == "failDeploy" {
			assert.Equal(t, b.sc.url+"/app.js", f["filename"], "the frame names the bundle")
			assert.Positive(t, f["lineno"], "the frame has a line")
		}
	}
	assert.Contains(t, fns, "failDeploy", "the browser's stack: %v", fns)
	assert.Contains(t, fns, "HTMLButtonElement.deployClicked", "the browser's stack: %v", fns)

	crumbs := breadcrumbs(ev.payload)
	assert.Contains(t, crumbs, "console/log: e2e: app ready, failure "+failure, "breadcrumbs: %v", crumbs)
	assert.Contains(t, crumbs, `ui.click/: body > button#deploy[type="button"]`, "breadcrumbs: %v", crumbs)
	assert.Contains(t, crumbs, "console/warning: e2e: deploy clicked, failing next", "breadcrumbs: %v", crumbs)

	assert.Equal(t, "production", ev.payload["environment"])
	assert.Equal(t, browserRelease, ev.payload["release"])
	assert.Equal(t, "javascript", ev.payload["platform"])
	assert.Equal(t, b.sc.url+"/?"+urlQueryOf(run, b.sc.url), nested(ev.payload, "request", "url"), "the page's URL")
	return ev
}

// checkAccessLog: the sidecar logged the browser's tunnel posts as POSTs to
// the tunnel path, answered 2xx, from 127.0.0.1, and its config GET (one
// access-log line per request on the main listener, DESIGN.md capability
// 12), and its metrics count the posts as forwarded.
func (b *browserScenario) checkAccessLog(t *testing.T, run *browserRun) {
	t.Helper()
	var posts, configs int
	sc := bufio.NewScanner(strings.NewReader(b.sc.Out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg      string `json:"msg"`
			Method   string `json:"method"`
			Path     string `json:"path"`
			Status   int    `json:"status"`
			ClientIP string `json:"client_ip"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "request" {
			continue
		}
		if line.Path == browserConfigPath && line.Method == http.MethodGet && line.Status == http.StatusOK {
			configs++
		}
		if line.Path != tunnelPath {
			continue
		}
		posts++
		assert.Equal(t, http.MethodPost, line.Method, "access log: %s", sc.Text())
		assert.True(t, line.Status >= 200 && line.Status < 300, "access log: %s", sc.Text())
		assert.Equal(t, "127.0.0.1", line.ClientIP, "access log: %s", sc.Text())
	}
	assert.GreaterOrEqual(t, posts, len(run.Tunnel), "the access log has a line per tunnel post the browser made")
	assert.Positive(t, configs, "the access log has the page's GET %s", browserConfigPath)

	code, body, _ := mustDo(t, http.MethodGet, b.sc.admin+"/metrics", nil, "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	forwarded, ok := metricValue(string(body), `sidecar_tunnel_envelopes_total{outcome="forwarded"}`)
	assert.True(t, ok, "the admin /metrics has no sidecar_tunnel_envelopes_total{outcome=\"forwarded\"}")
	assert.GreaterOrEqual(t, forwarded, float64(len(run.Tunnel)), "the tunnel counted the browser's posts as forwarded")
	t.Logf("access log: %d lines for %s, %d for GET %s; sidecar_tunnel_envelopes_total{outcome=\"forwarded\"} %v for %d posts",
		posts, tunnelPath, configs, browserConfigPath, forwarded, len(run.Tunnel))
}

// metricValue finds one sample in Prometheus text exposition.
func metricValue(text, series string) (float64, bool) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

func mustDSNKey(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err, "DSN %q", dsn)
	require.NotNil(t, u.User, "DSN %q has no key", dsn)
	require.NotEmpty(t, u.User.Username(), "DSN %q has no key", dsn)
	return u.User.Username()
}

// replaySegment returns "segment_id" of an envelope's replay_event, if it
// has one.
func replaySegment(env sentrytest.Envelope) (string, bool) {
	for _, it := range env.Items {
		if it.Type == "replay_event" {
			return fmt.Sprint(it.JSON()["segment_id"]), true
		}
	}
	return "", false
}

func itemTypesOf(env sentrytest.Envelope) []string {
	var out []string
	for _, it := range env.Items {
		out = append(out, it.Type)
	}
	return out
}

func frames(payload map[string]any) []map[string]any {
	fs, _ := nested(firstException(payload), "stacktrace", "frames").([]any)
	var out []map[string]any
	for _, f := range fs {
		if m, ok := f.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// breadcrumbs renders each as "category/level: message".
func breadcrumbs(payload map[string]any) []string {
	var out []string
	list, _ := payload["breadcrumbs"].([]any)
	if m, ok := payload["breadcrumbs"].(map[string]any); ok { // {"values": [...]}
		list, _ = m["values"].([]any)
	}
	for _, c := range list {
		m, _ := c.(map[string]any)
		level, _ := m["level"].(string)
		out = append(out, fmt.Sprintf("%v/%s: %v", m["category"], level, m["message"]))
	}
	return out
}

func breadcrumbSummary(payload map[string]any) string {
	return fmt.Sprintf("%q", breadcrumbs(payload))
}

func rejectionSummary(rs []sentrytest.Rejection) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%d %s %s", r.Status, r.URL, r.Detail))
	}
	return out
}

// urlQueryOf returns the query of the page's URL, as the browser asked it.
func urlQueryOf(run *browserRun, base string) string {
	for _, r := range run.Requests {
		if q, ok := strings.CutPrefix(r, "GET "+base+"/?"); ok {
			return q
		}
	}
	return ""
}

// firstDiff is the index of the first byte where a and b differ (the shorter
// length if one is a prefix of the other).
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
