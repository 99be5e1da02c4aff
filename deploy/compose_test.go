package deploy_test

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// composeFile mirrors the Compose specification's fields that
// deploy/compose uses. It is decoded with unknown fields refused, so a
// misspelt key (or one this test does not check) fails here first.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image           string            `yaml:"image"`
	Build           yaml.Node         `yaml:"build"`
	Restart         string            `yaml:"restart"`
	EnvFile         stringList        `yaml:"env_file"`
	Environment     map[string]string `yaml:"environment"`
	Volumes         []string          `yaml:"volumes"`
	Ports           []string          `yaml:"ports"`
	ReadOnly        bool              `yaml:"read_only"`
	CapDrop         []string          `yaml:"cap_drop"`
	SecurityOpt     []string          `yaml:"security_opt"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	NetworkMode     string            `yaml:"network_mode"`
	DependsOn       yaml.Node         `yaml:"depends_on"`
	Healthcheck     *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
}

// stringList is Compose's "a string or a list of strings".
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = []string{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

func mustCompose(tb testing.TB) composeFile {
	tb.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(mustRead(tb, "compose/docker-compose.yml")))
	dec.KnownFields(true)
	var c composeFile
	if err := dec.Decode(&c); err != nil {
		tb.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// composePort splits a short-syntax port ("8765:8080",
// "127.0.0.1:9090:9090") into the host address and the container port.
func composePort(tb testing.TB, s string) (hostIP string, container int) {
	tb.Helper()
	parts := strings.Split(strings.TrimSuffix(s, "/tcp"), ":")
	if len(parts) == 3 {
		hostIP = parts[0]
	}
	if _, err := fmt.Sscanf(parts[len(parts)-1], "%d", &container); err != nil || len(parts) < 2 {
		tb.Fatalf("port %q: want [IP:]HOST:CONTAINER", s)
	}
	return hostIP, container
}

// TestCompose checks deploy/compose against the config the sidecar loads
// in it: the mounted config.yaml, the image's ENV, the service's
// environment and its env_file.
func TestCompose(t *testing.T) {
	c := mustCompose(t)
	im := mustImage(t)
	sc, ok := c.Services["sidecar"]
	if !ok {
		t.Fatal("no sidecar service")
	}
	api, ok := c.Services["api"]
	if !ok {
		t.Fatal("no api service")
	}
	for name, s := range c.Services {
		if name != "sidecar" && len(s.Ports) > 0 {
			t.Errorf("service %s publishes ports: only the sidecar may", name)
		}
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("service %s has no restart policy", name)
		}
	}

	// The sidecar's environment: image ENV < env_file < environment.
	env := map[string]string{}
	for k, v := range im.env {
		env[k] = v
	}
	known := knownEnv()
	for _, f := range sc.EnvFile {
		for k, v := range mustEnvFile(t, filepath.Join("compose", f+".example")) {
			if !known[k] {
				t.Errorf("sidecar env_file %s: %s is not a variable the sidecar reads", f, k)
			}
			env[k] = v
		}
	}
	for k, v := range sc.Environment {
		if !known[k] {
			t.Errorf("sidecar environment: %s is not a variable the sidecar reads", k)
		}
		env[k] = v
	}
	var configFile string
	for _, v := range sc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) == 3 && parts[1] == env["SIDECAR_CONFIG"] {
			if parts[2] != "ro" {
				t.Errorf("volume %s: mount the config read-only (:ro)", v)
			}
			configFile = filepath.Join("compose", parts[0])
		}
	}
	if configFile == "" {
		t.Fatalf("no volume mounts a config file at SIDECAR_CONFIG %s", env["SIDECAR_CONFIG"])
	}
	cfg := mustLoadConfig(t, mustRead(t, configFile), env)

	// Ports: the proxied one, and admin on the host's loopback only.
	published := map[int]string{}
	for _, p := range sc.Ports {
		ip, port := composePort(t, p)
		published[port] = ip
	}
	if _, ok := published[mustPort(t, cfg.Listen)]; !ok {
		t.Errorf("listen %s: its port is not published (ports %v)", cfg.Listen, sc.Ports)
	}
	if ip, ok := published[mustPort(t, cfg.Admin.Listen)]; ok && !loopbackOnly(net.JoinHostPort(ip, "0")) {
		t.Errorf("admin port published on %q: publish it on 127.0.0.1 only", ip)
	}
	for port := range published {
		if port != mustPort(t, cfg.Listen) && port != mustPort(t, cfg.Admin.Listen) {
			t.Errorf("container port %d is published but the sidecar does not listen there", port)
		}
	}

	// Stopping: Docker's SIGKILL comes after stop_grace_period (10s by
	// default), which must cover the drain.
	grace, err := time.ParseDuration(sc.StopGracePeriod)
	if err != nil {
		t.Fatalf("sidecar stop_grace_period %q: %v", sc.StopGracePeriod, err)
	}
	if need := drainBudget(cfg) + stopMargin; grace < need {
		t.Errorf("sidecar stop_grace_period %s, want at least %s", grace, need)
	}

	// Hardening that costs nothing with a static binary.
	if !sc.ReadOnly || !slices.Contains(sc.CapDrop, "ALL") || !slices.Contains(sc.SecurityOpt, "no-new-privileges:true") {
		t.Error("sidecar: want read_only, cap_drop ALL and no-new-privileges")
	}

	// The API: in the sidecar's network namespace, on loopback at the port
	// upstream.url names, with the shared secrets and a healthcheck.
	if api.NetworkMode != "service:sidecar" {
		t.Errorf("api network_mode %q, want service:sidecar (one network namespace, as in a pod)", api.NetworkMode)
	}
	up := mustUpstreamHost(t, cfg)
	if !loopbackOnly(up) {
		t.Errorf("upstream.url %s: the API shares the sidecar's loopback", cfg.Upstream.URL)
	}
	if want := fmt.Sprint(mustPort(t, up)); api.Environment["API_PORT"] != want || api.Environment["API_HOST"] != "127.0.0.1" {
		t.Errorf("API at %s:%s, want 127.0.0.1:%s", api.Environment["API_HOST"], api.Environment["API_PORT"], want)
	}
	if !slices.Contains(api.EnvFile, ".env") {
		t.Error("api env_file: want .env, the secrets it shares with the sidecar")
	}
	if api.Healthcheck == nil || len(api.Healthcheck.Test) == 0 {
		t.Error("api: no healthcheck")
	}
	for _, s := range c.Services {
		for _, f := range s.EnvFile {
			mustRead(t, filepath.Join("compose", f+".example"))
		}
	}
}
