package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoed is what echoUpstream saw of a request.
type echoed struct {
	Method     string      `json:"method"`
	RequestURI string      `json:"request_uri"`
	Host       string      `json:"host"`
	Header     http.Header `json:"header"`
	BodyBytes  int64       `json:"body_bytes"`
	BodySHA256 string      `json:"body_sha256"`
}

// echoUpstream answers with what it received: the request line as written,
// the headers and a hash of the body. It sets two cookies, and answers the
// status and Location the test asks for in X-Test-Status/-Location.
func echoUpstream(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	body, err := json.Marshal(echoed{
		Method:     r.Method,
		RequestURI: r.RequestURI,
		Host:       r.Host,
		Header:     r.Header,
		BodyBytes:  n,
		BodySHA256: hex.EncodeToString(sum.Sum(nil)),
	})
	if err != nil {
		http.Error(w, "marshal", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Add("Set-Cookie", "a=1; Path=/")
	h.Add("Set-Cookie", "b=2; Path=/; HttpOnly")
	h.Set("Content-Type", "application/json")
	status := http.StatusOK
	if s := r.Header.Get("X-Test-Status"); s != "" {
		status, _ = strconv.Atoi(s)
	}
	if loc := r.Header.Get("X-Test-Location"); loc != "" {
		h.Set("Location", loc)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// mustEcho sends req through the proxy to echoUpstream and decodes what the
// upstream saw.
func mustEcho(tb testing.TB, c *http.Client, req *http.Request) (*http.Response, echoed) {
	tb.Helper()
	res, body := mustDo(tb, c, req)
	var got echoed
	require.NoError(tb, json.Unmarshal(body, &got), "upstream answer: %s", body)
	return res, got
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestForwardByteExact(t *testing.T) {
	t.Parallel()
	f := mustProxy(t, mustUpstream(t, echoUpstream).URL)
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	big := make([]byte, 70_001)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name     string
		method   string
		target   string // request URI exactly as sent
		body     []byte
		status   int
		location string
	}{
		{"GET dot segments and double slash", http.MethodGet, "//a/../b", nil, http.StatusOK, ""},
		{"GET semicolon query", http.MethodGet, "/q?a=1;b=2", nil, http.StatusOK, ""},
		{"POST encoded slash", http.MethodPost, "/a/%2F/b?x=%zz&y=1", big, http.StatusCreated, ""},
		{"PUT trailing slash, repeated keys", http.MethodPut, "/trailing/?k=1&k=2&k=1", []byte("line1\r\nline2\x00\xff"), http.StatusAccepted, ""},
		{"DELETE path parameter", http.MethodDelete, "/a;b?q=a+b&q=c%2Bd", []byte(`{"force":true}`), http.StatusNonAuthoritativeInfo, ""},
		{"PATCH escaped tilde", http.MethodPatch, "/%7euser?empty=&=v&flag", []byte(`[{"op":"replace"}]`), http.StatusOK, ""},
		{"OPTIONS reaches the upstream", http.MethodOptions, "/api/v1/apps", nil, http.StatusOK, ""},
		{"redirect is passed, not followed", http.MethodGet, "/old/place?keep=1", nil, http.StatusFound, "/new/place"},
		{"permanent redirect of a POST is passed", http.MethodPost, "/moved", []byte("x"), http.StatusPermanentRedirect, "http://elsewhere.example/moved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			req := f.mustRequest(t, tc.method, tc.target, body)
			id := "exact-" + strings.ReplaceAll(tc.name, " ", "-")
			req.Header.Set(RequestIDHeader, id)
			req.Header["X-Multi"] = []string{"one", "two, three", "four"}
			req.Header.Set("X-Test-Status", strconv.Itoa(tc.status))
			if tc.location != "" {
				req.Header.Set("X-Test-Location", tc.location)
			}
			res, got := mustEcho(t, f.noRedirects(), req)

			assert.Equal(t, tc.status, res.StatusCode, "status")
			assert.Equal(t, tc.location, res.Header.Get("Location"), "Location")
			assert.Equal(t, tc.method, got.Method, "method")
			assert.Equal(t, tc.target, got.RequestURI, "request URI")
			assert.Equal(t, int64(len(tc.body)), got.BodyBytes, "body length")
			assert.Equal(t, sha256Hex(tc.body), got.BodySHA256, "body hash")
			assert.Equal(t, []string{"one", "two, three", "four"}, got.Header["X-Multi"], "repeated request header")
			assert.Equal(t, []string{"a=1; Path=/", "b=2; Path=/; HttpOnly"}, res.Header["Set-Cookie"], "repeated response header")

			entry := f.mustAccessLog(t, id)
			assert.EqualValues(t, tc.status, entry["status"])
			assert.Equal(t, tc.method, entry["method"])
			if tc.body != nil {
				assert.EqualValues(t, len(tc.body), entry["bytes_read"])
			} else {
				assert.NotContains(t, entry, "bytes_read")
			}
		})
	}
}

// TestForwardResponseBody checks that response bytes pass untouched, encoded
// ones included: the proxy must neither ask for gzip itself nor decode it.
func TestForwardResponseBody(t *testing.T) {
	t.Parallel()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err := io.WriteString(zw, strings.Repeat("compressible ", 1000))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	raw := gz.Bytes()

	up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "gzip, br" {
			http.Error(w, "Accept-Encoding changed: "+r.Header.Get("Accept-Encoding"), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
		_, _ = w.Write(raw)
	})
	f := mustProxy(t, up.URL)
	req := f.mustRequest(t, http.MethodGet, "/file.txt", nil)
	req.Header.Set(RequestIDHeader, "gzip-body")
	// Set by hand, so the client's transport does not decode either.
	req.Header.Set("Accept-Encoding", "gzip, br")
	res, body := mustDo(t, f.srv.Client(), req)
	require.Equal(t, http.StatusOK, res.StatusCode, "body: %s", body)
	assert.Equal(t, "gzip", res.Header.Get("Content-Encoding"))
	assert.Equal(t, int64(len(raw)), res.ContentLength)
	assert.Equal(t, raw, body)
	assert.EqualValues(t, len(raw), f.mustAccessLog(t, "gzip-body")["bytes"], "bytes in the access log")
}

// TestEarlyHints: a 103 reaches the client before the final answer, and
// the final status is the one logged and counted.
func TestEarlyHints(t *testing.T) {
	t.Parallel()
	up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</app.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "<html></html>")
	})
	f := mustProxy(t, up.URL)
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, strconv.Itoa(code)+" "+h.Get("Link"))
		return nil
	}}
	req := f.mustRequest(t, http.MethodGet, "/page", nil)
	req.Header.Set(RequestIDHeader, "early-hints")
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	res, body := mustDo(t, f.srv.Client(), req)
	assert.Equal(t, http.StatusCreated, res.StatusCode)
	assert.Equal(t, "<html></html>", string(body))
	assert.Equal(t, []string{"103 </app.css>; rel=preload; as=style"}, hints)
	assert.EqualValues(t, http.StatusCreated, f.mustAccessLog(t, "early-hints")["status"])
	assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_requests_total", "code", "2xx"))
	assert.Zero(t, mustMetric(t, f.reg, "sidecar_requests_total", "code", "1xx"))
}

