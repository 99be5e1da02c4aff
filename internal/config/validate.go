package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/getsentry/sentry-go"
	"gopkg.in/yaml.v3"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Validate returns every problem with c, joined, one per key, in the order
// of the keys. It expects Resolve to have run.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: key, msg: fmt.Sprintf(format, args...)})
	}

	checkAddr := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil {
			add(key, "must be host:port (e.g. \":8080\"), got %q", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(key, "port must be a number from 0 to 65535, got %q", port)
		}
	}
	checkAddr("listen", c.Listen)
	checkAddr("admin.listen", c.Admin.Listen)
	if c.Listen == c.Admin.Listen && !strings.HasSuffix(c.Listen, ":0") {
		add("admin.listen", "must differ from listen (%q): the admin paths would shadow the API's", c.Listen)
	}
	if t := c.Admin.Token; t != "" && strings.IndexFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		// Never quote the token: it is a secret.
		add("admin.token", "must not contain spaces or control characters: it travels as \"Authorization: Bearer <token>\"")
	}

	if c.Upstream.URL == "" {
		add("upstream.url", "is required (SIDECAR_UPSTREAM_URL)")
	} else if u, err := url.Parse(c.Upstream.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("upstream.url", "must be an absolute http(s) URL, got %q", redactURL(c.Upstream.URL))
	} else if u.RawQuery != "" || u.Fragment != "" {
		add("upstream.url", "must not have a query or fragment, got %q", redactURL(c.Upstream.URL))
	}
	for i, p := range c.Upstream.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			add(fmt.Sprintf("upstream.trusted_proxies[%d]", i), "must be an IP address or CIDR, got %q", p)
		}
	}
	positive := func(key string, d Duration) {
		if d <= 0 {
			add(key, "must be a positive duration, got %s", d.Std())
		}
	}
	nonNegative := func(key string, d Duration) {
		if d < 0 {
			add(key, "must not be negative, got %s", d.Std())
		}
	}
	positive("upstream.dial_timeout", c.Upstream.DialTimeout)
	nonNegative("upstream.response_header_timeout", c.Upstream.ResponseHeaderTimeout)
	positive("upstream.idle_conn_timeout", c.Upstream.IdleConnTimeout)
	if c.Upstream.MaxIdleConnsPerHost < 1 {
		add("upstream.max_idle_conns_per_host", "must be at least 1, got %d", c.Upstream.MaxIdleConnsPerHost)
	}
	if c.Upstream.HealthPath != "" && !strings.HasPrefix(c.Upstream.HealthPath, "/") {
		add("upstream.health_path", "must start with /, got %q", c.Upstream.HealthPath)
	}
	positive("upstream.health_interval", c.Upstream.HealthInterval)

	positive("server.read_header_timeout", c.Server.ReadHeaderTimeout)
	positive("server.idle_timeout", c.Server.IdleTimeout)
	if c.Server.MaxHeaderBytes < 4096 {
		add("server.max_header_bytes", "must be at least 4096, got %d", c.Server.MaxHeaderBytes)
	}
	nonNegative("shutdown.drain_delay", c.Shutdown.DrainDelay)
	nonNegative("shutdown.grace_period", c.Shutdown.GracePeriod)
	nonNegative("shutdown.flush_timeout", c.Shutdown.FlushTimeout)

	if c.App.Name == "" {
		add("app.name", "must not be empty")
	}

	checkDSN := func(key, dsn string) {
		if _, err := sentry.NewDsn(dsn); err != nil {
			add(key, "must be a DSN like https://PUBLIC_KEY@HOST/PROJECT_ID, but %s", dsnProblem(err))
		}
	}
	if c.Sentry.DSN != "" {
		checkDSN("sentry.dsn", c.Sentry.DSN)
	}
	// Written so that NaN (".nan", "NaN") fails too.
	if r := c.Sentry.TracesSampleRate; r != nil && !(*r >= 0 && *r <= 1) {
		add("sentry.traces_sample_rate", "must be from 0 to 1, got %v", *r)
	}
	for i, s := range c.Sentry.CaptureStatus {
		if _, _, err := ParseStatusRange(s); err != nil {
			add(fmt.Sprintf("sentry.capture_status[%d]", i), "%v", err)
		}
	}
	for i, e := range c.Sentry.IgnoreErrors {
		if _, err := regexp.Compile(e); err != nil {
			add(fmt.Sprintf("sentry.ignore_errors[%d]", i), "is not a regular expression: %v", err)
		}
	}
	for i, t := range c.Sentry.RouteTemplates {
		if err := enrich.CheckTemplate(t); err != nil {
			add(fmt.Sprintf("sentry.route_templates[%d]", i), "%v", err)
		}
	}
	if c.Sentry.Throttle.Burst < 0 {
		add("sentry.throttle.burst", "must not be negative (0 turns throttling off), got %d", c.Sentry.Throttle.Burst)
	}
	if c.Sentry.Throttle.Burst > 0 {
		positive("sentry.throttle.every", c.Sentry.Throttle.Every)
	}
	if c.Sentry.Trail.Size < 0 || c.Sentry.Trail.Size > 100 {
		add("sentry.trail.size", "must be from 0 to 100, got %d", c.Sentry.Trail.Size)
	}
	if c.Sentry.Trail.Users < 0 {
		add("sentry.trail.users", "must not be negative, got %d", c.Sentry.Trail.Users)
	}
	positive("sentry.trail.ttl", c.Sentry.Trail.TTL)
	nonNegative("jwt.leeway", c.JWT.Leeway)
	if c.Inbox.Size < 1 {
		add("inbox.size", "must be at least 1, got %d", c.Inbox.Size)
	}
	for i, p := range c.Sentry.IgnorePaths {
		if !strings.HasPrefix(p, "/") {
			add(fmt.Sprintf("sentry.ignore_paths[%d]", i), "must start with /, got %q", p)
		}
	}

	sources := 0
	for _, s := range []string{c.JWT.Secret, c.JWT.PublicKeyFile, c.JWT.JWKSURL} {
		if s != "" {
			sources++
		}
	}
	if sources > 1 {
		add("jwt", "set only one of secret, public_key_file and jwks_url")
	}
	if f := c.JWT.PublicKeyFile; f != "" {
		if fi, err := os.Stat(f); err != nil {
			add("jwt.public_key_file", "cannot read %q: %v", f, errors.Unwrap(err))
		} else if fi.IsDir() {
			add("jwt.public_key_file", "%q is a directory, want a PEM file", f)
		}
	}
	if u := c.JWT.JWKSURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			add("jwt.jwks_url", "must be an absolute http(s) URL, got %q", redactURL(u))
		}
	}
	for _, field := range slices.Sorted(maps.Keys(c.JWT.Claims)) {
		switch field {
		case "id", "username", "email", "role":
		default:
			add("jwt.claims."+keyPart(field), "unknown user field (want id, username, email or role)")
			continue
		}
		if len(c.JWT.Claims[field]) == 0 {
			add("jwt.claims."+field, "must list at least one claim name")
		}
	}

	if p := c.Tunnel.Path; p != "" && !strings.HasPrefix(p, "/") {
		add("tunnel.path", "must start with /, got %q", p)
	}
	if c.Tunnel.DSN != "" {
		checkDSN("tunnel.dsn", c.Tunnel.DSN)
	}
	for i, d := range c.Tunnel.AllowedDSNs {
		checkDSN(fmt.Sprintf("tunnel.allowed_dsns[%d]", i), d)
	}
	for i, o := range c.Tunnel.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			add(fmt.Sprintf("tunnel.allowed_origins[%d]", i), "must be an origin like https://app.example.com, got %q", o)
		}
	}
	l := c.Tunnel.Limits
	for _, lim := range []struct {
		key string
		v   Size
	}{{"body", l.Body}, {"decompressed", l.Decompressed}, {"event", l.Event}, {"replay", l.Replay}, {"attachment", l.Attachment}, {"session", l.Session}} {
		if lim.v <= 0 {
			add("tunnel.limits."+lim.key, "must be a positive size, got %d", lim.v)
		}
	}
	if l.Decompressed < l.Body {
		add("tunnel.limits.decompressed", "must be at least tunnel.limits.body")
	}
	if l.Items < 1 {
		add("tunnel.limits.items", "must be at least 1, got %d", l.Items)
	}
	if c.Tunnel.ClientRate.Burst < 0 {
		add("tunnel.client_rate.burst", "must not be negative (0 turns it off), got %d", c.Tunnel.ClientRate.Burst)
	} else if c.Tunnel.ClientRate.Burst > 0 {
		positive("tunnel.client_rate.every", c.Tunnel.ClientRate.Every)
	}
	positive("tunnel.timeout", c.Tunnel.Timeout)
	for _, r := range []struct {
		key string
		v   float64
	}{{"browser.replays_session_sample_rate", c.Browser.ReplaysSessionSampleRate}, {"browser.replays_on_error_sample_rate", c.Browser.ReplaysOnErrorSampleRate}} {
		if r.v < 0 || r.v > 1 || r.v != r.v {
			add(r.key, "must be from 0 to 1, got %v", r.v)
		}
	}
	if p := c.Browser.ConfigPath; p != "" {
		if !strings.HasPrefix(p, "/") {
			add("browser.config_path", "must start with /, got %q", p)
		} else if p == c.Tunnel.Path {
			add("browser.config_path", "must differ from tunnel.path (%q)", p)
		}
	}

	names := map[string]int{}
	for i, a := range c.Actions {
		key := fmt.Sprintf("actions[%d]", i)
		if method, path, ok := strings.Cut(a.Route, " "); !ok || method == "" || strings.ToUpper(method) != method || !strings.HasPrefix(path, "/") {
			add(key+".route", "must be \"METHOD /path\" (e.g. \"POST /api/v1/apps/deploy\"), got %q", a.Route)
		} else if err := enrich.CheckTemplate(path); err != nil {
			add(key+".route", "%v", err)
		}
		for j, f := range a.Fields {
			if f == "" {
				add(fmt.Sprintf("%s.fields[%d]", key, j), "must not be empty")
			} else if enrich.SensitiveKey(f) {
				add(fmt.Sprintf("%s.fields[%d]", key, j), "%q looks like a secret (deny-list: password, token, secret, auth, ...): it is never recorded", f)
			}
		}
		if a.Name == "" {
			add(key+".name", "must not be empty")
		} else if j, dup := names[a.Name]; dup {
			add(key+".name", "%q is already the name of actions[%d]", a.Name, j)
		} else {
			names[a.Name] = i
		}
	}

	for i, r := range c.Sentry.TracesSampler {
		key := fmt.Sprintf("sentry.traces_sampler[%d]", i)
		path := r.Route
		if method, p, ok := strings.Cut(r.Route, " "); ok {
			if method == "" || strings.ToUpper(method) != method {
				add(key+".route", "must be \"/path\" or \"METHOD /path\", got %q", r.Route)
			}
			path = p
		}
		if err := enrich.CheckTemplate(path); err != nil {
			add(key+".route", "%v", err)
		}
		if r.Rate < 0 || r.Rate > 1 || r.Rate != r.Rate {
			add(key+".rate", "must be from 0 to 1, got %v", r.Rate)
		}
	}
	if c.Metrics.MaxRoutes < 1 {
		add("metrics.max_routes", "must be at least 1, got %d", c.Metrics.MaxRoutes)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "json", "console":
	default:
		add("log.format", "must be json or console, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// Warnings lists settings that are valid but weaken what the sidecar
// promises; `check` prints them and `run` logs them.
func (c *Config) Warnings() []string {
	var w []string
	if !c.JWT.Verify {
		w = append(w, "jwt.verify: false: tokens are decoded without checking their signature; users are marked verified: false")
	}
	if c.JWT.Verify && c.JWT.Secret == "" && c.JWT.PublicKeyFile == "" && c.JWT.JWKSURL == "" {
		w = append(w, "jwt: no secret, public_key_file or jwks_url: events carry no user")
	}
	if c.Upstream.ResponseHeaderTimeout > 0 {
		w = append(w, fmt.Sprintf("upstream.response_header_timeout: %s: slower upstream answers (long deploys) become 504", c.Upstream.ResponseHeaderTimeout.Std()))
	}
	switch {
	case c.Sentry.Environment == Production && c.Sentry.DSN == "":
		w = append(w, "sentry.dsn: empty in production: events stay in the local inbox on the admin listener and never reach Sentry")
	case c.Sentry.Environment == Development && c.Sentry.DSN != "" && !c.Sentry.Debug:
		w = append(w, "sentry.environment: development (set, or detected from the hostname) with a DSN: events go to the local inbox, not to Sentry, unless sentry.debug is true")
	}
	if c.Sentry.Environment == Production && c.Sentry.TracesSampleRate != nil && *c.Sentry.TracesSampleRate >= 1 {
		w = append(w, "sentry.traces_sample_rate: 1 in production: every request becomes a transaction, which costs CPU and Sentry quota")
	}
	if c.Admin.Token == "" && !loopbackListen(c.Admin.Listen) {
		w = append(w, fmt.Sprintf("admin.listen: %q is not a loopback address and admin.token (SIDECAR_ADMIN_TOKEN) is not set: whoever reaches it can read /metrics, /sentry-info and the inbox's user data, and send test events", c.Admin.Listen))
	}
	return w
}

// loopbackListen reports whether a listen address binds only loopback:
// localhost, 127.0.0.0/8 or ::1. An empty host (":9090"), 0.0.0.0, ::, any
// other address and any other name (it may resolve to anything) are not.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // Validate reports it; nothing to warn about
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// ParsePrefix reads a CIDR or a single address (as a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseStatusRange reads "500-599" or "502" into an inclusive range.
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("must be a status (502) or range (500-599) within 100-599, got %q", s)
	}
	return lo, hi, nil
}

