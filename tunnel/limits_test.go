package tunnel_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

func TestDefaultLimits(t *testing.T) {
	t.Parallel()
	l := tunnel.DefaultLimits()
	tests := []struct {
		name      string
		got, want int64
	}{
		{"Body", l.Body, 20 << 20},
		{"Decompressed", l.Decompressed, 100 << 20},
		{"Event", l.Event, 1 << 20},
		{"Replay", l.Replay, 10 << 20},
		{"Attachment", l.Attachment, 20 << 20},
		{"Session", l.Session, 100 << 10},
		{"Container", l.Container, 12 << 20},
		{"Profile", l.Profile, 20 << 20},
		{"Items", int64(l.Items), 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.got != tc.want {
				t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
			}
		})
	}
}

func TestReadBodyEncodings(t *testing.T) {
	t.Parallel()
	plain := []byte("{}\n" + `{"type":"event"}` + "\n" + strings.Repeat(`{"message":"hello"}`, 50))
	tests := []struct {
		name     string
		encoding []string // Content-Encoding values, one per header line
		body     []byte
	}{
		{"none", nil, plain},
		{"identity", []string{"identity"}, plain},
		{"empty value (sentry-ruby 5.x)", []string{""}, plain},
		{"utf-8 (sentry-java android 2.0.0)", []string{"UTF-8"}, plain},
		{"gzip", []string{"gzip"}, mustGzip(t, plain)},
		{"x-gzip", []string{"x-gzip"}, mustGzip(t, plain)},
		{"gzip in capitals with spaces", []string{" GZIP "}, mustGzip(t, plain)},
		{"identity listed with gzip", []string{"identity, gzip"}, mustGzip(t, plain)},
		{"gzip, two members", []string{"gzip"}, append(mustGzip(t, plain[:10]), mustGzip(t, plain[10:])...)},
		{"deflate as zlib (RFC 9110)", []string{"deflate"}, mustZlib(t, plain)},
		{"deflate raw, without the zlib wrapper", []string{"deflate"}, mustFlate(t, plain)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRequest(t, tc.body, tc.encoding...)
			got, err := tunnel.ReadBody(r, tunnel.DefaultLimits())
			if err != nil {
				t.Fatalf("ReadBody: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Errorf("ReadBody = %q, want %q", got, plain)
			}
		})
	}
}

func TestReadBodyUnsupportedEncoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		encoding []string
		want     string
	}{
		{"br", []string{"br"}, "br"},
		{"zstd", []string{"zstd"}, "zstd"},
		{"compress", []string{"compress"}, "compress"},
		{"unknown", []string{"x-snappy"}, "x-snappy"},
		{"two codings", []string{"gzip, br"}, "gzip, br"},
		{"gzip twice", []string{"gzip", "gzip"}, "gzip, gzip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRequest(t, []byte("anything"), tc.encoding...)
			r.Body = failingBody{t}
			_, err := tunnel.ReadBody(r, tunnel.DefaultLimits())
			var ue *tunnel.UnsupportedEncodingError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T %v, want *tunnel.UnsupportedEncodingError", err, err)
			}
			if ue.Encoding != tc.want {
				t.Errorf("Encoding = %q, want %q", ue.Encoding, tc.want)
			}
		})
	}
}

func TestReadBodyCorrupt(t *testing.T) {
	t.Parallel()
	good := mustGzip(t, []byte("{}\n"+strings.Repeat("x", 1000)))
	badSum := bytes.Clone(good)
	badSum[len(badSum)-8] ^= 0xff // CRC-32 in the gzip trailer
	tests := []struct {
		name     string
		encoding string
		body     []byte
	}{
		{"gzip, empty body", "gzip", nil},
		{"gzip, truncated", "gzip", good[:len(good)/2]},
		{"gzip, bad checksum", "gzip", badSum},
		{"gzip, not gzip", "gzip", []byte("{}\n{\"type\":\"event\"}\n{}")},
		{"gzip, garbage after the member", "gzip", append(bytes.Clone(good), "garbage"...)},
		{"deflate, not deflate", "deflate", []byte("\xff\xff\xff\xff")},
		{"deflate, zlib truncated", "deflate", mustZlib(t, []byte(strings.Repeat("y", 1000)))[:8]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tunnel.ReadBody(mustRequest(t, tc.body, tc.encoding), tunnel.DefaultLimits())
			var de *tunnel.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v, want *tunnel.DecodeError", err, err)
			}
			if de.Encoding != tc.encoding {
				t.Errorf("Encoding = %q, want %q", de.Encoding, tc.encoding)
			}
		})
	}
}

