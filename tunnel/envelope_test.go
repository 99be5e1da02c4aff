package tunnel_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sentry-sidecar/sentry-sidecar/tunnel"
)

// docsHeader is the envelope header of the examples in the developer docs
// (develop-docs/sdk/data-model/envelopes.mdx, "Full Examples") and Relay's
// tests (relay-server/src/envelope/mod.rs).
const docsHeader = `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"https://e12d836b15bb49d7bbf99e64295d995b:@sentry.io/42"}`

// replayRecording is a replay_recording payload as the browser SDK builds
// it (prepareRecordingData.ts): a JSON line, "\n", then compressed bytes,
// here with newlines, NULs and bytes >= 0x80 that are not UTF-8.
const replayRecording = "{\"segment_id\":0}\n\x78\x9c\x00\n\xff\xfe\n\n\x80\x81{\"type\":\"x\"}\n\xc3\x28\r\n\x1f\x8b"

type parseCase struct {
	name     string
	in       string
	types    []string // want item types
	payloads []string // want payloads
	header   string   // want Header, as JSON (empty: not checked)
}

// parseCases are valid envelopes: the docs' examples, Relay's framing
// tests, and what the browser SDK sends (tunnel.md §A1, §A4).
func parseCases() []parseCase {
	return []parseCase{
		{
			name:     "docs: two items with length, final newline",
			in:       docsHeader + "\n" + `{"type":"attachment","length":10,"content_type":"text/plain","filename":"hello.txt"}` + "\n\xef\xbb\xbfHello\r\n\n" + `{"type":"event","length":41,"content_type":"application/json","filename":"application.log"}` + "\n" + `{"message":"hello world","level":"error"}` + "\n",
			types:    []string{"attachment", "event"},
			payloads: []string{"\xef\xbb\xbfHello\r\n", `{"message":"hello world","level":"error"}`},
			header:   docsHeader,
		},
		{
			name:     "docs: two items with length, last newline omitted",
			in:       docsHeader + "\n" + `{"type":"attachment","length":10,"content_type":"text/plain","filename":"hello.txt"}` + "\n\xef\xbb\xbfHello\r\n\n" + `{"type":"event","length":41,"content_type":"application/json","filename":"application.log"}` + "\n" + `{"message":"hello world","level":"error"}`,
			types:    []string{"attachment", "event"},
			payloads: []string{"\xef\xbb\xbfHello\r\n", `{"message":"hello world","level":"error"}`},
		},
		{
			name:     "docs: two empty attachments",
			in:       `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}` + "\n" + `{"type":"attachment","length":0}` + "\n\n" + `{"type":"attachment","length":0}` + "\n\n",
			types:    []string{"attachment", "attachment"},
			payloads: []string{"", ""},
			header:   `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}`,
		},
		{
			name:     "docs: two empty attachments, last newline omitted",
			in:       `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}` + "\n" + `{"type":"attachment","length":0}` + "\n\n" + `{"type":"attachment","length":0}` + "\n",
			types:    []string{"attachment", "attachment"},
			payloads: []string{"", ""},
		},
		{
			name:     "relay: empty attachment at EOF without any newline",
			in:       docsHeader + "\n" + `{"type":"attachment","length":0}` + "\n\n" + `{"type":"attachment","length":0}`,
			types:    []string{"attachment", "attachment"},
			payloads: []string{"", ""},
		},
		{
			name:     "docs: implicit length terminated by newline",
			in:       `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}` + "\n" + `{"type":"attachment"}` + "\nhelloworld\n",
			types:    []string{"attachment"},
			payloads: []string{"helloworld"},
		},
		{
			name:     "docs: implicit length terminated by EOF",
			in:       `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}` + "\n" + `{"type":"attachment"}` + "\nhelloworld",
			types:    []string{"attachment"},
			payloads: []string{"helloworld"},
		},
		{
			name:     "docs: empty header, session with implicit length at EOF",
			in:       "{}\n" + `{"type":"session"}` + "\n" + `{"started": "2020-02-07T14:16:00Z","attrs":{"release":"sentry-test@1.0.0"}}`,
			types:    []string{"session"},
			payloads: []string{`{"started": "2020-02-07T14:16:00Z","attrs":{"release":"sentry-test@1.0.0"}}`},
			header:   `{}`,
		},
		{
			name:   "header only, no newline",
			in:     "{}",
			header: `{}`,
		},
		{
			name:   "header only, with newline",
			in:     "{}\n",
			header: `{}`,
		},
		{
			name:   "relay: header only with keys, no newline",
			in:     docsHeader,
			header: docsHeader,
		},
		{
			name:     "relay: item header at EOF without newline is an empty item",
			in:       docsHeader + "\n" + `{"type":"attachment"}`,
			types:    []string{"attachment"},
			payloads: []string{""},
		},
		{
			name:     "item header and newline at EOF is an empty item",
			in:       "{}\n" + `{"type":"attachment"}` + "\n",
			types:    []string{"attachment"},
			payloads: []string{""},
		},
		{
			name:     "implicit length keeps a carriage return before the newline",
			in:       "{}\n" + `{"type":"attachment"}` + "\nhello\r\n",
			types:    []string{"attachment"},
			payloads: []string{"hello\r"},
		},
		{
			name: "browser replay: binary recording with length",
			in: `{"event_id":"b6f08a41e3ab4d1fbc0bbb3bf6fdfbca","sent_at":"2026-07-01T10:00:00.000Z","sdk":{"name":"sentry.javascript.browser","version":"11.0.0"},"dsn":"https://abc@o1.ingest.sentry.io/2"}` + "\n" +
				`{"type":"replay_event"}` + "\n" + `{"type":"replay_event","replay_id":"b6f08a41e3ab4d1fbc0bbb3bf6fdfbca","segment_id":0}` + "\n" +
				fmt.Sprintf(`{"type":"replay_recording","length":%d}`, len(replayRecording)) + "\n" + replayRecording,
			types:    []string{"replay_event", "replay_recording"},
			payloads: []string{`{"type":"replay_event","replay_id":"b6f08a41e3ab4d1fbc0bbb3bf6fdfbca","segment_id":0}`, replayRecording},
		},
		{
			name:     "binary recording with length, then another item",
			in:       "{}\n" + fmt.Sprintf(`{"type":"replay_recording","length":%d}`, len(replayRecording)) + "\n" + replayRecording + "\n" + `{"type":"client_report"}` + "\n" + `{"discarded_events":[]}`,
			types:    []string{"replay_recording", "client_report"},
			payloads: []string{replayRecording, `{"discarded_events":[]}`},
		},
		{
			name:     "relay: unknown item type with implicit length",
			in:       docsHeader + "\n" + `{"type":"invalid_unknown"}` + "\nhelloworld\n",
			types:    []string{"invalid_unknown"},
			payloads: []string{"helloworld"},
		},
		{
			name:     "unknown item type with length and unknown item keys",
			in:       "{}\n" + `{"type":"future_thing","length":3,"future_key":{"a":[1,2.50,1e3]},"content_type":"application/x-future"}` + "\n\x00\n\xff",
			types:    []string{"future_thing"},
			payloads: []string{"\x00\n\xff"},
		},
		{
			name:     "unknown envelope header keys keep their number literals",
			in:       `{"dsn":"https://k@o1.ingest.sentry.io/1","future":{"nested":[1,2.50,1e3,-0,12345678901234567890]},"trace":{"sample_rate":"0.1","sample_rand":0.123456789012345678}}` + "\n" + `{"type":"event"}` + "\n{}",
			types:    []string{"event"},
			payloads: []string{"{}"},
			header:   `{"dsn":"https://k@o1.ingest.sentry.io/1","future":{"nested":[1,2.50,1e3,-0,12345678901234567890]},"trace":{"sample_rate":"0.1","sample_rand":0.123456789012345678}}`,
		},
		{
			name:     "implicit-length item followed by another item",
			in:       "{}\n" + `{"type":"session"}` + "\n" + `{"sid":"a","status":"ok"}` + "\n" + `{"type":"event","length":2}` + "\n{}\n",
			types:    []string{"session", "event"},
			payloads: []string{`{"sid":"a","status":"ok"}`, "{}"},
		},
		{
			name: "browser SDK: several items, no lengths, no final newline",
			in: `{"event_id":"0123456789abcdef0123456789abcdef","sent_at":"2026-07-01T10:00:00.000Z","sdk":{"name":"sentry.javascript.browser","version":"11.0.0"},"dsn":"https://abc@o1.ingest.sentry.io/2","trace":{"trace_id":"771a43a4192642f0b136d5159a501700","public_key":"abc","sample_rate":"1","sampled":"true"}}` + "\n" +
				`{"type":"event"}` + "\n" + `{"exception":{"values":[{"type":"Error","value":"boom <b>&</b>"}]},"platform":"javascript"}` + "\n" +
				`{"type":"attachment","length":5,"filename":"a.txt"}` + "\nhello\n" +
				`{"type":"client_report"}` + "\n" + `{"timestamp":1,"discarded_events":[{"reason":"sample_rate","category":"transaction","quantity":1}]}`,
			types: []string{"event", "attachment", "client_report"},
			payloads: []string{
				`{"exception":{"values":[{"type":"Error","value":"boom <b>&</b>"}]},"platform":"javascript"}`,
				"hello",
				`{"timestamp":1,"discarded_events":[{"reason":"sample_rate","category":"transaction","quantity":1}]}`,
			},
		},
		{
			name:     "null length means implicit",
			in:       "{}\n" + `{"type":"event","length":null}` + "\n{}",
			types:    []string{"event"},
			payloads: []string{"{}"},
		},
		{
			name:     "relay: JSON whitespace before a header is skipped (blank line between items)",
			in:       " \t{}\n" + `{"type":"a","length":1}` + "\nx\n\n\r\n " + `{"type":"b"}` + "\ny",
			types:    []string{"a", "b"},
			payloads: []string{"x", "y"},
		},
		{
			name:     "whitespace inside header objects",
			in:       "{ }\n" + `{ "type" : "event" , "length" : 2 }` + "\n{}",
			types:    []string{"event"},
			payloads: []string{"{}"},
		},
		{
			name:     "braces, quotes and escapes inside header strings",
			in:       `{"m":"}{\"\\","n":"\u007d"}` + "\n" + `{"type":"attachment","filename":"a}b{\"c\\","length":1}` + "\n}",
			types:    []string{"attachment"},
			payloads: []string{"}"},
			header:   `{"m":"}{\"\\","n":"}"}`,
		},
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tc.in)
			e, err := tunnel.Parse(in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := itemTypes(e); !slices.Equal(got, tc.types) {
				t.Errorf("types = %q, want %q", got, tc.types)
			}
			for i, it := range e.Items {
				if it.Type != it.Header["type"] {
					t.Errorf("item %d: Type %q, Header[type] %v", i, it.Type, it.Header["type"])
				}
				if i < len(tc.payloads) && string(it.Payload) != tc.payloads[i] {
					t.Errorf("item %d payload = %q, want %q", i, it.Payload, tc.payloads[i])
				}
			}
			if e.Header == nil {
				t.Error("Header is nil")
			}
			if tc.header != "" {
				if want := mustDecode(t, tc.header); !reflect.DeepEqual(e.Header, want) {
					t.Errorf("Header = %#v, want %#v", e.Header, want)
				}
			}
			if out := e.Bytes(); !bytes.Equal(out, in) {
				t.Errorf("Bytes() differs from the input:\n got %q\nwant %q", out, in)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		cause  string // Relay's name, Causes[0]
		detail string // in Causes[1]
	}{
		{"empty body", "", "missing envelope header", "empty"},
		{"only whitespace", " \n\t", "missing envelope header", "whitespace"},
		{"header not JSON", `{"event_id":}`, "invalid envelope header", "invalid character"},
		{"header not JSON, bare word", "hello\n", "invalid envelope header", "byte 'h'"},
		{"header is an array", "[]\n{\"type\":\"event\"}\n{}", "invalid envelope header", "JSON array"},
		{"header is a string", `"{}"`, "invalid envelope header", "JSON string"},
		{"header is null", "null", "invalid envelope header", "null"},
		{"header never closed", `{"a":"b"`, "invalid envelope header", "not closed"},
		{"header with a raw newline inside a string", "{\"a\":\"b\nc\"}\n", "invalid envelope header", "invalid character"},
		{"header followed by garbage", "{} x\n", "missing newline after header or payload", "after the JSON object"},
		{"header followed by CRLF", "{}\r\n{\"type\":\"event\"}\n{}", "missing newline after header or payload", "0x0d"},
		{"header repeats a key", `{"dsn":"a","dsn":"b"}`, "invalid envelope header", "repeats a key"},
		{"header repeats a key through an escape", `{"sent_at":"a","sent\u005fat":"b"}`, "invalid envelope header", "repeats a key"},
		{"header is not UTF-8", "{\"a\":\"\xff\"}", "invalid envelope header", "UTF-8"},
		{"blank line after the header", "{}\n\n", "unexpected end of file", "only whitespace"},
		{"whitespace after the last item", "{}\n{\"type\":\"a\"}\nx\n\n", "unexpected end of file", "only whitespace"},
		{"item header missing type", "{}\n{\"length\":0}\n", "invalid item header", `no "type"`},
		{"item type is a number", "{}\n{\"type\":1}\n", "invalid item header", "is a number"},
		{"item type is null", "{}\n{\"type\":null}\n", "invalid item header", "is null"},
		{"item type is an object", "{}\n{\"type\":{}}\n", "invalid item header", "is an object"},
		{"length negative", "{}\n{\"type\":\"attachment\",\"length\":-1}\n", "invalid item header", "negative"},
		{"length negative zero", "{}\n{\"type\":\"attachment\",\"length\":-0}\n", "invalid item header", "negative"},
		{"length fractional", "{}\n{\"type\":\"attachment\",\"length\":1.5}\nx", "invalid item header", "not an integer"},
		{"length with exponent", "{}\n{\"type\":\"attachment\",\"length\":1e1}\nxxxxxxxxxx", "invalid item header", "not an integer"},
		{"length as a string", "{}\n{\"type\":\"attachment\",\"length\":\"1\"}\nx", "invalid item header", "is a string"},
		{"length as a boolean", "{}\n{\"type\":\"attachment\",\"length\":true}\nx", "invalid item header", "is a boolean"},
		{"length above u32", "{}\n{\"type\":\"attachment\",\"length\":4294967296}\n", "invalid item header", "out of range"},
		{"length far above u64", "{}\n{\"type\":\"attachment\",\"length\":123456789012345678901234567890}\n", "invalid item header", "out of range"},
		{"length beyond the end", "{}\n{\"type\":\"attachment\",\"length\":100}\nshort", "unexpected end of file", "length 100 but only 5 bytes"},
		{"length at EOF after the header", "{}\n{\"type\":\"attachment\",\"length\":1}", "unexpected end of file", "only 0 bytes"},
		{"garbage instead of newline after a length payload", "{}\n{\"type\":\"attachment\",\"length\":2}\nabX", "missing newline after header or payload", "byte 'X'"},
		{"space instead of newline after a length payload", "{}\n{\"type\":\"attachment\",\"length\":2}\nab \n", "missing newline after header or payload", "byte ' '"},
		{"item header is an array", "{}\n[1]\n", "invalid item header", "JSON array"},
		{"item header is plain text", "{}\nhello\n", "invalid item header", "byte 'h'"},
		{"item header is not JSON", "{}\n{\"type\":\"a\",}\n", "invalid item header", "invalid character"},
		{"item header never closed", "{}\n{\"type\":\"a\"", "invalid item header", "not closed"},
		{"item header followed by garbage", "{}\n{\"type\":\"a\"}x\n", "missing newline after header or payload", "after the item header"},
		{"item header repeats type", "{}\n{\"type\":\"event\",\"type\":\"attachment\"}\n{}", "invalid item header", "repeats a key"},
		{"second item header is bad", "{}\n{\"type\":\"a\",\"length\":1}\nx\n{\"length\":1}\ny", "invalid item header", "item 1 at byte"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := tunnel.Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %d items, want an error", tc.in, len(e.Items))
			}
			var pe *tunnel.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v, want *tunnel.ParseError", err, err)
			}
			if len(pe.Causes) != 2 {
				t.Fatalf("Causes = %q, want Relay's name and a detail", pe.Causes)
			}
			if pe.Causes[0] != tc.cause {
				t.Errorf("Causes[0] = %q, want %q", pe.Causes[0], tc.cause)
			}
			if !strings.Contains(pe.Causes[1], tc.detail) {
				t.Errorf("Causes[1] = %q, want it to contain %q", pe.Causes[1], tc.detail)
			}
			if want := "invalid envelope: " + tc.cause + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Error() = %q, want prefix %q", err.Error(), want)
			}
		})
	}
}