// dsnProblem turns sentry-go's DSN error into words without echoing the
// DSN, whose key is a secret: sentry-go's "invalid url" message quotes the
// whole DSN, and net/url's message for a bad escape or port quotes part of it.
func dsnProblem(err error) string {
	var pe *sentry.DsnParseError
	if !errors.As(err, &pe) {
		return "it cannot be parsed"
	}
	switch msg := pe.Message; {
	case strings.HasPrefix(msg, "invalid url"):
		return "it does not parse as a URL"
	case msg == "invalid scheme":
		return "its scheme is not http or https"
	case msg == "empty username":
		return "it has no public key"
	case msg == "empty host":
		return "it has no host"
	case msg == "invalid port":
		return "its port is not a number"
	case msg == "empty project id":
		return "it has no project id"
	default:
		return "it cannot be parsed"
	}
}

// Redacted returns a copy of c with every secret replaced by REDACTED: the
// JWT secret, the admin token, DSN public keys and any credentials in the
// upstream and JWKS URLs.
func (c Config) Redacted() Config {
	const mark = "REDACTED"
	if c.JWT.Secret != "" {
		c.JWT.Secret = mark
	}
	if c.Admin.Token != "" {
		c.Admin.Token = mark
	}
	c.Sentry.DSN = redactURL(c.Sentry.DSN)
	c.Tunnel.DSN = redactURL(c.Tunnel.DSN)
	allowed := make([]string, len(c.Tunnel.AllowedDSNs))
	for i, d := range c.Tunnel.AllowedDSNs {
		allowed[i] = redactURL(d)
	}
	c.Tunnel.AllowedDSNs = allowed
	c.Upstream.URL = redactURL(c.Upstream.URL)
	c.JWT.JWKSURL = redactURL(c.JWT.JWKSURL)
	return c
}

// redactURL replaces the userinfo of a URL (a DSN's key, a password) with
// REDACTED. Text that does not parse is hidden whole when it has an '@'.
func redactURL(s string) string {
	if s == "" || !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return "REDACTED"
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// YAML renders c as the YAML file that would produce it, secrets redacted.
func (c Config) YAML() string {
	b, err := yaml.Marshal(c.Redacted())
	if err != nil {
		return fmt.Sprintf("# cannot render config: %v\n", err)
	}
	return string(b)
}

// Map returns c as nested maps keyed like the YAML file, for structured
// logs. Call it on a Redacted copy.
func (c Config) Map() map[string]any {
	var m map[string]any
	b, err := yaml.Marshal(c)
	if err == nil {
		err = yaml.Unmarshal(b, &m)
	}
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	return m
}