func TestForwardingHeaders(t *testing.T) {
	t.Parallel()
	up := mustUpstream(t, echoUpstream)
	upHost := strings.TrimPrefix(up.URL, "http://")
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	withLoopbackAndPrivate := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	spoofed := http.Header{
		"X-Forwarded-For":   {"6.6.6.6"},
		"X-Forwarded-Host":  {"evil.example"},
		"X-Forwarded-Proto": {"https"},
		"X_Forwarded_For":   {"7.7.7.7"},
		"X_forwarded_host":  {"evil2.example"},
		"X-Real-Ip":         {"8.8.8.8"},
		"X_Real_Ip":         {"8.8.4.4"},
		"Forwarded":         {"for=9.9.9.9;proto=https"},
	}
	tests := []struct {
		name         string
		trusted      []netip.Prefix
		preserveHost bool
		host         string // Host the client uses; "" is the proxy's address
		header       http.Header
		want         http.Header // nil value: absent
		wantHost     string      // "" is the upstream's own host
	}{
		{
			name:   "untrusted client: only proxy-set values",
			host:   "api.example.test:8443",
			header: spoofed,
			want: http.Header{
				"X-Forwarded-For":   {"127.0.0.1"},
				"X-Real-Ip":         {"127.0.0.1"},
				"X-Forwarded-Host":  {"api.example.test:8443"},
				"X-Forwarded-Proto": {"http"},
				"Forwarded":         nil,
			},
		},
		{
			// golang/go#50580: with Director, a client could name these in
			// Connection and have them removed after the proxy set them.
			name: "untrusted client naming our headers in Connection",
			host: "api.example.test",
			header: http.Header{
				"Connection":      {"X-Real-IP, X-Forwarded-For, X-Forwarded-Host, X-Request-ID"},
				"X-Forwarded-For": {"6.6.6.6"},
			},
			want: http.Header{
				"X-Forwarded-For":   {"127.0.0.1"},
				"X-Real-Ip":         {"127.0.0.1"},
				"X-Forwarded-Host":  {"api.example.test"},
				"X-Forwarded-Proto": {"http"},
			},
		},
		{
			name:    "trusted peer: chain kept and appended, client host and proto kept",
			trusted: loopback,
			host:    "internal:8080",
			header: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 198.51.100.2", "10.1.2.3"},
				"X-Forwarded-Host":  {"public.example"},
				"X-Forwarded-Proto": {"https"},
				"X_Forwarded_For":   {"7.7.7.7"},
				"X-Real-Ip":         {"8.8.8.8"},
			},
			want: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 198.51.100.2, 10.1.2.3, 127.0.0.1"},
				"X-Real-Ip":         {"10.1.2.3"},
				"X-Forwarded-Host":  {"public.example"},
				"X-Forwarded-Proto": {"https"},
			},
		},
		{
			name:    "trusted hops are skipped for X-Real-IP",
			trusted: withLoopbackAndPrivate,
			host:    "internal:8080",
			header:  http.Header{"X-Forwarded-For": {"6.6.6.6, 203.0.113.7, 10.1.2.3"}},
			want: http.Header{
				"X-Forwarded-For":   {"6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1"},
				"X-Real-Ip":         {"203.0.113.7"},
				"X-Forwarded-Host":  {"internal:8080"},
				"X-Forwarded-Proto": {"http"},
			},
		},
		{
			name:    "trusted peer without headers",
			trusted: loopback,
			host:    "internal:8080",
			want: http.Header{
				"X-Forwarded-For":   {"127.0.0.1"},
				"X-Real-Ip":         {"127.0.0.1"},
				"X-Forwarded-Host":  {"internal:8080"},
				"X-Forwarded-Proto": {"http"},
			},
		},
		{
			name:         "preserve_host true sends the client's Host",
			preserveHost: true,
			host:         "api.example.test:8443",
			wantHost:     "api.example.test:8443",
			want:         http.Header{"X-Forwarded-Host": {"api.example.test:8443"}},
		},
		{
			name: "preserve_host false sends the upstream's host",
			host: "api.example.test:8443",
			want: http.Header{"X-Forwarded-Host": {"api.example.test:8443"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustProxy(t, up.URL, func(c *Config) {
				c.TrustedProxies = tc.trusted
				c.PreserveHost = tc.preserveHost
			})
			req := f.mustRequest(t, http.MethodGet, "/whoami", nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			res, got := mustEcho(t, f.srv.Client(), req)
			require.Equal(t, http.StatusOK, res.StatusCode)

			for k, v := range tc.want {
				assert.Equal(t, v, got.Header[k], "upstream's %s", k)
			}
			for k := range got.Header {
				assert.NotContains(t, k, "_", "underscore variant %s reached the upstream", k)
			}
			wantHost := tc.wantHost
			if wantHost == "" {
				wantHost = upHost
			}
			assert.Equal(t, wantHost, got.Host, "Host")
		})
	}
}

