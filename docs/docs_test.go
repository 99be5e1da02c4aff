// Package docs_test keeps the operator documentation in docs/ true to the
// code: the configuration reference to the Config struct, its defaults and
// its environment variables; the metrics reference to the series the
// packages register; the admin reference to the admin handler; every line
// the docs quote as the sidecar's output to the string literals it is
// printed from; and every relative link to a file and heading that exist.
package docs_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/getsentry/sentry-go"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
	"github.com/sentry-sidecar/sentry-sidecar/internal/admin"
	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
	"github.com/sentry-sidecar/sentry-sidecar/internal/inbox"
	"github.com/sentry-sidecar/sentry-sidecar/internal/transport"
	"github.com/sentry-sidecar/sentry-sidecar/proxy"
	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// repoRoot is the module's root, seen from this package's directory.
const repoRoot = ".."

// none is what a table cell says when there is nothing: no default (a key
// inside a list item), no environment variable, no labels.
const none = "—"

func mustRead(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile(name)
	require.NoError(tb, err)
	return string(b)
}

// mdTables returns the rows of every Markdown table in doc whose header row
// has exactly the cells header, each row as its trimmed cells. Tables
// inside fenced code blocks are not tables.
func mdTables(tb testing.TB, doc string, header ...string) [][]string {
	tb.Helper()
	var rows [][]string
	inTable, fenced := false, false
	for n, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced || !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "|"), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case slices.Equal(cells, header):
			inTable = true
		case !inTable:
		case strings.Trim(strings.Join(cells, ""), "-: ") == "":
			// the separator row
		case len(cells) != len(header):
			assert.Failf(tb, "the docs do not match the code", "line %d: a row of %d cells in a table of %d (a | inside a cell?): %s", n+1, len(cells), len(header), line)
		default:
			rows = append(rows, cells)
		}
	}
	return rows
}

// inCode returns the text of a cell that is one code span: "`x`" gives x.
func inCode(cell string) (string, bool) {
	if len(cell) >= 2 && strings.HasPrefix(cell, "`") && strings.HasSuffix(cell, "`") && strings.Count(cell, "`") == 2 {
		return cell[1 : len(cell)-1], true
	}
	return "", false
}

// codeList reads a cell of code spans separated by commas: "`a`, `b`".
func codeList(cell string) ([]string, bool) {
	if cell == none {
		return nil, true
	}
	var out []string
	for _, part := range strings.Split(cell, ",") {
		v, ok := inCode(strings.TrimSpace(part))
		if !ok {
			return nil, false
		}
		out = append(out, v)
	}
	return out, true
}

// --- docs/configuration.md ---------------------------------------------

// configKey is a key of the YAML file that holds a value: a leaf of the
// Config struct, or a list of structs (actions), whose item keys are
// written "actions[].route".
type configKey struct {
	key    string
	inList bool // inside a list item: there is no default to show
}

func configKeys(t reflect.Type, prefix string, inList bool) []configKey {
	var keys []configKey
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		key := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft.NumField() > 0:
			keys = append(keys, configKeys(ft, key+".", inList)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKey{key, inList})
			keys = append(keys, configKeys(ft.Elem(), key+"[].", true)...)
		default:
			keys = append(keys, configKey{key, inList})
		}
	}
	return keys
}

// lookup finds a dotted key in a decoded YAML document.
func lookup(doc map[string]any, key string) (any, bool) {
	var v any = doc
	for _, part := range strings.Split(key, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

// flow writes v as one line of flow-style YAML, the way the default column
// shows values.
func flow(tb testing.TB, v any) string {
	tb.Helper()
	var n yaml.Node
	require.NoError(tb, n.Encode(v))
	var setFlow func(*yaml.Node)
	setFlow = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
			n.Style = yaml.FlowStyle
		}
		for _, c := range n.Content {
			setFlow(c)
		}
	}
	setFlow(&n)
	b, err := yaml.Marshal(&n)
	require.NoError(tb, err)
	return strings.TrimSpace(string(b))
}