func TestReadBodyLimits(t *testing.T) {
	t.Parallel()
	const limit = 1000
	l := tunnel.Limits{Body: limit, Decompressed: 2 * limit}
	tests := []struct {
		name      string
		body      []byte
		encoding  string
		chunked   bool   // no Content-Length
		wantLimit string // "" for success
		wantMax   int64
	}{
		{name: "at the body limit", body: bytes.Repeat([]byte("a"), limit)},
		{name: "at the body limit, chunked", body: bytes.Repeat([]byte("a"), limit), chunked: true},
		{name: "one byte over, Content-Length", body: bytes.Repeat([]byte("a"), limit+1), wantLimit: "body", wantMax: limit},
		{name: "one byte over, chunked", body: bytes.Repeat([]byte("a"), limit+1), chunked: true, wantLimit: "body", wantMax: limit},
		{name: "decompressed at its limit", body: mustGzip(t, bytes.Repeat([]byte("b"), 2*limit)), encoding: "gzip"},
		{name: "decompressed one byte over", body: mustGzip(t, bytes.Repeat([]byte("b"), 2*limit+1)), encoding: "gzip", wantLimit: "decompressed", wantMax: 2 * limit},
		{name: "deflate one byte over", body: mustZlib(t, bytes.Repeat([]byte("b"), 2*limit+1)), encoding: "deflate", wantLimit: "decompressed", wantMax: 2 * limit},
		{name: "compressed body over the wire limit", body: mustGzipLevel(t, incompressible(2*limit), gzip.NoCompression), encoding: "gzip", wantLimit: "body", wantMax: limit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRequest(t, tc.body, tc.encoding)
			if tc.chunked {
				r.ContentLength = -1
				r.Body = io.NopCloser(bytes.NewReader(tc.body))
			}
			got, err := tunnel.ReadBody(r, l)
			if tc.wantLimit == "" {
				if err != nil {
					t.Fatalf("ReadBody: %v", err)
				}
				if tc.encoding == "" && !bytes.Equal(got, tc.body) {
					t.Errorf("ReadBody returned %d bytes, want the %d sent", len(got), len(tc.body))
				}
				return
			}
			mustTooLarge(t, err, tc.wantLimit, tc.wantMax)
		})
	}
}

// A body whose Content-Length is over the limit is refused before a byte
// of it is read.
func TestReadBodyContentLengthRefusedUnread(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodPost, "/tunnel", nil)
	r.ContentLength = 20<<20 + 1
	r.Body = failingBody{t}
	_, err := tunnel.ReadBody(r, tunnel.Limits{})
	mustTooLarge(t, err, "body", 20<<20)
}

// A chunked body that never ends is read only up to the limit plus one
// byte.
func TestReadBodyChunkedStopsAtLimit(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	body := &endlessBody{}
	r := httptest.NewRequest(http.MethodPost, "/tunnel", nil)
	r.ContentLength = -1
	r.Body = body
	_, err := tunnel.ReadBody(r, tunnel.Limits{Body: limit})
	mustTooLarge(t, err, "body", limit)
	if body.n > limit+1 {
		t.Errorf("read %d bytes, want at most %d", body.n, limit+1)
	}
}

// A body that fails while being read is a read error, not a limit.
func TestReadBodyReadError(t *testing.T) {
	t.Parallel()
	broken := errors.New("connection reset")
	r := httptest.NewRequest(http.MethodPost, "/tunnel", nil)
	r.Body = io.NopCloser(io.MultiReader(strings.NewReader("{}\n"), errReader{broken}))
	_, err := tunnel.ReadBody(r, tunnel.DefaultLimits())
	if !errors.Is(err, broken) {
		t.Errorf("error = %v, want it to wrap %v", err, broken)
	}
}