// TestForwardingHeadersUnknownPeer serves the proxy on a Unix socket, where
// the peer has no IP address: the client's own X-Real-IP must not pass for
// the proxy's.
func TestForwardingHeadersUnknownPeer(t *testing.T) {
	t.Parallel()
	p, _, _ := mustNewProxy(t, mustUpstream(t, echoUpstream).URL)
	// os.MkdirTemp, not t.TempDir: a socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "proxy")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(p)
	require.NoError(t, srv.Listener.Close())
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)

	req, err := http.NewRequest(http.MethodGet, "http://api.example.test/whoami", nil)
	require.NoError(t, err)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Real-IP", "8.8.8.8")
	res, got := mustEcho(t, &http.Client{Transport: tr, Timeout: clientTimeout}, req)
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Nil(t, got.Header["X-Forwarded-For"], "X-Forwarded-For")
	assert.Nil(t, got.Header["X-Real-Ip"], "X-Real-IP")
	assert.Equal(t, []string{"api.example.test"}, got.Header["X-Forwarded-Host"])
}

var (
	hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)
	// idKey is RequestIDHeader as http.Header stores it.
	idKey = http.CanonicalHeaderKey(RequestIDHeader)
)

// TestRequestIDValue covers what net/http never lets through to the proxy
// (it answers 400 to control characters other than tab in a header), in
// case the proxy runs behind another server.
func TestRequestIDValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		keep bool
	}{
		{"", false},
		{"req-1", true},
		{"a\x00b", false},
		{"a\x1fb", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"a\xffb", false},
		{"~!#$%&'*+-.^_`|", true},
		{strings.Repeat("7", 128), true},
		{strings.Repeat("7", 129), false},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			t.Parallel()
			got := requestID(tc.in)
			if tc.keep {
				assert.Equal(t, tc.in, got)
			} else {
				assert.Regexp(t, hexID, got)
			}
		})
	}
	assert.NotEqual(t, requestID(""), requestID(""), "generated ids differ")
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sent []string // X-Request-ID lines from the client
		keep bool     // the first line is kept, else a new id is made
	}{
		{"absent: generated", nil, false},
		{"sane: kept", []string{"abc-123_XYZ.trace:1/2"}, true},
		{"uuid: kept", []string{"3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"}, true},
		{"128 bytes: kept", []string{strings.Repeat("a", 128)}, true},
		{"129 bytes: replaced", []string{strings.Repeat("a", 129)}, false},
		{"space: replaced", []string{"abc def"}, false},
		{"tab: replaced", []string{"abc\tdef"}, false},
		{"non-ASCII: replaced", []string{"abc\u00e9"}, false},
		{"two lines: the first counts", []string{"first-id", "second-id"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustProxy(t, mustUpstream(t, echoUpstream).URL)
			req := f.mustRequest(t, http.MethodGet, "/id", nil)
			if tc.sent != nil {
				req.Header[idKey] = tc.sent
			}
			res, got := mustEcho(t, f.srv.Client(), req)
			require.Equal(t, http.StatusOK, res.StatusCode)

			require.Len(t, got.Header[idKey], 1, "ids sent upstream")
			id := got.Header[idKey][0]
			if tc.keep {
				assert.Equal(t, tc.sent[0], id)
			} else {
				assert.Regexp(t, hexID, id)
			}
			assert.Equal(t, []string{id}, res.Header[idKey], "id on the response")
			assert.Equal(t, id, f.mustAccessLog(t, id)["request_id"], "id in the access log")
		})
	}

	t.Run("upstream's own id does not make a second value", func(t *testing.T) {
		t.Parallel()
		up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add(RequestIDHeader, r.Header.Get(RequestIDHeader))
			w.Header().Add(RequestIDHeader, "upstream-made-id")
			w.Header()["X-Request-Id"] = append(w.Header()["X-Request-Id"], "another")
			_, _ = io.WriteString(w, "ok")
		})
		f := mustProxy(t, up.URL)
		req := f.mustRequest(t, http.MethodGet, "/id", nil)
		req.Header.Set(RequestIDHeader, "client-id-1")
		res, body := mustDo(t, f.srv.Client(), req)
		require.Equal(t, http.StatusOK, res.StatusCode, "body: %s", body)
		assert.Equal(t, []string{"client-id-1"}, res.Header.Values(RequestIDHeader))
	})

	t.Run("present on a 502", func(t *testing.T) {
		t.Parallel()
		f := mustProxy(t, "http://"+mustClosedPort(t))
		for _, sent := range []string{"", "client-id-2"} {
			req := f.mustRequest(t, http.MethodGet, "/id", nil)
			if sent != "" {
				req.Header.Set(RequestIDHeader, sent)
			}
			res, body := mustDo(t, f.srv.Client(), req)
			require.Equal(t, http.StatusBadGateway, res.StatusCode)
			ids := res.Header.Values(RequestIDHeader)
			require.Len(t, ids, 1)
			if sent != "" {
				assert.Equal(t, sent, ids[0])
			} else {
				assert.Regexp(t, hexID, ids[0])
			}
			var e struct {
				RequestID string `json:"request_id"`
			}
			require.NoError(t, json.Unmarshal(body, &e))
			assert.Equal(t, ids[0], e.RequestID, "id in the error body")
		}
	})
}

