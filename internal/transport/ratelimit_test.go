package transport

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestParseRateLimits(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	tests := []struct {
		name   string
		status int
		header http.Header
		want   Limits
	}{
		{name: "200 without headers", status: 200, want: nil},
		{name: "500 with Retry-After is no rate limit", status: 500, header: http.Header{"Retry-After": {"10"}}, want: nil},
		{name: "429 without headers: all for 60 s", status: 429, want: Limits{CategoryAll: at(60 * time.Second)}},
		{name: "429 Retry-After seconds", status: 429, header: http.Header{"Retry-After": {"30"}},
			want: Limits{CategoryAll: at(30 * time.Second)}},
		{name: "429 Retry-After HTTP date", status: 429, header: http.Header{"Retry-After": {"Sun, 01 Mar 2026 12:02:00 GMT"}},
			want: Limits{CategoryAll: at(2 * time.Minute)}},
		{name: "429 Retry-After date in the past", status: 429, header: http.Header{"Retry-After": {"Sun, 01 Mar 2026 11:00:00 GMT"}},
			want: Limits{CategoryAll: now}},
		{name: "429 Retry-After garbage: default", status: 429, header: http.Header{"Retry-After": {"soon"}},
			want: Limits{CategoryAll: at(DefaultRetryAfter)}},
		{name: "429 Retry-After negative: default", status: 429, header: http.Header{"Retry-After": {"-5"}},
			want: Limits{CategoryAll: at(DefaultRetryAfter)}},
		{name: "429 Retry-After huge: capped", status: 429, header: http.Header{"Retry-After": {"999999999999"}},
			want: Limits{CategoryAll: at(maxRetryAfter)}},
		{name: "X-Sentry-Rate-Limits on a 200", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"60:transaction:key"}},
			want: Limits{CategoryTransaction: at(60 * time.Second)}},
		{name: "documented example", status: 429,
			header: http.Header{"X-Sentry-Rate-Limits": {"60:transaction:key, 2700:default;error;security:organization"}},
			want: Limits{CategoryTransaction: at(60 * time.Second), "default": at(2700 * time.Second),
				CategoryError: at(2700 * time.Second), "security": at(2700 * time.Second)}},
		{name: "empty categories mean all", status: 429, header: http.Header{"X-Sentry-Rate-Limits": {"30::organization"}},
			want: Limits{CategoryAll: at(30 * time.Second)}},
		{name: "no categories field means all", status: 429, header: http.Header{"X-Sentry-Rate-Limits": {"30"}},
			want: Limits{CategoryAll: at(30 * time.Second)}},
		{name: "fractional seconds round up", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"2.5:error:key"}},
			want: Limits{CategoryError: at(3 * time.Second)}},
		{name: "reason code and namespaces ignored", status: 200,
			header: http.Header{"X-Sentry-Rate-Limits": {"10:metric_bucket:organization:quota_exceeded:custom;spans"}},
			want:   Limits{"metric_bucket": at(10 * time.Second)}},
		{name: "unreadable entry skipped", status: 429, header: http.Header{"X-Sentry-Rate-Limits": {"x:error:key, 5:session:key"}},
			want: Limits{"session": at(5 * time.Second)}},
		{name: "X-Sentry-Rate-Limits wins over Retry-After", status: 429,
			header: http.Header{"X-Sentry-Rate-Limits": {"5:error:key"}, "Retry-After": {"100"}},
			want:   Limits{CategoryError: at(5 * time.Second)}},
		{name: "longest limit per category wins", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"20:error:org, 10:error:key"}},
			want: Limits{CategoryError: at(20 * time.Second)}},
		{name: "categories lower-cased and trimmed", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {" 10 : Error ; Transaction :key"}},
			want: Limits{CategoryError: at(10 * time.Second), CategoryTransaction: at(10 * time.Second)}},
		{name: "empty category in a list skipped", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"10:error;;:key"}},
			want: Limits{CategoryError: at(10 * time.Second)}},
		{name: "negative seconds end now", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"-3:error:key"}},
			want: Limits{CategoryError: now}},
		{name: "several header lines", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"10:error:key", "20:transaction:key"}},
			want: Limits{CategoryError: at(10 * time.Second), CategoryTransaction: at(20 * time.Second)}},
		{name: "blank header falls back to Retry-After", status: 429, header: http.Header{"X-Sentry-Rate-Limits": {" "}, "Retry-After": {"7"}},
			want: Limits{CategoryAll: at(7 * time.Second)}},
		{name: "huge seconds capped", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"1e30:error:key"}},
			want: Limits{CategoryError: at(maxRetryAfter)}},
		{name: "NaN skipped", status: 200, header: http.Header{"X-Sentry-Rate-Limits": {"NaN:error:key"}},
			want: Limits{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, ParseRateLimits(tc.status, tc.header, now))
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	l := Limits{CategoryTransaction: now.Add(time.Minute)}
	assert.True(t, l.Limited(CategoryTransaction, now))
	assert.False(t, l.Limited(CategoryError, now))
	assert.False(t, l.Limited(CategoryTransaction, now.Add(time.Minute)), "a limit ends at its deadline")

	extended := l.Merge(Limits{CategoryAll: now.Add(2 * time.Minute), CategoryTransaction: now.Add(30 * time.Second)})
	assert.Equal(t, []string{CategoryAll}, extended, "a shorter limit does not shorten a longer one")
	assert.Equal(t, now.Add(2*time.Minute), l.Until(CategoryError), "the limit on all applies to every category")
	assert.Equal(t, now.Add(2*time.Minute), l.Until(CategoryTransaction))
	assert.True(t, Limits(nil).Until(CategoryError).IsZero())
}

// FuzzParseRateLimits checks that no header from the network panics the
// parser or yields a limit beyond the cap.
func FuzzParseRateLimits(f *testing.F) {
	for _, seed := range []string{"60:transaction:key, 2700:default;error;security:organization", "30::org", "2.5:error", "x:y:z", "1e400:error:key", ""} {
		f.Add(seed, "30")
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, xsrl, retryAfter string) {
		h := http.Header{"X-Sentry-Rate-Limits": {xsrl}, "Retry-After": {retryAfter}}
		for c, until := range ParseRateLimits(http.StatusTooManyRequests, h, now) {
			if until.Before(now) || until.After(now.Add(maxRetryAfter)) {
				t.Fatalf("limit for %q ends %v, outside [now, now+%v]", c, until, maxRetryAfter)
			}
		}
	})
}