// TestReadBodyGzipBomb sends 1 GiB of zeros as gzip, generated while it is
// sent: 64 copies of one 16 MiB gzip member (about 16 KiB each), which
// gzip readers join into one stream. ReadBody must refuse it at the
// decompressed limit without the inflated bytes ever reaching the heap.
//
// Not parallel: it measures the process's allocations.
func TestReadBodyGzipBomb(t *testing.T) {
	const (
		member  = 16 << 20
		members = 64 // 1 GiB in all
	)
	var m bytes.Buffer
	zw, err := gzip.NewWriterLevel(&m, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(make([]byte, member)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	compressed := m.Bytes()

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		for range members {
			if _, err := pw.Write(compressed); err != nil {
				done <- err
				return
			}
		}
		done <- pw.Close()
	}()
	r := httptest.NewRequest(http.MethodPost, "/tunnel", nil)
	r.ContentLength = -1
	r.Body = pr
	r.Header.Set("Content-Encoding", "gzip")

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = tunnel.ReadBody(r, tunnel.DefaultLimits())
	runtime.ReadMemStats(&after)
	pr.CloseWithError(errors.New("test over"))
	<-done

	mustTooLarge(t, err, "decompressed", 100<<20)
	wire := int64(len(compressed) * members)
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("wire %d bytes (%.0f:1), allocated %d bytes while reading", wire, float64(member*members)/float64(wire), allocated)
	// The wire bytes (about 1 MiB) and their buffer's growth, never the
	// 100 MiB it inflates to.
	if allocated > 16<<20 {
		t.Errorf("ReadBody allocated %d MiB for a %d KiB bomb, want it bounded by the wire size", allocated>>20, wire>>10)
	}
}

func TestLimitsCheck(t *testing.T) {
	t.Parallel()
	small := tunnel.Limits{Event: 10, Replay: 20, Attachment: 30, Session: 5, Container: 40, Profile: 50, Items: 4}
	tests := []struct {
		name      string
		limits    tunnel.Limits
		items     []testItem
		wantLimit string // "" for no error
		wantMax   int64
	}{
		{name: "empty envelope", limits: small},
		{name: "every type at its limit", limits: small, items: []testItem{{"event", 10}, {"replay_recording", 20}, {"attachment", 30}, {"session", 5}}},
		{name: "event over", limits: small, items: []testItem{{"event", 11}}, wantLimit: "item:event", wantMax: 10},
		{name: "transaction over", limits: small, items: []testItem{{"transaction", 11}}, wantLimit: "item:transaction", wantMax: 10},
		{name: "feedback over", limits: small, items: []testItem{{"feedback", 11}}, wantLimit: "item:feedback", wantMax: 10},
		{name: "replay_event is an event", limits: small, items: []testItem{{"replay_event", 11}}, wantLimit: "item:replay_event", wantMax: 10},
		{name: "replay_recording over", limits: small, items: []testItem{{"event", 1}, {"replay_recording", 21}}, wantLimit: "item:replay_recording", wantMax: 20},
		{name: "replay_video over", limits: small, items: []testItem{{"replay_video", 21}}, wantLimit: "item:replay_video", wantMax: 20},
		{name: "attachment over", limits: small, items: []testItem{{"attachment", 31}}, wantLimit: "item:attachment", wantMax: 30},
		{name: "session over", limits: small, items: []testItem{{"session", 6}}, wantLimit: "item:session", wantMax: 5},
		{name: "sessions over", limits: small, items: []testItem{{"sessions", 6}}, wantLimit: "item:sessions", wantMax: 5},
		{name: "client_report over", limits: small, items: []testItem{{"client_report", 6}}, wantLimit: "item:client_report", wantMax: 5},
		{name: "check_in over", limits: small, items: []testItem{{"check_in", 6}}, wantLimit: "item:check_in", wantMax: 5},
		{name: "span container over", limits: small, items: []testItem{{"span", 41}}, wantLimit: "item:span", wantMax: 40},
		{name: "log container over", limits: small, items: []testItem{{"log", 41}}, wantLimit: "item:log", wantMax: 40},
		{name: "profile_chunk over", limits: small, items: []testItem{{"profile_chunk", 51}}, wantLimit: "item:profile_chunk", wantMax: 50},
		{name: "unknown types have no item limit (as in Relay)", limits: small, items: []testItem{{"future_thing", 1000}}},
		{name: "items at the count limit", limits: small, items: []testItem{{"a", 0}, {"a", 0}, {"a", 0}, {"a", 0}}},
		{name: "one item too many", limits: small, items: []testItem{{"a", 0}, {"a", 0}, {"a", 0}, {"a", 0}, {"a", 0}}, wantLimit: "items", wantMax: 4},
		{name: "zero limits are the defaults: event at 1 MiB", items: []testItem{{"event", 1 << 20}}},
		{name: "zero limits are the defaults: event over 1 MiB", items: []testItem{{"event", 1<<20 + 1}}, wantLimit: "item:event", wantMax: 1 << 20},
		{name: "zero limits are the defaults: 101 items", items: repeatItem(testItem{"session", 2}, 101), wantLimit: "items", wantMax: 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.limits.Check(mustEnvelope(t, tc.items...))
			if tc.wantLimit == "" {
				if err != nil {
					t.Errorf("Check: %v", err)
				}
				return
			}
			mustTooLarge(t, err, tc.wantLimit, tc.wantMax)
		})
	}
}

func TestTooLargeErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  tunnel.TooLargeError
		want string
	}{
		{tunnel.TooLargeError{Limit: "body", Max: 10}, "envelope too large: body size exceeds 10 bytes"},
		{tunnel.TooLargeError{Limit: "items", Max: 100}, "envelope too large: more than 100 items"},
		{tunnel.TooLargeError{Limit: "item:replay_recording", Max: 5}, "envelope too large: a replay_recording item exceeds 5 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

type testItem struct {
	typ  string
	size int
}

func repeatItem(it testItem, n int) []testItem {
	items := make([]testItem, n)
	for i := range items {
		items[i] = it
	}
	return items
}

// mustEnvelope parses an envelope holding items of the given types and
// payload sizes.
func mustEnvelope(tb testing.TB, items ...testItem) *tunnel.Envelope {
	tb.Helper()
	var b bytes.Buffer
	b.WriteString("{}\n")
	for _, it := range items {
		fmt.Fprintf(&b, `{"type":%q,"length":%d}`+"\n", it.typ, it.size)
		b.Write(bytes.Repeat([]byte{'\n'}, it.size))
		b.WriteByte('\n')
	}
	e, err := tunnel.Parse(b.Bytes())
	if err != nil {
		tb.Fatalf("Parse: %v", err)
	}
	return e
}

func mustTooLarge(tb testing.TB, err error, limit string, max int64) {
	tb.Helper()
	var tl *tunnel.TooLargeError
	if !errors.As(err, &tl) {
		tb.Fatalf("error %T %v, want *tunnel.TooLargeError", err, err)
	}
	if tl.Limit != limit || tl.Max != max {
		tb.Errorf("TooLargeError{%q, %d}, want {%q, %d}", tl.Limit, tl.Max, limit, max)
	}
}

// mustRequest is a POST of body with the given Content-Encoding values
// (an empty one is sent as an empty header value).
func mustRequest(tb testing.TB, body []byte, encodings ...string) *http.Request {
	tb.Helper()
	r := httptest.NewRequest(http.MethodPost, "/tunnel", bytes.NewReader(body))
	for _, e := range encodings {
		r.Header.Add("Content-Encoding", e)
	}
	return r
}

func mustGzip(tb testing.TB, p []byte) []byte {
	tb.Helper()
	return mustGzipLevel(tb, p, gzip.DefaultCompression)
}

func mustGzipLevel(tb testing.TB, p []byte, level int) []byte {
	tb.Helper()
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		tb.Fatal(err)
	}
	mustCompress(tb, w, p)
	return b.Bytes()
}

func mustZlib(tb testing.TB, p []byte) []byte {
	tb.Helper()
	var b bytes.Buffer
	mustCompress(tb, zlib.NewWriter(&b), p)
	return b.Bytes()
}

func mustFlate(tb testing.TB, p []byte) []byte {
	tb.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.DefaultCompression)
	if err != nil {
		tb.Fatal(err)
	}
	mustCompress(tb, w, p)
	if len(b.Bytes()) >= 2 && (uint16(b.Bytes()[0])<<8|uint16(b.Bytes()[1]))%31 == 0 && b.Bytes()[0]&0x0f == 8 {
		tb.Fatal("the raw deflate stream happens to look like zlib; change the test data")
	}
	return b.Bytes()
}

func mustCompress(tb testing.TB, w io.WriteCloser, p []byte) {
	tb.Helper()
	if _, err := w.Write(p); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
}

// incompressible is n bytes a compressor cannot shrink.
func incompressible(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// failingBody fails the test when read.
type failingBody struct{ tb testing.TB }

func (f failingBody) Read([]byte) (int, error) {
	f.tb.Error("the body was read")
	return 0, io.EOF
}

func (failingBody) Close() error { return nil }

// endlessBody is a chunked body that never ends; n counts what was read.
type endlessBody struct{ n int64 }

func (e *endlessBody) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.n += int64(len(p))
	return len(p), nil
}

func (*endlessBody) Close() error { return nil }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
