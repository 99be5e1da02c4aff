package sentrytest

import (
	"bytes"
	"errors"
	"testing"
)

// item is what a framing case expects of one parsed item.
type item struct {
	typ     string
	payload string
}

func TestParseEnvelopeFraming(t *testing.T) {
	t.Parallel()
	const id = `{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}`
	tests := []struct {
		name  string
		raw   string
		items []item
		err   error
	}{
		{name: "header only", raw: `{}`},
		{name: "header only with newline", raw: "{}\n"},
		{name: "header with event id", raw: id + "\n"},
		{name: "length given", raw: id + "\n" + `{"type":"event","length":15}` + "\n" + `{"message":"a"}` + "\n",
			items: []item{{"event", `{"message":"a"}`}}},
		{name: "length given, no trailing newline", raw: id + "\n" + `{"type":"event","length":15}` + "\n" + `{"message":"a"}`,
			items: []item{{"event", `{"message":"a"}`}}},
		{name: "implicit length to newline", raw: "{}\n" + `{"type":"event"}` + "\n" + `{"message":"a"}` + "\n",
			items: []item{{"event", `{"message":"a"}`}}},
		{name: "implicit length to EOF", raw: "{}\n" + `{"type":"session"}` + "\n" + `{"sid":"x"}`,
			items: []item{{"session", `{"sid":"x"}`}}},
		{name: "binary payload with newlines kept byte for byte",
			raw:   "{}\n" + `{"type":"replay_recording","length":9}` + "\n" + "{}\n\x1f\x8b\n\x00\xff\r" + "\n",
			items: []item{{"replay_recording", "{}\n\x1f\x8b\n\x00\xff\r"}}},
		{name: "empty item with length 0 and newline", raw: "{}\n" + `{"type":"attachment","length":0}` + "\n\n",
			items: []item{{"attachment", ""}}},
		{name: "empty item with length 0 at EOF", raw: "{}\n" + `{"type":"attachment","length":0}`,
			items: []item{{"attachment", ""}}},
		{name: "empty implicit item", raw: "{}\n" + `{"type":"event"}` + "\n\n",
			items: []item{{"event", ""}}},
		{name: "item header at EOF is an empty item", raw: "{}\n" + `{"type":"event"}`,
			items: []item{{"event", ""}}},
		{name: "length null counts as absent", raw: "{}\n" + `{"type":"event","length":null}` + "\nab\n",
			items: []item{{"event", "ab"}}},
		{name: "unknown type kept with its payload", raw: "{}\n" + `{"type":"future_thing","x":1}` + "\nabc\n",
			items: []item{{"future_thing", "abc"}}},
		{name: "carriage return belongs to an implicit payload", raw: "{}\n" + `{"type":"event"}` + "\n{}\r\n",
			items: []item{{"event", "{}\r"}}},
		{name: "whitespace before an item header is skipped, as by Relay's serde stream",
			raw: "{}\n\n " + `{"type":"event"}` + "\n{}", items: []item{{"event", "{}"}}},
		{name: "several items of mixed framing",
			raw: id + "\n" +
				`{"type":"event","length":2}` + "\n{}\n" +
				`{"type":"attachment","length":3,"filename":"a.bin"}` + "\n\n\n\n\n" +
				`{"type":"client_report"}` + "\n" + `{"discarded_events":[]}`,
			items: []item{{"event", "{}"}, {"attachment", "\n\n\n"}, {"client_report", `{"discarded_events":[]}`}}},

		{name: "empty body", raw: "", err: ErrMissingHeader},
		{name: "whitespace only", raw: " \n", err: ErrMissingHeader},
		{name: "header not an object", raw: "[]\n", err: ErrInvalidHeader},
		{name: "header bad JSON", raw: `{"event_id":` + "\n", err: ErrInvalidHeader},
		{name: "header not UTF-8", raw: "{\"a\":\"\xff\"}\n", err: ErrInvalidHeader},
		{name: "header followed by trailing data", raw: "{} x\n", err: ErrMissingNewline},
		{name: "item without type", raw: "{}\n" + `{"length":0}` + "\n", err: ErrInvalidItemHeader},
		{name: "item type not a string", raw: "{}\n" + `{"type":1}` + "\n", err: ErrInvalidItemHeader},
		{name: "item header bad JSON", raw: "{}\n" + `{"type":` + "\n", err: ErrInvalidItemHeader},
		{name: "item header not an object", raw: "{}\n" + `"event"` + "\n", err: ErrInvalidItemHeader},
		{name: "item header followed by trailing data", raw: "{}\n" + `{"type":"event"} {}`, err: ErrMissingNewline},
		{name: "length beyond end", raw: "{}\n" + `{"type":"event","length":10}` + "\n{}", err: ErrUnexpectedEOF},
		{name: "length negative", raw: "{}\n" + `{"type":"event","length":-1}` + "\n", err: ErrInvalidItemHeader},
		{name: "length fractional", raw: "{}\n" + `{"type":"event","length":1.5}` + "\n", err: ErrInvalidItemHeader},
		{name: "length a string", raw: "{}\n" + `{"type":"event","length":"2"}` + "\n{}", err: ErrInvalidItemHeader},
		{name: "trailing data after a length-prefixed payload", raw: "{}\n" + `{"type":"event","length":2}` + "\n{}x", err: ErrMissingNewline},
		{name: "whitespace after the final newline", raw: "{}\n" + `{"type":"event"}` + "\n{}\n\n", err: ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, err := ParseEnvelope([]byte(tc.raw))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseEnvelope(%q) error = %v, want %v", tc.raw, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEnvelope(%q): %v", tc.raw, err)
			}
			if env.Header == nil {
				t.Errorf("Header is nil, want a map")
			}
			if len(env.Items) != len(tc.items) {
				t.Fatalf("got %d items %+v, want %d", len(env.Items), env.Items, len(tc.items))
			}
			for i, want := range tc.items {
				got := env.Items[i]
				if got.Type != want.typ || string(got.Payload) != want.payload {
					t.Errorf("item %d = (%q, %q), want (%q, %q)", i, got.Type, got.Payload, want.typ, want.payload)
				}
				if got.Header["type"] != want.typ {
					t.Errorf("item %d header = %v, want type %q", i, got.Header, want.typ)
				}
			}
		})
	}
}

