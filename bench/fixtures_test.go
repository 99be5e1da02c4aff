package bench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
)

// Paths of the cases. appPath is a Proximity route the router templates
// as /api/v1/apps/{app_id}; uploadPath is no configured action, so its
// body is streamed and never peeked; deployPath is the app.deploy action,
// whose JSON fields the sidecar records.
const (
	appPath    = "/api/v1/apps/wordpress-blog"
	uploadPath = "/api/v1/upload"
	deployPath = "/api/v1/apps/deploy"
	// tunnelPath is where the sidecar serves the tunnel, as in
	// config.example.yaml's suggestion (no "sentry" or "envelope" in it,
	// which ad blockers match).
	tunnelPath = "/api/v1/beacon"
)

// Sizes of the cases' bodies.
const (
	size1K       = 1 << 10  // GET1K's upstream answer
	size64K      = 64 << 10 // POST64K's request body
	sizeEnvelope = 10 << 10 // Tunnel10K's envelope
)

// Small bodies of the cases.
const (
	// failBody is what FastAPI answers for HTTPException(500, "deploy failed").
	failBody = `{"detail":"deploy failed"}`
	// deployBody is an app.deploy request with the action's three fields.
	deployBody = `{"catalog_id":"wordpress","hostname":"blog","node":"pve1"}`
)

// secretInEnvelope is a token the browser envelope carries in a cookie
// and in a breadcrumb's URL; the tunnel's scrubber must remove it.
const secretInEnvelope = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJl"

// envelopeEventID is the event_id of the browser envelope; Sentry answers
// {"id": it}.
const envelopeEventID = "8f14e45fceea167a5a36dedd4bea2543"