// TestConfigurationReference: docs/configuration.md has one row per key of
// the Config struct, no row for a key it lacks, each with the default of
// config.Default() and the environment variable of config.EnvVars().
func TestConfigurationReference(t *testing.T) {
	t.Parallel()
	doc := mustRead(t, "configuration.md")
	rows := mdTables(t, doc, "Key", "Default", "Environment variable", "What it does")
	require.NotEmpty(t, rows, "configuration.md has no table with the header | Key | Default | Environment variable | What it does |")

	b, err := yaml.Marshal(config.Default())
	require.NoError(t, err)
	var defaults map[string]any
	require.NoError(t, yaml.Unmarshal(b, &defaults))
	envOf := map[string]string{}
	for _, v := range config.EnvVars() {
		envOf[v.Key] = v.Name
	}

	keys := configKeys(reflect.TypeOf(config.Config{}), "", false)
	want := map[string]configKey{}
	for _, k := range keys {
		want[k.key] = k
	}
	documented := map[string]bool{}
	for _, row := range rows {
		key, ok := inCode(row[0])
		if !ok {
			assert.Failf(t, "the docs do not match the code", "row %q: the key must be one code span", row[0])
			continue
		}
		if documented[key] {
			assert.Failf(t, "the docs do not match the code", "%s: documented twice", key)
		}
		documented[key] = true
		k, known := want[key]
		if !known {
			assert.Failf(t, "the docs do not match the code", "%s: documented, but config.Config has no such key", key)
			continue
		}

		// The default, as YAML, equals config.Default()'s.
		if k.inList {
			assert.Equal(t, none, row[1], "%s: a key inside a list item has no default; write %s", key, none)
		} else if text, ok := inCode(row[1]); !ok {
			assert.Failf(t, "the docs do not match the code", "%s: the default must be one code span of YAML, got %s", key, row[1])
		} else {
			var got any
			if err := yaml.Unmarshal([]byte(text), &got); err != nil {
				assert.Failf(t, "the docs do not match the code", "%s: the default %s is not YAML: %v", key, row[1], err)
			} else if def, _ := lookup(defaults, key); !reflect.DeepEqual(got, def) {
				assert.Failf(t, "the docs do not match the code", "%s: documented default %s, but config.Default() has `%s`", key, row[1], flow(t, def))
			}
		}

		// The environment variable is config.EnvVars()'s, or none.
		if name, has := envOf[key]; has {
			assert.Equal(t, "`"+name+"`", row[2], "%s: environment variable", key)
		} else {
			assert.Equal(t, none, row[2], "%s: config.EnvVars() has no variable for it", key)
		}
		assert.NotEmpty(t, strings.Trim(row[3], " "+none), "%s: say what it does", key)
	}
	for _, k := range keys {
		if documented[k.key] {
			continue
		}
		def, env := none, none
		if !k.inList {
			v, _ := lookup(defaults, k.key)
			def = "`" + flow(t, v) + "`"
		}
		if name, has := envOf[k.key]; has {
			env = "`" + name + "`"
		}
		assert.Failf(t, "the docs do not match the code", "configuration.md lacks key %s; add a row:\n| `%s` | %s | %s | ... |", k.key, k.key, def, env)
	}
	assert.Contains(t, doc, "`SIDECAR_CONFIG`", "configuration.md must say how the file is named")
}

// --- docs/metrics.md ---------------------------------------------------

// recordingRegisterer registers with a real registry and remembers every
// collector, so that families without a series yet are still known.
type recordingRegisterer struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqNameRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// describedNames are the metric names the collectors describe.
func (r *recordingRegisterer) describedNames(tb testing.TB) []string {
	tb.Helper()
	var names []string
	for _, c := range r.collectors {
		ch := make(chan *prometheus.Desc, 64)
		go func() {
			c.Describe(ch)
			close(ch)
		}()
		for d := range ch {
			m := fqNameRE.FindStringSubmatch(d.String())
			require.NotNil(tb, m, "cannot read the name of %s", d)
			names = append(names, m[1])
		}
	}
	return names
}

// discardTransport is a sentry.Transport that sends nothing.
type discardTransport struct{}

func (discardTransport) Flush(time.Duration) bool              { return true }
func (discardTransport) FlushWithContext(context.Context) bool { return true }
func (discardTransport) Configure(sentry.ClientOptions)        {}
func (discardTransport) SendEvent(*sentry.Event)               {}
func (discardTransport) Close()                                {}

// mustToken signs an HS256 token like Proximity's.
func mustToken(tb testing.TB, secret string, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	require.NoError(tb, err)
	return s
}

