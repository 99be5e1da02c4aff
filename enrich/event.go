package enrich

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/getsentry/sentry-go"
)

// MaxBodyExcerpt bounds the part of an upstream response body kept in an
// event.
const MaxBodyExcerpt = 4 << 10

// Exchange is what the proxy saw of one request and its answer: the input
// of the events built here.
type Exchange struct {
	Time      time.Time // when the request arrived
	Method    string
	Scheme    string // http or https, as the client used it
	Host      string // the Host the client sent
	Path      string // as requested
	RawQuery  string // as requested; scrubbed here
	Header    http.Header
	Route     string // the path's route template
	ClientIP  string
	RequestID string
	Upstream  string // the upstream's host:port

	Status      int
	ContentType string
	Body        []byte // the first MaxBodyExcerpt bytes of the answer
	Duration    time.Duration
	UpstreamDur time.Duration
	ErrorKind   string // set when the sidecar made the answer (refused, timeout, ...)

	User  *User   // nil: anonymous
	Trail []Crumb // the user's preceding requests, oldest first

	Action string         // the configured action the request is, if any
	Fields map[string]any // its allowed request fields
}

// Crumb returns this request as a trail entry.
func (x *Exchange) Crumb() Crumb {
	c := NewCrumb(x.Time, x.Method, x.Path, x.RawQuery, x.Status, x.Duration)
	c.Action, c.Fields = x.Action, x.Fields
	return c
}

// maxCrumbText bounds a crumb's path and URL: trails are kept for many
// users, and a header may be a megabyte long.
const maxCrumbText = 1 << 10

// NewCrumb is the trail entry of a request, its path and query scrubbed.
func NewCrumb(t time.Time, method, path, rawQuery string, status int, d time.Duration) Crumb {
	path = truncate(ScrubPath(path), maxCrumbText)
	u := path
	if rawQuery != "" {
		u = truncate(u+"?"+ScrubQuery(rawQuery), maxCrumbText)
	}
	return Crumb{Time: t, Method: method, Path: path, URL: u, Status: status, Duration: d}
}

// UpstreamEvent is the event for an upstream answer whose status is
// captured: one Sentry issue per method, route and status, titled by the
// API's own error message.
func UpstreamEvent(x *Exchange) *sentry.Event {
	ev := baseEvent(x)
	ev.Message = ErrorMessage(x.Body, x.ContentType, x.Status)
	ev.Fingerprint = []string{x.Method, x.Route, strconv.Itoa(x.Status)}
	ev.Contexts["response"] = sentry.Context{
		"status_code":  x.Status,
		"content_type": x.ContentType,
		"body":         ScrubBody(x.Body, x.ContentType),
		"duration_ms":  ms(x.UpstreamDur),
	}
	return ev
}

// ProxyErrorEvent is the event for an answer the sidecar made itself
// because the upstream could not be reached: one issue per upstream and
// kind of failure, whatever the route.
func ProxyErrorEvent(x *Exchange) *sentry.Event {
	ev := baseEvent(x)
	ev.Message = "upstream " + x.Upstream + " " + proxyErrorText(x.ErrorKind)
	ev.Fingerprint = []string{"proxy-error", x.Upstream, x.ErrorKind}
	ev.Tags["error.kind"] = x.ErrorKind
	ev.Contexts["upstream"] = sentry.Context{
		"host":        x.Upstream,
		"error_kind":  x.ErrorKind,
		"status_code": x.Status,
		"waited_ms":   ms(x.UpstreamDur),
	}
	return ev
}

func proxyErrorText(kind string) string {
	switch kind {
	case "refused":
		return "refused the connection"
	case "dns":
		return "does not resolve"
	case "reset":
		return "closed the connection"
	case "timeout":
		return "did not answer in time"
	case "tls":
		return "failed the TLS handshake"
	case "protocol":
		return "answered with invalid HTTP"
	}
	return "is unavailable"
}

