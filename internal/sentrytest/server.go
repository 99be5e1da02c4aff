// Package sentrytest is a Sentry ingest double for tests: an httptest.Server
// on 127.0.0.1 that authenticates and parses envelopes the way Relay does,
// records everything it receives, and can be switched at run time to the
// faults a real Sentry shows (a status such as 429 or 500 with rate-limit
// headers, a slow answer, an answer that never comes, a dropped connection).
//
// It has its own envelope parser on purpose: the sidecar's envelope code is
// what the tests check, so the double must not share it.
//
// Differences from Relay worth knowing: the store endpoint answers 400
// (envelopes only); a key not allowed with AllowKey answers 401, where Relay
// answers 400 for an unknown key (getsentry/relay#1594) and 403 for a
// disabled one; br and zstd bodies answer 415 instead of being decoded.
package sentrytest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// MaxBodySize is the largest envelope the double reads after decompression,
// Relay's max_envelope_size (tunnel.md §C1).
const MaxBodySize = 200 << 20

// rateLimitedDetail is Relay's body for a 429 (tunnel.md §C2).
const rateLimitedDetail = "Sentry dropped data due to a quota or internal rate limit being reached. This will not affect your application."

// Rejection is a request the double did not accept: malformed, not
// authenticated, answered with a non-2xx fault status, or given up by the
// client while the double hung or delayed.
type Rejection struct {
	// Status is the status answered; 0 when the connection was dropped and
	// 499 when the client went away before an answer.
	Status int
	// Detail is the "detail" of the JSON error body.
	Detail string
	// Raw is the body after Content-Encoding was undone (or as received, if
	// that failed).
	Raw []byte
	// HTTPHeader is the request's header.
	HTTPHeader http.Header
	// URL is the request URI (path and query).
	URL string
	// ReceivedAt is when the double read the body.
	ReceivedAt time.Time
}

// Server is the Sentry double. All its methods are safe for concurrent use.
type Server struct {
	srv *httptest.Server

	// closing is closed by Close so that hanging and delayed handlers return
	// before httptest.Server.Close waits for them.
	closing   chan struct{}
	closeOnce sync.Once

	mu         sync.Mutex
	keys       map[string]bool
	status     int
	headers    http.Header
	delay      time.Duration
	hang       chan struct{} // non-nil while hanging; closed to release
	reset      bool
	requests   int
	envelopes  []Envelope
	rejections []Rejection
	wire       [][]byte
	changed    chan struct{} // closed and replaced on every recorded request
}

// NewServer starts a double on 127.0.0.1 and closes it when tb ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		closing: make(chan struct{}),
		keys:    map[string]bool{},
		changed: make(chan struct{}),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sentrytest: listen: %v", err)
	}
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: s}}
	s.srv.Start()
	tb.Cleanup(s.Close)
	return s
}

// Close releases hanging requests and shuts the server down. NewServer
// registers it with tb.Cleanup; calling it earlier simulates Sentry going
// away.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

// URL is the server's base URL, http://127.0.0.1:<port>.
func (s *Server) URL() string { return s.srv.URL }

// DSN returns http://<publicKey>@127.0.0.1:<port>/<project>.
func (s *Server) DSN(publicKey string, project int) string {
	return fmt.Sprintf("http://%s@%s/%d", publicKey, s.srv.Listener.Addr(), project)
}

// EnvelopeURL returns the envelope endpoint of project.
func (s *Server) EnvelopeURL(project int) string {
	return fmt.Sprintf("%s/api/%d/envelope/", s.srv.URL, project)
}

// AllowKey adds a known public key. While no key was added, any key is
// accepted; once one was, an unknown key answers 401.
func (s *Server) AllowKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[key] = true
}

// SetStatus makes every later valid envelope answer code with headers, for
// example 429 with Retry-After and X-Sentry-Rate-Limits, or 500. A 2xx code
// still records the envelope (Relay sends X-Sentry-Rate-Limits on 200 too);
// any other records it as a rejection. Malformed or unauthenticated requests
// keep their 4xx. SetStatus(0, nil) restores the normal 200.
func (s *Server) SetStatus(code int, headers http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
	s.headers = headers.Clone()
}

