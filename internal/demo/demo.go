// Package demo is a built-in stand-in for Proximity's v1 FastAPI backend
// (fabriziosalmi/proximity at c6066b1), the first API sentry-sidecar fronts.
// The `sentry-sidecar demo` command serves it, and the project's tests use it
// as an upstream that behaves like the real one where a proxy can tell the
// difference: the JSON error shapes, HS256 tokens with python-jose's claims,
// a deploy call that holds the request open, no trailing-slash redirects.
//
// It also has three routes Proximity lacks, because a proxy must be tested
// on them: an SSE stream (/api/v1/events), an endpoint that describes the
// request it received (/api/v1/echo) and a small HTML page (/).
//
// Two deliberate differences from Proximity: any token signed with the
// secret is accepted, whatever its user_id, so that tests can mint tokens for
// arbitrary users; and the Host header is not checked (Proximity's
// TrustedHostMiddleware is off when DEBUG=true, which is how it runs locally).
package demo

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultSecret is Proximity's development JWT key. Proximity signs with it
// whenever JWT_SECRET_KEY is not in the process environment.
const DefaultSecret = "INSECURE_DEV_KEY_CHANGE_IN_PRODUCTION"

const (
	// appVersion is what Proximity's APP_VERSION reports by default.
	appVersion = "0.1.0"
	// tokenTTL is ACCESS_TOKEN_EXPIRE_MINUTES' default.
	tokenTTL = 60 * time.Minute
	// maxJSONBody bounds the JSON bodies of API routes. Proximity has no
	// limit, but its bodies are small and the demo must not buffer a
	// runaway client; /api/v1/echo hashes as it reads and has no limit.
	maxJSONBody = 1 << 20
)

// Options configures the demo upstream.
type Options struct {
	Secret      string           // HS256 key for tokens; "" means DefaultSecret (Proximity's dev default)
	DeployDelay time.Duration    // how long POST /api/v1/apps/deploy holds the request open; 0 means none
	Now         func() time.Time // clock; nil means time.Now
}

// server is the demo API. Routes are matched by hand, in Starlette's way,
// rather than by http.ServeMux: ServeMux cleans paths and redirects
// "/api/v1/apps" and "//", while Proximity sets redirect_slashes=False and
// answers any path it does not know with 404.
type server struct {
	key         []byte
	deployDelay time.Duration
	now         func() time.Time
	routes      []route
	users       []user
	catalog     []catalogItem

	mu      sync.Mutex
	apps    map[string]*record // by app id; guarded by mu
	nextLXC int                // next LXC id to hand out; guarded by mu
}

var _ http.Handler = (*server)(nil)