func baseEvent(x *Exchange) *sentry.Event {
	ev := sentry.NewEvent()
	ev.Level = sentry.LevelError
	ev.Timestamp = x.Time.Add(x.Duration)
	ev.Logger = "sentry-sidecar"
	ev.Transaction = x.Method + " " + x.Route
	ev.Tags = map[string]string{
		"http.status_code": strconv.Itoa(x.Status),
		"http.method":      x.Method,
		"http.route":       x.Route,
		"upstream":         x.Upstream,
		"request_id":       x.RequestID,
	}
	ev.Request = &sentry.Request{
		URL:         x.Scheme + "://" + x.Host + ScrubPath(x.Path),
		Method:      x.Method,
		QueryString: ScrubQuery(x.RawQuery),
		Headers:     ScrubHeaders(x.Header),
	}
	if x.User != nil {
		ev.User = x.User.Sentry(x.ClientIP)
	} else if x.ClientIP != "" {
		ev.User = sentry.User{IPAddress: x.ClientIP}
	}
	ev.Breadcrumbs = make([]*sentry.Breadcrumb, 0, len(x.Trail)+1)
	for _, c := range x.Trail {
		ev.Breadcrumbs = append(ev.Breadcrumbs, c.Breadcrumb())
	}
	ev.Breadcrumbs = append(ev.Breadcrumbs, x.Crumb().Breadcrumb())
	return ev
}

// Sentry returns u as a Sentry user seen from ip.
func (u *User) Sentry(ip string) sentry.User {
	su := sentry.User{ID: u.ID, Username: u.Username, Email: u.Email, IPAddress: ip, Data: map[string]string{}}
	if u.Role != "" {
		su.Data["role"] = u.Role
	}
	su.Data["verified"] = strconv.FormatBool(u.Verified)
	return su
}

// Breadcrumb returns c as Sentry's http breadcrumb or, for an action, a
// user_action breadcrumb ("app.deploy failed", with the allowed fields).
func (c Crumb) Breadcrumb() *sentry.Breadcrumb {
	level := sentry.LevelInfo
	switch {
	case c.Status >= 500:
		level = sentry.LevelError
	case c.Status >= 400:
		level = sentry.LevelWarning
	}
	if c.Action != "" {
		msg := c.Action
		if c.Status >= 400 {
			msg += " failed"
		}
		data := make(map[string]any, len(c.Fields)+4)
		for k, v := range c.Fields {
			data[k] = v
		}
		data["method"], data["url"], data["status_code"], data["duration_ms"] = c.Method, c.URL, c.Status, ms(c.Duration)
		return &sentry.Breadcrumb{Type: "user", Category: "user_action", Message: msg, Level: level, Data: data, Timestamp: c.Time}
	}
	return &sentry.Breadcrumb{
		Type:     "http",
		Category: "request",
		Message:  c.Method + " " + c.Path,
		Level:    level,
		Data: map[string]any{
			"method":      c.Method,
			"url":         c.URL,
			"status_code": c.Status,
			"duration_ms": ms(c.Duration),
		},
		Timestamp: c.Time,
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ErrorMessage is the API's own words for an error answer: the "detail",
// "error" or "message" of a JSON body (FastAPI's and Proximity's shapes,
// including FastAPI's list of validation errors), else the status text.
func ErrorMessage(body []byte, contentType string, status int) string {
	text := http.StatusText(status)
	if text == "" {
		text = "HTTP " + strconv.Itoa(status)
	}
	if !isJSON(contentType, body) {
		return text
	}
	var v map[string]any
	if json.Unmarshal(body, &v) != nil {
		return text
	}
	for _, key := range []string{"detail", "error", "message"} {
		if msg := messageOf(v[key]); msg != "" {
			if key == "error" {
				if d := messageOf(v["details"]); d != "" {
					msg += ": " + d
				}
			}
			return truncate(ScrubText(msg), 512)
		}
	}
	return text
}

func messageOf(v any) string {
	switch m := v.(type) {
	case string:
		return strings.TrimSpace(m)
	case []any: // FastAPI 422: [{"loc": [...], "msg": "...", "type": "..."}]
		if len(m) > 0 {
			if first, ok := m[0].(map[string]any); ok {
				return messageOf(first["msg"])
			}
		}
	case map[string]any:
		return messageOf(m["message"])
	}
	return ""
}

func isJSON(contentType string, body []byte) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.TrimSpace(strings.ToLower(ct))
	if ct == "application/json" || strings.HasSuffix(ct, "+json") {
		return true
	}
	b := strings.TrimSpace(string(body[:min(len(body), 8)]))
	return ct == "" && (strings.HasPrefix(b, "{") || strings.HasPrefix(b, "["))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}