// SetDelay makes every later request wait d after its body was read before
// it is answered; a client that gives up meanwhile is recorded as a 499
// rejection.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetHang(true) makes later requests read their body and then never answer,
// until the client gives up or the server closes. SetHang(false) releases
// the requests hanging now; they are then answered normally.
func (s *Server) SetHang(hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case hang && s.hang == nil:
		s.hang = make(chan struct{})
	case !hang && s.hang != nil:
		close(s.hang)
		s.hang = nil
	}
}

// SetReset makes later requests read their body and then lose their
// connection without an answer, as when a load balancer resets it.
func (s *Server) SetReset(reset bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset = reset
}

// Reset forgets every recorded request; keys and fault modes stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = 0
	s.envelopes = nil
	s.rejections = nil
	s.wire = nil
	s.broadcastLocked()
}

// Requests is the number of requests received, accepted or not, counted as
// soon as a body was read (a hanging request counts).
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Envelopes returns the accepted envelopes in arrival order. Treat them as
// read-only: they share memory with the double's record.
func (s *Server) Envelopes() []Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Envelope(nil), s.envelopes...)
}

// Rejections returns the requests that were not accepted.
func (s *Server) Rejections() []Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Rejection(nil), s.rejections...)
}

// Items returns the items of type typ from accepted
// envelopes, in arrival order.
func (s *Server) Items(typ string) []Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	return itemsLocked(s.envelopes, typ)
}

// Events returns the decoded payloads of accepted "event" items (nil for a
// payload that is not a JSON object).
func (s *Server) Events() []map[string]any { return decoded(s.Items("event")) }

// Transactions returns the decoded payloads of accepted "transaction" items.
func (s *Server) Transactions() []map[string]any { return decoded(s.Items("transaction")) }

// AllBytes returns everything the double received, accepted or not: each
// request's line, headers and decoded body. A privacy test searches it for a
// canary value.
func (s *Server) AllBytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Join(s.wire, nil)
}

// WaitEvents waits until at least n events were accepted and returns them;
// it fails tb (from the test goroutine) after timeout.
func (s *Server) WaitEvents(tb testing.TB, n int, timeout time.Duration) []map[string]any {
	tb.Helper()
	s.waitFor(tb, timeout, fmt.Sprintf("%d events", n), func() bool {
		return len(itemsLocked(s.envelopes, "event")) >= n
	})
	return s.Events()
}

// WaitItems waits until at least n items of type typ were accepted.
func (s *Server) WaitItems(tb testing.TB, typ string, n int, timeout time.Duration) []Item {
	tb.Helper()
	s.waitFor(tb, timeout, fmt.Sprintf("%d %q items", n, typ), func() bool {
		return len(itemsLocked(s.envelopes, typ)) >= n
	})
	return s.Items(typ)
}

// WaitEnvelopes waits until at least n envelopes were accepted.
func (s *Server) WaitEnvelopes(tb testing.TB, n int, timeout time.Duration) []Envelope {
	tb.Helper()
	s.waitFor(tb, timeout, fmt.Sprintf("%d envelopes", n), func() bool { return len(s.envelopes) >= n })
	return s.Envelopes()
}

// WaitRejections waits until at least n requests were rejected.
func (s *Server) WaitRejections(tb testing.TB, n int, timeout time.Duration) []Rejection {
	tb.Helper()
	s.waitFor(tb, timeout, fmt.Sprintf("%d rejections", n), func() bool { return len(s.rejections) >= n })
	return s.Rejections()
}

// WaitRequests waits until at least n requests arrived, accepted or not.
func (s *Server) WaitRequests(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	s.waitFor(tb, timeout, fmt.Sprintf("%d requests", n), func() bool { return s.requests >= n })
}

// waitFor polls cond, under s.mu, each time something is recorded.
func (s *Server) waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			s.mu.Lock()
			got := fmt.Sprintf("%d requests, %d envelopes accepted, %d rejected", s.requests, len(s.envelopes), len(s.rejections))
			var why []string
			for _, r := range s.rejections {
				why = append(why, fmt.Sprintf("%d %s", r.Status, r.Detail))
			}
			s.mu.Unlock()
			tb.Fatalf("sentrytest: waited %v for %s; got %s %v", timeout, what, got, why)
			return
		}
	}
}