// TestForwardUnderBasePath: the upstream URL's path prefixes every request
// path, which is otherwise passed as it is.
func TestForwardUnderBasePath(t *testing.T) {
	t.Parallel()
	up := mustUpstream(t, echoUpstream)
	tests := []struct {
		name, base, target, want string
	}{
		{"base without slash", "/base", "/a/%2F/b?x=%zz", "/base/a/%2F/b?x=%zz"},
		{"base with slash", "/base/", "/apps/1?a=1;b=2", "/base/apps/1?a=1;b=2"},
		{"double slash kept", "/base", "//a/../b", "/base//a/../b"},
		{"root", "/", "/x/", "/x/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mustProxy(t, up.URL+tc.base)
			res, got := mustEcho(t, f.srv.Client(), f.mustRequest(t, http.MethodGet, tc.target, nil))
			require.Equal(t, http.StatusOK, res.StatusCode)
			assert.Equal(t, tc.want, got.RequestURI)
		})
	}
}

// TestConnectionPool: connections to the upstream are kept and reused up
// to MaxIdleConnsPerHost. With net/http's default of 2 idle connections per
// host, each burst would dial anew (golang/go#6785).
func TestConnectionPool(t *testing.T) {
	t.Parallel()
	const burst = 12
	var (
		dials   atomic.Int32
		mu      sync.Mutex
		arrived int
		release = make(chan struct{})
	)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Hold each request until the whole burst is in, so that the burst
		// needs burst connections at once.
		mu.Lock()
		arrived++
		wait := release
		if arrived%burst == 0 {
			close(release)
			release = make(chan struct{})
		}
		mu.Unlock()
		select {
		case <-wait:
		case <-time.After(waitTimeout):
		}
		_, _ = io.WriteString(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	f := mustProxy(t, up.URL, func(c *Config) { c.MaxIdleConnsPerHost = burst })

	for round := range 3 {
		var wg sync.WaitGroup
		statuses := make(chan int, burst)
		for range burst {
			wg.Go(func() {
				res, err := f.srv.Client().Get(f.srv.URL + "/pooled")
				if err != nil {
					statuses <- 0
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				statuses <- res.StatusCode
			})
		}
		wg.Wait()
		close(statuses)
		for s := range statuses {
			require.Equal(t, http.StatusOK, s, "round %d", round)
		}
	}
	// 3 bursts of 12 would dial 12+10+10 times with 2 idle connections
	// kept; a little slack for a connection not yet back in the pool.
	assert.LessOrEqual(t, dials.Load(), int32(burst+4), "connections dialled for %d requests", 3*burst)
	t.Logf("%d connections for %d requests", dials.Load(), 3*burst)
}
