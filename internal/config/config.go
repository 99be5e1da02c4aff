// Package config holds the sidecar's configuration: its defaults, the YAML
// file and environment variables that override them, and the one validation
// pass that reports every problem at once.
//
// The order is fixed: Default, then the file, then the environment, then the
// values derived from the environment name (Resolve), then Validate.
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// Config is the whole configuration. The YAML keys and environment variable
// names are part of the interface contract (DESIGN.md): never rename them.
type Config struct {
	Listen   string   `yaml:"listen" env:"SIDECAR_LISTEN"`
	Admin    Admin    `yaml:"admin"`
	Upstream Upstream `yaml:"upstream"`
	Server   Server   `yaml:"server"`
	Shutdown Shutdown `yaml:"shutdown"`
	App      App      `yaml:"app"`
	Sentry   Sentry   `yaml:"sentry"`
	JWT      JWT      `yaml:"jwt"`
	Tunnel   Tunnel   `yaml:"tunnel"`
	Browser  Browser  `yaml:"browser"`
	Inbox    Inbox    `yaml:"inbox"`
	Actions  []Action `yaml:"actions"`
	Metrics  Metrics  `yaml:"metrics"`
	Log      Log      `yaml:"log"`
}

// Admin is the separate listener for probes, metrics and the inbox.
type Admin struct {
	Listen string `yaml:"listen" env:"SIDECAR_ADMIN_LISTEN"`
	// Token, when set, is the bearer token every admin path but /healthz
	// and /readyz requires. Without it the listener should stay on
	// loopback (Warnings says so).
	Token string `yaml:"token" env:"SIDECAR_ADMIN_TOKEN"`
}

// Upstream is the API the sidecar fronts and the pool that reaches it.
type Upstream struct {
	URL            string   `yaml:"url" env:"SIDECAR_UPSTREAM_URL"`
	PreserveHost   bool     `yaml:"preserve_host" env:"SIDECAR_UPSTREAM_PRESERVE_HOST"`
	TrustedProxies []string `yaml:"trusted_proxies" env:"SIDECAR_TRUSTED_PROXIES"`
	// DialTimeout bounds connecting to the upstream, nothing after it.
	DialTimeout Duration `yaml:"dial_timeout"`
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers. Zero (the default) means no bound: Proximity holds
	// POST /api/v1/apps/deploy open for up to ten minutes.
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout"`
	IdleConnTimeout       Duration `yaml:"idle_conn_timeout"`
	MaxIdleConnsPerHost   int      `yaml:"max_idle_conns_per_host"`
	// HealthPath is probed with GET for readiness; empty means a TCP connect.
	HealthPath     string   `yaml:"health_path"`
	HealthInterval Duration `yaml:"health_interval"`
}

// Server holds the limits of the main listener. There is deliberately no
// write timeout: it would cut long deploys, downloads and event streams.
type Server struct {
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int      `yaml:"max_header_bytes"`
}

// Shutdown is the drain sequence on SIGTERM: readiness turns 503, the
// listener keeps serving for DrainDelay so load balancers notice, in-flight
// requests get GracePeriod to finish, then Sentry gets FlushTimeout.
type Shutdown struct {
	DrainDelay   Duration `yaml:"drain_delay"`
	GracePeriod  Duration `yaml:"grace_period"`
	FlushTimeout Duration `yaml:"flush_timeout"`
}

// App describes the application behind the sidecar, for event contexts.
type App struct {
	Name    string `yaml:"name" env:"APP_NAME"`
	Version string `yaml:"version" env:"APP_VERSION"`
	Debug   bool   `yaml:"debug" env:"DEBUG"`
}

// Sentry configures where events go and which responses become events.
type Sentry struct {
	DSN         string `yaml:"dsn" env:"SENTRY_DSN"`
	Environment string `yaml:"environment" env:"SENTRY_ENVIRONMENT"`
	Release     string `yaml:"release" env:"SENTRY_RELEASE"`
	// Debug sends events to Sentry from development too (the seed's
	// sentry_debug_enabled switch); without it development uses the inbox.
	Debug bool `yaml:"debug" env:"SENTRY_DEBUG"`
	// TracesSampleRate nil means 1.0 in development and 0.1 elsewhere.
	TracesSampleRate *float64                  `yaml:"traces_sample_rate" env:"SENTRY_TRACES_SAMPLE_RATE"`
	CaptureStatus    []string                  `yaml:"capture_status"`
	IgnorePaths      []string                  `yaml:"ignore_paths"`
	Contexts         map[string]map[string]any `yaml:"contexts"`
	// IgnoreErrors are regular expressions; events whose message matches
	// one are dropped (sentry-go's IgnoreErrors).
	IgnoreErrors []string `yaml:"ignore_errors"`
	// RouteTemplates group paths into routes: "{name}" matches one segment.
	// Segments no template covers are grouped when they look like ids.
	RouteTemplates []string `yaml:"route_templates"`
	Throttle       Throttle `yaml:"throttle"`
	Trail          Trail    `yaml:"trail"`
	// TracesSampler overrides traces_sample_rate per route: the first rule
	// whose route ("METHOD /template" or "/template") matches wins. A
	// sampling decision in the browser's sentry-trace header wins over both.
	TracesSampler []SampleRule `yaml:"traces_sampler"`
}