// A ParseError never echoes a long item type back at length.
func TestParseErrorBounded(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 10000)
	_, err := tunnel.Parse([]byte("{}\n{\"type\":\"" + long + "\",\"length\":5}\nab"))
	if err == nil {
		t.Fatal("want an error")
	}
	if len(err.Error()) > 300 {
		t.Errorf("error is %d bytes long: %.100q...", len(err.Error()), err.Error())
	}
}

func TestEnvelopeSetHeader(t *testing.T) {
	t.Parallel()
	in := `{"dsn":"https://placeholder@example.com/1","forwarded_for":"6.6.6.6","sdk":{"name":"sentry.javascript.browser","version":"11.0.0"},"trace":{"public_key":"placeholder","sample_rand":0.123456789012345678}}` + "\n" +
		`{"type":"event"}` + "\n" + `{"message":"<hi>"}` + "\n" +
		fmt.Sprintf(`{"type":"replay_recording","length":%d}`, len(replayRecording)) + "\n" + replayRecording
	tests := []struct {
		name   string
		change func(e *tunnel.Envelope)
	}{
		{"SetHeader with a new map", func(e *tunnel.Envelope) {
			h := map[string]any{}
			for k, v := range e.Header {
				h[k] = v
			}
			h["dsn"] = "https://real@o1.ingest.sentry.io/1"
			delete(h, "forwarded_for")
			e.SetHeader(h)
		}},
		{"edited in place without SetHeader", func(e *tunnel.Envelope) {
			e.Header["dsn"] = "https://real@o1.ingest.sentry.io/1"
			delete(e.Header, "forwarded_for")
		}},
		{"edited in place, then SetHeader", func(e *tunnel.Envelope) {
			e.Header["dsn"] = "https://real@o1.ingest.sentry.io/1"
			delete(e.Header, "forwarded_for")
			e.SetHeader(e.Header)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := mustParse(t, in)
			tc.change(e)
			out := e.Bytes()

			first, rest, _ := bytes.Cut(out, []byte("\n"))
			_, wantRest, _ := strings.Cut(in, "\n")
			if string(rest) != wantRest {
				t.Errorf("items changed:\n got %q\nwant %q", rest, wantRest)
			}
			got := mustDecode(t, string(first))
			want := mustDecode(t, `{"dsn":"https://real@o1.ingest.sentry.io/1","sdk":{"name":"sentry.javascript.browser","version":"11.0.0"},"trace":{"public_key":"placeholder","sample_rand":0.123456789012345678}}`)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("header line = %s, want %v", first, want)
			}
			if !bytes.Contains(first, []byte("0.123456789012345678")) {
				t.Errorf("header line %s lost the number's digits", first)
			}
			e2, err := tunnel.Parse(out)
			if err != nil {
				t.Fatalf("Parse(Bytes()): %v", err)
			}
			if string(e2.Items[1].Payload) != replayRecording {
				t.Errorf("replay payload changed: %q", e2.Items[1].Payload)
			}
		})
	}
}