// New returns the demo API as an http.Handler. It is safe for concurrent use.
func New(opts Options) http.Handler {
	secret := opts.Secret
	if secret == "" {
		secret = DefaultSecret
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s := &server{
		key:         []byte(secret),
		deployDelay: opts.DeployDelay,
		now:         now,
		users:       demoUsers(),
		catalog:     demoCatalog(),
		apps:        map[string]*record{},
	}
	s.seed()
	s.routes = s.routeTable()
	return s
}

// routeTable lists the routes in the order FastAPI registers them in
// Proximity's create_app, because Starlette takes the first full match and
// reports 405 from the first route whose path matches.
func (s *server) routeTable() []route {
	return []route{
		newRoute(http.MethodPost, "/api/v1/auth/login", public, s.login),
		newRoute(http.MethodPost, "/api/v1/auth/logout", protected, s.logout),
		newRoute(http.MethodGet, "/api/v1/auth/me", protected, s.me),
		newRoute(http.MethodPost, "/api/v1/auth/refresh", protected, s.refresh),

		newRoute(http.MethodGet, "/api/v1/system/health", public, s.systemHealth),
		newRoute(http.MethodGet, "/api/v1/system/status/initial", public, s.initialStatus),

		newRoute(http.MethodGet, "/api/v1/test/sentry-backend", public, s.sentryBackend),
		newRoute(http.MethodGet, "/api/v1/test/health", public, s.testHealth),
		newRoute(http.MethodGet, "/api/v1/test/sentry-info", public, s.sentryInfo),

		// The literal segments come before /{app_id}, so "catalog" is never
		// an app id for GET, but "deploy" is (GET /apps/deploy is a 404
		// "App deploy not found" in Proximity too).
		newRoute(http.MethodGet, "/api/v1/apps/catalog", protected, s.getCatalog),
		newRoute(http.MethodGet, "/api/v1/apps/catalog/{catalog_id}", protected, s.getCatalogItem),
		newRoute(http.MethodGet, "/api/v1/apps/", protected, s.listApps),
		newRoute(http.MethodGet, "/api/v1/apps", protected, s.listApps),
		newRoute(http.MethodGet, "/api/v1/apps/{app_id}", protected, s.getApp),
		newRoute(http.MethodPost, "/api/v1/apps/deploy", protected, s.deploy),
		newRoute(http.MethodGet, "/api/v1/apps/{app_id}/status", protected, s.appStatus),
		newRoute(http.MethodPost, "/api/v1/apps/{app_id}/actions", protected, s.appAction),
		newRoute(http.MethodDelete, "/api/v1/apps/{app_id}", protected, s.deleteApp),
		newRoute(http.MethodGet, "/api/v1/apps/{app_id}/logs", protected, s.appLogs),

		newRoute(http.MethodGet, "/api/v1/system/nodes", protected, s.nodes),

		newRoute(http.MethodGet, "/", public, s.index),
		newRoute(http.MethodGet, "/api", public, s.apiRoot),
		newRoute(http.MethodGet, "/health", public, s.health),

		newRoute(http.MethodGet, "/api/v1/events", public, s.events),
	}
}

// ServeHTTP answers like Proximity's middleware stack: the OPTIONS
// short-circuit of its request-logging middleware, then CORS, routing,
// the router-level auth dependency and the endpoint.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	// The echo endpoint comes first, OPTIONS included, so that proxy tests
	// can see exactly what any method delivers.
	if path == "/api/v1/echo" || strings.HasPrefix(path, "/api/v1/echo/") {
		s.echo(w, r)
		return
	}
	if r.Method == http.MethodOptions {
		preflight(w)
		return
	}
	setCORS(w, r)

	var allow string
	for _, rt := range s.routes {
		args, ok := rt.match(path)
		if !ok {
			continue
		}
		if !rt.allows(r.Method) {
			if allow == "" {
				allow = rt.allowHeader()
			}
			continue
		}
		c := call{args: args}
		if rt.auth == protected {
			claims, detail := s.authenticate(r)
			if detail != "" {
				w.Header().Set("WWW-Authenticate", "Bearer")
				writeDetail(w, http.StatusUnauthorized, detail)
				return
			}
			c.claims = claims
		}
		rt.handle(w, r, c)
		return
	}
	if allow != "" {
		w.Header().Set("Allow", allow)
		writeDetail(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	writeDetail(w, http.StatusNotFound, "Not Found")
}

// preflight answers every OPTIONS request with 200 {} as Proximity's
// log_requests middleware does, before routing and auth.
func preflight(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "*")
	h.Set("Access-Control-Allow-Headers", "*")
	h.Set("Access-Control-Allow-Credentials", "true")
	writeJSON(w, http.StatusOK, struct{}{})
}

// setCORS adds the headers Starlette's CORSMiddleware adds to a simple
// request under allow_origins=["*"], allow_credentials=True: "*", or the
// request's own Origin when it carries cookies (a browser rejects "*" then).
func setCORS(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	h := w.Header()
	if r.Header.Get("Cookie") != "" {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
	} else {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	h.Set("Access-Control-Allow-Credentials", "true")
}

// authLevel says whether a route sits behind Proximity's get_current_user.
type authLevel bool

const (
	public    authLevel = false
	protected authLevel = true
)

// call carries what routing and auth found to a handler.
type call struct {
	args   []string    // path parameters, in pattern order
	claims tokenClaims // the verified token on protected routes
}

// route is one FastAPI route: a method, a path template whose {name}
// segments match one non-empty path segment (Starlette's default
// "[^/]+"), and the handler.
type route struct {
	method   string
	segments []string
	auth     authLevel
	handle   func(http.ResponseWriter, *http.Request, call)
}

func newRoute(method, pattern string, auth authLevel, h func(http.ResponseWriter, *http.Request, call)) route {
	return route{method: method, segments: strings.Split(pattern, "/"), auth: auth, handle: h}
}

// match reports whether path fits the template and returns the parameters.
// path is the decoded r.URL.Path, which is what Starlette matches against.
func (rt route) match(path string) ([]string, bool) {
	segs := strings.Split(path, "/")
	if len(segs) != len(rt.segments) {
		return nil, false
	}
	var args []string
	for i, p := range rt.segments {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if segs[i] == "" {
				return nil, false
			}
			args = append(args, segs[i])
			continue
		}
		if segs[i] != p {
			return nil, false
		}
	}
	return args, true
}

// allows reports whether the route answers method. Starlette adds HEAD to
// every GET route; net/http then drops the body.
func (rt route) allows(method string) bool {
	return method == rt.method || (rt.method == http.MethodGet && method == http.MethodHead)
}

func (rt route) allowHeader() string {
	if rt.method == http.MethodGet {
		return "GET, HEAD"
	}
	return rt.method
}
