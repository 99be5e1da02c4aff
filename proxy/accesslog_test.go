package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest/observer"
)

// Secrets the client and the upstream send; none may reach a log line.
var logSecrets = []string{
	"eyJhbGciOiJIUzI1NiJ9.AUTH-SECRET", "COOKIE-SECRET-1", "COOKIE-SECRET-2",
	"PROXY-AUTH-SECRET", "SET-COOKIE-SECRET", "QUERY-SECRET-TOKEN", "QUERY-SECRET-KEY",
}

func TestAccessLogRedaction(t *testing.T) {
	t.Parallel()
	up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sid=SET-COOKIE-SECRET; HttpOnly")
		_, _ = io.WriteString(w, "ok")
	})
	ok := mustProxy(t, up.URL)
	down := mustProxy(t, "http://"+mustClosedPort(t))

	tests := []struct {
		name     string
		f        *fixture
		target   string
		wantPath string
		status   int
	}{
		{"secrets filtered, rest kept", ok,
			"/api/v1/search?token=abc&page=2&api_key=x&password=y&q=ok",
			"/api/v1/search?token=[Filtered]&page=2&api_key=[Filtered]&password=[Filtered]&q=ok", http.StatusOK},
		{"nothing to hide: byte for byte", ok,
			"/a/%2F/b?x=%zz&a=1;b=2&k=1&k=2&q=a+b&e=%C3%A9",
			"/a/%2F/b?x=%zz&a=1;b=2&k=1&k=2&q=a+b&e=%C3%A9", http.StatusOK},
		{"encoded key", ok,
			"/p?%74oken=QUERY-SECRET-TOKEN&x=1",
			"/p?%74oken=[Filtered]&x=1", http.StatusOK},
		{"any case, any word of the deny-list", ok,
			"/p?Access_Token=QUERY-SECRET-TOKEN&SESSIONID=s&apiKey=QUERY-SECRET-KEY&sort=asc",
			"/p?Access_Token=[Filtered]&SESSIONID=[Filtered]&apiKey=[Filtered]&sort=asc", http.StatusOK},
		{"repeated and empty values", ok,
			"/p?token=a&token=b&password=&page=",
			"/p?token=[Filtered]&token=[Filtered]&password=[Filtered]&page=", http.StatusOK},
		{"key without value kept", ok, "/p?token&x=1", "/p?token&x=1", http.StatusOK},
		{"no query", ok, "//odd/../path;x", "//odd/../path;x", http.StatusOK},
		{"upstream down", down,
			"/api/v1/apps?api_key=QUERY-SECRET-KEY",
			"/api/v1/apps?api_key=[Filtered]", http.StatusBadGateway},
	}
	t.Run("cases", func(t *testing.T) {
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				id := "redact-" + strconv.Itoa(i)
				req := tc.f.mustRequest(t, http.MethodGet, tc.target, nil)
				req.Header.Set(RequestIDHeader, id)
				req.Header.Set("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.AUTH-SECRET")
				req.Header.Add("Cookie", "proximity-auth-cookie=COOKIE-SECRET-1")
				req.Header.Add("Cookie", "theme=dark; csrftoken=COOKIE-SECRET-2")
				req.Header.Set("Proxy-Authorization", "Basic PROXY-AUTH-SECRET")
				res, _ := mustDo(t, tc.f.srv.Client(), req)
				require.Equal(t, tc.status, res.StatusCode)

				entry := tc.f.mustAccessLog(t, id)
				assert.Equal(t, tc.wantPath, entry["path"])
				assert.Equal(t, http.MethodGet, entry["method"])
				assert.Equal(t, "127.0.0.1", entry["client_ip"])
			})
		}
	})

	for _, f := range []*fixture{ok, down} {
		entries := f.logs.All()
		require.NotEmpty(t, entries)
		for _, e := range entries {
			line := logLine(e)
			for _, secret := range logSecrets {
				assert.NotContains(t, line, secret, "a secret in a %q line", e.Message)
			}
		}
	}
	assert.NotEmpty(t, down.logs.FilterMessage("upstream error").All(), "the error line is checked too")
}

// logLine renders everything an observed entry carries.
func logLine(e observer.LoggedEntry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", e.Level, e.LoggerName, e.Message)
	for k, v := range e.ContextMap() {
		fmt.Fprintf(&b, " %s=%v", k, v)
	}
	return b.String()
}