// RefusingAddr returns a 127.0.0.1 address that refuses connections: a port
// that was just listened on and closed.
func RefusingAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sentrytest: listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		tb.Fatalf("sentrytest: close listener: %v", err)
	}
	return addr
}

// RefusingDSN returns a DSN whose host refuses connections.
func RefusingDSN(tb testing.TB, publicKey string, project int) string {
	tb.Helper()
	return fmt.Sprintf("http://%s@%s/%d", publicKey, RefusingAddr(tb), project)
}

// faults is a snapshot of the fault modes taken when a request arrives.
type faults struct {
	status  int
	headers http.Header
	delay   time.Duration
	hang    chan struct{}
	reset   bool
}

// ServeHTTP answers like Relay's envelope endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, readErr := readBody(r)
	received := time.Now()
	f := s.recordRequest(r, body)
	rej := Rejection{Raw: body, HTTPHeader: r.Header.Clone(), URL: r.RequestURI, ReceivedAt: received}

	if f.reset {
		rej.Detail = "connection reset by sentrytest"
		s.reject(rej)
		resetConn(w)
		return
	}
	if f.hang != nil && !s.wait(w, r, f.hang, nil) {
		rej.Status, rej.Detail = 499, "no answer: the server hung until the client or the server gave up"
		s.reject(rej)
		return
	}
	if f.delay > 0 {
		timer := time.NewTimer(f.delay)
		defer timer.Stop()
		if !s.wait(w, r, nil, timer.C) {
			rej.Status, rej.Detail = 499, "no answer: the client or the server gave up during the delay"
			s.reject(rej)
			return
		}
	}

	env, status, detail, cause := s.check(r, body, readErr)
	if status == http.StatusOK && f.status != 0 {
		status = f.status
		for k, v := range f.headers {
			w.Header()[k] = append([]string(nil), v...)
		}
		if status < 200 || status > 299 {
			detail = http.StatusText(status)
			if status == http.StatusTooManyRequests {
				detail = rateLimitedDetail
			}
		}
	}
	if status < 200 || status > 299 {
		rej.Status, rej.Detail = status, detail
		s.reject(rej)
		writeError(w, status, detail, cause)
		return
	}
	env.HTTPHeader = rej.HTTPHeader
	env.URL = rej.URL
	env.ReceivedAt = received
	s.accept(env)
	answer := map[string]string{}
	if id := env.EventID(); id != "" {
		answer["id"] = id
	}
	writeJSON(w, status, answer)
}

// check routes, authenticates and parses a request; status 200 means
// accepted.
func (s *Server) check(r *http.Request, body []byte, readErr error) (env Envelope, status int, detail, cause string) {
	if r.Method != http.MethodPost {
		return env, http.StatusMethodNotAllowed, "method not allowed", ""
	}
	project, endpoint, ok := route(r.URL.Path)
	switch {
	case !ok:
		return env, http.StatusNotFound, "not found", ""
	case endpoint == "store":
		return env, http.StatusBadRequest, "sentrytest accepts envelopes only; the store endpoint is not implemented", ""
	}
	if readErr != nil {
		var se *statusError
		if errors.As(readErr, &se) {
			return env, se.status, se.msg, ""
		}
		return env, http.StatusBadRequest, "invalid body", readErr.Error()
	}
	if len(body) == 0 {
		return env, http.StatusBadRequest, "empty event data", ""
	}
	env, err := ParseEnvelope(body)
	if err != nil {
		return env, http.StatusBadRequest, "invalid event envelope", err.Error()
	}
	key, err := requestKey(r, project, env.Header)
	if err != nil {
		var ae *authError
		if errors.As(err, &ae) {
			return env, ae.status, ae.detail, ""
		}
		return env, http.StatusBadRequest, err.Error(), ""
	}
	s.mu.Lock()
	known := len(s.keys) == 0 || s.keys[key]
	s.mu.Unlock()
	if !known {
		return env, http.StatusUnauthorized, "unknown public key", ""
	}
	if id, present := env.Header["event_id"]; present {
		if sid, ok := id.(string); !ok || !validEventID(sid) {
			return env, http.StatusBadRequest, "invalid event id", ""
		}
	}
	return env, http.StatusOK, "", ""
}