// mustToken is a valid HS256 token for the sidecar's verifier, as
// Proximity issues them: {"sub":"demo","role":"user","user_id":2,...}.
// After the first request every lookup is a cache hit.
func mustToken(tb testing.TB) string {
	tb.Helper()
	tok, err := demo.Token(demo.DefaultSecret, "demo", "user", 2, time.Now(), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// padJSON returns prefix + n bytes of padding + suffix, n chosen so the
// whole is size bytes; prefix and suffix must leave the padding inside a
// JSON string.
func padJSON(size int, prefix, suffix string) []byte {
	b := make([]byte, 0, size)
	b = append(b, prefix...)
	b = append(b, bytes.Repeat([]byte("x"), size-len(prefix)-len(suffix))...)
	return append(b, suffix...)
}

// body1K is GET1K's upstream answer: an app as JSON, exactly 1 KiB.
func body1K() []byte {
	return padJSON(size1K, `{"id":"wordpress-blog","status":"running","pad":"`, `"}`)
}

// body64K is POST64K's request body: a JSON object, exactly 64 KiB.
func body64K() []byte {
	return padJSON(size64K, `{"name":"backup.tar","data":"`, `"}`)
}

// uploadAnswer is what the upstream answers a POST64K: how much it read.
func uploadAnswer() []byte {
	return []byte(`{"received":` + strconv.Itoa(size64K) + `}`)
}

// doubleAnswer is the double's answer to an envelope, and so the tunnel's.
func doubleAnswer() []byte {
	return []byte(`{"id":"` + envelopeEventID + `"}`)
}

// mustBrowserEnvelope is a browser SDK's error envelope naming dsn,
// exactly sizeEnvelope bytes, framed as sentry-javascript's
// serializeEnvelope frames it: the header, then the event item without a
// length, no trailing newline. The event is a TypeError with a minified
// stack of 48 frames, 20 breadcrumbs and request headers, two of them (a
// cookie, a token in a query) for the scrubber to find; extra.pad, a few
// hundred bytes, brings it to size.
func mustBrowserEnvelope(tb testing.TB, dsn string) []byte {
	tb.Helper()
	header := mustJSON(tb, map[string]any{
		"event_id": envelopeEventID,
		"sent_at":  "2026-01-15T10:00:00.000Z",
		"dsn":      dsn,
		"sdk":      map[string]any{"name": "sentry.javascript.browser", "version": "10.5.0"},
	})
	frames := make([]map[string]any, 0, 48)
	for i := range 48 {
		frames = append(frames, map[string]any{
			"filename": "https://app.example.com/assets/index-" + strconv.Itoa(1000+i) + ".js",
			"function": "chunk" + strconv.Itoa(i) + ".render",
			"lineno":   1,
			"colno":    20000 + 37*i,
			"in_app":   true,
		})
	}
	// What a page logs before an error: fetches, clicks and console
	// lines, one fetch with a token in its query (a signed download link)
	// and none elsewhere, which keeps most strings on the scrubber's fast
	// path as in ordinary events. (With a token in every fetch URL the
	// tunnel's scrubbing costs about 1 ms an envelope: each such string
	// runs three backtracking expressions.)
	crumbs := make([]map[string]any, 0, 20)
	for i := range 20 {
		crumb := map[string]any{"timestamp": 1768471190.5 + float64(i)}
		switch i % 3 {
		case 0:
			crumb["category"], crumb["type"] = "fetch", "http"
			crumb["data"] = map[string]any{
				"method":      "GET",
				"url":         "/api/v1/apps/wordpress-blog/logs?page=" + strconv.Itoa(i),
				"status_code": 200,
			}
		case 1:
			crumb["category"] = "ui.click"
			crumb["message"] = "div.app-detail > button#deploy.btn.btn-primary[data-app=\"wordpress-blog\"]"
		case 2:
			crumb["category"], crumb["level"] = "console", "info"
			crumb["message"] = "deploy of wordpress-blog: step " + strconv.Itoa(i) + " of 20 finished"
		}
		crumbs = append(crumbs, crumb)
	}
	crumbs[18] = map[string]any{
		"timestamp": 1768471208.5,
		"category":  "fetch",
		"type":      "http",
		"data": map[string]any{
			"method":      "GET",
			"url":         "/api/v1/apps/wordpress-blog/backup?token=" + secretInEnvelope,
			"status_code": 200,
		},
	}
	event := map[string]any{
		"event_id":    envelopeEventID,
		"timestamp":   1768471200.123,
		"platform":    "javascript",
		"level":       "error",
		"environment": "production",
		"release":     "proximity-ui@0.1.0",
		"exception": map[string]any{"values": []any{map[string]any{
			"type":       "TypeError",
			"value":      "Cannot read properties of undefined (reading 'status')",
			"stacktrace": map[string]any{"frames": frames},
			"mechanism":  map[string]any{"type": "onerror", "handled": false},
		}}},
		"breadcrumbs": map[string]any{"values": crumbs},
		"request": map[string]any{
			"url": "https://app.example.com/apps/wordpress-blog",
			"headers": map[string]any{
				"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0 Safari/537.36",
				"Referer":    "https://app.example.com/apps",
				"Cookie":     "proximity-auth-cookie=" + secretInEnvelope,
			},
		},
		"contexts": map[string]any{"trace": map[string]any{
			"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
			"span_id":  "00f067aa0ba902b7",
		}},
		"tags":  map[string]any{"page": "app-detail"},
		"user":  map[string]any{"ip_address": "{{auto}}"},
		"sdk":   map[string]any{"name": "sentry.javascript.browser", "version": "10.5.0"},
		"extra": map[string]any{"pad": ""},
	}
	item := `{"type":"event"}`
	unpadded := mustJSON(tb, event)
	// The padding goes where the empty pad string is: `"pad":""`.
	at := strings.Index(unpadded, `"pad":""`) + len(`"pad":"`)
	payloadSize := sizeEnvelope - len(header) - 1 - len(item) - 1
	// A little padding, no more: one long string would make the benchmark
	// about how the scrubber scans long strings, not about events.
	if pad := payloadSize - len(unpadded); at < len(`"pad":"`) || pad < 0 || pad > 512 {
		tb.Fatalf("the event is %d bytes before padding, the envelope has room for %d", len(unpadded), payloadSize)
	}
	payload := padJSON(payloadSize, unpadded[:at], unpadded[at:])
	env := header + "\n" + item + "\n" + string(payload)
	if len(env) != sizeEnvelope {
		tb.Fatalf("envelope is %d bytes, want %d", len(env), sizeEnvelope)
	}
	return []byte(env)
}

// mustJSON is v as JSON text.
func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// exchange is one request of a case and the answer it must get, status
// and body byte for byte.
type exchange struct {
	method string
	url    string
	header http.Header
	body   []byte // sent with its Content-Length; nil for none
	status int
	want   []byte

	req *http.Request // a body-less request, built once and reused
}

// getApp is GET1K's request through the proxy at base.
func getApp(base, token string) *exchange {
	return &exchange{
		method: http.MethodGet,
		url:    base + appPath,
		header: http.Header{"Authorization": {"Bearer " + token}},
		status: http.StatusOK,
		want:   body1K(),
	}
}

// postUpload is POST64K's request through the proxy at base.
func postUpload(base, token string) *exchange {
	return &exchange{
		method: http.MethodPost,
		url:    base + uploadPath,
		header: http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}},
		body:   body64K(),
		status: http.StatusOK,
		want:   uploadAnswer(),
	}
}

// postDeploy is All500's request through the proxy at base.
func postDeploy(base, token string) *exchange {
	return &exchange{
		method: http.MethodPost,
		url:    base + deployPath,
		header: http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}},
		body:   []byte(deployBody),
		status: http.StatusInternalServerError,
		want:   []byte(failBody),
	}
}

// postEnvelope is Tunnel10K's request: envelope posted to url as the
// browser SDK's fetch transport posts it (no Content-Type of its own, so
// text/plain, which needs no CORS preflight).
func postEnvelope(url string, envelope []byte) *exchange {
	return &exchange{
		method: http.MethodPost,
		url:    url,
		header: http.Header{"Content-Type": {"text/plain;charset=UTF-8"}},
		body:   envelope,
		status: http.StatusOK,
		want:   doubleAnswer(),
	}
}
