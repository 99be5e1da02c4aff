package bench

import (
	"net/http"
	"net/http/httputil"
	"net/url"
)

// BareProxy is the baseline every comparison here is made against:
// httputil.ReverseProxy with Rewrite and the pool the sidecar uses (a clone
// of http.DefaultTransport without the environment's proxy, 64 idle
// connections for the one host), and nothing else. The benchmarks and the
// load driver (bench/load) both measure this one. Close the transport's
// idle connections with the returned transport when done.
func BareProxy(target *url.URL) (http.Handler, *http.Transport) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost = 64
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: t,
	}, t
}