// SampleRule is a trace sample rate for one route.
type SampleRule struct {
	Route string  `yaml:"route"`
	Rate  float64 `yaml:"rate"`
}

// Metrics bounds the Prometheus series the sidecar makes.
type Metrics struct {
	// MaxRoutes caps the distinct route templates in per-route series;
	// past it, and for answers of 404, the route label is "other".
	MaxRoutes int `yaml:"max_routes"`
}

// Throttle bounds the events of one fingerprint: Burst at once, then one
// per Every. The rest are counted in metrics and in the next event.
type Throttle struct {
	Burst int      `yaml:"burst"`
	Every Duration `yaml:"every"`
}

// Trail bounds the per-user request trails that become breadcrumbs.
type Trail struct {
	Size  int      `yaml:"size"`
	Users int      `yaml:"users"`
	TTL   Duration `yaml:"ttl"`
}

// Inbox is the local sink used without a DSN, or in development without
// sentry.debug.
type Inbox struct {
	Size int `yaml:"size"`
	// File, when set, gets every event appended as one JSON line.
	File string `yaml:"file" env:"SIDECAR_INBOX_FILE"`
}

// JWT says how to find the API's token and how far to trust it.
type JWT struct {
	Secret        string `yaml:"secret" env:"JWT_SECRET_KEY"`
	PublicKeyFile string `yaml:"public_key_file" env:"JWT_PUBLIC_KEY_FILE"`
	JWKSURL       string `yaml:"jwks_url" env:"JWT_JWKS_URL"`
	Verify        bool   `yaml:"verify"`
	// Leeway tolerates clock skew on exp and nbf.
	Leeway Duration `yaml:"leeway"`
	Cookie string   `yaml:"cookie"`
	// Claims maps each user field to the claim names tried in order.
	Claims map[string][]string `yaml:"claims"`
}

// Tunnel is the endpoint that forwards the browser SDK's envelopes.
type Tunnel struct {
	Path        string   `yaml:"path" env:"SIDECAR_TUNNEL_PATH"`
	DSN         string   `yaml:"dsn" env:"SENTRY_BROWSER_DSN"`
	AllowedDSNs []string `yaml:"allowed_dsns"`
	// AllowedOrigins may post cross-origin (CORS); same origin needs none.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// SetUser gives event items the user of the request's verified token.
	SetUser bool `yaml:"set_user"`
	// Scrub filters event and transaction items like server events.
	Scrub  bool         `yaml:"scrub"`
	Limits TunnelLimits `yaml:"limits"`
	// ClientRate bounds envelopes per client IP: Burst at once, then one
	// per Every. Burst 0 turns it off.
	ClientRate Throttle `yaml:"client_rate"`
	// Timeout bounds the call to Sentry.
	Timeout Duration `yaml:"timeout"`
}

// TunnelLimits bound what the tunnel accepts (Relay's defaults scaled to a
// sidecar). Sizes are bytes, or text like "20MiB".
type TunnelLimits struct {
	Body         Size `yaml:"body"`
	Decompressed Size `yaml:"decompressed"`
	Event        Size `yaml:"event"`
	Replay       Size `yaml:"replay"`
	Attachment   Size `yaml:"attachment"`
	Session      Size `yaml:"session"`
	Items        int  `yaml:"items"`
}

// Browser serves the browser SDK's configuration.
type Browser struct {
	ConfigPath string `yaml:"config_path"`
	// ReplaysSessionSampleRate and ReplaysOnErrorSampleRate go to the
	// browser SDK as they are (Proximity's values by default).
	ReplaysSessionSampleRate float64 `yaml:"replays_session_sample_rate"`
	ReplaysOnErrorSampleRate float64 `yaml:"replays_on_error_sample_rate"`
}

// Action names a route template as a user action.
type Action struct {
	Route  string   `yaml:"route"`
	Name   string   `yaml:"name"`
	Fields []string `yaml:"fields"`
}

// Log configures the sidecar's own logs.
type Log struct {
	Level  string `yaml:"level" env:"LOG_LEVEL"`
	Format string `yaml:"format" env:"LOG_FORMAT"`
}

// Environment names.
const (
	Development = "development"
	Production  = "production"
)

