package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mustWriteConfig writes content to a fresh config file and returns its path.
func mustWriteConfig(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "sidecar.yaml")
	require.NoError(tb, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// envOf is an injected environment: the variables in m, nothing else.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// mustField returns the field of cfg at a dotted YAML key ("upstream.url").
func mustField(tb testing.TB, cfg *Config, key string) reflect.Value {
	tb.Helper()
	v, ok := fieldAt(reflect.ValueOf(cfg).Elem(), key)
	require.True(tb, ok, "no field for key %q", key)
	return v
}

// resolvedDefault is Default after Resolve for hostname.
func resolvedDefault(hostname string) Config {
	c := Default()
	c.Resolve(hostname)
	return c
}

func ptr[T any](v T) *T { return &v }

// TestLoadPrecedence checks defaults < file < environment, and the values
// Resolve derives from the environment name.
func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		file     string // YAML; ignored when noFile
		noFile   bool
		env      map[string]string
		hostname string
		want     func() Config // the whole expected Config, when given
		check    func(t *testing.T, c Config)
	}{
		{
			name:     "defaults alone",
			noFile:   true,
			hostname: "web-1",
			want:     func() Config { return resolvedDefault("web-1") },
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ":8080", c.Listen)
				assert.Equal(t, "127.0.0.1:9090", c.Admin.Listen)
				assert.Equal(t, "http://127.0.0.1:8765", c.Upstream.URL)
				assert.Equal(t, 5*time.Second, c.Upstream.DialTimeout.Std())
				assert.Equal(t, Duration(0), c.Upstream.ResponseHeaderTimeout, "no bound: deploys take minutes")
				assert.Empty(t, c.Upstream.TrustedProxies, "trusted proxies default to none")
				assert.Equal(t, []string{"500-599"}, c.Sentry.CaptureStatus)
				assert.True(t, c.JWT.Verify)
				assert.Equal(t, "info", c.Log.Level)
			},
		},
		{
			name:     "empty file is valid",
			file:     "",
			hostname: "web-1",
			want:     func() Config { return resolvedDefault("web-1") },
		},
		{
			name:     "file of comments only is valid",
			file:     "# nothing yet\n",
			hostname: "web-1",
			want:     func() Config { return resolvedDefault("web-1") },
		},
		{
			name: "file overrides defaults",
			file: `listen: ":9000"
upstream:
  url: "http://api:8000"
  dial_timeout: 250ms
  trusted_proxies: ["10.0.0.0/8"]
sentry:
  capture_status: ["502"]
log:
  level: debug
`,
			hostname: "web-1",
			want: func() Config {
				c := resolvedDefault("web-1")
				c.Listen = ":9000"
				c.Upstream.URL = "http://api:8000"
				c.Upstream.DialTimeout = Duration(250 * time.Millisecond)
				c.Upstream.TrustedProxies = []string{"10.0.0.0/8"}
				c.Sentry.CaptureStatus = []string{"502"}
				c.Log.Level = "debug"
				return c
			},
		},
		{
			name: "environment overrides file",
			file: `listen: ":9000"
app:
  version: "1.0.0"
`,
			env:      map[string]string{"SIDECAR_LISTEN": ":9100", "APP_VERSION": "1.2.3"},
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ":9100", c.Listen)
				assert.Equal(t, "1.2.3", c.App.Version)
				assert.Equal(t, "1.2.3", c.Sentry.Release, "release follows the version from the environment")
			},
		},
		{
			name:     "empty environment variable counts as unset",
			file:     "listen: \":9000\"\n",
			env:      map[string]string{"SIDECAR_LISTEN": "", "SENTRY_ENVIRONMENT": ""},
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ":9000", c.Listen)
				assert.Equal(t, Production, c.Sentry.Environment)
			},
		},
		{
			// yaml.v3 decodes a mapping into the existing map: keys the file
			// names are replaced, the other default mappings stay. To drop
			// one, map it to an unused claim name.
			name: "claims in the file keep the other default mappings",
			file: `jwt:
  claims: {id: [uid]}
`,
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, map[string][]string{
					"id":       {"uid"},
					"username": {"username", "sub"},
					"email":    {"email"},
					"role":     {"role"},
				}, c.JWT.Claims)
			},
		},
		{
			name:     "lists in the file replace the default list",
			file:     "sentry:\n  capture_status: [\"502\", \"504\"]\n",
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, []string{"502", "504"}, c.Sentry.CaptureStatus)
			},
		},
		{
			name:     "null section keeps its defaults",
			file:     "upstream:\nsentry: ~\n",
			hostname: "web-1",
			want:     func() Config { return resolvedDefault("web-1") },
		},
		{
			name: "null and blank values keep their defaults",
			file: `listen:
upstream:
  trusted_proxies: null
  dial_timeout: ~
sentry:
  capture_status:
  contexts: ~
jwt:
  claims: null
actions:
`,
			hostname: "web-1",
			want:     func() Config { return resolvedDefault("web-1") },
		},
		{
			name: "empty lists and maps say none",
			file: `sentry:
  capture_status: []
  contexts: {}
jwt:
  claims: {}
`,
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Empty(t, c.Sentry.CaptureStatus, "capture no status")
				assert.NotNil(t, c.Sentry.CaptureStatus)
				assert.Len(t, c.JWT.Claims, 4, "{} adds no mapping and removes none")
			},
		},
		{
			name:     "null traces_sample_rate is 1.0 in development",
			file:     "sentry:\n  traces_sample_rate: null\n",
			hostname: "localhost",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ptr(1.0), c.Sentry.TracesSampleRate)
			},
		},
		{
			name:     "null traces_sample_rate is 0.1 in production",
			file:     "sentry:\n  traces_sample_rate: null\n",
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ptr(0.1), c.Sentry.TracesSampleRate)
			},
		},
		{
			name:     "explicit traces_sample_rate 0 stays 0 in development",
			file:     "sentry:\n  traces_sample_rate: 0\n",
			hostname: "localhost",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ptr(0.0), c.Sentry.TracesSampleRate)
			},
		},
		{
			name:     "traces_sample_rate 0 from the environment stays 0",
			noFile:   true,
			env:      map[string]string{"SENTRY_TRACES_SAMPLE_RATE": "0"},
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, ptr(0.0), c.Sentry.TracesSampleRate)
			},
		},
		{
			name:     "release defaults to app.version",
			file:     "app:\n  version: \"2.4.0\"\n",
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "2.4.0", c.Sentry.Release)
			},
		},
		{
			name:     "explicit release wins over app.version",
			file:     "app:\n  version: \"2.4.0\"\nsentry:\n  release: \"proximity@2.4.0+abc\"\n",
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "proximity@2.4.0+abc", c.Sentry.Release)
			},
		},
		{
			name:     "log format defaults to json in production",
			noFile:   true,
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, Production, c.Sentry.Environment)
				assert.Equal(t, "json", c.Log.Format)
			},
		},
		{
			name:     "log format defaults to console in development",
			noFile:   true,
			hostname: "localhost",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, Development, c.Sentry.Environment)
				assert.Equal(t, "console", c.Log.Format)
			},
		},
		{
			name:     "explicit log format wins in development",
			file:     "log:\n  format: json\n",
			hostname: "localhost",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "json", c.Log.Format)
			},
		},
		{
			name:     "explicit environment wins over detection",
			file:     "sentry:\n  environment: staging\n",
			hostname: "localhost",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "staging", c.Sentry.Environment)
				assert.Equal(t, ptr(0.1), c.Sentry.TracesSampleRate, "only development samples everything")
				assert.Equal(t, "json", c.Log.Format)
			},
		},
		{
			name:     "environment from the environment wins over detection",
			noFile:   true,
			env:      map[string]string{"SENTRY_ENVIRONMENT": Development},
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, Development, c.Sentry.Environment)
				assert.Equal(t, ptr(1.0), c.Sentry.TracesSampleRate)
				assert.Equal(t, "console", c.Log.Format)
			},
		},
		{
			name: "anchors and merge keys",
			file: `actions:
  - &deploy
    route: "POST /api/v1/apps/deploy"
    name: app.deploy
    fields: [catalog_id]
  - <<: *deploy
    name: app.redeploy
`,
			hostname: "web-1",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, []Action{
					{Route: "POST /api/v1/apps/deploy", Name: "app.deploy", Fields: []string{"catalog_id"}},
					{Route: "POST /api/v1/apps/deploy", Name: "app.redeploy", Fields: []string{"catalog_id"}},
				}, c.Actions)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if !tc.noFile {
				path = mustWriteConfig(t, tc.file)
			}
			cfg, err := Load(path, envOf(tc.env), tc.hostname)
			require.NoError(t, err)
			if tc.want != nil {
				assert.Equal(t, tc.want(), cfg)
			}
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
}

