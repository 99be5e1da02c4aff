package enrich

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestScrubEventMap(t *testing.T) {
	t.Parallel()
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	tests := []struct {
		name, in, want string
	}{
		{
			name: "request body, cookies and sensitive headers go",
			in: `{"request":{"url":"https://app.example/apps?page=2&token=abc#access_token=xyz","method":"POST",
				"data":{"password":"p"},"cookies":"session=s",
				"headers":{"Authorization":"Bearer abc","Cookie":"a=b","Referer":"https://app.example/?api_key=k","User-Agent":"UA"},
				"query_string":"page=2&token=abc","env":{"REMOTE_ADDR":"1.2.3.4","SECRET_KEY":"x"}}}`,
			want: `{"request":{"env":{"REMOTE_ADDR":"1.2.3.4","SECRET_KEY":"[Filtered]"},
				"headers":{"Authorization":"[Filtered]","Cookie":"[Filtered]","Referer":"https://app.example/?api_key=[Filtered]","User-Agent":"UA"},
				"method":"POST","query_string":"page=2&token=[Filtered]",
				"url":"https://app.example/apps?page=2&token=[Filtered]#access_token=[Filtered]"}}`,
		},
		{
			name: "headers and query as lists of pairs",
			in:   `{"request":{"headers":[["Authorization","Basic abc"],["Cookie","a=b"],["Accept","*/*"]],"query_string":[["token","t"],["q","1"]]}}`,
			want: `{"request":{"headers":[["Authorization","[Filtered]"],["Cookie","[Filtered]"],["Accept","*/*"]],"query_string":[["token","[Filtered]"],["q","1"]]}}`,
		},
		{
			name: "extra, tags, contexts, breadcrumbs and messages at any depth",
			in: `{"message":"login failed password=hunter2","extra":{"password":"p","nested":{"api_key":"k","ok":1}},
				"tags":{"auth_mode":"x","page":"home"},
				"contexts":{"trace":{"trace_id":"0123456789abcdef0123456789abcdef","data":{"url":"/cb?token=t"}},"app":{"secret":"s"}},
				"breadcrumbs":{"values":[{"category":"fetch","data":{"url":"/api?t=` + jwt + `","method":"GET"}}]},
				"exception":{"values":[{"type":"Error","value":"Bearer abc.def"}]}}`,
			want: `{"breadcrumbs":{"values":[{"category":"fetch","data":{"method":"GET","url":"/api?t=[Filtered]"}}]},
				"contexts":{"app":{"secret":"[Filtered]"},"trace":{"data":{"url":"/cb?token=[Filtered]"},"trace_id":"0123456789abcdef0123456789abcdef"}},
				"exception":{"values":[{"type":"Error","value":"Bearer [Filtered]"}]},
				"extra":{"nested":{"api_key":"[Filtered]","ok":1},"password":"[Filtered]"},
				"message":"login failed password=[Filtered]","tags":{"auth_mode":"[Filtered]","page":"home"}}`,
		},
		{
			name: "numbers kept exactly, user and ids untouched",
			in:   `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","timestamp":1712345678.123456789,"user":{"id":"42","email":"a@b.c","ip_address":"{{auto}}"}}`,
			want: `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","timestamp":1712345678.123456789,"user":{"email":"a@b.c","id":"42","ip_address":"{{auto}}"}}`,
		},
		{
			name: "a request that is not an object is scrubbed as JSON",
			in:   `{"request":"token=abc"}`,
			want: `{"request":"token=[Filtered]"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dec := json.NewDecoder(bytes.NewReader([]byte(tc.in)))
			dec.UseNumber()
			var ev map[string]any
			if err := dec.Decode(&ev); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(ScrubEventMap(ev)); err != nil {
				t.Fatal(err)
			}
			got := bytes.TrimSuffix(out.Bytes(), []byte("\n"))
			var want bytes.Buffer
			if err := json.Compact(&want, []byte(tc.want)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("ScrubEventMap\n got %s\nwant %s", got, want.Bytes())
			}
		})
	}
	if ScrubEventMap(nil) != nil {
		t.Error("ScrubEventMap(nil) != nil")
	}
}

func TestJSONMayNeedScrub(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  string
		want bool
	}{
		{`{"frames":[{"filename":"index.js","lineno":1}]}`, false},
		{`"div \u003e button \u0026 \u0001"`, false}, // what encoders escape
		{`{"Password":1}`, true},
		{`{"X-API-KEY":1}`, true},
		{`{"mysql-pwd":1}`, true},
		{`"Bearer x"`, true},
		{`"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"`, true},
		{`"\u0074oken=1"`, true}, // a letter
		{`"\u005f"`, true},       // _
		{`"\u212a"`, true},       // beyond ASCII: K lower-cases to k
		{`"\u00"`, true},         // malformed
		{"\"\xff\"", true},       // not UTF-8
		{`"caf\u00e9 ok"`, true}, // beyond ASCII, conservatively
		{`"café ok"`, false},
	}
	for _, tc := range tests {
		if got := JSONMayNeedScrub([]byte(tc.raw)); got != tc.want {
			t.Errorf("JSONMayNeedScrub(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}
