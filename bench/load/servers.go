package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/internal/sentrytest"
)

// The upstream's answers, fixed so every run proxies the same bytes.
var (
	body1K = func() []byte {
		b := []byte(`{"id":"wordpress-blog","status":"running","pad":"`)
		b = append(b, bytes.Repeat([]byte("x"), 1024-len(b)-2)...)
		return append(b, `"}`...)
	}()
	body1M   = bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	body500  = []byte(`{"detail":"deploy failed: storage local-lvm is full"}`)
	bodyDone = []byte(`{"success":true}`)
)

// upstream is the API behind both proxies: a small JSON GET, a 1 MiB GET,
// an upload that is read whole, and a route that always fails.
func upstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch {
		case r.Method == http.MethodPost:
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			h["Content-Type"] = []string{"application/json"}
			_, _ = w.Write(bodyDone)
		case strings.HasSuffix(r.URL.Path, "/broken"):
			h["Content-Type"] = []string{"application/json"}
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write(body500)
		case strings.HasPrefix(r.URL.Path, "/api/v1/files/"):
			h["Content-Type"] = []string{"application/octet-stream"}
			h["Content-Length"] = []string{strconv.Itoa(len(body1M))}
			_, _ = w.Write(body1M)
		default:
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{strconv.Itoa(len(body1K))}
			_, _ = w.Write(body1K)
		}
	})
}

// double is a Sentry that counts what it receives: envelopes parsed with
// Relay's framing rules (internal/sentrytest), items by type. It keeps
// nothing else, so a long run costs no memory.
type double struct {
	mu       sync.Mutex
	items    map[string]int
	rejected atomic.Int64
}

func newDouble() *double { return &double{items: map[string]int{}} }

func (d *double) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/envelope/") {
		http.Error(w, `{"detail":"not an envelope endpoint"}`, http.StatusNotFound)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, sentrytest.MaxBodySize))
	if err == nil && strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(raw)); err == nil {
			raw, err = io.ReadAll(zr)
		}
	}
	var env sentrytest.Envelope
	if err == nil {
		env, err = sentrytest.ParseEnvelope(raw)
	}
	if err != nil {
		d.rejected.Add(1)
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"detail":%q}`, err.Error())
		return
	}
	d.mu.Lock()
	for _, it := range env.Items {
		d.items[it.Type]++
	}
	d.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{}`))
}

// settle waits until nothing has arrived for 100 ms (at most 5 s): wrk
// stops with requests in flight, which the double may still be counting.
func (d *double) settle() {
	last := int64(-1)
	for range 50 {
		d.mu.Lock()
		n := d.rejected.Load()
		for _, c := range d.items {
			n += int64(c)
		}
		d.mu.Unlock()
		if n == last {
			return
		}
		last = n
		time.Sleep(100 * time.Millisecond)
	}
}

// take returns the counts so far and starts again from zero.
func (d *double) take() (items map[string]int, rejected int64) {
	d.mu.Lock()
	items, d.items = d.items, map[string]int{}
	d.mu.Unlock()
	return items, d.rejected.Swap(0)
}

// serve serves h on a new 127.0.0.1 port until the program ends.
func serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), nil
}

// envelope is a browser error event of about size bytes as @sentry/browser
// sends it, naming dsn in its header: a TypeError with a minified stack of
// 48 frames, 20 breadcrumbs (fetches, clicks, console lines) and request
// headers, one of them a cookie for the scrubber to find, padded with
// stack frames. (A long run of one letter would measure how the scrubber
// scans that letter, not an event.)
func envelope(dsn string, size int) []byte {
	var frames []any
	frame := func(i int) map[string]any {
		return map[string]any{
			"filename": fmt.Sprintf("http://localhost:8080/assets/index-%x.js", 0x4f2a00+i),
			"function": fmt.Sprintf("chunk%d.render", i),
			"lineno":   1, "colno": 20000 + 37*i, "in_app": true,
		}
	}
	for i := range 48 {
		frames = append(frames, frame(i))
	}
	var crumbs []any
	for i := range 20 {
		switch i % 3 {
		case 0:
			crumbs = append(crumbs, map[string]any{"category": "fetch", "type": "http", "timestamp": 1764892790.5 + float64(i),
				"data": map[string]any{"method": "GET", "url": fmt.Sprintf("/api/v1/apps/wordpress-blog/logs?page=%d", i), "status_code": 200}})
		case 1:
			crumbs = append(crumbs, map[string]any{"category": "ui.click", "timestamp": 1764892790.5 + float64(i),
				"message": `div.app-detail > button#deploy.btn.btn-primary[data-app="wordpress-blog"]`})
		default:
			crumbs = append(crumbs, map[string]any{"category": "console", "level": "info", "timestamp": 1764892790.5 + float64(i),
				"message": fmt.Sprintf("deploy of wordpress-blog: step %d of 20 finished", i)})
		}
	}
	event := func() []byte {
		// As JSON.stringify writes it: <, > and & as they are.
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(map[string]any{
			"event_id": "0f3e8b5ad1c74b7f9a4c2f0e6d1b3a57", "timestamp": 1764892800.5,
			"platform": "javascript", "level": "error", "release": "proximity-ui@0.1.0",
			"exception": map[string]any{"values": []any{map[string]any{
				"type":       "TypeError",
				"value":      "Cannot read properties of undefined (reading 'status')",
				"stacktrace": map[string]any{"frames": frames},
				"mechanism":  map[string]any{"type": "onerror", "handled": false},
			}}},
			"breadcrumbs": map[string]any{"values": crumbs},
			"request": map[string]any{"url": "http://localhost:8080/apps/wordpress-blog", "headers": map[string]any{
				"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
				"Cookie":     "proximity-auth-cookie=s3cr3t-session-value",
			}},
			"tags": map[string]any{"page": "app-detail"},
			"sdk":  map[string]any{"name": "sentry.javascript.browser", "version": "11.17.0"},
		})
		return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	item := event()
	for i := 48; len(item) < size-300; i++ { // the header lines take the rest
		frames = append(frames, frame(i))
		item = event()
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, `{"event_id":"0f3e8b5ad1c74b7f9a4c2f0e6d1b3a57","sent_at":"2026-12-04T00:00:00.000Z","dsn":%q,"sdk":{"name":"sentry.javascript.browser","version":"11.17.0"}}`+"\n", dsn)
	fmt.Fprintf(&out, `{"type":"event","length":%d}`+"\n", len(item))
	out.Write(item)
	out.WriteByte('\n')
	return out.Bytes()
}