// TestLoadEveryEnvVar sets each variable of EnvVars over a file that sets
// the same key, and checks that the file beat the default and the variable
// beat the file. It iterates EnvVars, so a new variable cannot be forgotten:
// it fails until the variable has a row here.
func TestLoadEveryEnvVar(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fileKey := filepath.Join(dir, "file.pem")
	envKey := filepath.Join(dir, "env.pem")
	for _, p := range []string{fileKey, envKey} {
		require.NoError(t, os.WriteFile(p, []byte("-----BEGIN PUBLIC KEY-----\n"), 0o600))
	}

	// file is the YAML value of the key, fileWant what it decodes to; env
	// is the variable's value, envWant what it parses to.
	type row struct {
		file     string
		fileWant any
		env      string
		envWant  any
	}
	rows := map[string]row{
		"SIDECAR_LISTEN":                 {`":9000"`, ":9000", ":9100", ":9100"},
		"SIDECAR_ADMIN_LISTEN":           {`"127.0.0.1:9001"`, "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9002"},
		"SIDECAR_ADMIN_TOKEN":            {`"file-admin-token"`, "file-admin-token", "env-admin-token", "env-admin-token"},
		"SIDECAR_UPSTREAM_URL":           {`"http://file:8000"`, "http://file:8000", "https://env:8443", "https://env:8443"},
		"SIDECAR_UPSTREAM_PRESERVE_HOST": {`true`, true, "false", false},
		"SIDECAR_TRUSTED_PROXIES":        {`["10.0.0.0/8"]`, []string{"10.0.0.0/8"}, "192.168.0.0/16,127.0.0.1", []string{"192.168.0.0/16", "127.0.0.1"}},
		"APP_NAME":                       {`"FileApp"`, "FileApp", "EnvApp", "EnvApp"},
		"APP_VERSION":                    {`"1.0.0"`, "1.0.0", "2.0.0", "2.0.0"},
		"DEBUG":                          {`true`, true, "false", false},
		"SENTRY_DSN":                     {`"https://filekey@o1.ingest.sentry.io/1"`, "https://filekey@o1.ingest.sentry.io/1", "https://envkey@o1.ingest.sentry.io/2", "https://envkey@o1.ingest.sentry.io/2"},
		"SENTRY_ENVIRONMENT":             {`"staging"`, "staging", "qa", "qa"},
		"SENTRY_RELEASE":                 {`"file@1"`, "file@1", "env@2", "env@2"},
		"SENTRY_DEBUG":                   {`true`, true, "false", false},
		"SENTRY_TRACES_SAMPLE_RATE":      {`0.5`, 0.5, "0.25", 0.25},
		"JWT_SECRET_KEY":                 {`"file-secret"`, "file-secret", "env-secret", "env-secret"},
		"JWT_PUBLIC_KEY_FILE":            {`"` + fileKey + `"`, fileKey, envKey, envKey},
		"JWT_JWKS_URL":                   {`"https://file.example/jwks.json"`, "https://file.example/jwks.json", "https://env.example/jwks.json", "https://env.example/jwks.json"},
		"SIDECAR_TUNNEL_PATH":            {`"/file-envelope"`, "/file-envelope", "/env-envelope", "/env-envelope"},
		"SENTRY_BROWSER_DSN":             {`"https://filekey@o1.ingest.sentry.io/3"`, "https://filekey@o1.ingest.sentry.io/3", "https://envkey@o1.ingest.sentry.io/4", "https://envkey@o1.ingest.sentry.io/4"},
		"LOG_LEVEL":                      {`"debug"`, "debug", "error", "error"},
		"LOG_FORMAT":                     {`"console"`, "console", "json", "json"},
		"SIDECAR_INBOX_FILE":             {`"/tmp/file.jsonl"`, "/tmp/file.jsonl", "/tmp/env.jsonl", "/tmp/env.jsonl"},
	}

	vars := EnvVars()
	require.NotEmpty(t, vars)
	listed := map[string]bool{}
	for _, v := range vars {
		listed[v.Name] = true
	}
	for name := range rows {
		assert.True(t, listed[name], "row %s is not in EnvVars(): remove it or restore the variable", name)
	}

	for _, v := range vars {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			r, ok := rows[v.Name]
			require.True(t, ok, "EnvVars() lists %s (%s) but the test has no row for it: add one", v.Name, v.Key)

			// The YAML for "a.b: value".
			parts := strings.Split(v.Key, ".")
			var yml strings.Builder
			for i, p := range parts[:len(parts)-1] {
				yml.WriteString(strings.Repeat("  ", i) + p + ":\n")
			}
			yml.WriteString(strings.Repeat("  ", len(parts)-1) + parts[len(parts)-1] + ": " + r.file + "\n")
			path := mustWriteConfig(t, yml.String())

			def := resolvedDefault("web-1")
			fromFile, err := Load(path, noEnv, "web-1")
			require.NoError(t, err, "file:\n%s", yml.String())
			fromEnv, err := Load(path, envOf(map[string]string{v.Name: r.env}), "web-1")
			require.NoError(t, err)

			got := func(c Config) any {
				f := mustField(t, &c, v.Key)
				if f.Kind() == reflect.Pointer {
					f = f.Elem()
				}
				return f.Interface()
			}
			assert.NotEqual(t, got(def), r.fileWant, "the file value must differ from the default")
			assert.Equal(t, r.fileWant, got(fromFile), "file overrides the default")
			assert.NotEqual(t, r.fileWant, r.envWant, "the variable's value must differ from the file's")
			assert.Equal(t, r.envWant, got(fromEnv), "%s overrides the file", v.Name)
		})
	}
}

