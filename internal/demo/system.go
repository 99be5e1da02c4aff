package demo

import (
	"net/http"
	"strconv"
)

// health is GET /health, Proximity's cheap root health check.
func (s *server) health(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}{"healthy", appVersion})
}

// systemHealth is GET /api/v1/system/health (public).
func (s *server) systemHealth(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, success("Proximity API is healthy"))
}

// initialStatus is GET /api/v1/system/status/initial (public); the demo
// always has its users.
func (s *server) initialStatus(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, struct {
		IsFirstRun bool `json:"is_first_run"`
	}{false})
}

// sentryBackend is GET /api/v1/test/sentry-backend, which raises on purpose.
// With DEBUG=false Proximity's catch-all handler turns that into this body.
func (s *server) sentryBackend(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusInternalServerError, serviceError{Error: "Internal server error"})
}

// testHealth is GET /api/v1/test/health.
func (s *server) testHealth(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, struct {
		Message string `json:"message"`
		Status  string `json:"status"`
	}{"Proximity API is healthy", "ok"})
}

// sentryInfo is GET /api/v1/test/sentry-info. The demo itself has no
// Sentry SDK: reporting is the sidecar's job.
func (s *server) sentryInfo(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, struct {
		SentryEnabled bool   `json:"sentry_enabled"`
		Environment   string `json:"environment"`
		Release       string `json:"release"`
		AppName       string `json:"app_name"`
		AppVersion    string `json:"app_version"`
	}{false, "auto-detected", appVersion, "Proximity", appVersion})
}

// nodeInfo is Proximity's NodeInfo.
type nodeInfo struct {
	Node    string  `json:"node"`
	Status  string  `json:"status"`
	Type    string  `json:"type"`
	Uptime  int     `json:"uptime"`
	MaxCPU  int     `json:"maxcpu"`
	MaxMem  int64   `json:"maxmem"`
	CPU     float64 `json:"cpu"`
	Mem     int64   `json:"mem"`
	Disk    int64   `json:"disk"`
	MaxDisk int64   `json:"maxdisk"`
}

// nodes is GET /api/v1/system/nodes. With ?fail=1 it answers as Proximity
// does when the Proxmox API is down: a genuine upstream 502, which a proxy
// must not confuse with its own "upstream unreachable".
func (s *server) nodes(w http.ResponseWriter, r *http.Request, _ call) {
	if fail, _ := strconv.ParseBool(r.URL.Query().Get("fail")); fail {
		writeJSON(w, http.StatusBadGateway, serviceError{
			Error:   "Proxmox API error",
			Details: "Connection to pve.local:8006 refused",
		})
		return
	}
	writeJSON(w, http.StatusOK, []nodeInfo{{
		Node: "pve", Status: "online", Type: "node", Uptime: 864000,
		MaxCPU: 8, MaxMem: 32 << 30, CPU: 0.12, Mem: 9 << 30,
		Disk: 40 << 30, MaxDisk: 500 << 30,
	}})
}

// apiRoot is GET /api.
func (s *server) apiRoot(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, struct {
		Project    string `json:"project"`
		Version    string `json:"version"`
		Status     string `json:"status"`
		DocsURL    string `json:"docs_url"`
		APIVersion string `json:"api_version"`
	}{"Proximity", appVersion, "running", "Disabled in production", "v1"})
}

// indexHTML stands in for Proximity's single-page UI, which its backend
// serves on the same origin as the API.
const indexHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Proximity (demo)</title>
</head>
<body>
<h1>Proximity demo UI</h1>
<p>This is the demo Proximity UI served by <code>sentry-sidecar demo</code>,
a stand-in for the Proximity v1 FastAPI backend.</p>
<p>Log in with <code>POST /api/v1/auth/login</code> as <code>admin</code>/<code>admin123</code>
or <code>demo</code>/<code>demo1234</code>, then call the API with the bearer token.</p>
<ul>
<li><a href="/health">/health</a></li>
<li><a href="/api/v1/system/health">/api/v1/system/health</a></li>
<li><a href="/api/v1/test/sentry-backend">/api/v1/test/sentry-backend</a> (always 500)</li>
<li><a href="/api/v1/events?count=5&amp;interval=1s">/api/v1/events</a> (server-sent events)</li>
</ul>
</body>
</html>
`

// index is GET /.
func (s *server) index(w http.ResponseWriter, _ *http.Request, _ call) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(indexHTML)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(indexHTML))
}