func TestItemSetPayload(t *testing.T) {
	t.Parallel()
	const (
		session = `{"type":"session"}` + "\n" + `{"sid":"a"}` + "\n"
		attach  = `{"type":"attachment","length":3,"filename":"f"}` + "\nabc\n"
		event   = `{"type":"event","content_type":"application/json"}` + "\n" + `{"user":{"id":"page"}}`
		head    = `{"dsn":"https://k@o1.ingest.sentry.io/1"}` + "\n"
	)
	in := head + session + attach + event
	tests := []struct {
		name        string
		item        int
		payload     string
		wantHeader  string // the re-encoded item header
		wantOthers  string // the body with the changed item replaced by "#"
		wantTrailer string // what follows the changed item
	}{
		{
			name: "item without length in the middle", item: 0, payload: `{"sid":"b","status":"exited"}`,
			wantHeader: `{"type":"session","length":29}`,
			wantOthers: head + "#" + attach + event, wantTrailer: "\n",
		},
		{
			name: "last item without length or final newline", item: 2, payload: `{"user":{"id":"42"}}`,
			wantHeader: `{"type":"event","length":20,"content_type":"application/json"}`,
			wantOthers: head + session + attach + "#", wantTrailer: "",
		},
		{
			name: "payload with newlines and binary", item: 2, payload: "a\nb\x00\xff\n",
			wantHeader: `{"type":"event","length":6,"content_type":"application/json"}`,
			wantOthers: head + session + attach + "#", wantTrailer: "",
		},
		{
			name: "item with length", item: 1, payload: "",
			wantHeader: `{"type":"attachment","length":0,"filename":"f"}`,
			wantOthers: head + session + "#" + event, wantTrailer: "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := mustParse(t, in)
			it := e.Items[tc.item]
			it.SetPayload([]byte(tc.payload))
			if got := it.Header["length"]; got != json.Number(fmt.Sprint(len(tc.payload))) {
				t.Errorf(`Header["length"] = %#v, want json.Number %d`, got, len(tc.payload))
			}
			out := string(e.Bytes())
			changed := tc.wantHeader + "\n" + tc.payload + tc.wantTrailer
			if want := strings.Replace(tc.wantOthers, "#", changed, 1); out != want {
				t.Errorf("Bytes():\n got %q\nwant %q", out, want)
			}
			e2, err := tunnel.Parse([]byte(out))
			if err != nil {
				t.Fatalf("Parse(Bytes()): %v", err)
			}
			if got := string(e2.Items[tc.item].Payload); got != tc.payload {
				t.Errorf("payload after reparse = %q, want %q", got, tc.payload)
			}
		})
	}
}