func TestEnvVars(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, v := range EnvVars() {
		assert.False(t, seen[v.Name], "%s listed twice", v.Name)
		seen[v.Name] = true
		assert.Regexp(t, `^[A-Z][A-Z0-9_]*$`, v.Name)
		c := Default()
		mustField(t, &c, v.Key) // every key names a real field
	}
	// The names of DESIGN.md's interface contract.
	for _, name := range []string{
		"SIDECAR_LISTEN", "SIDECAR_ADMIN_LISTEN", "SIDECAR_UPSTREAM_URL", "APP_NAME", "APP_VERSION",
		"DEBUG", "SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE", "SENTRY_DEBUG",
		"SENTRY_TRACES_SAMPLE_RATE", "JWT_SECRET_KEY", "SENTRY_BROWSER_DSN", "LOG_LEVEL",
	} {
		assert.True(t, seen[name], "contract variable %s missing from EnvVars()", name)
	}
}

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	c := Default()
	assert.NoError(t, c.Validate(), "before Resolve")
	for _, host := range []string{"localhost", "web-1"} {
		c := resolvedDefault(host)
		assert.NoError(t, c.Validate(), host)
	}
	a, b := Default(), Default()
	a.JWT.Claims["id"] = []string{"changed"}
	a.Sentry.CaptureStatus[0] = "502"
	assert.Equal(t, []string{"user_id", "sub"}, b.JWT.Claims["id"], "each Default has its own maps")
	assert.Equal(t, []string{"500-599"}, b.Sentry.CaptureStatus, "each Default has its own slices")
}

