package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

const proximityActions = `actions:
  - route: "POST /api/v1/apps/deploy"
    name: "app.deploy"
    fields: ["catalog_id", "hostname", "node"]
  - route: "DELETE /api/v1/apps/{id}"
    name: "app.delete"
  - route: "POST /api/v1/auth/login"
    name: "auth.login"
    fields: ["username"]
  - route: "POST /api/v1/echo/upload"
    name: "upload"
    fields: ["name"]
`

// TestScriptedSessionReadsAsActions: login, list, a failing deploy, a
// delete. The deploy's event tells the story in the user's own actions,
// and the metrics count them.
func TestScriptedSessionReadsAsActions(t *testing.T) {
	t.Parallel()
	sentrySrv := sentrytest.NewServer(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, reportingConfig(api.URL, sentrySrv.DSN("publickey", 42), "", "")+proximityActions+tunnelConfig, nil)
	base := "http://" + s.main

	code, _ := mustDo(t, "POST", base+"/api/v1/auth/login", "", `{"username":"demo","password":"wrong-password"}`, nil)
	require.Equal(t, http.StatusUnauthorized, code)
	code, body := mustDo(t, "POST", base+"/api/v1/auth/login", "", `{"username":"demo","password":"demo1234"}`, nil)
	require.Equal(t, http.StatusOK, code)
	token := body[strings.Index(body, `"access_token":"`)+16:]
	token = token[:strings.IndexByte(token, '"')]

	code, _ = mustDo(t, "GET", base+"/api/v1/apps", token, "", nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = mustDo(t, "POST", base+"/api/v1/apps/deploy", token, `{"catalog_id":"nginx","hostname":"mysite","node":"pve"}`, nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = mustDo(t, "POST", base+"/api/v1/apps/deploy", token, `{"catalog_id":"wordpress","hostname":"will-fail","password":"hunter2","config":{"token":"x"}}`, nil)
	require.Equal(t, http.StatusInternalServerError, code)
	code, _ = mustDo(t, "DELETE", base+"/api/v1/apps/nginx-mysite", token, "", nil)
	require.Equal(t, http.StatusOK, code)

	ev := sentrySrv.WaitEvents(t, 1, 5*time.Second)[0]
	// And one browser envelope, so the tunnel's series exist too.
	placeholder := mustBrowserConfig(t, base)["dsn"].(string)
	code, _ = mustDo(t, "POST", base+"/api/v1/beacon", token, browserEnvelope(placeholder), nil)
	require.Equal(t, http.StatusOK, code)
	var trail []string
	var failed map[string]any
	for _, c := range ev["breadcrumbs"].([]any) {
		c := c.(map[string]any)
		trail = append(trail, fmt.Sprintf("%s %s", c["category"], c["message"]))
		if c["message"] == "app.deploy failed" {
			failed = c["data"].(map[string]any)
		}
	}
	assert.Equal(t, []string{
		"user_action auth.login",
		"request GET /api/v1/apps",
		"user_action app.deploy",
		"user_action app.deploy failed",
	}, trail, "the failed login was anonymous; the successful one is the user's")
	require.NotNil(t, failed)
	assert.Equal(t, "wordpress", failed["catalog_id"])
	assert.Equal(t, "will-fail", failed["hostname"])
	assert.Equal(t, float64(500), failed["status_code"])
	assert.NotContains(t, failed, "password", "only allow-listed fields")
	assert.NotContains(t, string(sentrySrv.AllBytes()), "hunter2")

	var metrics string
	require.Eventually(t, func() bool {
		_, metrics = mustGet(t, "http://"+s.admin+"/metrics")
		return strings.Contains(metrics, `sidecar_action_total{action="app.delete",outcome="success"} 1`)
	}, 2*time.Second, 10*time.Millisecond)
	for _, want := range []string{
		`sidecar_action_total{action="app.deploy",outcome="success"} 1`,
		`sidecar_action_total{action="app.deploy",outcome="failed"} 1`,
		`sidecar_action_total{action="auth.login",outcome="success"} 1`,
		`sidecar_action_total{action="auth.login",outcome="denied"} 1`,
		`sidecar_action_denied_total{action="auth.login",client="loopback"} 1`,
		`sidecar_action_duration_seconds_count{action="app.deploy",outcome="failed"} 1`,
		`sidecar_route_requests_total{code="2xx",method="GET",route="/api/v1/apps"} 1`,
		`sidecar_route_requests_total{code="5xx",method="POST",route="/api/v1/apps/deploy"} 1`,
		`sidecar_route_requests_total{code="2xx",method="DELETE",route="/api/v1/apps/{app_id}"} 1`,
		`sidecar_route_request_duration_seconds_count{method="POST",route="/api/v1/apps/deploy"} 2`,
	} {
		assert.Contains(t, metrics, want)
	}
	assert.NotContains(t, metrics, "hunter2")

	// The dashboard and the README's PromQL name only series that exist.
	for _, file := range []string{"../../deploy/grafana/sentry-sidecar.json", "../../README.md"} {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, name := range regexp.MustCompile(`sidecar_[a-z_]+`).FindAllString(string(b), -1) {
			assert.Contains(t, metrics, "\n"+name, "%s names %s, which /metrics lacks", file, name)
		}
	}
}

// TestRandomPathsDoNotGrowSeries: 10 000 distinct paths make at most
// metrics.max_routes route series.
func TestRandomPathsDoNotGrowSeries(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/404") {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 0s\nmetrics:\n  max_routes: 20\n"), nil)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	for i := range 10000 {
		path := fmt.Sprintf("/r%x/%s", rand.Uint64(), []string{"a", "b", "404"}[i%3])
		res, err := client.Get("http://" + s.main + path)
		require.NoError(t, err)
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	var metrics string
	require.Eventually(t, func() bool {
		_, metrics = mustGet(t, "http://"+s.admin+"/metrics")
		return strings.Count(metrics, "\nsidecar_route_request_duration_seconds_count{") > 0
	}, 2*time.Second, 10*time.Millisecond)
	series := strings.Count(metrics, "\nsidecar_route_request_duration_seconds_count{")
	assert.LessOrEqual(t, series, 21, "20 routes and other")
	assert.Contains(t, metrics, `route="other"`)
	t.Logf("10000 distinct paths: %d route series", series)
}

// TestActionUploadStreams: a 100 MiB upload on an action route with fields
// streams with flat memory and reaches the API byte for byte.
func TestActionUploadStreams(t *testing.T) {
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 0s\n")+proximityActions, nil)

	const size = 100 << 20
	src := &patternReader{left: size}
	hash := sha256.New()
	body := io.TeeReader(src, hash)
	req, err := http.NewRequest(http.MethodPost, "http://"+s.main+"/api/v1/echo/upload", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json") // the peek must give up on a body this size
	req.ContentLength = -1                             // chunked: the peek cannot know the size up front

	var peak atomic.Uint64
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	res, err := http.DefaultClient.Do(req)
	close(stop)
	<-done
	require.NoError(t, err)
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(out))
	assert.Contains(t, string(out), `"body_bytes":104857600`)
	assert.Contains(t, string(out), hex.EncodeToString(hash.Sum(nil)), "byte for byte")
	growth := int64(peak.Load()) - int64(base)
	t.Logf("100 MiB upload through an action route: heap in use grew by %.1f MiB at peak", float64(growth)/(1<<20))
	assert.Less(t, growth, int64(16<<20), "the body must stream, not buffer")
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ left int }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := min(len(b), p.left)
	for i := range n {
		b[i] = byte('a' + (p.left-i)%26)
	}
	p.left -= n
	return n, nil
}
