package deploy_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section -> key -> values in order (a key
// may repeat; an empty assignment is kept as "").
type unit map[string]map[string][]string

func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	var cont string
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if cont != "" {
			line, cont = cont+" "+line, ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: want Key=value inside a [Section], got %q", i+1, line)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	return u, nil
}

// last is the value in force for a key: the last assignment.
func (u unit) last(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// systemdSpan reads a systemd time span: "35s", "1min 30s", "90" (seconds).
func systemdSpan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"ms": time.Millisecond, "msec": time.Millisecond,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
	}
	var total time.Duration
	for _, f := range strings.Fields(s) {
		num := strings.TrimRight(f, "abcdefghijklmnopqrstuvwxyz")
		n, err := strconv.ParseFloat(num, 64)
		unit, ok := units[f[len(num):]]
		if err != nil || !ok {
			return 0, fmt.Errorf("%q is not a time span", s)
		}
		total += time.Duration(n * float64(unit))
	}
	if total == 0 {
		return 0, fmt.Errorf("%q is not a time span", s)
	}
	return total, nil
}

func TestSystemdSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{"35s": 35 * time.Second, "1min 30s": 90 * time.Second, "40": 40 * time.Second, "2m": 2 * time.Minute} {
		if got, err := systemdSpan(in); err != nil || got != want {
			t.Errorf("systemdSpan(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "infinity", "5x"} {
		if _, err := systemdSpan(in); err == nil {
			t.Errorf("systemdSpan(%q): no error", in)
		}
	}
}

// TestSystemd checks the hardened unit and its config against the product.
func TestSystemd(t *testing.T) {
	u, err := parseUnit(string(mustRead(t, "systemd/sentry-sidecar.service")))
	if err != nil {
		t.Fatalf("sentry-sidecar.service: %v", err)
	}

	// How it runs: the binary's run command with the documented config,
	// secrets from the EnvironmentFile.
	exec, _ := u.last("Service", "ExecStart")
	args := strings.Fields(exec)
	if len(args) < 4 || !strings.HasPrefix(args[0], "/") || args[1] != "run" {
		t.Fatalf("ExecStart %q: want /path/to/sentry-sidecar run -config FILE", exec)
	}
	i := slices.Index(args, "-config")
	if i < 0 || i+1 >= len(args) || args[i+1] != "/etc/sentry-sidecar/config.yaml" {
		t.Errorf("ExecStart %q: want -config /etc/sentry-sidecar/config.yaml", exec)
	}
	if f, _ := u.last("Service", "EnvironmentFile"); f != "/etc/sentry-sidecar/env" {
		t.Errorf("EnvironmentFile=%s, want /etc/sentry-sidecar/env", f)
	}
	known := knownEnv()
	for _, kv := range u["Service"]["Environment"] {
		for _, f := range strings.Fields(kv) {
			if k, _, _ := strings.Cut(strings.Trim(f, `"`), "="); !known[k] {
				t.Errorf("Environment=%s: not a variable the sidecar reads", k)
			}
		}
	}
	env := mustEnvFile(t, "systemd/env.example")
	for k := range env {
		if !known[k] {
			t.Errorf("env.example: %s is not a variable the sidecar reads", k)
		}
	}

	// The hardening the issue asks for.
	for key, want := range map[string]string{
		"Type":                    "exec",
		"Restart":                 "on-failure",
		"DynamicUser":             "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"RestrictNamespaces":      "yes",
		"SystemCallArchitectures": "native",
	} {
		if got, ok := u.last("Service", key); !ok || got != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if !slices.Contains(u["Service"]["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter %q: want @system-service", u["Service"]["SystemCallFilter"])
	}
	// ProcSubset=pid hides /proc/stat; the process collector then fails and
	// promhttp answers /metrics with 500.
	if v, _ := u.last("Service", "ProcSubset"); v == "pid" {
		t.Error("ProcSubset=pid breaks /metrics")
	}

	// The config: Proximity's public port, the API on loopback, admin on
	// loopback; and a stop timeout that covers the drain.
	cfg := mustLoadConfig(t, mustRead(t, "systemd/config.yaml"), env)
	if got := mustPort(t, cfg.Listen); got != 8765 {
		t.Errorf("listen %s: want Proximity's port 8765, which its UI falls back to (README.md)", cfg.Listen)
	}
	up := mustUpstreamHost(t, cfg)
	if !loopbackOnly(up) || mustPort(t, up) == mustPort(t, cfg.Listen) {
		t.Errorf("upstream.url %s: want the API on loopback, on another port than listen", cfg.Upstream.URL)
	}
	if !loopbackOnly(cfg.Admin.Listen) {
		t.Errorf("admin.listen %s: nothing outside the machine needs it", cfg.Admin.Listen)
	}
	stop, ok := u.last("Service", "TimeoutStopSec")
	if !ok {
		t.Fatal("no TimeoutStopSec: systemd's default (90s) is not derived from the drain")
	}
	d, err := systemdSpan(stop)
	if err != nil {
		t.Fatal(err)
	}
	if need := drainBudget(cfg) + stopMargin; d < need {
		t.Errorf("TimeoutStopSec=%s, want at least %s", stop, need)
	}
}