// TestValidateAlone checks Validate on a Config built in Go: the problems
// name their keys but, with no file or environment, no origin.
func TestValidateAlone(t *testing.T) {
	t.Parallel()
	c := resolvedDefault("web-1")
	c.Listen = c.Admin.Listen
	c.Sentry.TracesSampleRate = ptr(2.0)
	c.JWT.Claims["uid"] = []string{"sub"}
	err := c.Validate()
	require.Error(t, err)
	assert.Equal(t, `admin.listen: must differ from listen ("127.0.0.1:9090"): the admin paths would shadow the API's
sentry.traces_sample_rate: must be from 0 to 1, got 2
jwt.claims.uid: unknown user field (want id, username, email or role)`, err.Error())
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path, noEnv, "web-1")
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), path)
}

// TestLoadBadEnvironment checks that a bad variable is reported with both
// its key and its name, whether it fails to parse or fails validation.
func TestLoadBadEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{
			name: "bool",
			env:  map[string]string{"DEBUG": "maybe"},
			want: `app.debug (DEBUG): must be true or false, got "maybe"`,
		},
		{
			name: "float",
			env:  map[string]string{"SENTRY_TRACES_SAMPLE_RATE": "abc"},
			want: `sentry.traces_sample_rate (SENTRY_TRACES_SAMPLE_RATE): must be a number, got "abc"`,
		},
		{
			name: "address",
			env:  map[string]string{"SIDECAR_LISTEN": "nonsense"},
			want: `listen (SIDECAR_LISTEN): must be host:port (e.g. ":8080"), got "nonsense"`,
		},
		{
			name: "variable beats the file's line",
			file: "listen: \":9000\"\n",
			env:  map[string]string{"SIDECAR_LISTEN": "nonsense"},
			want: `listen (SIDECAR_LISTEN): must be host:port (e.g. ":8080"), got "nonsense"`,
		},
		{
			name: "list item",
			file: "upstream:\n  trusted_proxies: [\"10.0.0.0/8\", \"bad\"]\n",
			env:  map[string]string{"SIDECAR_TRUSTED_PROXIES": "10.0.0.0/8,proxy.internal"},
			want: `upstream.trusted_proxies[1] (SIDECAR_TRUSTED_PROXIES): must be an IP address or CIDR, got "proxy.internal"`,
		},
		{
			name: "sample rate out of range",
			env:  map[string]string{"SENTRY_TRACES_SAMPLE_RATE": "NaN"},
			want: `sentry.traces_sample_rate (SENTRY_TRACES_SAMPLE_RATE): must be from 0 to 1, got NaN`,
		},
		{
			name: "JWKS credentials never echoed",
			env:  map[string]string{"JWT_JWKS_URL": "ftp://user:sekrit@auth.example/jwks.json"},
			want: `jwt.jwks_url (JWT_JWKS_URL): must be an absolute http(s) URL, got "ftp://REDACTED@auth.example/jwks.json"`,
		},
		{
			name: "DSN key never echoed",
			env:  map[string]string{"SENTRY_DSN": "https://sekritkey@o1.ingest.sentry.io"},
			want: `sentry.dsn (SENTRY_DSN): must be a DSN like https://PUBLIC_KEY@HOST/PROJECT_ID, but it has no project id`,
		},
		{
			name: "several at once",
			env: map[string]string{
				"DEBUG":        "maybe",
				"SENTRY_DEBUG": "perhaps",
				"LOG_LEVEL":    "verbose", // not reached: parse errors come first
			},
			want: "app.debug (DEBUG): must be true or false, got \"maybe\"\n" +
				"sentry.debug (SENTRY_DEBUG): must be true or false, got \"perhaps\"",
		},
		{
			name: "file problems and variable problems together",
			file: "log:\n  format: xml\n",
			env:  map[string]string{"LOG_LEVEL": "verbose"},
			want: "log.level (LOG_LEVEL): must be debug, info, warn or error, got \"verbose\"\n" +
				"log.format: must be json or console, got \"xml\" (line 2)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tc.file != "" {
				path = mustWriteConfig(t, tc.file)
			}
			_, err := Load(path, envOf(tc.env), "web-1")
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
			assert.NotContains(t, err.Error(), "sekrit")
		})
	}
}

func TestDetectEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		hostname string
		want     string
	}{
		{"localhost", Development},
		{"127.0.0.1", Development},
		{"my-local-box", Development},
		{"LOCALHOST", Development},
		{"web-1", Production},
		{"prod.example.com", Production},
		{"", Production},
	}
	for _, tc := range tests {
		t.Run(tc.hostname, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, DetectEnvironment(tc.hostname))
		})
	}
}

// secretConfig sets every secret the config holds, each containing
// "sekrit".
func secretConfig() Config {
	c := Default()
	c.Upstream.URL = "http://admin:sekrit-password@proximity:8765"
	c.Sentry.DSN = "https://sekrit-server-key@o1.ingest.sentry.io/1"
	c.Tunnel.Path = "/api/v1/envelope"
	c.Tunnel.DSN = "https://sekrit-browser-key:sekrit-old-secret@o1.ingest.sentry.io/2"
	c.Tunnel.AllowedDSNs = []string{"https://sekrit-placeholder@sentry.invalid/1", "https://sekrit-other@o1.ingest.sentry.io/3"}
	c.JWT.Secret = "sekrit-jwt-secret"
	c.Admin.Token = "sekrit-admin-token"
	c.Resolve("web-1")
	return c
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	c := secretConfig()
	before := c.Tunnel.AllowedDSNs[0]
	r := c.Redacted()

	assert.Equal(t, "http://REDACTED@proximity:8765", r.Upstream.URL)
	assert.Equal(t, "https://REDACTED@o1.ingest.sentry.io/1", r.Sentry.DSN)
	assert.Equal(t, "https://REDACTED@o1.ingest.sentry.io/2", r.Tunnel.DSN)
	assert.Equal(t, []string{"https://REDACTED@sentry.invalid/1", "https://REDACTED@o1.ingest.sentry.io/3"}, r.Tunnel.AllowedDSNs)
	assert.Equal(t, "REDACTED", r.JWT.Secret)
	assert.Equal(t, "REDACTED", r.Admin.Token)
	assert.Equal(t, before, c.Tunnel.AllowedDSNs[0], "Redacted must not change the original")
	assert.Equal(t, "sekrit-jwt-secret", c.JWT.Secret)
	assert.Equal(t, "sekrit-admin-token", c.Admin.Token)

	j := Default()
	j.JWT.JWKSURL = "https://user:sekrit@auth.example/jwks.json"
	assert.Equal(t, "https://REDACTED@auth.example/jwks.json", j.Redacted().JWT.JWKSURL)

	// Empty secrets stay empty: an unset value is not a secret.
	d := Default().Redacted()
	assert.Empty(t, d.JWT.Secret)
	assert.Empty(t, d.Admin.Token)
	assert.Empty(t, d.Sentry.DSN)
}

