package transport

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Rate-limit categories of the events the sidecar sends (Relay's
// DataCategory names, tunnel.md §C3). CategoryAll is the key of a limit
// that applies to every category.
const (
	CategoryAll         = ""
	CategoryError       = "error"
	CategoryTransaction = "transaction"
	CategoryMonitor     = "monitor"
	CategoryLog         = "log_item"
	CategoryTraceMetric = "trace_metric"
	CategoryUnknown     = "unknown"
)

// DefaultRetryAfter is how long a 429 without a usable Retry-After or
// X-Sentry-Rate-Limits header backs off every category (rate-limiting.mdx).
const DefaultRetryAfter = 60 * time.Second

// maxRetryAfter caps a limit so that a bogus header cannot silence the
// sidecar for good (or overflow time.Duration); Relay itself reports at most
// 300 s (processing.max_rate_limit, tunnel.md §C1).
const maxRetryAfter = 24 * time.Hour

// Limits maps a rate-limit category (CategoryAll for all of them) to the
// moment its limit ends.
type Limits map[string]time.Time

// Until returns when category may be sent again: the later of its own
// limit and the limit on all categories. A time not after now means it may.
func (l Limits) Until(category string) time.Time {
	until := l[CategoryAll]
	if t := l[category]; t.After(until) {
		until = t
	}
	return until
}

// Limited reports whether category is limited at now.
func (l Limits) Limited(category string, now time.Time) bool {
	return l.Until(category).After(now)
}

// Merge keeps, per category, the later of the two limits, and returns the
// categories whose limit it extended.
func (l Limits) Merge(other Limits) []string {
	var extended []string
	for c, until := range other {
		if until.After(l[c]) {
			l[c] = until
			extended = append(extended, c)
		}
	}
	return extended
}

// ParseRateLimits reads the rate limits a Sentry response announces, as the
// SDKs do (develop-docs rate-limiting.mdx; sentry-go internal/ratelimit):
//
//   - X-Sentry-Rate-Limits, on a response of any status, is a comma-separated
//     list of retry_after:categories:scope[:reason_code[:namespaces]];
//     retry_after is seconds (integer or fraction, rounded up), categories
//     are ;-separated and empty means all. Entries with an unreadable
//     retry_after are skipped, every category is kept (lower case) and the
//     longest limit per category wins. The scope is not checked: the
//     sidecar sends with one key, so key, project and organization limits
//     all apply to it.
//   - Otherwise a 429 limits all categories for Retry-After, given in
//     seconds or as an HTTP date, or for DefaultRetryAfter when that header
//     is missing or unreadable.
//   - Otherwise there is no limit (nil).
func ParseRateLimits(status int, header http.Header, now time.Time) Limits {
	if values := header.Values("X-Sentry-Rate-Limits"); len(values) > 0 && strings.TrimSpace(strings.Join(values, "")) != "" {
		return parseSentryRateLimits(strings.Join(values, ","), now)
	}
	if status != http.StatusTooManyRequests {
		return nil
	}
	return Limits{CategoryAll: now.Add(retryAfter(header.Get("Retry-After"), now))}
}

func parseSentryRateLimits(s string, now time.Time) Limits {
	limits := Limits{}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		fields := strings.Split(entry, ":")
		secs, err := strconv.ParseFloat(strings.TrimSpace(fields[0]), 64)
		if err != nil || math.IsNaN(secs) {
			continue
		}
		until := now.Add(clampSeconds(math.Ceil(secs)))
		categories := ""
		if len(fields) > 1 {
			categories = strings.TrimSpace(fields[1])
		}
		if categories == "" {
			limits.Merge(Limits{CategoryAll: until})
			continue
		}
		for c := range strings.SplitSeq(categories, ";") {
			c = strings.ToLower(strings.TrimSpace(c))
			if c == "" {
				continue
			}
			limits.Merge(Limits{c: until})
		}
	}
	return limits
}

// retryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3).
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return clampSeconds(float64(n))
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return DefaultRetryAfter
}

func clampSeconds(secs float64) time.Duration {
	if secs <= 0 {
		return 0
	}
	if secs >= maxRetryAfter.Seconds() {
		return maxRetryAfter
	}
	return time.Duration(secs * float64(time.Second))
}
