// Package admin serves the sidecar's admin listener: liveness, readiness,
// Prometheus metrics and the non-secret Sentry settings. It listens apart
// from the proxied port so none of its paths can shadow the API's.
package admin

import (
	"encoding/json"
	"net/http"

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
}

// New returns the admin handler.
func New(opts Options) http.Handler {
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
