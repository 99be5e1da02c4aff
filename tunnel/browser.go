package tunnel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
)

// BrowserConfig is what the browser SDK is told by the sidecar: everything
// Sentry.init needs except the real DSN, which stays on the server.
type BrowserConfig struct {
	// PlaceholderKey is the public key of the DSN handed out; the tunnel
	// accepts it and swaps in the real one (see PlaceholderKey).
	PlaceholderKey string
	// Project is the real project id: not a secret, and it keeps the
	// placeholder DSN well-formed for the SDK.
	Project                  string
	Tunnel                   string
	Environment, Release     string
	TracesSampleRate         float64
	ReplaysSessionSampleRate float64
	ReplaysOnErrorSampleRate float64
}

// PlaceholderKey derives the public key handed to browsers from the real
// DSN: stable across restarts and replicas (a page loaded from one replica
// tunnels through another), never equal to the real key, and revealing
// nothing of it.
func PlaceholderKey(realDSN string) string {
	sum := sha256.Sum256([]byte("sentry-sidecar browser placeholder\x00" + realDSN))
	return hex.EncodeToString(sum[:16])
}

// BrowserConfigHandler serves c as JavaScript that sets
// window.SENTRY_SIDECAR, so a page's Sentry.init({...window.SENTRY_SIDECAR})
// replaces a hard-coded DSN; with ?format=json, as JSON. The placeholder
// DSN names the page's own origin: the SDK never calls it while tunnel is
// set.
func BrowserConfigHandler(c BrowserConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		obj := map[string]any{
			"dsn":                      scheme + "://" + c.PlaceholderKey + "@" + r.Host + "/" + c.Project,
			"tunnel":                   c.Tunnel,
			"environment":              c.Environment,
			"release":                  c.Release,
			"tracesSampleRate":         c.TracesSampleRate,
			"replaysSessionSampleRate": c.ReplaysSessionSampleRate,
			"replaysOnErrorSampleRate": c.ReplaysOnErrorSampleRate,
		}
		b, _ := json.Marshal(obj)
		h := w.Header()
		// Short: a release or rate change reaches pages within minutes.
		h.Set("Cache-Control", "public, max-age=300")
		h.Set("Vary", "Host")
		h.Set("X-Content-Type-Options", "nosniff")
		if r.URL.Query().Get("format") == "json" {
			h.Set("Content-Type", "application/json")
			w.Write(append(b, '\n'))
			return
		}
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		var js strings.Builder
		js.WriteString("// Sentry browser SDK settings from sentry-sidecar: Sentry.init({...window.SENTRY_SIDECAR}).\n")
		js.WriteString("window.SENTRY_SIDECAR = ")
		js.Write(b)
		js.WriteString(";\n")
		w.Write([]byte(js.String()))
	})
}