// mustMetricFamilies builds the three packages that register metrics (the
// proxy with every reporting part, the Sentry transport and the tunnel) on
// one fresh registry, as cmd/sentry-sidecar wires them, sends one request
// of each kind through them so that every labelled family has a series,
// and gathers. It also returns the names the collectors describe.
func mustMetricFamilies(t *testing.T) ([]*dto.MetricFamily, []string) {
	t.Helper()
	reg := &recordingRegisterer{Registry: prometheus.NewRegistry()}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/auth/login":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"detail":"Incorrect username or password"}`)
		case "/api/v1/apps/deploy":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"detail":"Proxmox error: no space left"}`)
		default:
			_, _ = io.WriteString(w, `[]`)
		}
	}))
	defer up.Close()
	upURL, err := url.Parse(up.URL)
	require.NoError(t, err)

	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:              "http://key@127.0.0.1:1/1",
		Transport:        discardTransport{},
		EnableTracing:    true,
		TracesSampleRate: 1,
	})
	require.NoError(t, err)
	defer client.Close()
	users := enrich.NewVerifier(enrich.VerifierOptions{Keys: enrich.HMACKeys([]byte("secret")), Verify: true})
	defer users.Close()
	routes, err := enrich.NewRouter([]string{"/api/v1/apps/deploy", "/api/v1/apps/{app_id}"}, 64)
	require.NoError(t, err)
	px, err := proxy.New(proxy.Config{
		Upstream: upURL,
		Report: proxy.Report{
			Client:  client,
			Scope:   sentry.NewScope(),
			Users:   users,
			Trails:  enrich.NewTrails(20, 100, time.Minute, nil),
			Routes:  routes,
			Capture: []proxy.StatusRange{{Lo: 500, Hi: 599}},
			Actions: []proxy.Action{
				{Method: http.MethodPost, Route: "/api/v1/apps/deploy", Name: "app.deploy", Fields: []string{"catalog_id"}},
				{Method: http.MethodPost, Route: "/api/v1/auth/login", Name: "auth.login"},
			},
			TracesSampleRate: 1,
		},
	}, zap.NewNop(), reg)
	require.NoError(t, err)
	defer px.CloseIdleConnections()

	tr, err := transport.New(transport.Options{DSN: "http://key@127.0.0.1:1/1", Registerer: reg})
	require.NoError(t, err)
	defer tr.Close()

	fakeSentry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"id":"0123456789abcdef0123456789abcdef"}`)
	}))
	defer fakeSentry.Close()
	realDSN := "http://realkey@" + strings.TrimPrefix(fakeSentry.URL, "http://") + "/7"
	th, err := tunnel.New(tunnel.Options{
		Target:         realDSN,
		PlaceholderKey: tunnel.PlaceholderKey(realDSN),
		Scrub:          true,
		Registerer:     reg,
	})
	require.NoError(t, err)
	defer th.Close()

	srv := httptest.NewServer(px)
	defer srv.Close()
	do := func(method, path, body string, header ...string) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	token := mustToken(t, "secret", jwt.MapClaims{"sub": "demo", "user_id": 2, "exp": time.Now().Add(time.Hour).Unix()})
	do(http.MethodGet, "/api/v1/apps", "", "Authorization", "Bearer "+token)
	do(http.MethodPost, "/api/v1/apps/deploy", `{"catalog_id":"nginx","hostname":"web"}`, "Authorization", "Bearer "+token)
	do(http.MethodPost, "/api/v1/auth/login", `{"username":"demo","password":"wrong"}`)
	srv.Client().CloseIdleConnections()

	envelope := `{"dsn":"http://` + tunnel.PlaceholderKey(realDSN) + `@example.com/7"}` + "\n" +
		`{"type":"event"}` + "\n" + `{"message":"browser failure"}` + "\n"
	rec := httptest.NewRecorder()
	th.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/beacon", strings.NewReader(envelope)))
	require.Equal(t, http.StatusOK, rec.Code, "the tunnel took the envelope: %s", rec.Body)

	// The proxy counts a request when its handler returns, after the
	// client has its answer.
	require.Eventually(t, func() bool {
		fams, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range fams {
			if f.GetName() == "sidecar_requests_total" {
				n := 0.0
				for _, m := range f.GetMetric() {
					n += m.GetCounter().GetValue()
				}
				return n == 3
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)

	fams, err := reg.Gather()
	require.NoError(t, err)
	return fams, reg.describedNames(t)
}

// sourceFiles are the repository's Go files that are not tests.
func sourceFiles(tb testing.TB) []string {
	tb.Helper()
	var files []string
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", "docs":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return nil
	})
	require.NoError(tb, err)
	require.NotEmpty(tb, files)
	return files
}

