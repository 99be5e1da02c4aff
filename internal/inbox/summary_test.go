package inbox

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		raw  string
		want Summary
	}{
		{
			name: "sentry-go error",
			raw: `{"event_id":"e1","level":"error","message":"boom","timestamp":"2026-05-04T12:00:00.5Z",
				"user":{"id":"2","username":"demo","ip_address":"10.0.0.1","data":{"role":"admin","verified":"false"}},
				"tags":{"http.route":"/api/v1/apps/{id}","http.method":"GET","http.status_code":"502","request_id":"r1"},
				"breadcrumbs":[{"message":"a"},{"message":"b"}]}`,
			want: Summary{
				EventID: "e1", Type: TypeError, Level: "error", Message: "boom",
				Timestamp: t0.Add(500 * time.Millisecond),
				User:      &User{ID: "2", Username: "demo", Role: "admin", Verified: new(false)},
				Route:     "/api/v1/apps/{id}", Method: "GET", Status: "502", RequestID: "r1",
				Breadcrumbs: 2,
			},
		},
		{
			name: "browser SDK shapes",
			raw: `{"event_id":"e2","level":"error","timestamp":1777896000.25,"platform":"javascript",
				"exception":{"values":[{"type":"TypeError","value":"x is undefined"}]},
				"user":{"id":42,"email":"a@b.c"},
				"tags":[["http.status_code",500]],
				"breadcrumbs":{"values":[{"category":"ui.click"}]}}`,
			want: Summary{
				EventID: "e2", Type: TypeError, Level: "error", Message: "TypeError: x is undefined",
				Timestamp:   t0.Add(250 * time.Millisecond),
				User:        &User{ID: "42", Email: "a@b.c"},
				Status:      "500",
				Breadcrumbs: 1,
			},
		},
		{
			name: "last exception is the outermost",
			raw:  `{"exception":[{"type":"*net.OpError","value":"dial tcp: connection refused"},{"type":"*url.Error","value":"Get \"http://app\": dial tcp: connection refused"}]}`,
			want: Summary{Type: TypeError, Message: `*url.Error: Get "http://app": dial tcp: connection refused`},
		},
		{
			name: "exception value only",
			raw:  `{"exception":[{"value":"only a value"}]}`,
			want: Summary{Type: TypeError, Message: "only a value"},
		},
		{
			name: "message before exception",
			raw:  `{"message":"told","exception":[{"type":"T","value":"v"}]}`,
			want: Summary{Type: TypeError, Message: "told"},
		},
		{
			name: "logentry",
			raw:  `{"logentry":{"message":"user %s failed","formatted":"user demo failed"}}`,
			want: Summary{Type: TypeError, Message: "user demo failed"},
		},
		{
			name: "legacy message object",
			raw:  `{"message":{"message":"raw %s","formatted":"raw x"}}`,
			want: Summary{Type: TypeError, Message: "raw x"},
		},
		{
			name: "transaction is named, not messaged",
			raw:  `{"type":"transaction","transaction":"GET /api/v1/apps","message":"ignored","tags":{"http.status_code":"200"}}`,
			want: Summary{Type: "transaction", Message: "GET /api/v1/apps", Status: "200"},
		},
		{
			name: "ip address alone is anonymous",
			raw:  `{"user":{"ip_address":"10.0.0.1","data":{"role":"user"}}}`,
			want: Summary{Type: TypeError},
		},
		{
			name: "ill-typed fields do not hide the rest",
			raw:  `{"event_id":"e3","level":["error"],"user":"nobody","tags":{"http.route":{"x":1}},"breadcrumbs":"none","message":"still here"}`,
			want: Summary{EventID: "e3", Type: TypeError, Message: "still here"},
		},
		{
			name: "not json",
			raw:  `<html>`,
			want: Summary{Type: TypeError},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, summarize([]byte(tc.raw)))
		})
	}
}

func TestSummarizeCapsStrings(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", maxSummaryString) // two bytes each
	raw, err := json.Marshal(map[string]any{"message": long, "user": map[string]any{"id": long}})
	require.NoError(t, err)
	s := summarize(raw)
	for _, got := range []string{s.Message, s.User.ID} {
		assert.LessOrEqual(t, len(got), maxSummaryString+len("…"))
		assert.True(t, strings.HasSuffix(got, "é…"), "cut on a rune boundary")
	}
}

func TestFit(t *testing.T) {
	t.Parallel()
	raw := `{"event_id":"e1","message":"m","breadcrumbs":[` + strings.Repeat(`"xxxxxxxxxx",`, 50) + `"x"],"contexts":{"response":"` + strings.Repeat("y", 300) + `"}}`
	tests := []struct {
		name        string
		raw         string
		limit       int
		wantOmitted []string
		wantKeys    []string
	}{
		{"fits already", raw, len(raw), nil, []string{"breadcrumbs", "contexts", "event_id", "message"}},
		{"largest goes first", raw, 400, []string{"breadcrumbs"}, []string{"contexts", "event_id", "message"}},
		{"then the next", raw, 100, []string{"breadcrumbs", "contexts"}, []string{"event_id", "message"}},
		{"down to nothing", raw, 1, []string{"breadcrumbs", "contexts", "event_id", "message"}, []string{}},
		{"not an object", `[1,2,3]`, 1, []string{"*"}, []string{}},
		{"null", `null`, 1, []string{"*"}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, omitted := fit([]byte(tc.raw), tc.limit)
			assert.Equal(t, tc.wantOmitted, omitted)
			var m map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(out, &m))
			keys := []string{}
			for k := range m {
				keys = append(keys, k)
			}
			assert.ElementsMatch(t, tc.wantKeys, keys)
			if len(tc.wantKeys) > 0 {
				assert.LessOrEqual(t, len(out), tc.limit)
			}
		})
	}
}

// FuzzSummarize guards the seam tunneled browser envelopes will use: event
// JSON from the network must never panic the inbox, and a fitted copy is
// always valid JSON within the cap.
func FuzzSummarize(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"e","exception":{"values":[{"type":"T"}]},"breadcrumbs":{"values":[]},"timestamp":1.5}`,
		`{"user":{"id":1e400,"data":{"verified":true}},"tags":[["a"],["b","c","d"]]}`,
		`{"message":{"formatted":null},"timestamp":"nope","logentry":[]}`,
		`[]`, `"x"`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_ = summarize(raw)
		out, _ := fit(raw, 64)
		require.True(t, json.Valid(out), "fit made invalid JSON %q", out)
		if json.Valid(raw) && raw[0] == '{' {
			require.LessOrEqual(t, len(out), 64)
		}
	})
}
