package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// TestEnvelope: the tunnel case's envelope is what a browser sends: Relay
// framing the double accepts, about 10 KiB, one JSON event written as
// JSON.stringify writes it (no \u003e for >).
func TestEnvelope(t *testing.T) {
	t.Parallel()
	b := envelope("http://k@localhost/2", 10<<10)
	if n := len(b); n < 10<<10*95/100 || n > 10<<10*105/100 {
		t.Errorf("envelope is %d bytes, want about 10 KiB", n)
	}
	env, err := sentrytest.ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Items) != 1 || env.Items[0].Type != "event" || !json.Valid(env.Items[0].Payload) {
		t.Fatalf("items: %+v", env.Items)
	}
	if bytes.Contains(b, []byte(`\u00`)) {
		t.Error("HTML escapes a browser would not write")
	}
}

// TestDoubleCounts: the double counts items by type and refuses what is
// not an envelope.
func TestDoubleCounts(t *testing.T) {
	t.Parallel()
	d := newDouble()
	srv := httptest.NewServer(d)
	defer srv.Close()
	post := func(body []byte) int {
		res, err := http.Post(srv.URL+"/api/2/envelope/", "application/x-sentry-envelope", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := post(envelope("http://k@localhost/2", 4<<10)); got != http.StatusOK {
		t.Fatalf("envelope: %d", got)
	}
	if got := post([]byte("not an envelope")); got != http.StatusBadRequest {
		t.Fatalf("garbage: %d", got)
	}
	items, rejected := d.take()
	if items["event"] != 1 || rejected != 1 {
		t.Fatalf("items %v, rejected %d", items, rejected)
	}
	if items, rejected = d.take(); len(items) != 0 || rejected != 0 {
		t.Fatalf("take did not reset: %v %d", items, rejected)
	}
}

func TestScrape(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Join([]string{
			`# HELP sidecar_sentry_envelopes_total x`,
			`sidecar_sentry_envelopes_total{category="transaction",outcome="sent"} 90`,
			`sidecar_sentry_envelopes_total{category="transaction",outcome="queue_full"} 7`,
			`sidecar_sentry_envelopes_total{category="error",outcome="sent"} 3`,
			`sidecar_sentry_queue_length 2`,
			`sidecar_requests_total{code="2xx",method="GET"} 100`,
		}, "\n")))
	}))
	defer srv.Close()
	m, err := scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"envelopes": 100, "outcome=sent": 93, "outcome=queue_full": 7, "sidecar_sentry_queue_length": 2}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, m[k], v, m)
		}
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestScript: the wrk script carries the request and prints the RESULT
// line the driver parses.
func TestScript(t *testing.T) {
	t.Parallel()
	env := &environment{dir: t.TempDir(), token: "tok"}
	c := cases[1] // post64k
	path, err := env.script(c, c.body(env))
	if err != nil {
		t.Fatal(err)
	}
	b, err := readFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`wrk.method = "POST"`, `Bearer tok`, `application/json`, `RESULT {"requests":`, `latency:percentile(99)`} {
		if !strings.Contains(b, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if _, err := env.script(c, "a]==]b"); err == nil {
		t.Error("a body that ends the Lua string was accepted")
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
