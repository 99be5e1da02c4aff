// Package admin serves the sidecar's admin listener: liveness, readiness,
// Prometheus metrics and the non-secret Sentry settings. It listens apart
// from the proxied port so none of its paths can shadow the API's.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options is what the admin handler serves.
type Options struct {
	// Readiness decides /readyz.
	Readiness *Readiness
	// Gatherer is the registry /metrics exposes; never the default one.
	Gatherer prometheus.Gatherer
	// Info is served as JSON at /sentry-info. It must hold no secret.
	Info any
	// Inbox serves /inbox, /inbox/{event_id} and /inbox.html; nil answers
	// 501 (events go to Sentry, not the inbox).
	Inbox http.Handler
	// TestEvent serves POST /test-event; nil answers 501.
	TestEvent http.Handler
	// Token, when set, is the bearer token every path but the probes
	// (/healthz, /readyz) requires: the inbox holds user data, and
	// /test-event sends to Sentry. Empty means no check (loopback only).
	Token string
}

// New returns the admin handler.
func New(opts Options) http.Handler {
	mux := newMux(opts)
	if opts.Token == "" {
		return mux
	}
	return requireToken(opts.Token, mux)
}

// probes are the paths a kubelet or load balancer calls without
// credentials; they say nothing but "up" and "ready".
var probes = map[string]bool{"/healthz": true, "/readyz": true}

// requireToken answers 401 unless the request carries "Authorization:
// Bearer <token>", for every path but the probes (matched exactly, as
// sent: "/healthz/../inbox" is not a probe). Both sides are hashed before
// the constant-time comparison, so neither the content nor the length of
// the token leaks through timing (subtle.ConstantTimeCompare returns at
// once on a length mismatch).
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if probes[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		got, sent := bearer(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if sent && subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		// RFC 6750 §3: a request without credentials gets the bare
		// challenge, a wrong token gets error="invalid_token".
		challenge := `Bearer realm="sentry-sidecar admin"`
		if sent {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin.token required: send Authorization: Bearer <token>"})
	})
}

// bearer returns the credentials of an "Authorization: Bearer x" value;
// the scheme is case-insensitive (RFC 7235 §2.1).
func bearer(v string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

func newMux(opts Options) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, reason := opts.Readiness.Ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /sentry-info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, opts.Info)
	})
	inbox := orNotImplemented(opts.Inbox)
	mux.Handle("/inbox", inbox)
	mux.Handle("/inbox/", inbox)
	mux.Handle("/inbox.html", inbox)
	mux.Handle("POST /test-event", orNotImplemented(opts.TestEvent))
	return mux
}

func orNotImplemented(h http.Handler) http.Handler {
	if h != nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not implemented yet"})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