// stringLiterals are the values of every string literal in the non-test
// source and, with tags, the names in json, yaml and env struct tags (the
// keys the sidecar prints in JSON and YAML, and the variables it names).
func stringLiterals(tb testing.TB, tags bool) []string {
	tb.Helper()
	var out []string
	fset := token.NewFileSet()
	for _, name := range sourceFiles(tb) {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		require.NoError(tb, err)
		ast.Inspect(f, func(n ast.Node) bool {
			if field, ok := n.(*ast.Field); ok && field.Tag != nil && tags {
				tag, err := strconv.Unquote(field.Tag.Value)
				if err == nil {
					for _, k := range []string{"json", "yaml", "env"} {
						if v, _, _ := strings.Cut(reflect.StructTag(tag).Get(k), ","); v != "" && v != "-" {
							out = append(out, v)
						}
					}
				}
				return true
			}
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil {
				out = append(out, s)
			}
			return true
		})
	}
	return out
}

var metricNameRE = regexp.MustCompile(`^sidecar_[a-z0-9_]+$`)

// TestMetricsReference: docs/metrics.md names every metric the sidecar
// registers, with its type and label names, and no metric it lacks; the
// values it lists for a label include every value the code makes, and each
// is one the code can make.
func TestMetricsReference(t *testing.T) {
	doc := mustRead(t, "metrics.md")
	fams, described := mustMetricFamilies(t)

	type family struct {
		typ    string
		labels []string
		values map[string]map[string]bool // label → values seen
	}
	got := map[string]family{}
	for _, f := range fams {
		fam := family{typ: strings.ToLower(f.GetType().String()), values: map[string]map[string]bool{}}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if fam.values[lp.GetName()] == nil {
					fam.values[lp.GetName()] = map[string]bool{}
					fam.labels = append(fam.labels, lp.GetName())
				}
				fam.values[lp.GetName()][lp.GetValue()] = true
			}
		}
		sort.Strings(fam.labels)
		got[f.GetName()] = fam
	}
	for _, name := range described {
		_, ok := got[name]
		assert.True(t, ok, "%s is registered but has no series here: exercise it in mustMetricFamilies", name)
	}
	// A metric some other package registers would not be built above:
	// every sidecar_ name in the source must be there too.
	for _, s := range stringLiterals(t, false) {
		if metricNameRE.MatchString(s) {
			_, ok := got[s]
			assert.True(t, ok, "the source names metric %s, which mustMetricFamilies does not build", s)
		}
	}

	rows := mdTables(t, doc, "Metric", "Type", "Labels", "What it counts")
	require.NotEmpty(t, rows, "metrics.md has no table with the header | Metric | Type | Labels | What it counts |")
	documented := map[string]bool{}
	for _, row := range rows {
		name, ok := inCode(row[0])
		if !ok {
			assert.Failf(t, "the docs do not match the code", "row %q: the metric must be one code span", row[0])
			continue
		}
		documented[name] = true
		fam, ok := got[name]
		if !ok {
			assert.Failf(t, "the docs do not match the code", "%s: documented, but the sidecar registers no such metric", name)
			continue
		}
		assert.Equal(t, "`"+fam.typ+"`", row[1], "%s: type", name)
		labels, ok := codeList(row[2])
		if !ok {
			assert.Failf(t, "the docs do not match the code", "%s: labels must be code spans separated by commas, or %s; got %s", name, none, row[2])
			continue
		}
		sort.Strings(labels)
		if len(labels) == 0 {
			labels = nil
		}
		assert.Equal(t, fam.labels, labels, "%s: labels", name)
	}
	for name, fam := range got {
		if !documented[name] {
			labels := none
			if len(fam.labels) > 0 {
				labels = "`" + strings.Join(fam.labels, "`, `") + "`"
			}
			assert.Failf(t, "the docs do not match the code", "metrics.md lacks %s; add a row:\n| `%s` | `%s` | %s | ... |", name, name, fam.typ, labels)
		}
	}

	// Label values: the documented list holds every value seen, and each
	// documented value is seen under a label of that name (methods and
	// status classes are made once, for several families) or spelt in the
	// source.
	known := map[string]map[string]bool{} // label → values
	for _, fam := range got {
		for label, values := range fam.values {
			if known[label] == nil {
				known[label] = map[string]bool{}
			}
			for v := range values {
				known[label][v] = true
			}
		}
	}
	for _, s := range stringLiterals(t, false) {
		for label := range known {
			known[label][s] = true
		}
	}
	valueRows := mdTables(t, doc, "Metric", "Label", "Values")
	require.NotEmpty(t, valueRows, "metrics.md has no table with the header | Metric | Label | Values |")
	listed := map[string]bool{}
	for _, row := range valueRows {
		name, ok1 := inCode(row[0])
		label, ok2 := inCode(row[1])
		values, ok3 := codeList(row[2])
		if !ok1 || !ok2 || !ok3 || len(values) == 0 {
			assert.Failf(t, "the docs do not match the code", "label values row %v: want `metric` | `label` | `v1`, `v2`, ...", row)
			continue
		}
		listed[name+"/"+label] = true
		fam, ok := got[name]
		if !ok || fam.values[label] == nil {
			assert.Failf(t, "the docs do not match the code", "%s{%s}: no such metric and label", name, label)
			continue
		}
		for v := range fam.values[label] {
			assert.Contains(t, values, v, "%s{%s=%q} exists but is not listed", name, label, v)
		}
		for _, v := range values {
			assert.True(t, known[label][v], "%s{%s=%q} is listed, but the code neither made it nor spells it", name, label, v)
		}
	}
	assert.NotEmpty(t, listed)
}