// Bytes follows the items as they are now: removed, reordered, added, or
// with a payload slice or a type replaced without the setters.
func TestEnvelopeItemsEdited(t *testing.T) {
	t.Parallel()
	const in = "{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"client_report"}`
	tests := []struct {
		name string
		edit func(e *tunnel.Envelope)
		want string
	}{
		{"first removed", func(e *tunnel.Envelope) { e.Items = e.Items[1:] },
			"{}\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"client_report"}`},
		{"last removed", func(e *tunnel.Envelope) { e.Items = e.Items[:2] },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2}` + "\nxy\n"},
		{"all removed", func(e *tunnel.Envelope) { e.Items = nil }, "{}\n"},
		{"reordered: the old last item gets its newlines", func(e *tunnel.Envelope) {
			e.Items[0], e.Items[2] = e.Items[2], e.Items[0]
		}, "{}\n" + `{"type":"client_report"}` + "\n\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"event"}` + "\n{\"a\":1}\n"},
		{"added after an item at EOF", func(e *tunnel.Envelope) {
			e.Items = append(e.Items, &tunnel.Item{Type: "session", Payload: []byte("{\"s\":1}")})
		}, in + "\n\n" + `{"type":"session","length":7}` + "\n{\"s\":1}"},
		{"added with a header of its own", func(e *tunnel.Envelope) {
			e.Items = append(e.Items[:1], &tunnel.Item{Header: map[string]any{"type": "x", "filename": "<f>"}, Payload: []byte("\n")})
		}, "{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"x","length":1,"filename":"<f>"}` + "\n\n"},
		{"payload slice replaced", func(e *tunnel.Envelope) { e.Items[1].Payload = []byte("xyz") },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":3}` + "\nxyz\n" + `{"type":"client_report"}`},
		{"payload edited in place to hold a newline", func(e *tunnel.Envelope) { e.Items[0].Payload[1] = '\n' },
			"{}\n" + `{"type":"event","length":7}` + "\n{\na\":1}\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"client_report"}`},
		{"payload edited in place, same framing", func(e *tunnel.Envelope) { e.Items[1].Payload[0] = 'X' },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2}` + "\nXy\n" + `{"type":"client_report"}`},
		{"type replaced", func(e *tunnel.Envelope) { e.Items[2].Type = "other" },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"other","length":0}` + "\n"},
		{"item header edited in place", func(e *tunnel.Envelope) { e.Items[1].Header["filename"] = "a.txt" },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2,"filename":"a.txt"}` + "\nxy\n" + `{"type":"client_report"}`},
		{"item header given a Go int in place", func(e *tunnel.Envelope) { e.Items[1].Header["n"] = 1 },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2,"n":1}` + "\nxy\n" + `{"type":"client_report"}`},
		{"item length rewritten as the same Go int", func(e *tunnel.Envelope) { e.Items[1].Header["length"] = 2 },
			"{}\n" + `{"type":"event"}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"client_report"}`},
		{"item SetHeader", func(e *tunnel.Envelope) { e.Items[0].SetHeader(map[string]any{"type": "transaction", "length": 999}) },
			"{}\n" + `{"type":"transaction","length":7}` + "\n{\"a\":1}\n" + `{"type":"attachment","length":2}` + "\nxy\n" + `{"type":"client_report"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := mustParse(t, in)
			tc.edit(e)
			out := e.Bytes()
			if string(out) != tc.want {
				t.Errorf("Bytes():\n got %q\nwant %q", out, tc.want)
			}
			if _, err := tunnel.Parse(out); err != nil {
				t.Errorf("Parse(Bytes()): %v", err)
			}
		})
	}
}

// While nothing changed, Bytes is the slice given to Parse: no copy of a
// 10 MiB replay.
func TestEnvelopeBytesUnchangedIsInput(t *testing.T) {
	t.Parallel()
	in := []byte(docsHeader + "\n" + `{"type":"attachment"}` + "\nhelloworld\n")
	e := mustParse(t, string(in))
	// Reading and comparing is no change.
	_ = e.Header["dsn"]
	e.SetHeader(e.Header)
	e2, err := tunnel.Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if out := e2.Bytes(); &out[0] != &in[0] || len(out) != len(in) {
		t.Error("Bytes() of an unchanged envelope is a copy, want the input itself")
	}
	// SetHeader marks the header changed even with equal content.
	if out := e.Bytes(); &out[0] == &in[0] {
		t.Error("Bytes() after SetHeader returned the input")
	}
}

func TestEnvelopeEncodeError(t *testing.T) {
	t.Parallel()
	e := mustParse(t, "{}\n{\"type\":\"event\"}\n{}")
	e.SetHeader(map[string]any{"bad": math.NaN()})
	if _, err := e.MarshalBinary(); err == nil || !strings.Contains(err.Error(), "encode envelope header") {
		t.Errorf("MarshalBinary() error = %v, want an encode error", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Bytes() did not panic on an unencodable header")
		}
	}()
	e.Bytes()
}

func TestEnvelopeSetHeaderNil(t *testing.T) {
	t.Parallel()
	e := mustParse(t, `{"a":1}`+"\n"+`{"type":"event"}`+"\n{}")
	e.SetHeader(nil)
	if e.Header == nil {
		t.Error("Header is nil after SetHeader(nil)")
	}
	if got, want := string(e.Bytes()), "{}\n"+`{"type":"event"}`+"\n{}"; got != want {
		t.Errorf("Bytes() = %q, want %q", got, want)
	}
}

func TestCategory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		itemType string
		want     string
	}{
		{"event", "error"},
		{"transaction", "transaction"},
		{"session", "session"},
		{"sessions", "session"},
		{"attachment", "attachment"},
		{"replay_event", "replay"},
		{"replay_recording", "replay"},
		{"replay_video", "replay"},
		{"client_report", "internal"},
		{"profile", "profile"},
		{"profile_chunk", "profile_chunk"},
		{"profile_chunk_ui", "profile_chunk_ui"},
		{"check_in", "monitor"},
		{"log", "log_item"},
		{"span", "span"},
		{"trace_metric", "trace_metric"},
		{"feedback", "feedback"},
		{"user_report", "feedback"},
		{"security", "security"},
		{"raw_security", "security"},
		{"statsd", "metric_bucket"},
		{"metric_buckets", "metric_bucket"},
		{"future_thing", "default"},
		{"", "default"},
		{"Event", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.itemType, func(t *testing.T) {
			t.Parallel()
			if got := tunnel.Category(tc.itemType); got != tc.want {
				t.Errorf("Category(%q) = %q, want %q", tc.itemType, got, tc.want)
			}
		})
	}
}

func TestItemCategory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header string
		want   string
	}{
		{`{"type":"profile_chunk","platform":"javascript"}`, "profile_chunk_ui"},
		{`{"type":"profile_chunk","platform":"android"}`, "profile_chunk_ui"},
		{`{"type":"profile_chunk","platform":"python"}`, "profile_chunk"},
		{`{"type":"profile_chunk"}`, "profile_chunk"},
		{`{"type":"event","platform":"javascript"}`, "error"},
	}
	for _, tc := range tests {
		t.Run(tc.header, func(t *testing.T) {
			t.Parallel()
			e := mustParse(t, "{}\n"+tc.header+"\n{}")
			if got := e.Items[0].Category(); got != tc.want {
				t.Errorf("Category() = %q, want %q", got, tc.want)
			}
		})
	}
}

// malformedSeeds are inputs near the framing's edges for the fuzzer.
func malformedSeeds() []string {
	return []string{
		"", "{", "{}\n\n", "{}\r\n", "{}\n{\"type\":\"a\",\"length\":1}", "{}\n{\"type\":\"a\",\"length\":1}\nxy",
		"{}\n{\"type\":\"a\",\"length\":0}\n\n\n", "{\"a\":\"\\\"}\"}\n{\"type\":\"b\"}\n\n",
		"{}\n{\"type\":\"a\",\"type\":\"a\"}\n", "{}\n{\"type\":\"a\",\"length\":4294967295}\n",
	}
}

// FuzzParse checks, for any input, that Parse never panics; that an
// accepted envelope comes back byte for byte from Bytes; and that
// re-encoding every header and payload yields an envelope that parses to
// the same items.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add([]byte(tc.in))
	}
	for _, s := range malformedSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := tunnel.Parse(in)
		if err != nil {
			var pe *tunnel.ParseError
			if !errors.As(err, &pe) || len(pe.Causes) == 0 {
				t.Fatalf("error %T %v, want a *ParseError with causes", err, err)
			}
			return
		}
		out := e.Bytes()
		if !bytes.Equal(out, in) {
			t.Fatalf("Bytes() differs:\n got %q\nwant %q", out, in)
		}
		if _, err := tunnel.Parse(out); err != nil {
			t.Fatalf("Parse(Bytes()): %v", err)
		}

		// Re-encode everything: the header, every item header (with a
		// length now), every payload.
		types := itemTypes(e)
		payloads := make([][]byte, len(e.Items))
		headers := make([]map[string]any, len(e.Items))
		for i, it := range e.Items {
			payloads[i] = bytes.Clone(it.Payload)
			headers[i] = it.Header
			it.SetPayload(bytes.Clone(it.Payload))
		}
		wantHeader := e.Header
		e.SetHeader(e.Header)
		re, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary after re-encoding: %v", err)
		}
		e2, err := tunnel.Parse(re)
		if err != nil {
			t.Fatalf("Parse of the re-encoded envelope %q: %v", re, err)
		}
		if !reflect.DeepEqual(e2.Header, wantHeader) {
			t.Fatalf("header after re-encoding = %#v, want %#v", e2.Header, wantHeader)
		}
		if got := itemTypes(e2); !slices.Equal(got, types) {
			t.Fatalf("types after re-encoding = %q, want %q", got, types)
		}
		for i, it := range e2.Items {
			if !bytes.Equal(it.Payload, payloads[i]) {
				t.Fatalf("item %d payload after re-encoding = %q, want %q", i, it.Payload, payloads[i])
			}
			if !reflect.DeepEqual(it.Header, headers[i]) {
				t.Fatalf("item %d header after re-encoding = %#v, want %#v", i, it.Header, headers[i])
			}
		}
	})
}

// BenchmarkParseBytes measures what the tunnel does per envelope: Parse,
// then Bytes, either unchanged or after the DSN rewrite that every
// forwarded envelope gets.
func BenchmarkParseBytes(b *testing.B) {
	cases := []struct {
		name string
		in   []byte
	}{
		{"event-10KiB", benchEventEnvelope(10 << 10)},
		{"replay-1MiB", benchReplayEnvelope(1 << 20)},
	}
	for _, c := range cases {
		for _, rewrite := range []bool{false, true} {
			name := c.name + "/unchanged"
			if rewrite {
				name = c.name + "/dsn-rewritten"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(c.in)))
				for b.Loop() {
					e, err := tunnel.Parse(c.in)
					if err != nil {
						b.Fatal(err)
					}
					if rewrite {
						h := make(map[string]any, len(e.Header))
						for k, v := range e.Header {
							h[k] = v
						}
						h["dsn"] = "https://real0123456789abcdef0123456789ab@o1.ingest.sentry.io/2"
						e.SetHeader(h)
					}
					if out := e.Bytes(); len(out) < len(c.in)-64 {
						b.Fatalf("Bytes() is %d bytes, input %d", len(out), len(c.in))
					}
				}
			})
		}
	}
}

const benchHeader = `{"event_id":"0123456789abcdef0123456789abcdef","sent_at":"2026-07-01T10:00:00.000Z","sdk":{"name":"sentry.javascript.browser","version":"11.0.0"},"dsn":"https://placeholder0123456789abcdef01@sidecar.local/2","trace":{"environment":"production","release":"1.0.0","public_key":"placeholder0123456789abcdef01","trace_id":"771a43a4192642f0b136d5159a501700","sample_rate":"1","sampled":"true","sample_rand":"0.4"}}`

// benchEventEnvelope is a browser error event of about size bytes: one
// event item without length, as the SDK sends it.
func benchEventEnvelope(size int) []byte {
	var crumbs []string
	event := func() string {
		return `{"exception":{"values":[{"type":"TypeError","value":"x is undefined"}]},"platform":"javascript","breadcrumbs":[` + strings.Join(crumbs, ",") + `]}`
	}
	for len(event()) < size {
		crumbs = append(crumbs, fmt.Sprintf(`{"timestamp":1751364000.%03d,"category":"fetch","data":{"method":"GET","url":"/api/v1/apps/%d","status_code":200}}`, len(crumbs)%1000, len(crumbs)))
	}
	return []byte(benchHeader + "\n" + `{"type":"event"}` + "\n" + event())
}

// benchReplayEnvelope is a replay segment: a replay_event and a binary
// replay_recording of size bytes with its length.
func benchReplayEnvelope(size int) []byte {
	rec := make([]byte, size)
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	for i := range rec {
		rec[i] = byte(rng.Uint32())
	}
	copy(rec, "{\"segment_id\":3}\n")
	var b bytes.Buffer
	b.WriteString(benchHeader + "\n")
	b.WriteString(`{"type":"replay_event"}` + "\n" + `{"type":"replay_event","replay_id":"0123456789abcdef0123456789abcdef","segment_id":3,"urls":["https://app.example/"]}` + "\n")
	fmt.Fprintf(&b, `{"type":"replay_recording","length":%d}`+"\n", len(rec))
	b.Write(rec)
	return b.Bytes()
}

func mustParse(tb testing.TB, s string) *tunnel.Envelope {
	tb.Helper()
	e, err := tunnel.Parse([]byte(s))
	if err != nil {
		tb.Fatalf("Parse(%.80q): %v", s, err)
	}
	return e
}

// mustDecode decodes a JSON object the way Parse does: numbers as
// json.Number.
func mustDecode(tb testing.TB, s string) map[string]any {
	tb.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("decode %q: %v", s, err)
	}
	return m
}

func itemTypes(e *tunnel.Envelope) []string {
	types := make([]string, len(e.Items))
	for i, it := range e.Items {
		types[i] = it.Type
	}
	return types
}