func TestYAMLHidesSecrets(t *testing.T) {
	t.Parallel()
	c := secretConfig()
	out := c.YAML()
	assert.NotContains(t, out, "sekrit")
	assert.Contains(t, out, "secret: REDACTED")
	assert.Contains(t, out, "token: REDACTED")
	assert.Contains(t, out, "dsn: https://REDACTED@o1.ingest.sentry.io/1")
	assert.Contains(t, out, "url: http://REDACTED@proximity:8765")
	assert.Equal(t, 7, strings.Count(out, "REDACTED"), out)

	// The redacted output is itself a valid config file.
	cfg, err := Load(mustWriteConfig(t, out), noEnv, "web-1")
	require.NoError(t, err)
	assert.Equal(t, c.Redacted(), cfg)
}

// TestYAMLRoundTrip decodes YAML() of a config with no secrets and expects
// the same Config back, with every key away from its default.
func TestYAMLRoundTrip(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "jwt.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte("-----BEGIN PUBLIC KEY-----\n"), 0o600))

	tests := []struct {
		name string
		cfg  func() Config
	}{
		{"defaults in production", func() Config { return resolvedDefault("web-1") }},
		{"defaults in development", func() Config { return resolvedDefault("localhost") }},
		{"unresolved defaults", Default},
		{"every key set", func() Config {
			return Config{
				Listen: "0.0.0.0:8081",
				Admin:  Admin{Listen: "127.0.0.1:9091"},
				Upstream: Upstream{
					URL:                   "https://proximity.internal:8765/base",
					PreserveHost:          true,
					TrustedProxies:        []string{"10.0.0.0/8", "fd00::/8", "192.168.1.1"},
					DialTimeout:           Duration(1500 * time.Millisecond),
					ResponseHeaderTimeout: Duration(10 * time.Minute),
					IdleConnTimeout:       Duration(90 * time.Second),
					MaxIdleConnsPerHost:   7,
					HealthPath:            "/health",
					HealthInterval:        Duration(3 * time.Second),
				},
				Server:   Server{ReadHeaderTimeout: Duration(time.Second), IdleTimeout: Duration(time.Hour), MaxHeaderBytes: 8192},
				Shutdown: Shutdown{DrainDelay: 0, GracePeriod: Duration(time.Minute), FlushTimeout: Duration(250 * time.Millisecond)},
				App:      App{Name: "Proximity Django", Version: "1.10", Debug: true},
				Sentry: Sentry{
					Environment:      "staging",
					Release:          "true",
					Debug:            true,
					TracesSampleRate: ptr(0.333),
					CaptureStatus:    []string{"500-599", "429"},
					IgnorePaths:      []string{"/healthz", "/metrics"},
					Contexts: map[string]map[string]any{
						"proxmox": {"host": "pve.local", "port": 8006, "tls": true, "ratio": 0.5},
					},
					IgnoreErrors:   []string{"^context canceled$"},
					RouteTemplates: []string{"/api/v1/apps/{id}"},
					Throttle:       Throttle{Burst: 2, Every: Duration(time.Minute)},
					Trail:          Trail{Size: 5, Users: 100, TTL: Duration(time.Hour)},
					TracesSampler:  []SampleRule{{Route: "GET /health", Rate: 0}, {Route: "/api/v1/apps/deploy", Rate: 1}},
				},
				Inbox:   Inbox{Size: 10, File: "/tmp/inbox.jsonl"},
				Metrics: Metrics{MaxRoutes: 7},
				JWT: JWT{
					Leeway:        Duration(5 * time.Second),
					PublicKeyFile: keyFile,
					Verify:        false,
					Cookie:        "proximity-auth-cookie",
					// Every user field: claims from a file merge into the
					// default mappings, so a Config without one of them
					// cannot come from a file.
					Claims: map[string][]string{
						"id":       {"user_id"},
						"username": {"preferred_username"},
						"email":    {"email", "mail"},
						"role":     {"role", "scope"},
					},
				},
				Tunnel: Tunnel{
					Path:           "/api/v1/envelope",
					AllowedDSNs:    []string{},
					AllowedOrigins: []string{"https://app.example.com"},
					Scrub:          true,
					Limits:         TunnelLimits{Body: 1 << 20, Decompressed: 3 << 20, Event: 100 << 10, Replay: 1500, Attachment: 2 << 30, Session: 1, Items: 5},
					ClientRate:     Throttle{Burst: 7, Every: Duration(time.Second)},
					Timeout:        Duration(3 * time.Second),
				},
				Browser: Browser{ConfigPath: "/sentry-browser-config.js", ReplaysSessionSampleRate: 0.5, ReplaysOnErrorSampleRate: 0.25},
				Actions: []Action{
					{Route: "POST /api/v1/apps/deploy", Name: "app.deploy", Fields: []string{"catalog_id", "hostname"}},
					{Route: "DELETE /api/v1/apps/{id}", Name: "app.delete", Fields: []string{}},
				},
				Log: Log{Level: "warn", Format: "console"},
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := tc.cfg()
			out := want.YAML()
			assert.NotContains(t, out, "REDACTED", "nothing to redact here")
			got, err := Load(mustWriteConfig(t, out), noEnv, "web-1")
			if want.Sentry.TracesSampleRate == nil {
				want.Resolve("web-1") // Load resolves
			}
			require.NoError(t, err, out)
			assert.Equal(t, want, got, out)
		})
	}
}

func TestYAMLDurations(t *testing.T) {
	t.Parallel()
	out := Default().YAML()
	for _, line := range []string{
		"    dial_timeout: 5s\n",
		"    response_header_timeout: 0s\n",
		"    idle_conn_timeout: 1m30s\n",
		"    grace_period: 20s\n",
	} {
		assert.Contains(t, out, line)
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{
			name:   "verified with a secret",
			change: func(c *Config) { c.JWT.Secret = "s" },
			want:   nil,
		},
		{
			name:   "verify false",
			change: func(c *Config) { c.JWT.Verify = false },
			want:   []string{"jwt.verify: false: tokens are decoded without checking their signature; users are marked verified: false"},
		},
		{
			name:   "no key source",
			change: func(*Config) {},
			want:   []string{"jwt: no secret, public_key_file or jwks_url: events carry no user"},
		},
		{
			name: "response header timeout",
			change: func(c *Config) {
				c.JWT.JWKSURL = "https://auth.example/jwks.json"
				c.Upstream.ResponseHeaderTimeout = Duration(30 * time.Second)
			},
			want: []string{"upstream.response_header_timeout: 30s: slower upstream answers (long deploys) become 504"},
		},
		{
			name: "all of them",
			change: func(c *Config) {
				c.JWT.Verify = false
				c.Upstream.ResponseHeaderTimeout = Duration(time.Minute)
				c.Admin.Listen = ":9090"
			},
			want: []string{
				"jwt.verify: false: tokens are decoded without checking their signature; users are marked verified: false",
				"upstream.response_header_timeout: 1m0s: slower upstream answers (long deploys) become 504",
				`admin.listen: ":9090" is not a loopback address and admin.token (SIDECAR_ADMIN_TOKEN) is not set: whoever reaches it can read /metrics, /sentry-info and the inbox's user data, and send test events`,
			},
		},
		{
			name: "admin on all interfaces without a token",
			change: func(c *Config) {
				c.JWT.Secret = "s"
				c.Admin.Listen = "0.0.0.0:9090"
			},
			want: []string{`admin.listen: "0.0.0.0:9090" is not a loopback address and admin.token (SIDECAR_ADMIN_TOKEN) is not set: whoever reaches it can read /metrics, /sentry-info and the inbox's user data, and send test events`},
		},
		{
			name:   "production without a DSN",
			change: func(c *Config) { c.JWT.Secret = "s"; c.Sentry.DSN = "" },
			want:   []string{"sentry.dsn: empty in production: events stay in the local inbox on the admin listener and never reach Sentry"},
		},
		{
			name:   "development with a DSN and no debug",
			change: func(c *Config) { c.JWT.Secret = "s"; c.Sentry.Environment = Development },
			want:   []string{"sentry.environment: development (set, or detected from the hostname) with a DSN: events go to the local inbox, not to Sentry, unless sentry.debug is true"},
		},
		{
			name:   "development with a DSN and debug",
			change: func(c *Config) { c.JWT.Secret = "s"; c.Sentry.Environment = Development; c.Sentry.Debug = true },
			want:   nil,
		},
		{
			name:   "every request traced in production",
			change: func(c *Config) { c.JWT.Secret = "s"; one := 1.0; c.Sentry.TracesSampleRate = &one },
			want:   []string{"sentry.traces_sample_rate: 1 in production: every request becomes a transaction, which costs CPU and Sentry quota"},
		},
		{
			name: "admin on all interfaces with a token",
			change: func(c *Config) {
				c.JWT.Secret = "s"
				c.Admin.Listen = "0.0.0.0:9090"
				c.Admin.Token = "t0ken"
			},
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := resolvedDefault("web-1")
			c.Sentry.DSN = "https://key@o1.ingest.sentry.io/1" // production with a DSN: no warning of its own
			tc.change(&c)
			require.NoError(t, c.Validate())
			assert.Equal(t, tc.want, c.Warnings())
		})
	}
}

