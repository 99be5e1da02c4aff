package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/proctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a buffer safe for the logger and the test at once.
type syncBuffer = proctest.Buffer

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func mustWriteFile(tb testing.TB, body string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "config.yaml")
	require.NoError(tb, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// sidecar is a run() in a goroutine, with the addresses it logged.
type sidecar struct {
	main, admin string
	logs        *syncBuffer
	stop        context.CancelFunc
	done        chan error
}

// mustStartSidecar calls run with the config text and waits for its
// "listening" log line, which names the ports bound for 127.0.0.1:0.
func mustStartSidecar(tb testing.TB, configText string, env map[string]string) *sidecar {
	tb.Helper()
	path := mustWriteFile(tb, configText)
	ctx, cancel := context.WithCancel(context.Background())
	s := &sidecar{logs: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { s.done <- run(ctx, []string{"run", "-config", path}, envFrom(env), io.Discard, s.logs) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			tb.Error("run did not return after cancel")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
		for sc.Scan() {
			var line struct {
				Msg       string `json:"msg"`
				Addr      string `json:"addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				s.main, s.admin = line.Addr, line.AdminAddr
				return s
			}
		}
		select {
		case err := <-s.done:
			s.done <- err // for the cleanup
			tb.Fatalf("run returned before listening: %v\n%s", err, s.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	tb.Fatalf("sidecar did not log its addresses:\n%s", s.logs.String())
	return nil
}

func mustGet(tb testing.TB, url string) (int, string) {
	tb.Helper()
	res, err := http.Get(url)
	require.NoError(tb, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(tb, err)
	return res.StatusCode, string(b)
}

func upstreamConfig(upstream string, extra string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstream:
  url: %q
  health_interval: 50ms
log:
  format: json
%s`, upstream, extra)
}

func TestRunProxiesAndServesAdmin(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 0s\n"), map[string]string{"SENTRY_ENVIRONMENT": "production"})

	code, body := mustGet(t, "http://"+s.main+"/health")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"status":"healthy","version":"0.1.0"}`, body)

	code, body = mustGet(t, "http://"+s.admin+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"status":"ok"}`, body)

	require.Eventually(t, func() bool {
		code, _ := mustGet(t, "http://"+s.admin+"/readyz")
		return code == http.StatusOK
	}, 5*time.Second, 20*time.Millisecond, "readyz never turned 200")

	// Metrics are recorded as the request ends, just after the client has
	// its answer.
	require.Eventually(t, func() bool {
		_, body := mustGet(t, "http://"+s.admin+"/metrics")
		return strings.Contains(body, `sidecar_requests_total{code="2xx",method="GET"} 1`)
	}, 2*time.Second, 10*time.Millisecond)
	code, body = mustGet(t, "http://"+s.admin+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "go_goroutines")

	code, body = mustGet(t, "http://"+s.admin+"/sentry-info")
	assert.Equal(t, http.StatusOK, code)
	var info map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &info))
	assert.Equal(t, "production", info["environment"])
	assert.Equal(t, "inbox", info["sink"])

	code, _ = mustGet(t, "http://"+s.admin+"/inbox")
	assert.Equal(t, http.StatusOK, code, "no DSN: events stay in the inbox")

	// The access log has one JSON line for the proxied request, written
	// within the log's flush interval.
	assert.Eventually(t, func() bool {
		logs := s.logs.String()
		return strings.Contains(logs, `"msg":"request"`) && strings.Contains(logs, `"path":"/health"`)
	}, 10*logFlushInterval, 10*time.Millisecond, "no access-log line")
}

func TestRunReadinessFollowsUpstream(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(demo.New(demo.Options{}))
	url := api.URL
	s := mustStartSidecar(t, upstreamConfig(url, "shutdown:\n  drain_delay: 0s\n"), nil)
	require.Eventually(t, func() bool { c, _ := mustGet(t, "http://"+s.admin+"/readyz"); return c == 200 }, 5*time.Second, 20*time.Millisecond)

	api.Close()
	require.Eventually(t, func() bool { c, _ := mustGet(t, "http://"+s.admin+"/readyz"); return c == 503 }, 5*time.Second, 20*time.Millisecond)
	_, body := mustGet(t, "http://"+s.admin+"/readyz")
	assert.Contains(t, body, "upstream unreachable")

	code, body := mustGet(t, "http://"+s.main+"/api/v1/apps")
	assert.Equal(t, http.StatusBadGateway, code)
	assert.Contains(t, body, `"error":"upstream unavailable"`)
}

