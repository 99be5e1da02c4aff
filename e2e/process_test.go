//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/proctest"
)

// The Debian packages the API runs on; .ci/e2e installs them.
const (
	python      = "/usr/bin/python3"
	apiPackages = "python3 python3-fastapi python3-uvicorn python3-jose python3-sentry-sdk"
)

// process is a child in a process group of its own (internal/proctest).
type process = proctest.Process

// mustStartProcess starts argv in dir with exactly env and stops it, and
// its group, when tb ends.
func mustStartProcess(tb testing.TB, name, dir string, env []string, argv ...string) *process {
	tb.Helper()
	return proctest.Start(tb, name, dir, env, argv...)
}

// freePort returns a 127.0.0.1 port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(tb, l.Close())
	return port
}

// mustCheckPython fails (never skips: CI must run this suite) unless
// Debian's python3 has the API's modules, and returns their versions.
func mustCheckPython(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(python); err != nil {
		tb.Fatalf("%s is missing (%v): run .ci/e2e, or apt-get install %s", python, err, apiPackages)
	}
	out, err := exec.Command(python, "-I", "-c", `import fastapi, starlette, uvicorn, jose, sentry_sdk, sys
print("python %s, fastapi %s, starlette %s, uvicorn %s, python-jose %s, sentry-sdk %s" % (
    sys.version.split()[0], fastapi.__version__, starlette.__version__, uvicorn.__version__,
    jose.__version__, sentry_sdk.VERSION))`).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s lacks the API's modules (%v): run .ci/e2e, or apt-get install %s\n%s", python, err, apiPackages, out)
	}
	return strings.TrimSpace(string(out))
}

// api is the Python API under uvicorn.
type api struct {
	*process
	url string
}

// mustStartAPI starts e2e/api/app.py on a free port and waits for /health.
// The port is chosen here, so a race for it is possible: a start that dies
// at once is retried on another port.
func mustStartAPI(tb testing.TB, env []string) *api {
	tb.Helper()
	var last *process
	for range 3 {
		port := freePort(tb)
		p := mustStartProcess(tb, "api", repoRoot, env,
			python, "-I", "-u", "-B", filepath.Join("e2e", "api", "app.py"), "--port", fmt.Sprint(port))
		a := &api{process: p, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && !p.Exited() {
			if res, err := client.Get(a.url + "/health"); err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return a
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !p.Exited() {
			tb.Fatalf("the API did not answer /health within 30 s:\n%s", p.Out.String())
		}
		last = p
	}
	tb.Fatalf("the API exited at start three times; last output:\n%s", last.Out.String())
	return nil
}

// sidecar is the built binary, running.
type sidecar struct {
	*process
	url, admin string
}

// mustStartSidecar writes config to a temp file, runs the binary with it and
// reads the addresses it bound from its JSON "listening" log line.
func mustStartSidecar(tb testing.TB, config string) *sidecar {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "sidecar.yaml")
	require.NoError(tb, os.WriteFile(path, []byte(config), 0o600))
	p := mustStartProcess(tb, "sidecar", dir, proctest.Env(dir, nil), sidecarBin, "run", "-config", path)
	addr, admin := proctest.WaitListening(tb, p)
	return &sidecar{process: p, url: "http://" + addr, admin: "http://" + admin}
}

// client talks to the API and the sidecar: loopback only, no environment
// proxy, bounded.
var client = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// mustDo sends the request and returns the status, the body and the time
// to the whole answer.
func mustDo(tb testing.TB, method, url string, header http.Header, body string) (int, []byte, time.Duration) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(tb, err)
	for k, vs := range header {
		req.Header[k] = append([]string(nil), vs...)
	}
	start := time.Now()
	res, err := client.Do(req)
	require.NoError(tb, err, "%s %s", method, url)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(tb, err)
	return res.StatusCode, b, time.Since(start)
}

// mustJSON decodes b into v, naming the body when it is not JSON.
func mustJSON(tb testing.TB, b []byte, v any) {
	tb.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("not JSON (%v): %s", err, b)
	}
}
