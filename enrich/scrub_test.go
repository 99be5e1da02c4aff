package enrich

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/getsentry/sentry-go"
)

func TestSensitiveKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want bool
	}{
		{"password", true}, {"Password", true}, {"new_password", true}, {"passwd", true},
		{"secret", true}, {"client_secret", true}, {"api_key", true}, {"api-key", true},
		{"X-Api-Key", true}, {"apikey", true}, {"Authorization", true}, {"Proxy-Authorization", true},
		{"credentials", true}, {"mysql_pwd", true}, {"privatekey", true}, {"private-key", true},
		{"token", true}, {"access_token", true}, {"refresh_token", true}, {"bearer", true},
		{"sessionid", true}, {"csrf_token", true}, {"X-XSRF-TOKEN", true}, {"Cookie", true},
		{"Set-Cookie", true}, {"jwt", true}, {"signature", true},
		{"page", false}, {"q", false}, {"hostname", false}, {"catalog_id", false},
		{"user_id", false}, {"Content-Type", false}, {"", false},
	}
	for _, tc := range tests {
		if got := SensitiveKey(tc.key); got != tc.want {
			t.Errorf("SensitiveKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}

func TestScrubQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, raw, want string
	}{
		{"empty", "", ""},
		{"nothing secret kept byte for byte", "a=1;b=2&x=%zz&q=a+b&q=c&flag", "a=1;b=2&x=%zz&q=a+b&q=c&flag"},
		{"secrets filtered, rest kept", "token=abc&page=2&api_key=x&password=y&q=ok", "token=[Filtered]&page=2&api_key=[Filtered]&password=[Filtered]&q=ok"},
		{"encoded key still matched", "%74oken=abc&a=1", "%74oken=[Filtered]&a=1"},
		{"repeated secret", "token=a&token=b", "token=[Filtered]&token=[Filtered]"},
		{"key without value kept", "token&a=1", "token&a=1"},
		{"empty value filtered", "token=&a=1", "token=[Filtered]&a=1"},
		{"trailing ampersand kept", "a=1&token=x&", "a=1&token=[Filtered]&"},
		{"value containing =", "secret=a=b", "secret=[Filtered]"},
		{"semicolon separator", "a=1;token=abc;b=2&password=x", "a=1;token=[Filtered];b=2&password=[Filtered]"},
		{"jwt under a harmless key", "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln&page=2", "t=[Filtered]&page=2"},
		{"escaped jwt in a callback", "next=%2Fcb%3Ft%3DeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "next=[Filtered]"},
		{"eyJ alone is no token", "q=eyJ", "q=eyJ"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := ScrubQuery(tc.raw); got != tc.want {
				t.Errorf("ScrubQuery(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}

func TestScrubTextKeepsFilteredValues(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"token=[Filtered]&a=1":                               "token=[Filtered]&a=1",
		`"password": "[Filtered]"`:                           `"password": "[Filtered]"`,
		"/api?jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln": "/api?jwt=[Filtered]",
		"password=hunter2 and more":                          "password=[Filtered] and more",
	} {
		if got := ScrubText(in); got != want {
			t.Errorf("ScrubText(%q) = %q, want %q", in, got, want)
		}
		if again := ScrubText(ScrubText(in)); again != want {
			t.Errorf("ScrubText twice on %q = %q", in, again)
		}
	}
}

func TestScrubPath(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	for _, tc := range []struct{ in, want string }{
		{"/api/v1/apps", "/api/v1/apps"},
		{"/settings;secret=x;a=1", "/settings;secret=[Filtered];a=1"},
		{"/share/" + jwt, "/share/[Filtered]"},
		{"/share/" + jwt + ";v=1/x", "/share/[Filtered];v=1/x"},
		{"/eyJ/ok", "/eyJ/ok"},
	} {
		if got := ScrubPath(tc.in); got != tc.want {
			t.Errorf("ScrubPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ScrubPath("/api/v1/apps/nginx-mysite/status") }); n != 0 {
		t.Errorf("a clean path allocates %v times", n)
	}
}

func FuzzScrubQuery(f *testing.F) {
	for _, s := range []string{"", "a=1", "token=x&b=2", "%74oken=1&&=&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := ScrubQuery(raw)
		if !anySensitiveParam(raw) && got != raw {
			t.Fatalf("changed a query with nothing secret: %q -> %q", raw, got)
		}
		if anySensitiveParam(got) && ScrubQuery(got) != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", raw, got, ScrubQuery(got))
		}
	})
}

// sensitiveKeyByDefinition is SensitiveKey as first written: lower-case
// by Unicode's rules, dashes as underscores, then a plain search for each
// word. The one-pass wordSet must agree with it on every key.
func sensitiveKeyByDefinition(key string) bool {
	k := strings.ReplaceAll(strings.ToLower(key), "-", "_")
	for _, w := range sensitiveWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// textHasWordByDefinition is what ScrubText's word check means: text
// lower-cased by Unicode's rules holds a sensitive word or a credential
// scheme.
func textHasWordByDefinition(s string) bool {
	l := strings.ToLower(s)
	for _, w := range append(append([]string{}, sensitiveWords...), credentialSchemes...) {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// FuzzWordSet: the one-pass word search agrees with the definition, for
// keys (dashes as underscores) and for text, including non-ASCII text
// whose lower case holds a word (the Kelvin sign K lower-cases to k).
func FuzzWordSet(f *testing.F) {
	for _, s := range []string{"", "password", "X-Api-Key", "api-key", "TO\u212aEN", "pass", "ssecret", "xsrf", "au", "\xff\xfe", "private-key", "mysql-pwd", "éauth"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := SensitiveKey(s), sensitiveKeyByDefinition(s); got != want {
			t.Fatalf("SensitiveKey(%q) = %v, want %v", s, got, want)
		}
		if got, want := textWords.in(s), textHasWordByDefinition(s); got != want {
			t.Fatalf("textWords.in(%q) = %v, want %v", s, got, want)
		}
	})
}

// FuzzScrubText: scrubbing never panics, is idempotent, and leaves no
// value after a "password=" it was given.
func FuzzScrubText(f *testing.F) {
	for _, s := range []string{"", "password=hunter2", `{"token": "abc", "a": 1}`, "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "token=[Filtered]&a=1", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := ScrubText(s)
		if twice := ScrubText(once); twice != once {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, once, twice)
		}
		in := "password=" + s + " "
		if out := ScrubText(in); strings.Contains(out, "password="+s+" ") && s != "" && !strings.ContainsAny(s[:1], " \t\n\r,;&}]\"'[") {
			t.Fatalf("a password value survived: %q -> %q", in, out)
		}
	})
}

// FuzzScrubJSON: any JSON document scrubs without panicking, and a
// "password" key at the top never keeps its value.
func FuzzScrubJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"password":"x","a":[{"token":"y"}]}`, `[1,"a",null]`, `"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var v any
		if json.Unmarshal([]byte(doc), &v) != nil {
			return
		}
		out := ScrubJSON(v)
		if m, ok := out.(map[string]any); ok {
			if pw, ok := m["password"]; ok && pw != Filtered {
				t.Fatalf("password kept: %v", pw)
			}
		}
	})
}

// TestScrubJSONCopiesOnlyWhatChanges: the input is never written (base
// scope contexts are shared by concurrent captures), and what has nothing
// to hide comes back as the same map, not a copy.
func TestScrubJSONCopiesOnlyWhatChanges(t *testing.T) {
	t.Parallel()
	clean := map[string]any{"host": "pve.local", "port": 8006.0, "tags": []any{"a", "b"}}
	in := map[string]any{
		"proxmox": clean,
		"login":   map[string]any{"password": "hunter2", "user": "root"},
		"list":    []any{"ok", "Bearer abc.def"},
	}
	snapshot, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := ScrubJSON(in).(map[string]any)
	after, _ := json.Marshal(in)
	if string(after) != string(snapshot) {
		t.Fatalf("the input was written:\n%s\n%s", snapshot, after)
	}
	if reflect.ValueOf(out["proxmox"]).UnsafePointer() != reflect.ValueOf(clean).UnsafePointer() {
		t.Error("a clean map was copied")
	}
	if got := out["login"].(map[string]any)["password"]; got != Filtered {
		t.Errorf("password = %v", got)
	}
	if got := out["list"].([]any)[1]; got != "Bearer "+Filtered {
		t.Errorf("list[1] = %v", got)
	}
	if same := ScrubJSON(clean); reflect.ValueOf(same).UnsafePointer() != reflect.ValueOf(clean).UnsafePointer() {
		t.Error("a clean document was copied")
	}
}

// TestScrubEventLeavesTrailAlone: a breadcrumb's data belongs to the
// user's trail, which later events share; scrubbing its URL's query makes
// a copy.
func TestScrubEventLeavesTrailAlone(t *testing.T) {
	t.Parallel()
	// mysql-pwd: a key ScrubQuery knows (dash for underscore) and the text
	// expressions do not, so only the URL step changes the data.
	data := map[string]any{"url": "/api/v1/apps?mysql-pwd=abc&page=2", "method": "GET"}
	ev := &sentry.Event{Breadcrumbs: []*sentry.Breadcrumb{{Category: "request", Data: data}}}
	ScrubEvent(ev)
	if got := ev.Breadcrumbs[0].Data["url"]; got != "/api/v1/apps?mysql-pwd="+Filtered+"&page=2" {
		t.Errorf("event url = %v", got)
	}
	if got := data["url"]; got != "/api/v1/apps?mysql-pwd=abc&page=2" {
		t.Errorf("the trail's breadcrumb was written: %v", got)
	}
}