// TestRunGracefulShutdown: on cancel, readiness turns 503 during the drain
// delay while the listener still serves, an in-flight slow request
// finishes, and run returns nil.
func TestRunGracefulShutdown(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(demo.New(demo.Options{DeployDelay: 3 * time.Second}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 1s\n  grace_period: 10s\n"), nil)
	require.Eventually(t, func() bool { c, _ := mustGet(t, "http://"+s.admin+"/readyz"); return c == 200 }, 5*time.Second, 20*time.Millisecond)

	token, err := demo.Token(demo.DefaultSecret, "demo", "user", 2, time.Now(), time.Hour)
	require.NoError(t, err)
	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.main+"/api/v1/apps/deploy", strings.NewReader(`{"catalog_id":"nginx","hostname":"mysite"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		slow <- result{res.StatusCode, string(b), err}
	}()
	time.Sleep(300 * time.Millisecond) // the deploy is in flight
	start := time.Now()
	s.stop()

	require.Eventually(t, func() bool { c, _ := mustGet(t, "http://"+s.admin+"/readyz"); return c == 503 }, 900*time.Millisecond, 10*time.Millisecond, "readyz must turn 503 before the listener closes")
	_, body := mustGet(t, "http://"+s.admin+"/readyz")
	assert.Contains(t, body, "shutting down")
	// Still serving during the drain delay.
	code, _ := mustGet(t, "http://"+s.main+"/health")
	assert.Equal(t, http.StatusOK, code)

	r := <-slow
	require.NoError(t, r.err)
	assert.Equal(t, http.StatusOK, r.code, r.body)
	assert.Contains(t, r.body, `"id":"nginx-mysite"`)

	select {
	case err := <-s.done:
		assert.NoError(t, err)
		s.done <- err // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return")
	}
	t.Logf("shutdown took %s with a 1s drain delay and a deploy in flight", time.Since(start).Round(time.Millisecond))
	assert.Contains(t, s.logs.String(), `"msg":"stopped"`)
}

// TestRunGraceCutsEndlessStream: an event stream that outlives the grace
// period is cut, and run still returns.
func TestRunGraceCutsEndlessStream(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	s := mustStartSidecar(t, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 0s\n  grace_period: 500ms\n"), nil)

	res, err := http.Get("http://" + s.main + "/api/v1/events?count=100&interval=100ms")
	require.NoError(t, err)
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "event: tick\n", line)

	start := time.Now()
	s.stop()
	_, err = io.Copy(io.Discard, br)
	assert.Error(t, err, "a stream cut by shutdown must not look complete")
	select {
	case err := <-s.done:
		assert.NoError(t, err)
		s.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		config     string
		env        map[string]string
		wantErr    bool
		wantStdout []string
		wantStderr []string
		notInAny   []string
	}{
		{
			name:       "valid, secrets redacted",
			config:     "sentry:\n  dsn: https://0123456789abcdef@o1.ingest.sentry.io/42\n",
			env:        map[string]string{"JWT_SECRET_KEY": "hunter2-secret"},
			wantStdout: []string{"secret: REDACTED", "dsn: https://REDACTED@o1.ingest.sentry.io/42"},
			wantStderr: []string{"configuration is valid"},
			notInAny:   []string{"hunter2-secret", "0123456789abcdef"},
		},
		{
			name:       "unverified tokens warn",
			config:     "jwt:\n  verify: false\n",
			wantStderr: []string{"warning: jwt.verify: false"},
		},
		{
			name:       "every problem, one per line, each naming its key",
			config:     "listen: nowhere\nupstream:\n  url: app:8080\nsentry:\n  traces_sample_rate: 2\n",
			env:        map[string]string{"LOG_LEVEL": "loud"},
			wantErr:    true,
			wantStderr: []string{"listen: ", "upstream.url: ", "sentry.traces_sample_rate: ", "log.level (LOG_LEVEL): "},
		},
		{
			name:       "unknown key",
			config:     "upstream:\n  urll: http://x\n",
			wantErr:    true,
			wantStderr: []string{"upstream.urll: unknown key", "(line 2)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"check", "-config", mustWriteFile(t, tc.config)}, envFrom(tc.env), &stdout, &stderr)
			if tc.wantErr {
				require.ErrorIs(t, err, errReported)
				for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
					assert.Regexp(t, `^[a-z_.\[\]0-9]+( \([A-Z_]+\))?: `, line, "each line names its key")
				}
			} else {
				require.NoError(t, err, stderr.String())
			}
			for _, s := range tc.wantStdout {
				assert.Contains(t, stdout.String(), s)
			}
			for _, s := range tc.wantStderr {
				assert.Contains(t, stderr.String(), s)
			}
			for _, s := range tc.notInAny {
				assert.NotContains(t, stdout.String()+stderr.String(), s)
			}
		})
	}
}

func TestCheckUsesSidecarConfigEnv(t *testing.T) {
	t.Parallel()
	path := mustWriteFile(t, "listen: \":1\"\nadmin:\n  listen: \":1\"\n")
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"check"}, envFrom(map[string]string{"SIDECAR_CONFIG": path}), io.Discard, &stderr)
	require.ErrorIs(t, err, errReported)
	assert.Contains(t, stderr.String(), "admin.listen: must differ from listen")
}

func TestRunInvalidConfigExitsBeforeListening(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-config", mustWriteFile(t, "upstream:\n  url: \"\"\n")}, envFrom(nil), io.Discard, &stderr)
	require.ErrorIs(t, err, errReported)
	assert.Regexp(t, `^upstream.url: is required \(SIDECAR_UPSTREAM_URL\)( \(line 2\))?\n$`, stderr.String())
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"check", "-h"}, {"demo", "--help"}, {"version", "--help"}, {"help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, envFrom(nil), &stdout, &stderr)
			require.NoError(t, err)
			assert.Contains(t, stdout.String()+stderr.String(), "sentry-sidecar")
		})
	}
	var stdout bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"version"}, envFrom(nil), &stdout, io.Discard))
	assert.Regexp(t, `^sentry-sidecar \S+ \(commit \S+, go1\.\d+.*, sentry-go 0\.46\.2\)\n$`, stdout.String())

	err := run(context.Background(), []string{"frobnicate"}, envFrom(nil), io.Discard, io.Discard)
	assert.Error(t, err)
	assert.False(t, errors.Is(err, errReported))
}
