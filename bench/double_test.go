package bench

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// Keys and projects the double accepts: the server project the sidecar's
// client reports to, and the browser project the tunnel forwards to.
const (
	serverKey      = "5e7fe7a1d0c2b1e8f4a3c6d9e0b1a2c3"
	serverProject  = "1"
	browserKey     = "b70e5e7a1d0c2b1e8f4a3c6d9e0b1a2c"
	browserProject = "2"
)

// maxEnvelope bounds what the double reads of one body, after gzip:
// Relay's max_envelope_size.
const maxEnvelope = 200 << 20

// sentryDouble is a Sentry ingest endpoint that stores nothing: it checks
// and parses each envelope as Relay frames it (sentrytest.ParseEnvelope)
// and counts the items by type. sentrytest.Server records every envelope,
// which a benchmark of 100k+ requests cannot afford, and needs a
// testing.TB for its whole life.
type sentryDouble struct {
	srv *httptest.Server
	// keys maps each accepted public key to its project; read-only once
	// serving.
	keys map[string]string
	// inspect, when set before serving, sees every accepted envelope (the
	// tests' checks of content); the benchmarks leave it nil.
	inspect func(sentrytest.Envelope)

	envelopes    atomic.Int64
	events       atomic.Int64 // "event" items
	transactions atomic.Int64 // "transaction" items
	others       atomic.Int64 // items of any other type
	rejected     atomic.Int64 // requests not answered 200
}

// doubleCounts is a snapshot of a sentryDouble's counters.
type doubleCounts struct {
	envelopes, events, transactions, others, rejected int64
}

// mustSentryDouble starts a double on 127.0.0.1 that accepts serverKey for
// serverProject and browserKey for browserProject; inspect may be nil.
func mustSentryDouble(tb testing.TB, inspect func(sentrytest.Envelope)) *sentryDouble {
	tb.Helper()
	d := &sentryDouble{
		keys:    map[string]string{serverKey: serverProject, browserKey: browserProject},
		inspect: inspect,
	}
	d.srv = httptest.NewServer(d)
	tb.Cleanup(d.srv.Close)
	return d
}

// DSN is the double's DSN for key and project.
func (d *sentryDouble) DSN(key, project string) string {
	u, _ := url.Parse(d.srv.URL) // httptest's own URL
	return u.Scheme + "://" + key + "@" + u.Host + "/" + project
}

// envelopeURL is where an SDK posting without a tunnel sends project's
// envelopes, authenticated in the query as the browser SDK does
// (getEnvelopeEndpointWithUrlEncodedAuth in sentry-javascript).
func (d *sentryDouble) envelopeURL(key, project string) string {
	return d.srv.URL + "/api/" + project + "/envelope/?sentry_version=7&sentry_key=" + key
}

// counts returns the counters so far.
func (d *sentryDouble) counts() doubleCounts {
	return doubleCounts{
		envelopes:    d.envelopes.Load(),
		events:       d.events.Load(),
		transactions: d.transactions.Load(),
		others:       d.others.Load(),
		rejected:     d.rejected.Load(),
	}
}

// ServeHTTP takes one envelope: 200 {"id":...} when it is well-formed and
// authenticated for the project of its path, else Relay's status with
// {"detail":...}.
func (d *sentryDouble) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	env, status, detail := d.accept(w, r)
	if status != http.StatusOK {
		d.rejected.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"detail": detail})
		return
	}
	d.envelopes.Add(1)
	for _, it := range env.Items {
		switch it.Type {
		case "event":
			d.events.Add(1)
		case "transaction":
			d.transactions.Add(1)
		default:
			d.others.Add(1)
		}
	}
	if d.inspect != nil {
		d.inspect(env)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"id":"`+env.EventID()+`"}`)
}

// accept reads, parses and authenticates r's envelope.
func (d *sentryDouble) accept(w http.ResponseWriter, r *http.Request) (env sentrytest.Envelope, status int, detail string) {
	project, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if project, ok = strings.CutSuffix(project, "/envelope/"); !ok || r.Method != http.MethodPost {
		return env, http.StatusNotFound, "not an envelope endpoint"
	}
	body, err := readBody(w, r)
	if err != nil {
		var unsupported *unsupportedEncoding
		if errors.As(err, &unsupported) {
			return env, http.StatusUnsupportedMediaType, err.Error()
		}
		return env, http.StatusBadRequest, err.Error()
	}
	if env, err = sentrytest.ParseEnvelope(body); err != nil {
		return env, http.StatusBadRequest, "invalid envelope: " + err.Error()
	}
	key := requestKey(r)
	if dsn, ok := env.Header["dsn"].(string); ok {
		u, err := url.Parse(dsn)
		if err != nil || u.User == nil {
			return env, http.StatusBadRequest, "invalid envelope header: dsn"
		}
		if key != "" && key != u.User.Username() {
			return env, http.StatusBadRequest, "public key header mismatch between envelope and request"
		}
		if strings.TrimPrefix(u.Path, "/") != project {
			return env, http.StatusBadRequest, "project id header mismatch between envelope and request"
		}
		key = u.User.Username()
	}
	if key == "" || d.keys[key] != project {
		return env, http.StatusUnauthorized, "unknown key for this project"
	}
	return env, http.StatusOK, ""
}

// unsupportedEncoding is a Content-Encoding the double does not undo.
type unsupportedEncoding struct{ encoding string }

// Error implements error.
func (e *unsupportedEncoding) Error() string { return "unsupported content encoding " + e.encoding }

// readBody reads r's body, gunzipped when Content-Encoding says gzip.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxEnvelope)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		body = io.LimitReader(zr, maxEnvelope)
	default:
		return nil, &unsupportedEncoding{enc}
	}
	return io.ReadAll(body)
}

// requestKey is the public key r authenticates with: X-Sentry-Auth's
// sentry_key, else the sentry_key query parameter; "" for none.
func requestKey(r *http.Request) string {
	if v, ok := strings.CutPrefix(r.Header.Get("X-Sentry-Auth"), "Sentry "); ok {
		for part := range strings.SplitSeq(v, ",") {
			if k, ok := strings.CutPrefix(strings.TrimSpace(part), "sentry_key="); ok {
				return k
			}
		}
	}
	return r.URL.Query().Get("sentry_key")
}