// Default returns the configuration used where neither file nor environment
// says otherwise.
func Default() Config {
	return Config{
		Listen: ":8080",
		Admin:  Admin{Listen: "127.0.0.1:9090"},
		Upstream: Upstream{
			URL:                 "http://127.0.0.1:8765",
			TrustedProxies:      []string{},
			DialTimeout:         Duration(5 * time.Second),
			IdleConnTimeout:     Duration(90 * time.Second),
			MaxIdleConnsPerHost: 64,
			HealthInterval:      Duration(5 * time.Second),
		},
		Server: Server{
			ReadHeaderTimeout: Duration(10 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			MaxHeaderBytes:    1 << 20,
		},
		Shutdown: Shutdown{
			DrainDelay:   Duration(5 * time.Second),
			GracePeriod:  Duration(20 * time.Second),
			FlushTimeout: Duration(2 * time.Second),
		},
		App: App{Name: "Proximity", Version: "0.1.0"},
		Sentry: Sentry{
			CaptureStatus: []string{"500-599"},
			IgnorePaths:   []string{},
			Contexts:      map[string]map[string]any{},
			IgnoreErrors:  []string{},
			// Proximity's app routes: ids like "wordpress-myblog" look like
			// words, so they are named; catalog and deploy are literal.
			RouteTemplates: []string{
				"/api/v1/apps/catalog",
				"/api/v1/apps/catalog/{catalog_id}",
				"/api/v1/apps/deploy",
				"/api/v1/apps/{app_id}",
			},
			Throttle:      Throttle{Burst: 5, Every: Duration(20 * time.Second)},
			Trail:         Trail{Size: 20, Users: 10000, TTL: Duration(30 * time.Minute)},
			TracesSampler: []SampleRule{},
		},
		JWT: JWT{
			Verify: true,
			Leeway: Duration(30 * time.Second),
			Claims: map[string][]string{
				"id":       {"user_id", "sub"},
				"username": {"username", "sub"},
				"email":    {"email"},
				"role":     {"role"},
			},
		},
		Tunnel: Tunnel{
			AllowedDSNs:    []string{},
			AllowedOrigins: []string{},
			SetUser:        true,
			Scrub:          true,
			Limits:         tunnelLimits(tunnel.DefaultLimits()),
			ClientRate:     Throttle{Burst: 100, Every: Duration(100 * time.Millisecond)},
			Timeout:        Duration(10 * time.Second),
		},
		Browser: Browser{ReplaysSessionSampleRate: 0.1, ReplaysOnErrorSampleRate: 1.0},
		Inbox:   Inbox{Size: 200},
		Actions: []Action{},
		Metrics: Metrics{MaxRoutes: 100},
		Log:     Log{Level: "info"},
	}
}

// Resolve fills the values that default to something derived from other
// keys: the environment (from the hostname unless set), the release (the app
// version), the trace sample rate and the log format (both by environment).
// An explicit value always wins.
func (c *Config) Resolve(hostname string) {
	if c.Sentry.Environment == "" {
		c.Sentry.Environment = DetectEnvironment(hostname)
	}
	if c.Sentry.Release == "" {
		c.Sentry.Release = c.App.Version
	}
	if c.Sentry.TracesSampleRate == nil {
		rate := 0.1
		if c.Sentry.Environment == Development {
			rate = 1.0
		}
		c.Sentry.TracesSampleRate = &rate
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
		if c.Sentry.Environment == Development {
			c.Log.Format = "console"
		}
	}
	for name, ctx := range c.Sentry.Contexts {
		if ctx == nil {
			// "proxmox:" with nothing under it is an empty context, not a
			// null one for Sentry (FuzzLoad found that it did not
			// round-trip through YAML()).
			c.Sentry.Contexts[name] = map[string]any{}
		}
	}
}

// DetectEnvironment is the seed's rule: a host named localhost or 127.0.0.1,
// or whose name contains "local", is development; anything else production.
func DetectEnvironment(hostname string) string {
	h := strings.ToLower(hostname)
	if h == "127.0.0.1" || strings.Contains(h, "local") {
		return Development
	}
	return Production
}

// Duration is a time.Duration written as "5s" in YAML, in the environment
// and when the effective configuration is printed.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MarshalText writes d as Go duration text ("1m30s").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// UnmarshalText reads Go duration text ("250ms", "1m30s").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Size is a number of bytes, written as 1048576 or "1MiB" (KiB, MiB, GiB;
// KB, MB, GB are taken as the same binary units, which is what people mean
// in config files).
type Size int64

// MarshalText writes s in the largest whole binary unit.
func (s Size) MarshalText() ([]byte, error) {
	for _, u := range []struct {
		name string
		n    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.n == 0 {
			return []byte(strconv.FormatInt(int64(s)/u.n, 10) + u.name), nil
		}
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// UnmarshalText reads "20MiB", "100 KiB", "512" or "1GB".
func (s *Size) UnmarshalText(b []byte) error {
	t := strings.TrimSpace(string(b))
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToLower(strings.TrimSpace(t[len(num):]))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a size like 20MiB", t)
	}
	mult := map[string]int64{"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}[unit]
	if mult == 0 {
		return fmt.Errorf("%q has an unknown unit (want KiB, MiB or GiB)", t)
	}
	if n > (1<<62)/mult {
		return fmt.Errorf("%q is too large", t)
	}
	*s = Size(n * mult)
	return nil
}

// tunnelLimits is the tunnel's own defaults in config form: one place
// knows them.
func tunnelLimits(l tunnel.Limits) TunnelLimits {
	return TunnelLimits{
		Body:         Size(l.Body),
		Decompressed: Size(l.Decompressed),
		Event:        Size(l.Event),
		Replay:       Size(l.Replay),
		Attachment:   Size(l.Attachment),
		Session:      Size(l.Session),
		Items:        l.Items,
	}
}