// --- quoted output -----------------------------------------------------

// foreign is text that quoted output holds but this repository's code does
// not spell: values the examples' operator chose, and what Go's standard
// library, the operating system and zap add to the sidecar's own words.
// Everything else on a line of a ```text block must be a string literal of
// the code (or a constant part of a format string), so that a quoted
// message cannot drift from the one the sidecar prints.
var foreign = []string{
	// Example values: what the examples' config files, pages and clients
	// say (a typo, a path, a host, a DSN, an encoding).
	"app:8080", "nowhere", "loud", "beacon", "upstrem", "/etc/sentry-sidecar/jwt-public.pem",
	"/sentry-browser-config.js", "o1.ingest.sentry.io", "br",
	// Go's net and net/http errors, and the OS's.
	"dial tcp", "listen tcp", "lookup", "on", "no such host", "connect: connection refused",
	"bind: address already in use", "i/o timeout", "context deadline exceeded",
	"Post", "Client.Timeout exceeded while awaiting headers", "(", ")",
	"permission denied", "open", "no such file or directory",
	// HTTP methods, spelt by net/http's constants.
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
	// fmt's %t.
	"true", "false",
	// The Prometheus text format's own words.
	"HELP", "TYPE", "counter", "gauge", "histogram",
	// zap's keys and levels.
	"level", "msg", "logger", "info", "warn", "error", "INFO", "WARN",
}

// tokenRE matches values that vary from run to run: ids, times, durations,
// a quoted byte ('g'), and … where the docs leave a value out.
var tokenRE = regexp.MustCompile(`^(?:[0-9a-f]{8,}|\d{4}-\d\d-\d\dT[0-9:.]+Z|(?:\d+(?:\.\d+)?(?:ms|µs|ns|h|m|s))+|'[^']'|…)`)

// separators may stand between the words of a line.
const separators = " \t:;,.()[]{}<>\"'\\=/-_+*#@!?|%0123456789"

// letters counts the letters of s.
func letters(s string) int {
	n := 0
	for _, r := range s {
		if unicode.IsLetter(r) {
			n++
		}
	}
	return n
}

// piece is a constant part of a string of the code. left and right say
// that a format verb stands before or after it, where any value goes.
type piece struct {
	s           string
	left, right bool
}

