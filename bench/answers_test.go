package bench

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// recorder keeps what a test's double accepted; the benchmarks' doubles
// keep nothing.
type recorder struct {
	mu        sync.Mutex
	envelopes []sentrytest.Envelope
}

// add keeps e; it is the double's inspect hook.
func (r *recorder) add(e sentrytest.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The items alias the request's body, which is the double's own.
	r.envelopes = append(r.envelopes, e)
}

// all returns the recorded envelopes.
func (r *recorder) all() []sentrytest.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.envelopes)
}

// items returns the payloads of the recorded items of type typ, decoded.
func (r *recorder) items(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, e := range r.envelopes {
		for _, it := range e.Items {
			if it.Type == typ {
				out = append(out, it.JSON())
			}
		}
	}
	return out
}

// TestFixtures checks the cases' bodies are the sizes the benchmarks are
// named for, and valid: JSON where JSON is promised, an envelope that
// Relay's framing (the double's parser) and the tunnel's parser both read
// as one event item.
func TestFixtures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		body []byte
		size int
	}{
		{"1 KiB answer", body1K(), 1024},
		{"64 KiB request", body64K(), 65536},
		{"upload answer", uploadAnswer(), len(`{"received":65536}`)},
		{"deploy request", []byte(deployBody), len(deployBody)},
		{"fail answer", []byte(failBody), len(failBody)},
	} {
		if len(tc.body) != tc.size {
			t.Errorf("%s: %d bytes, want %d", tc.name, len(tc.body), tc.size)
		}
		if !json.Valid(tc.body) {
			t.Errorf("%s: not JSON: %.80q", tc.name, tc.body)
		}
	}

	dsn := "http://" + browserKey + "@127.0.0.1:9/" + browserProject
	raw := mustBrowserEnvelope(t, dsn)
	if len(raw) != 10240 {
		t.Fatalf("envelope: %d bytes, want 10240", len(raw))
	}
	env, err := sentrytest.ParseEnvelope(raw)
	if err != nil {
		t.Fatalf("the double's parser: %v", err)
	}
	if env.EventID() != envelopeEventID || env.Header["dsn"] != dsn {
		t.Errorf("envelope header: %v", env.Header)
	}
	if len(env.Items) != 1 || env.Items[0].Type != "event" || env.Items[0].JSON() == nil {
		t.Fatalf("envelope items: %d, want one event with a JSON object", len(env.Items))
	}
	if got := env.Items[0].JSON()["event_id"]; got != envelopeEventID {
		t.Errorf("event_id in the event: %v", got)
	}
	if len(env.Items[0].Payload) < 9000 {
		t.Errorf("the event is %d bytes: the envelope is mostly header", len(env.Items[0].Payload))
	}
	if _, err := tunnel.Parse(raw); err != nil {
		t.Errorf("the tunnel's parser: %v", err)
	}
}

