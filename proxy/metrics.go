package proxy

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// methods bounds the method label: anything else is counted as OTHER, so a
// client cannot grow the series by inventing methods.
var methods = [...]string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
	http.MethodConnect, http.MethodTrace, "OTHER",
}

// classes are the status classes; 499 counts as 4xx like any other status.
var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// metrics are the proxy's Prometheus series. Label children are resolved
// once here, so the request path only indexes arrays.
type metrics struct {
	requests [len(methods)][len(classes)]prometheus.Counter
	duration [len(methods)][len(classes)]prometheus.Observer
	inFlight prometheus.Gauge
	upstream map[string]prometheus.Counter
	// clientClosed counts clients that went away: not an upstream failure,
	// so an alert on sidecar_upstream_errors_total does not fire on
	// impatient users.
	clientClosed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_requests_total",
		Help: "Proxied requests by method and status class (499: the client went away).",
	}, []string{"method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidecar_request_duration_seconds",
		Help:    "Time from the request's arrival to the end of its response, by method and status class.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600},
	}, []string{"method", "code"})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sidecar_requests_in_flight",
		Help: "Proxied requests being served now, upgraded connections included.",
	})
	upstream := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidecar_upstream_errors_total",
		Help: "Upstream round trips that failed, by kind (refused, dns, reset, timeout, tls, protocol, unavailable).",
	}, []string{"kind"})
	clientClosed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sidecar_client_closed_total",
		Help: "Requests whose client went away before the answer was complete (logged as 499).",
	})
	for _, c := range []prometheus.Collector{requests, duration, inFlight, upstream, clientClosed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m := &metrics{inFlight: inFlight, upstream: map[string]prometheus.Counter{}, clientClosed: clientClosed}
	for i, meth := range methods {
		for j, class := range classes {
			m.requests[i][j] = requests.WithLabelValues(meth, class)
			m.duration[i][j] = duration.WithLabelValues(meth, class)
		}
	}
	for _, kind := range []string{KindTimeout, KindRefused, KindDNS, KindReset, KindTLS, KindProtocol, KindUnavailable} {
		m.upstream[kind] = upstream.WithLabelValues(kind)
	}
	return m, nil
}

func (m *metrics) observe(method string, status int, seconds float64) {
	i, j := methodIndex(method), classIndex(status)
	m.requests[i][j].Inc()
	m.duration[i][j].Observe(seconds)
}

// methodIndex is method's place in methods; anything else is OTHER, last.
func methodIndex(method string) int {
	for i, m := range methods[:len(methods)-1] {
		if m == method {
			return i
		}
	}
	return len(methods) - 1
}

// classIndex is the status class's place in classes; a status outside
// 1xx–5xx counts as 5xx, a server fault.
func classIndex(status int) int {
	j := status/100 - 1
	if j < 0 || j >= len(classes) {
		j = len(classes) - 1
	}
	return j
}