// TestAdminListenWarning tells loopback addresses from the rest: only
// loopback without a token is quiet.
func TestAdminListenWarning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen string
		warn   bool
	}{
		{"127.0.0.1:9090", false},
		{"127.0.0.2:9090", false},
		{"[::1]:9090", false},
		{"[::ffff:127.0.0.1]:9090", false},
		{"localhost:9090", false},
		{"LOCALHOST:9090", false},
		{"127.0.0.1:0", false},
		{":9090", true},
		{"0.0.0.0:9090", true},
		{"[::]:9090", true},
		{"10.0.0.5:9090", true},
		{"192.168.1.10:9090", true},
		{"203.0.113.7:9090", true},
		{"[2001:db8::1]:9090", true},
		{"admin.internal:9090", true}, // a name may resolve to anything
	} {
		t.Run(tc.listen, func(t *testing.T) {
			t.Parallel()
			c := resolvedDefault("web-1")
			c.JWT.Secret = "s"
			c.Sentry.DSN = "https://key@o1.ingest.sentry.io/1"
			c.Admin.Listen = tc.listen
			require.NoError(t, c.Validate())
			var got []string
			for _, w := range c.Warnings() {
				if strings.HasPrefix(w, "admin.listen: ") {
					got = append(got, w)
				}
			}
			if tc.warn {
				assert.Len(t, got, 1)
			} else {
				assert.Empty(t, got)
			}
			c.Admin.Token = "t0ken"
			assert.Empty(t, c.Warnings(), "a token silences it")
		})
	}
}

func TestParseStatusRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		lo, hi  int
		wantErr bool
	}{
		{in: "500-599", lo: 500, hi: 599},
		{in: "502", lo: 502, hi: 502},
		{in: "100-100", lo: 100, hi: 100},
		{in: " 500 - 504 ", lo: 500, hi: 504},
		{in: "600", wantErr: true},
		{in: "599-500", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "99", wantErr: true},
		{in: "500-", wantErr: true},
		{in: "-500", wantErr: true},
		{in: "500-600", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			lo, hi, err := ParseStatusRange(tc.in)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []int{tc.lo, tc.hi}, []int{lo, hi})
		})
	}
}

func TestParsePrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "192.168.1.10", want: "192.168.1.10/32"},
		{in: "::ffff:192.168.1.10", want: "192.168.1.10/32"},
		{in: "fd00::/8", want: "fd00::/8"},
		{in: "::1", want: "::1/128"},
		{in: "10.0.0.0/33", wantErr: true},
		{in: "proxy.internal", wantErr: true},
		{in: "fe80::1%eth0", want: "fe80::1/128"}, // the zone is dropped
		{in: "fe80::1%eth0/64", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			p, err := ParsePrefix(tc.in)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p.String())
		})
	}
}
