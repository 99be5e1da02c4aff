package tunnel

import (
	"net/http"
)

// CORS for a tunnel on another origin (cross-origin SDKs post text/plain, a
// simple request; custom headers or Content-Encoding make them preflight).
// Same origin needs none of it, which is why no origin is allowed by
// default (tunnel.md §G.6).
const (
	// exposedHeaders are what the SDK reads from an answer: without them a
	// cross-origin page can see neither rate limits nor why it was refused
	// (the gap in stayallive/worker-sentry-tunnel, tunnel.md §D3; Relay's
	// cors.rs exposes the same three).
	exposedHeaders = "Retry-After, X-Sentry-Rate-Limits, X-Sentry-Error"
	// allowedHeaders are the request headers an SDK may add (Relay's
	// cors.rs list, minus the forwarding headers a browser must not set).
	allowedHeaders = "Content-Type, Content-Encoding, Authorization, X-Sentry-Auth, X-Requested-With"
	allowedMethods = "POST, OPTIONS"
	// preflightMaxAge is Relay's, in seconds.
	preflightMaxAge = "3600"
)

// cors sets the CORS answer headers when the request's Origin is exactly one
// of the allowed origins and reports whether it is. It never sets
// Access-Control-Allow-Credentials: a tunnel needs no cookies from another
// origin (tunnel.md §B3.7, the PHP example and Sentry.AspNetCore reflect
// Origin with credentials). Other origins get no CORS header at all, so the
// browser hides the answer from their pages.
func (h *Handler) cors(hdr http.Header, r *http.Request) bool {
	if len(h.origins) == 0 {
		return false
	}
	// The answer depends on Origin whenever any origin is allowed; caches
	// must not hand one origin's answer to another.
	hdr.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !h.origins[origin] {
		return false
	}
	hdr.Set("Access-Control-Allow-Origin", origin)
	hdr.Set("Access-Control-Expose-Headers", exposedHeaders)
	return true
}

// preflight answers an allowed origin's OPTIONS.
func preflight(w http.ResponseWriter) {
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Methods", allowedMethods)
	hdr.Set("Access-Control-Allow-Headers", allowedHeaders)
	hdr.Set("Access-Control-Max-Age", preflightMaxAge)
	w.WriteHeader(http.StatusNoContent)
}
