package tunnel

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// rewriteWhole is what rewriteEvent must amount to: the whole event
// decoded (numbers as written), the user set, every member scrubbed by
// enrich.ScrubEventMap, as the tunnel first did it.
func rewriteWhole(p []byte, user any, scrub bool) (map[string]any, error) {
	m, err := decodeNumbers(p)
	if err != nil {
		return nil, err
	}
	if user != nil {
		m["user"] = user
	}
	if scrub {
		enrich.ScrubEventMap(m)
	}
	return m, nil
}

// decodeNumbers decodes one JSON object, numbers as json.Number. Trailing
// data is refused, a stray "}" too (json.Decoder.More would not see it: the
// tunnel once let `{}}` through).
func decodeNumbers(p []byte) (map[string]any, error) {
	if !json.Valid(p) {
		return nil, errNotObject
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil || dec.More() {
		return nil, errNotObject
	}
	return m, nil
}

var errNotObject = &json.UnsupportedValueError{Str: "not a single JSON object"}

// sameEvent reports whether rewriteEvent's bytes decode to want.
func sameEvent(t *testing.T, got []byte, want map[string]any) {
	t.Helper()
	// Through JSON and back, so that both sides hold the same types.
	wantBytes, err := encodeMembers(want)
	if err != nil {
		t.Fatal(err)
	}
	w, err := decodeNumbers(wantBytes)
	if err != nil {
		t.Fatal(err)
	}
	g, err := decodeNumbers(got)
	if err != nil {
		t.Fatalf("rewriteEvent gave invalid JSON %q: %v", got, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("rewriteEvent:\n%s\nwhole event scrubbed:\n%s", got, wantBytes)
	}
}

var rewriteSeeds = []string{
	`{"message":"boom","extra":{"password":"p","n":1.50}}`,
	`{"exception":{"values":[{"type":"TypeError","stacktrace":{"frames":[{"filename":"a.js","lineno":1}]}}]},"big":12345678901234567890}`,
	`{"request":{"url":"/x?token=abc#access_token=1","cookies":"a=b","data":"body","headers":{"Authorization":"Bearer x","User-Agent":"ua"}}}`,
	`{"breadcrumbs":{"values":[{"data":{"url":"/api/v1/auth/login?mysql-pwd=1"}}]},"tags":{"t":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}}`,
	`{"extra":{"k":"\u0074oken=abc"},"contexts":{"trace":{"data":{"url":"/p?secret=1"}}}}`,
	`{"message":"caf\u00e9 TO\u212aEN=1","user":{"id":"evil"},"api_key":"k"}`,
	`{"a":1,"a":{"password":"dup"}}`,
	`{"spans":[{"description":"GET /x?apikey=1","data":{"x":[1,"ok",{"private-key":"k"}]}}]}`,
	`{"breadcrumbs":{"values":[{"message":"div \u003e button \u0026 \u0001"}]},"extra":{"v":"\u0054OKEN=abc"}}`,
	`{"extra":{"v":"\u0065yJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"},"m":"\\u0074oken=1"}`,
}

func TestRewriteEventMatchesWholeScrub(t *testing.T) {
	t.Parallel()
	user := map[string]any{"id": "2", "username": "demo"}
	for _, seed := range rewriteSeeds {
		for _, scrub := range []bool{true, false} {
			want, err := rewriteWhole([]byte(seed), user, scrub)
			if err != nil {
				t.Fatalf("seed %s: %v", seed, err)
			}
			got, err := rewriteEvent([]byte(seed), user, scrub)
			if err != nil {
				t.Fatalf("seed %s: %v", seed, err)
			}
			sameEvent(t, got, want)
		}
	}
	for _, bad := range []string{``, `[]`, `null`, `{"a":1} {}`, `{"a":`, `"x"`} {
		if _, err := rewriteEvent([]byte(bad), user, true); err == nil {
			t.Errorf("rewriteEvent(%q) accepted it", bad)
		}
	}
}

// FuzzRewriteEvent: whatever the payload, rewriteEvent, which decodes only
// the members that may need it, gives the event that decoding and scrubbing
// all of it gives, and refuses what that refuses.
func FuzzRewriteEvent(f *testing.F) {
	for _, s := range rewriteSeeds {
		f.Add([]byte(s), true)
	}
	f.Add([]byte("{\"m\":\"\xff\xfe\"}"), true)
	f.Fuzz(func(t *testing.T, p []byte, scrub bool) {
		want, werr := rewriteWhole(p, nil, scrub)
		got, gerr := rewriteEvent(p, nil, scrub)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("whole: %v, rewriteEvent: %v", werr, gerr)
		}
		if werr == nil {
			sameEvent(t, got, want)
		}
	})
}