// covers reports whether line is a sequence of code strings, foreign
// strings, varying values and separators; when it is not, rest is where
// the first uncovered text starts.
//
// Two code strings may not be joined by a space between letters
// ("upstream" + " " + "is unavailable"), unless a format verb stands at the
// join (the value of "got %s", "%s size exceeds"): words that run on with
// spaces must be one string of the code, as a message is, or a drifted
// message would pass as the code's words rearranged. What it cannot tell
// is a changed message from one a generic format ("%s is %s") could make.
func covers(line string, code map[byte][]piece, other map[byte][]string) (ok bool, rest string) {
	const (
		afterCode  = iota // a code string that ends the message text
		afterOpen         // a code string a value follows
		afterOther        // a separator, a value or a foreign string
		mustOther         // a code string and a space between letters: no code string follows
		states
	)
	letter := func(i int) bool { return i >= 0 && i < len(line) && unicode.IsLetter(rune(line[i])) }
	reach := make([][states]bool, len(line)+1)
	reach[0][afterOther] = true
	far := 0
	for i := 0; i < len(line); i++ {
		// A space between letters right before i or at i.
		wordJoin := (i >= 2 && line[i-1] == ' ' && letter(i-2) && letter(i)) || (line[i] == ' ' && letter(i-1) && letter(i+1))
		for st := range states {
			if !reach[i][st] {
				continue
			}
			far = max(far, i)
			if c := line[i]; strings.IndexByte(separators, c) >= 0 && st != mustOther {
				if c == ' ' && letter(i-1) && letter(i+1) && st == afterCode {
					reach[i+1][mustOther] = true
				} else {
					reach[i+1][afterOther] = true
				}
			}
			if m := tokenRE.FindString(line[i:]); m != "" {
				reach[i+len(m)][afterOther] = true
			}
			for _, f := range other[line[i]] {
				if strings.HasPrefix(line[i:], f) {
					reach[i+len(f)][afterOther] = true
				}
			}
			for _, p := range code[line[i]] {
				allowed := p.left || st == afterOther || st == afterOpen || (st == afterCode && !wordJoin)
				if !allowed || !strings.HasPrefix(line[i:], p.s) {
					continue
				}
				if p.right {
					reach[i+len(p.s)][afterOpen] = true
				} else {
					reach[i+len(p.s)][afterCode] = true
				}
			}
		}
	}
	for _, ok := range reach[len(line)] {
		if ok {
			return true, ""
		}
	}
	return false, line[far:]
}

// formatVerb splits format strings: the text between verbs is what the
// sidecar always prints.
var formatVerb = regexp.MustCompile(`%[-+# 0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?[vTtbcdoOqxXUeEfFgGsp]|\n`)

