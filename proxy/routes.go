package proxy

import (
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// otherRoute is the route label of answers that would grow the series
// without bound: 404s (scanners, typos) and templates past the cap.
const otherRoute = "other"

// Action outcomes, a label of the action series.
const (
	outcomeSuccess = "success" // below 400
	outcomeDenied  = "denied"  // 401 or 403: a failed login, a missing right
	outcomeFailed  = "failed"  // any other 4xx or 5xx
	outcomeAborted = "aborted" // the client went away
)

var outcomes = [...]string{outcomeSuccess, outcomeDenied, outcomeFailed, outcomeAborted}

// routeMetrics are the per-route and per-action series: the "deployment
// success rate" and "average deployment time" of the seed, without code in
// the API. Route labels are bounded by maxRoutes distinct templates.
type routeMetrics struct {
	maxRoutes int
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	actions   map[*Action]*actionSeries
	denied    *prometheus.CounterVec

	mu     sync.RWMutex
	series map[routeKey]*routeSeries
	routes map[string]struct{}
}

type routeKey struct{ method, route string }

type routeSeries struct {
	codes    [len(classes)]prometheus.Counter
	duration prometheus.Observer
}

type actionSeries struct {
	total    [len(outcomes)]prometheus.Counter
	duration [len(outcomes)]prometheus.Observer
}

var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

func newRouteMetrics(reg prometheus.Registerer, maxRoutes int, acts []Action) (*routeMetrics, error) {
	m := &routeMetrics{
		maxRoutes: maxRoutes,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_route_requests_total",
			Help: "Proxied requests by method, route template and status class. 404s and templates past metrics.max_routes are route=\"other\".",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecar_route_request_duration_seconds",
			Help:    "Time to serve proxied requests by method and route template.",
			Buckets: durationBuckets,
		}, []string{"method", "route"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_action_denied_total",
			Help: "Actions answered 401 or 403 (failed logins among them) by client address class: loopback, private, public.",
		}, []string{"action", "client"}),
		actions: map[*Action]*actionSeries{},
		series:  map[routeKey]*routeSeries{},
		routes:  map[string]struct{}{},
	}
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_action_total",
		Help: "Configured actions by name and outcome: success (<400), denied (401/403), failed (other 4xx/5xx), aborted (client went away).",
	}, []string{"action", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidecar_action_duration_seconds",
		Help:    "Time to serve configured actions by name and outcome.",
		Buckets: durationBuckets,
	}, []string{"action", "outcome"})
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.denied, total, duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for i := range acts {
		s := &actionSeries{}
		for j, o := range outcomes {
			s.total[j] = total.WithLabelValues(acts[i].Name, o)
			s.duration[j] = duration.WithLabelValues(acts[i].Name, o)
		}
		m.actions[&acts[i]] = s
	}
	return m, nil
}

// observe counts a finished request under its route.
func (m *routeMetrics) observe(method, route string, status int, seconds float64) {
	if status == 404 || route == "" || !utf8.ValidString(route) {
		// Prometheus panics on a label that is not UTF-8; without a
		// Router the route is the raw path.
		route = otherRoute
	}
	method = methodLabel(method)
	key := routeKey{method, route}
	m.mu.RLock()
	s := m.series[key]
	m.mu.RUnlock()
	if s == nil {
		s = m.add(key)
	}
	s.codes[classIndex(status)].Inc()
	s.duration.Observe(seconds)
}

func (m *routeMetrics) add(key routeKey) *routeSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, known := m.routes[key.route]; !known && key.route != otherRoute {
		if len(m.routes) >= m.maxRoutes {
			key.route = otherRoute
		} else {
			m.routes[key.route] = struct{}{}
		}
	}
	if s := m.series[key]; s != nil {
		return s
	}
	s := &routeSeries{duration: m.duration.WithLabelValues(key.method, key.route)}
	for i, c := range classes {
		s.codes[i] = m.requests.WithLabelValues(key.method, key.route, c)
	}
	m.series[key] = s
	return s
}

// observeAction counts a finished request of an action.
func (m *routeMetrics) observeAction(act *Action, status int, aborted bool, client string, seconds float64) {
	s := m.actions[act]
	if s == nil {
		return
	}
	o := 0 // success
	switch {
	case aborted:
		o = 3
	case status == 401 || status == 403:
		o = 1
		m.denied.WithLabelValues(act.Name, client).Inc()
	case status >= 400:
		o = 2
	}
	s.total[o].Inc()
	s.duration[o].Observe(seconds)
}

func methodLabel(method string) string { return methods[methodIndex(method)] }