// wait blocks until release or timer fires (true), or until the client
// goes away or the server closes (false); a closing server drops the
// connection instead of answering, as a Sentry that went away would.
func (s *Server) wait(w http.ResponseWriter, r *http.Request, release chan struct{}, timer <-chan time.Time) bool {
	select {
	case <-release:
		return r.Context().Err() == nil
	case <-timer:
		return r.Context().Err() == nil
	case <-r.Context().Done():
		return false
	case <-s.closing:
		resetConn(w)
		return false
	}
}

func (s *Server) recordRequest(r *http.Request, body []byte) faults {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\nHost: %s\r\n", r.Method, r.RequestURI, r.Proto, r.Host)
	_ = r.Header.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	b.WriteString("\n")

	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.wire = append(s.wire, b.Bytes())
	s.broadcastLocked()
	return faults{status: s.status, headers: s.headers, delay: s.delay, hang: s.hang, reset: s.reset}
}

func (s *Server) accept(env Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.envelopes = append(s.envelopes, env)
	s.broadcastLocked()
}

func (s *Server) reject(rej Rejection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejections = append(s.rejections, rej)
	s.broadcastLocked()
}

func (s *Server) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// route splits /api/<project>/<endpoint>/ (trailing slash optional, as
// Relay normalises it).
func route(path string) (project, endpoint string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/api/")
	if !ok {
		return "", "", false
	}
	project, endpoint, _ = strings.Cut(rest, "/")
	endpoint = strings.TrimSuffix(endpoint, "/")
	if _, err := strconv.ParseUint(project, 10, 64); err != nil {
		return "", "", false
	}
	if endpoint != "envelope" && endpoint != "store" {
		return "", "", false
	}
	return project, endpoint, true
}

type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// readBody reads the body and undoes its Content-Encoding: gzip (x-gzip),
// deflate (zlib, RFC 1950), identity; "" and "utf-8" count as identity, as
// Relay strips them (decompression.rs). The decoded size is capped at
// MaxBodySize.
func readBody(r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, MaxBodySize+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > MaxBodySize {
		return raw, &statusError{http.StatusRequestEntityTooLarge, "envelope exceeded size limits"}
	}
	var dec io.Reader
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity", "utf-8":
		return raw, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return raw, fmt.Errorf("gzip: %w", err)
		}
		dec = zr
	case "deflate":
		zr, err := zlib.NewReader(bytes.NewReader(raw))
		if err != nil {
			return raw, fmt.Errorf("deflate: %w", err)
		}
		dec = zr
	default:
		return raw, &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported content encoding %q", enc)}
	}
	body, err := io.ReadAll(io.LimitReader(dec, MaxBodySize+1))
	if err != nil {
		return raw, fmt.Errorf("decompress: %w", err)
	}
	if len(body) > MaxBodySize {
		return raw, &statusError{http.StatusRequestEntityTooLarge, "envelope exceeded size limits"}
	}
	return body, nil
}

// validEventID accepts a UUID as 32 hex digits or in its dashed form.
func validEventID(id string) bool {
	switch len(id) {
	case 32:
	case 36:
		if id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
			return false
		}
		id = strings.ReplaceAll(id, "-", "")
		if len(id) != 32 {
			return false
		}
	default:
		return false
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

func itemsLocked(envs []Envelope, typ string) []Item {
	var out []Item
	for _, e := range envs {
		for _, it := range e.Items {
			if it.Type == typ {
				out = append(out, it)
			}
		}
	}
	return out
}

func decoded(items []Item) []map[string]any {
	out := make([]map[string]any, 0, len(items))
	for _, it := range items {
		out = append(out, it.JSON())
	}
	return out
}

// resetConn drops the connection without an answer.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // an RST, not a polite FIN
	}
	_ = conn.Close()
}

// writeError writes Relay's ApiErrorResponse: {"detail": ..., "causes": [...]}.
func writeError(w http.ResponseWriter, status int, detail, cause string) {
	body := map[string]any{"detail": detail}
	if cause != "" {
		body["causes"] = []string{cause}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
