// Package deploy_test checks the deployment files (the Dockerfile, and the
// compose, Kubernetes and systemd examples under deploy/) against the
// product itself: the config package's defaults, loader and environment
// variables, and the binary that deploy/build.sh makes. A port, path, env
// name or shutdown budget that drifts from the code fails here, not in an
// operator's cluster.
package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// root is the repository root, seen from this package's directory.
const root = ".."

// fixedShutdownWaits is what the drain takes beyond the configured
// durations: after Shutdown, run.go waits up to 1s for handlers cut by Close
// and up to 1s for the admin listener. A product change that adds a wait
// must add it here.
const fixedShutdownWaits = 2 * time.Second

// stopMargin is the least headroom a stop timeout (terminationGracePeriod-
// Seconds, stop_grace_period, TimeoutStopSec) keeps above the drain.
const stopMargin = 5 * time.Second

// drainBudget is the longest a clean shutdown of cfg takes.
func drainBudget(cfg config.Config) time.Duration {
	s := cfg.Shutdown
	return s.DrainDelay.Std() + s.GracePeriod.Std() + s.FlushTimeout.Std() + fixedShutdownWaits
}

// mustLoadConfig runs the product's own loader on a config file's text and
// an environment, as the sidecar would at start.
func mustLoadConfig(tb testing.TB, text []byte, env map[string]string) config.Config {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "config.yaml")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(path, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}, "deploy-test")
	if err != nil {
		tb.Fatalf("config.Load: %v", err)
	}
	return cfg
}

// mustPort is the port of a listen address such as ":8080".
func mustPort(tb testing.TB, addr string) int {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatalf("address %q: port: %v", addr, err)
	}
	return n
}

// loopbackOnly reports whether a listen address is reachable only from the
// same network namespace.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// mustUpstreamHost is upstream.url's host:port.
func mustUpstreamHost(tb testing.TB, cfg config.Config) string {
	tb.Helper()
	u, err := url.Parse(cfg.Upstream.URL)
	if err != nil || u.Port() == "" {
		tb.Fatalf("upstream.url %q: want http://host:port", cfg.Upstream.URL)
	}
	return u.Host
}

// runtimeEnv are variables read by the Go runtime, not by the config.
var runtimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// knownEnv is every variable a deploy file may set for the sidecar: the
// config's (config.EnvVars), SIDECAR_CONFIG, and the Go runtime's.
func knownEnv() map[string]bool {
	known := map[string]bool{"SIDECAR_CONFIG": true}
	for _, v := range config.EnvVars() {
		known[v.Name] = true
	}
	for _, v := range runtimeEnv {
		known[v] = true
	}
	return known
}

// deployFiles lists the files under deploy/ that this package covers:
// everything but the Grafana dashboard (another issue's) and the tests.
func deployFiles(tb testing.TB) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == "grafana" {
			return filepath.SkipDir
		}
		if d.IsDir() || strings.HasSuffix(path, ".go") {
			return nil
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// mustYAMLDocuments parses every document of a YAML stream.
func mustYAMLDocuments(tb testing.TB, b []byte) []*yaml.Node {
	tb.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			tb.Fatalf("YAML: %v", err)
		}
		if len(n.Content) > 0 && n.Content[0].ShortTag() != "!!null" {
			docs = append(docs, &n)
		}
	}
}

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// mustEnvFile reads KEY=value lines (an EnvironmentFile or compose env_file).
func mustEnvFile(tb testing.TB, path string) map[string]string {
	tb.Helper()
	env := map[string]string{}
	for i, line := range strings.Split(string(mustRead(tb, path)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			tb.Fatalf("%s:%d: want KEY=value, got %q", path, i+1, line)
		}
		env[k] = v
	}
	return env
}

// TestYAMLParses: every YAML file under deploy/ is valid YAML, every
// document of it.
func TestYAMLParses(t *testing.T) {
	n := 0
	for _, path := range deployFiles(t) {
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			continue
		}
		t.Run(path, func(t *testing.T) {
			if docs := mustYAMLDocuments(t, mustRead(t, path)); len(docs) == 0 {
				t.Errorf("%s holds no YAML document", path)
			}
		})
		n++
	}
	// compose (2), kubernetes (7), systemd (1): a walk that finds none has
	// lost its way.
	if n < 10 {
		t.Errorf("found %d YAML files under deploy/, want at least 10", n)
	}
}

// envNameRE matches the names of the sidecar's variables in any text:
// its prefixes are SIDECAR_, SENTRY_, JWT_, APP_ and LOG_.
var envNameRE = regexp.MustCompile(`\b(?:SIDECAR|SENTRY|JWT|APP|LOG)_[A-Z0-9_]*[A-Z0-9]\b`)

// notEnv are names of the same shape that are not variables.
var notEnv = map[string]bool{
	"SENTRY_SIDECAR": true, // window.SENTRY_SIDECAR, the browser config's global
}

// TestEnvNamesInDeployFiles: every variable of the sidecar's families named
// anywhere in deploy/ or the Dockerfile (manifests, env examples, docs)
// exists in config.EnvVars(), so a typo or a renamed variable fails here.
func TestEnvNamesInDeployFiles(t *testing.T) {
	known := knownEnv()
	for k := range notEnv {
		known[k] = true
	}
	files := append(deployFiles(t), filepath.Join(root, "Dockerfile"))
	for _, path := range files {
		b := mustRead(t, path)
		for i, line := range strings.Split(string(b), "\n") {
			for _, name := range envNameRE.FindAllString(line, -1) {
				if !known[name] {
					t.Errorf("%s:%d: %s is not a variable the sidecar reads (config.EnvVars)", path, i+1, name)
				}
			}
		}
	}
}

// TestSecretsAreExamples: the deploy files ship the three secrets' names,
// never values.
func TestSecretsAreExamples(t *testing.T) {
	want := []string{"JWT_SECRET_KEY", "SENTRY_BROWSER_DSN", "SENTRY_DSN"}
	for _, path := range []string{"compose/.env.example", "systemd/env.example"} {
		env := mustEnvFile(t, path)
		var names []string
		for k, v := range env {
			names = append(names, k)
			if v != "" {
				t.Errorf("%s: %s has a value; ship it empty", path, k)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("%s: variables %v, want the three secrets %v", path, names, want)
		}
	}
}