// TestProxiesAnswerAlike sends each proxy case a few times through the
// bare proxy and the sidecar, which must give the client the same answer,
// byte for byte. The sidecar traces every request here (rate 1), so what
// its transport was given is known: every transaction, and for All500 the
// throttle's burst of events, must reach the double with the content a
// benchmark relies on.
func TestProxiesAnswerAlike(t *testing.T) {
	t.Parallel()
	const requests = 8
	api := mustAPI(t)
	token := mustToken(t)
	for _, tc := range []struct {
		name        string
		newX        func(base, token string) *exchange
		tx          string // the transactions' name
		events      int    // events delivered
		fingerprint []string
	}{
		{"GET1K", getApp, "GET /api/v1/apps/{app_id}", 0, nil},
		{"POST64K", postUpload, "POST /api/v1/upload", 0, nil},
		{"All500", postDeploy, "POST /api/v1/apps/deploy", 5, []string{"POST", "/api/v1/apps/deploy", "500"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bare := mustFront(t, mustBareProxy(t, api.URL))
			rec := &recorder{}
			sc := mustSidecar(t, sidecarOptions{upstream: api.URL, sentry: mustSentryDouble(t, rec.add), tracesSampleRate: 1, scrub: true})
			front := mustFront(t, sc.handler)
			c := mustClient(t)
			for range requests {
				c.mustDo(t, tc.newX(bare.URL, token))
				c.mustDo(t, tc.newX(front.URL, token))
			}

			d := sc.mustSettle(t)
			if d.txGiven != requests || d.got.transactions != requests {
				t.Errorf("transactions: %.0f given, %d delivered, want %d", d.txGiven, d.got.transactions, requests)
			}
			reported := 0.0 // captured or throttled: every failed request
			if tc.events > 0 {
				reported = requests
			}
			if d.got.events != int64(tc.events) || d.captured != float64(tc.events) || d.captured+d.throttled != reported {
				t.Errorf("events: %d delivered, %.0f captured, %.0f throttled, want %d captured of %d",
					d.got.events, d.captured, d.throttled, tc.events, requests)
			}
			for _, tx := range rec.items("transaction") {
				if tx["transaction"] != tc.tx {
					t.Errorf("transaction %v, want %q", tx["transaction"], tc.tx)
				}
				if user, _ := tx["user"].(map[string]any); user["id"] != "2" {
					t.Errorf("transaction user %v, want id 2", tx["user"])
				}
			}
			for _, ev := range rec.items("event") {
				fp, _ := json.Marshal(ev["fingerprint"])
				want, _ := json.Marshal(tc.fingerprint)
				if !bytes.Equal(fp, want) {
					t.Errorf("fingerprint %s, want %s", fp, want)
				}
				if msg, _ := ev["message"].(string); !strings.Contains(msg, "deploy failed") {
					t.Errorf("message %q, want the upstream's detail", msg)
				}
				if user, _ := ev["user"].(map[string]any); user["id"] != "2" {
					t.Errorf("event user %v, want id 2", ev["user"])
				}
			}
		})
	}
}

// TestEnvelopeDeliveredOnce posts the browser envelope straight to the
// double and through the sidecar's tunnel, with and without scrubbing:
// each must be answered as Sentry answers and counted by the double once,
// as one event. Through the tunnel the envelope names the real DSN, never
// the placeholder, and with scrubbing the token is gone; straight, it
// arrives byte for byte.
func TestEnvelopeDeliveredOnce(t *testing.T) {
	t.Parallel()
	t.Run("direct", func(t *testing.T) {
		t.Parallel()
		rec := &recorder{}
		double := mustSentryDouble(t, rec.add)
		envelope := mustBrowserEnvelope(t, double.DSN(browserKey, browserProject))
		mustClient(t).mustDo(t, postEnvelope(double.envelopeURL(browserKey, browserProject), envelope))
		mustOneEventEach(t, double, 1)
		if got := rec.all(); len(got) != 1 || !bytes.Equal(got[0].Raw, envelope) {
			t.Error("the envelope did not arrive byte for byte")
		}
	})
	for _, scrub := range []bool{true, false} {
		name := "tunnel"
		if !scrub {
			name = "tunnel-noscrub"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			double := mustSentryDouble(t, rec.add)
			sc := mustSidecar(t, sidecarOptions{upstream: mustAPI(t).URL, sentry: double, tracesSampleRate: tracesSampleRate, scrub: scrub})
			front := mustFront(t, sc.handler)
			envelope := mustBrowserEnvelope(t, sc.placeholderDSN(front.URL))
			mustClient(t).mustDo(t, postEnvelope(front.URL+tunnelPath, envelope))
			mustOneEventEach(t, double, 1)
			all := rec.all()
			if len(all) != 1 {
				t.Fatalf("%d envelopes recorded", len(all))
			}
			got := all[0]
			if dsn := got.Header["dsn"]; dsn != double.DSN(browserKey, browserProject) {
				t.Errorf("dsn %v, want the browser project's real DSN", dsn)
			}
			if scrubbed := !bytes.Contains(got.Raw, []byte(secretInEnvelope)); scrubbed != scrub {
				t.Errorf("token scrubbed: %v, want %v", scrubbed, scrub)
			}
		})
	}
}