func TestParseEnvelopeKeepsHeaders(t *testing.T) {
	t.Parallel()
	raw := []byte(`{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"http://k@h/1","sdk":{"name":"x"},"unknown":[1]}` + "\n" +
		`{"type":"attachment","length":1,"filename":"f","attachment_type":"event.attachment"}` + "\nz\n")
	env, err := ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	if env.EventID() != "9ec79c33ec9942ab8353589fcb2e04dc" {
		t.Errorf("EventID() = %q", env.EventID())
	}
	if _, ok := env.Header["unknown"]; !ok {
		t.Errorf("unknown envelope header key lost: %v", env.Header)
	}
	if sdk, _ := env.Header["sdk"].(map[string]any); sdk["name"] != "x" {
		t.Errorf("sdk header = %v", env.Header["sdk"])
	}
	h := env.Items[0].Header
	if h["filename"] != "f" || h["attachment_type"] != "event.attachment" || h["length"] != float64(1) {
		t.Errorf("item header = %v", h)
	}
	if !bytes.Equal(env.Raw, raw) {
		t.Errorf("Raw differs from the input")
	}
}

func TestItemJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		wantNil bool
	}{
		{"object", `{"message":"hi"}`, false},
		{"binary", "\x1f\x8b\x00", true},
		{"array", `[1]`, true},
		{"empty", ``, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Item{Payload: []byte(tc.payload)}.JSON()
			if (got == nil) != tc.wantNil {
				t.Errorf("JSON() = %v, want nil: %v", got, tc.wantNil)
			}
		})
	}
}

// FuzzParseEnvelope checks that the parser never panics and that every item
// it returns lies inside the input.
func FuzzParseEnvelope(f *testing.F) {
	for _, seed := range []string{
		"{}", "{}\n", "{}\n{\"type\":\"event\"}\n{}\n",
		"{}\n{\"type\":\"attachment\",\"length\":3}\n\n\n\n",
		"{}\n{\"type\":\"event\",\"length\":99}\n{}", "[]", "{} x",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		env, err := ParseEnvelope(raw)
		if err != nil {
			return
		}
		total := 0
		for _, it := range env.Items {
			total += len(it.Payload)
			if it.Type == "" && it.Header["type"] != "" {
				t.Fatalf("item type %q disagrees with header %v", it.Type, it.Header)
			}
		}
		if total > len(raw) {
			t.Fatalf("payloads hold %d bytes, input only %d", total, len(raw))
		}
	})
}
