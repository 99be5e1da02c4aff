package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
)

// mustBuild builds the sidecar binary the way the README says.
func mustBuild(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "sentry-sidecar")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput()
	require.NoError(tb, err, string(out))
	return bin
}

// startBinary runs the binary with a config and returns it once it logged
// its addresses.
func startBinary(tb testing.TB, bin, configText string) (*exec.Cmd, string) {
	tb.Helper()
	cmd := exec.Command(bin, "-config", mustWriteFile(tb, configText))
	stderr, err := cmd.StderrPipe()
	require.NoError(tb, err)
	require.NoError(tb, cmd.Start())
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg       string `json:"msg"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addr <- line.AdminAddr
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, a
	case <-time.After(10 * time.Second):
		tb.Fatal("the sidecar did not start")
	}
	return nil, ""
}

// TestSignals: SIGTERM drains and exits 0; a second signal during the
// drain ends the process at once.
func TestSignals(t *testing.T) {
	t.Parallel()
	bin := mustBuild(t)
	api := httptest.NewServer(demo.New(demo.Options{}))
	defer api.Close()
	config := upstreamConfig(api.URL, "shutdown:\n  drain_delay: 30s\n  grace_period: 1s\n")

	t.Run("one signal drains and exits 0", func(t *testing.T) {
		cmd, _ := startBinary(t, bin, upstreamConfig(api.URL, "shutdown:\n  drain_delay: 200ms\n  grace_period: 1s\n"))
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			assert.NoError(t, err, "exit 0")
		case <-time.After(10 * time.Second):
			t.Fatal("did not exit")
		}
	})

	t.Run("a second signal exits at once", func(t *testing.T) {
		cmd, admin := startBinary(t, bin, config)
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.Eventually(t, func() bool {
			res, err := http.Get("http://" + admin + "/readyz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusServiceUnavailable
		}, 5*time.Second, 10*time.Millisecond, "draining")
		start := time.Now()
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			assert.Error(t, err, "killed by the signal, not a clean exit")
			assert.Less(t, time.Since(start), 5*time.Second, "not after the 30 s drain delay")
		case <-time.After(10 * time.Second):
			t.Fatal("the second signal did not end the process")
		}
	})
}