// TestDoubleRefuses checks the double is no rubber stamp: what Relay
// would refuse is answered with Relay's status and counted as rejected,
// and a gzipped envelope is read.
func TestDoubleRefuses(t *testing.T) {
	t.Parallel()
	double := mustSentryDouble(t, nil)
	envelope := mustBrowserEnvelope(t, double.DSN(browserKey, browserProject))
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write(envelope)
	_ = zw.Close()
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(hc.CloseIdleConnections)
	post := func(url string, body []byte, header http.Header) int {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		name   string
		url    string
		body   []byte
		header http.Header
		want   int
	}{
		{"query key", double.envelopeURL(browserKey, browserProject), envelope, http.Header{}, 200},
		{"gzip", double.envelopeURL(browserKey, browserProject), zipped.Bytes(), http.Header{"Content-Encoding": {"gzip"}}, 200},
		{"auth header", double.srv.URL + "/api/2/envelope/", envelope, http.Header{"X-Sentry-Auth": {"Sentry sentry_version=7, sentry_key=" + browserKey}}, 200},
		{"key of another project", double.envelopeURL(serverKey, browserProject), envelope, http.Header{}, 400},
		{"envelope of another project", double.envelopeURL(browserKey, serverProject), envelope, http.Header{}, 400},
		{"malformed", double.envelopeURL(browserKey, browserProject), []byte("{\"event_id\":1}\n{no"), http.Header{}, 400},
		{"brotli", double.envelopeURL(browserKey, browserProject), envelope, http.Header{"Content-Encoding": {"br"}}, 415},
		{"store endpoint", double.srv.URL + "/api/2/store/", envelope, http.Header{}, 404},
	} {
		if got := post(tc.url, tc.body, tc.header); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if got := double.counts(); got.envelopes != 3 || got.events != 3 || got.rejected != 5 {
		t.Errorf("counted %+v, want 3 envelopes with an event each and 5 rejected", got)
	}
}

// TestComparisonNeedsBoth: a case prints its ratio only when the baseline
// and the subject both ran, as when -bench selects one of them.
func TestComparisonNeedsBoth(t *testing.T) {
	t.Parallel()
	c := newComparison("GET1K", "bare", "sidecar")
	c.record("sidecar", result{ns: 1100, allocs: 150})
	if got := c.lines(); got != nil {
		t.Errorf("without the baseline: %q", got)
	}
	c.record("bare", result{ns: 1000, allocs: 120})
	want := "GET1K: sidecar/bare time 1.10×, allocs +30/op (1.1µs vs 1µs, 150 vs 120 allocs/op)"
	if got := c.lines(); !slices.Equal(got, []string{want}) {
		t.Errorf("got %q, want %q", got, want)
	}
	// -count 2: the second runs are compared with each other.
	c.record("bare", result{ns: 1000, allocs: 120})
	if got := c.lines(); len(got) != 1 || !strings.HasSuffix(got[0], "allocs/op)") {
		t.Errorf("with one sidecar run of two: %q", got)
	}
	c.record("sidecar", result{ns: 2000, allocs: 121})
	want2 := []string{
		"GET1K: sidecar/bare time 1.10×, allocs +30/op (1.1µs vs 1µs, 150 vs 120 allocs/op) [run 1 of 2]",
		"GET1K: sidecar/bare time 2.00×, allocs +1/op (2µs vs 1µs, 121 vs 120 allocs/op) [run 2 of 2]",
	}
	if got := c.lines(); !slices.Equal(got, want2) {
		t.Errorf("got %q, want %q", got, want2)
	}
}