// textBlocks returns the lines of every ```text block of doc, block by block.
func textBlocks(doc string) [][]string {
	var blocks [][]string
	var cur []string
	in := false
	for _, line := range strings.Split(doc, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case !in && trimmed == "```text":
			in, cur = true, nil
		case in && trimmed == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

// mustPieces splits the code's strings at their format verbs into the
// pieces quoted output is made of; long are those with four letters or
// more, words rather than marks. other holds the foreign strings.
func mustPieces(tb testing.TB) (code map[byte][]piece, other map[byte][]string, long []string) {
	tb.Helper()
	wordy := func(s string) bool { return len(s) >= 2 && strings.IndexFunc(s, unicode.IsLetter) >= 0 }
	flags := map[string]*piece{}
	for _, lit := range stringLiterals(tb, true) {
		lit = strings.ReplaceAll(lit, "%%", "%")
		parts := formatVerb.Split(lit, -1)
		verbs := formatVerb.FindAllString(lit, -1)
		for k, s := range parts {
			if !wordy(s) {
				continue
			}
			p := flags[s]
			if p == nil {
				p = &piece{s: s}
				flags[s] = p
			}
			// A newline splits lines, not a value: only verbs open a side.
			p.left = p.left || (k > 0 && verbs[k-1] != "\n")
			p.right = p.right || (k < len(verbs) && verbs[k] != "\n")
			if letters(s) >= 4 {
				long = append(long, strings.TrimSpace(s))
			}
		}
	}
	code, other = map[byte][]piece{}, map[byte][]string{}
	for _, p := range flags {
		code[p.s[0]] = append(code[p.s[0]], *p)
	}
	for _, f := range foreign {
		if wordy(f) {
			other[f[0]] = append(other[f[0]], f)
		}
	}
	return code, other, long
}

// TestQuotedOutputIsTheCodes: every line of a ```text block in docs/ is
// output of the sidecar made of the code's own strings (see foreign for
// what else may appear), and every block quotes at least one word of the
// code, so a block of example values alone cannot pass.
func TestQuotedOutputIsTheCodes(t *testing.T) {
	t.Parallel()
	code, other, long := mustPieces(t)
	files, err := filepath.Glob("*.md")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	quoted := 0
	for _, file := range files {
		for i, block := range textBlocks(mustRead(t, file)) {
			text := strings.Join(block, "\n")
			hasMessage := slices.ContainsFunc(long, func(m string) bool { return strings.Contains(text, m) })
			assert.True(t, hasMessage, "%s: ```text block %d quotes no message of the code:\n%s", file, i+1, text)
			for _, line := range block {
				if strings.TrimSpace(line) == "" {
					continue
				}
				quoted++
				if ok, rest := covers(line, code, other); !ok {
					assert.Failf(t, "the docs do not match the code", "%s: ```text block %d: the code does not print this line:\n  %s\nfrom here: %q", file, i+1, line, rest)
				}
			}
		}
	}
	assert.NotZero(t, quoted)
	doc := mustRead(t, "troubleshooting.md")
	assert.GreaterOrEqual(t, len(textBlocks(doc)), 10, "troubleshooting.md quotes the messages it explains in ```text blocks")
}

// --- docs/admin.md -----------------------------------------------------

// TestAdminReference: each method and path of the admin table is served by
// the admin handler: not 404 or 405.
func TestAdminReference(t *testing.T) {
	t.Parallel()
	rows := mdTables(t, mustRead(t, "admin.md"), "Method", "Path", "Answer")
	require.NotEmpty(t, rows, "admin.md has no table with the header | Method | Path | Answer |")
	ib, err := inbox.New(inbox.Options{Size: 10})
	require.NoError(t, err)
	defer ib.Close()
	h := admin.New(admin.Options{
		Readiness: admin.NewReadiness(),
		Gatherer:  prometheus.NewRegistry(),
		Info:      map[string]any{},
		Inbox:     ib.Handler(),
		TestEvent: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
	})
	for _, row := range rows {
		method, ok1 := inCode(row[0])
		path, ok2 := inCode(row[1])
		if !ok1 || !ok2 {
			assert.Failf(t, "the docs do not match the code", "row %v: method and path must be code spans", row)
			continue
		}
		path = strings.ReplaceAll(path, "{event_id}", "0123456789abcdef0123456789abcdef")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if rec.Code == http.StatusMethodNotAllowed || (rec.Code == http.StatusNotFound && !strings.HasPrefix(path, "/inbox/")) {
			assert.Failf(t, "the docs do not match the code", "%s %s: the admin handler answers %d", method, path, rec.Code)
		}
	}
}

// --- links -------------------------------------------------------------

var (
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRE = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)
)

// anchors are the ids GitHub gives the headings of doc: lower case, spaces
// as hyphens, every other mark but hyphens and underscores dropped.
func anchors(doc string) map[string]bool {
	out := map[string]bool{}
	fenced := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
		}
		m := headingRE.FindStringSubmatch(line)
		if fenced || m == nil {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

// TestLinks: every relative link in docs/ and in the README's
// Documentation section names a file that exists, and a heading of it when
// it names one; that section lists every page of docs/.
func TestLinks(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.md")
	require.NoError(t, err)
	check := func(from, doc string) {
		for _, m := range linkRE.FindAllStringSubmatch(doc, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			p := from
			if file != "" {
				p = filepath.Join(filepath.Dir(from), filepath.FromSlash(file))
			}
			if _, err := os.Stat(p); err != nil {
				assert.Failf(t, "the docs do not match the code", "%s links to %s: %v", from, target, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(p, ".md") {
				assert.True(t, anchors(mustRead(t, p))[anchor], "%s links to %s: %s has no such heading", from, target, p)
			}
		}
	}
	for _, f := range files {
		check(f, mustRead(t, f))
	}

	readme := mustRead(t, filepath.Join(repoRoot, "README.md"))
	_, section, found := strings.Cut(readme, "\n## Documentation\n")
	require.True(t, found, "README.md has no ## Documentation section")
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	check(filepath.Join(repoRoot, "README.md"), section)
	for _, f := range files {
		assert.Contains(t, section, "(docs/"+f+")", "README's Documentation section lacks docs/%s", f)
	}
}
