package tunnel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Relay's names for a malformed envelope (relay-server/src/envelope/mod.rs,
// EnvelopeError). The first cause of every ParseError is one of them, so the
// 400 body reads like Relay's own ({"detail":..., "causes":[...]}, tunnel.md
// §C2).
const (
	causeEOF               = "unexpected end of file"
	causeMissingHeader     = "missing envelope header"
	causeMissingNewline    = "missing newline after header or payload"
	causeInvalidHeader     = "invalid envelope header"
	causeInvalidItemHeader = "invalid item header"
)

// maxItemLength is the largest "length" Relay accepts: ItemHeaders.length is
// an Option<u32> (relay-server/src/envelope/item.rs), so anything larger is
// an invalid item header there, not a short body.
const maxItemLength = 1<<32 - 1

// Envelope is a parsed envelope that remembers its exact framing, so Bytes
// returns the input byte for byte until something is changed.
//
// Parse keeps the slice it was given: payloads are sub-slices of it and
// Bytes may return it. Do not modify it afterwards.
type Envelope struct {
	// Header is the decoded envelope header (the first line); never nil
	// (an empty map for "{}"). Numbers are json.Number, so an unchanged
	// value is re-encoded with exactly the digits it came with.
	Header map[string]any
	// Items are the items in the order they were sent.
	Items []*Item

	raw       []byte         // the whole input
	rawHeader []byte         // the input up to the end of the header object (leading whitespace included)
	orig      map[string]any // a deep copy of Header as parsed
	headerNL  bool           // a "\n" followed the header
	headerSet bool           // SetHeader was called
	parsed    []*Item        // Items as parsed, to notice items added, removed or reordered
}

// Item is one envelope item.
type Item struct {
	// Header is the decoded item header, unknown keys included; numbers are
	// json.Number.
	Header map[string]any
	// Type is Header["type"]; a re-encoded item is written with Type.
	Type string
	// Payload is the raw payload (binary-safe). For an item without
	// "length" it is the bytes up to the next "\n" or the end of the body;
	// the "\n" that ends an item is never part of it.
	Payload []byte

	raw        []byte         // the item as received: leading whitespace, header, "\n", payload, "\n"
	orig       map[string]any // a deep copy of Header as parsed
	rawType    string         // Type as parsed
	rawPayload []byte         // Payload as parsed, to notice a replaced slice
	hasLength  bool           // the header had an explicit (non-null) length
	headerNL   bool           // a "\n" followed the header
	term       bool           // a "\n" followed the payload
	changed    bool           // SetPayload or SetHeader was called
}

// ParseError lists why an envelope is invalid, for a 400 body
// {"detail": "invalid envelope", "causes": [...]}. The first cause is
// Relay's name for the problem, the second says where and what.
type ParseError struct {
	Causes []string
}

// Error implements error.
func (e *ParseError) Error() string {
	return "invalid envelope: " + strings.Join(e.Causes, ": ")
}

func parseErrorf(cause, format string, args ...any) *ParseError {
	return &ParseError{Causes: []string{cause, fmt.Sprintf(format, args...)}}
}

// Parse reads an envelope with Relay's framing rules (tunnel.md §A1;
// Envelope::parse_bytes and Item::parse in relay-server/src/envelope):
//
//   - The envelope header is a JSON object followed by "\n" or the end of
//     the body. JSON whitespace before it is skipped, as serde_json's
//     stream deserializer does; any other byte after it is an error.
//   - Each item header is a JSON object with a string "type" and an
//     optional "length" (a non-negative integer below 2^32, or null for
//     none), followed by "\n" or the end of the body.
//   - With a length, exactly that many bytes follow, then "\n" or the end
//     of the body; anything else is "missing newline", too few bytes are
//     "unexpected end of file".
//   - Without a length, the payload runs to the next "\n" or the end.
//   - Empty items, header-only envelopes, unknown item types and unknown
//     header keys are valid; whitespace alone after the last item is not
//     (Relay finds no item header there: unexpected end of file).
//
// Two things are refused that encoding/json alone would let through, so
// that this parser never reads a header differently from Relay:
//
//   - A repeated key in a header object. encoding/json keeps the last
//     value, while serde rejects a repeated field or reads another one.
//     Rather than guess which "type" or "dsn" Relay would see, the
//     envelope is refused; the spec already rejects a repeated sent_at
//     (tunnel.md §A2).
//   - Header bytes that are not UTF-8. serde_json rejects them, where Go
//     would silently put U+FFFD in their place.
//
// Errors are *ParseError.
func Parse(b []byte) (*Envelope, error) {
	h, end, perr := parseObject(b, 0)
	if perr != nil {
		if perr.eof {
			if len(b) == 0 {
				return nil, parseErrorf(causeMissingHeader, "the body is empty")
			}
			return nil, parseErrorf(causeMissingHeader, "the body holds only whitespace")
		}
		return nil, parseErrorf(causeInvalidHeader, "envelope header: %s", perr.msg)
	}
	if end < len(b) && b[end] != '\n' {
		return nil, parseErrorf(causeMissingNewline,
			"envelope header: byte %s at offset %d after the JSON object, want \"\\n\" or the end of the body", quoteByte(b[end]), end)
	}
	e := &Envelope{
		Header:    h,
		raw:       b,
		rawHeader: b[:end],
		orig:      cloneObject(h),
		headerNL:  end < len(b),
	}
	for off := end + 1; off < len(b); {
		it, next, err := parseItem(b, off, len(e.Items))
		if err != nil {
			return nil, err
		}
		e.Items = append(e.Items, it)
		off = next
	}
	e.parsed = slices.Clone(e.Items)
	return e, nil
}

// parseItem reads the item that starts at b[off]; the item is the index
// used in error messages. It returns the offset after the item's final
// "\n" (len(b)+1 when the body ended instead, like Relay's payload_end+1).
func parseItem(b []byte, off, item int) (*Item, int, error) {
	where := func() string { return fmt.Sprintf("item %d at byte %d", item, off) }
	h, end, perr := parseObject(b, off)
	if perr != nil {
		if perr.eof {
			return nil, 0, parseErrorf(causeEOF, "%s: only whitespace after the last item", where())
		}
		return nil, 0, parseErrorf(causeInvalidItemHeader, "%s: %s", where(), perr.msg)
	}
	if end < len(b) && b[end] != '\n' {
		return nil, 0, parseErrorf(causeMissingNewline,
			"%s: byte %s at offset %d after the item header, want \"\\n\" or the end of the body", where(), quoteByte(b[end]), end)
	}
	typ, ok := h["type"].(string)
	if !ok {
		if _, present := h["type"]; !present {
			return nil, 0, parseErrorf(causeInvalidItemHeader, "%s: no \"type\"", where())
		}
		return nil, 0, parseErrorf(causeInvalidItemHeader, "%s: \"type\" is %s, want a string", where(), jsonKind(h["type"]))
	}
	length, hasLength, msg := itemLength(h)
	if msg != "" {
		return nil, 0, parseErrorf(causeInvalidItemHeader, "%s (%s): %s", where(), shortType(typ), msg)
	}

	// The last header needs no "\n", so the payload may start past the
	// end (Relay: payload_start = min(headers_end + 1, len)).
	payloadStart := min(end+1, len(b))
	var payloadEnd int
	if hasLength {
		if length > uint64(len(b)-payloadStart) {
			return nil, 0, parseErrorf(causeEOF, "%s (%s): length %d but only %d bytes follow the header",
				where(), shortType(typ), length, len(b)-payloadStart)
		}
		payloadEnd = payloadStart + int(length)
		if payloadEnd < len(b) && b[payloadEnd] != '\n' {
			return nil, 0, parseErrorf(causeMissingNewline,
				"%s (%s): byte %s at offset %d after its %d-byte payload, want \"\\n\" or the end of the body",
				where(), shortType(typ), quoteByte(b[payloadEnd]), payloadEnd, length)
		}
	} else if i := bytes.IndexByte(b[payloadStart:], '\n'); i >= 0 {
		payloadEnd = payloadStart + i
	} else {
		payloadEnd = len(b)
	}
	next := payloadEnd + 1
	it := &Item{
		Header:    h,
		Type:      typ,
		Payload:   b[payloadStart:payloadEnd:payloadEnd],
		raw:       b[off:min(next, len(b))],
		orig:      cloneObject(h),
		rawType:   typ,
		hasLength: hasLength,
		headerNL:  end < len(b),
		term:      payloadEnd < len(b),
	}
	it.rawPayload = it.Payload
	return it, next, nil
}

// itemLength reads "length" from an item header: absent or null means none
// (serde reads null into Option<u32> as None), otherwise it must be an
// integer in 0..2^32-1 written without fraction or exponent, as serde's u32
// requires. The message is empty when the length is fine.
func itemLength(h map[string]any) (n uint64, ok bool, msg string) {
	v, present := h["length"]
	if !present || v == nil {
		return 0, false, ""
	}
	num, isNum := v.(json.Number)
	if !isNum {
		return 0, false, fmt.Sprintf("\"length\" is %s, want a non-negative integer", jsonKind(v))
	}
	s := num.String()
	if strings.HasPrefix(s, "-") {
		return 0, false, fmt.Sprintf("\"length\" is negative (%s)", shorten(s, 24))
	}
	if strings.ContainsAny(s, ".eE") {
		return 0, false, fmt.Sprintf("\"length\" is not an integer (%s)", shorten(s, 24))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxItemLength {
		return 0, false, fmt.Sprintf("\"length\" %s is out of range (at most %d)", shorten(s, 24), uint64(maxItemLength))
	}
	return n, true, ""
}

// objectError is why parseObject found no object.
type objectError struct {
	eof bool // nothing but JSON whitespace up to the end of the body
	msg string
}

// parseObject reads the JSON object at b[off:], after JSON whitespace, and
// returns it with the offset of the byte after it.
//
// A small scanner finds the object's end (brackets outside strings), so the
// decoder sees exactly the header and never the payload behind it; the
// same pass counts the top-level members, which reveals duplicate keys once
// the object is decoded into a map.
func parseObject(b []byte, off int) (map[string]any, int, *objectError) {
	start := off
	for start < len(b) && isJSONSpace(b[start]) {
		start++
	}
	if start == len(b) {
		return nil, 0, &objectError{eof: true}
	}
	if b[start] != '{' {
		return nil, 0, &objectError{msg: fmt.Sprintf("%s at byte %d, want a JSON object", describeStart(b[start]), start)}
	}
	end, members := scanObject(b, start)
	if end < 0 {
		return nil, 0, &objectError{msg: fmt.Sprintf("the JSON object at byte %d is not closed before the end of the body", start)}
	}
	obj := b[start:end]
	if !utf8.Valid(obj) {
		return nil, 0, &objectError{msg: fmt.Sprintf("the JSON object at byte %d is not valid UTF-8", start)}
	}
	m, err := decodeHeaderObject(obj)
	if err != nil {
		return nil, 0, &objectError{msg: fmt.Sprintf("the JSON object at byte %d: %v", start, err)}
	}
	if len(m) != members {
		return nil, 0, &objectError{msg: fmt.Sprintf("the JSON object at byte %d repeats a key", start)}
	}
	return m, end, nil
}

// scanObject returns the offset after the object whose "{" is at b[start]
// and the number of its top-level members (one ":" each at depth 1), or -1
// if the body ends first. It does not validate; the decoder does.
func scanObject(b []byte, start int) (end, members int) {
	depth := 0
	for i := start; i < len(b); i++ {
		switch b[i] {
		case '"':
			// Skip the string, escapes included.
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1, members
			}
		case ':':
			if depth == 1 {
				members++
			}
		}
	}
	return -1, 0
}

// decodeHeaderObject decodes one JSON object with numbers kept as json.Number.
func decodeHeaderObject(obj []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func describeStart(c byte) string {
	switch {
	case c == '[':
		return "a JSON array"
	case c == '"':
		return "a JSON string"
	case c == '-' || c >= '0' && c <= '9':
		return "a JSON number"
	case c == 't' || c == 'f':
		return "a JSON boolean or invalid JSON"
	case c == 'n':
		return "null or invalid JSON"
	default:
		return "byte " + quoteByte(c)
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// quoteByte shows a byte in an error message without echoing control
// characters or invalid UTF-8 back to the client.
func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("0x%02x", c)
}

// shortType quotes an item type for an error message, bounded so a huge
// "type" cannot fill the 400 body.
func shortType(t string) string { return strconv.Quote(shorten(t, 40)) }

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// SetHeader replaces the envelope header; Bytes re-encodes it (keys in
// encoding/json's sorted order, HTML characters unescaped). A nil map is
// written as {}.
func (e *Envelope) SetHeader(h map[string]any) {
	if h == nil {
		h = map[string]any{}
	}
	e.Header = h
	e.headerSet = true
}

// SetPayload replaces an item's payload and marks it changed: its header
// gets "length" = len(p) (as a json.Number) and Bytes re-encodes it.
func (it *Item) SetPayload(p []byte) {
	if it.Header == nil {
		it.Header = map[string]any{}
	}
	it.Header["length"] = json.Number(strconv.Itoa(len(p)))
	it.Payload = p
	it.changed = true
}

// SetHeader replaces an item's header and marks it changed; Type follows a
// string h["type"]. Bytes writes "length" from the payload whatever h says.
func (it *Item) SetHeader(h map[string]any) {
	if h == nil {
		h = map[string]any{}
	}
	if t, ok := h["type"].(string); ok {
		it.Type = t
	}
	it.Header = h
	it.changed = true
}

// Bytes serializes the envelope. Unchanged parts are written exactly as
// received (while nothing changed, that is the slice given to Parse
// itself); a changed header line or item is re-encoded, and a re-encoded
// item always carries an explicit "length".
//
// "Changed" covers SetHeader and SetPayload, edits made in place to a
// Header map, a new Type, a replaced Payload slice, and items added,
// removed or reordered: Bytes compares with what was parsed, so a header
// key deleted without SetHeader is still gone from the output.
//
// Bytes panics if a changed header holds a value encoding/json cannot
// encode (a channel, a NaN); MarshalBinary returns that error instead.
func (e *Envelope) Bytes() []byte {
	b, err := e.MarshalBinary()
	if err != nil {
		panic("tunnel: " + err.Error())
	}
	return b
}

// MarshalBinary is Bytes with the encoding error returned instead of a
// panic; it implements encoding.BinaryMarshaler.
func (e *Envelope) MarshalBinary() ([]byte, error) {
	headerSame := !e.headerSet && e.rawHeader != nil && equalJSON(e.Header, e.orig)
	itemsSame := slices.Equal(e.Items, e.parsed)
	pristine := make([]bool, len(e.Items))
	allPristine := true
	for i, it := range e.Items {
		pristine[i] = it != nil && it.pristine()
		allPristine = allPristine && pristine[i]
	}
	if headerSame && itemsSame && allPristine && e.raw != nil {
		return e.raw, nil
	}

	buf := make([]byte, 0, len(e.raw)+256)
	if headerSame {
		buf = append(buf, e.rawHeader...)
	} else {
		var err error
		if buf, err = appendJSON(buf, e.Header, true); err != nil {
			return nil, fmt.Errorf("encode envelope header: %w", err)
		}
	}
	if len(e.Items) > 0 || e.headerNL {
		buf = append(buf, '\n')
	}
	for i, it := range e.Items {
		if it == nil {
			continue
		}
		last := i == len(e.Items)-1
		if pristine[i] {
			buf = append(buf, it.raw...)
			if !last {
				// This was the last item of the body, without its
				// final newlines; another item follows now.
				if !it.headerNL {
					buf = append(buf, '\n')
				}
				if !it.term {
					buf = append(buf, '\n')
				}
			}
			continue
		}
		var err error
		if buf, err = it.appendEncoded(buf); err != nil {
			return nil, fmt.Errorf("encode item %d (%s) header: %w", i, shortType(it.Type), err)
		}
		if !last || it.term {
			buf = append(buf, '\n')
		}
	}
	return buf, nil
}

// pristine reports whether the item can be written exactly as received.
func (it *Item) pristine() bool {
	if it.raw == nil || it.changed || it.Type != it.rawType || len(it.Payload) != len(it.rawPayload) {
		return false
	}
	if len(it.Payload) > 0 && &it.Payload[0] != &it.rawPayload[0] {
		return false
	}
	// The payload shares memory with the body, so an edit in place keeps
	// its length; without an explicit length it must not gain a newline.
	if !it.hasLength && bytes.IndexByte(it.Payload, '\n') >= 0 {
		return false
	}
	return equalJSON(it.Header, it.orig)
}

// appendEncoded writes the item's header ("type" and "length" first, then
// the other keys sorted), "\n" and the payload.
func (it *Item) appendEncoded(buf []byte) ([]byte, error) {
	typ := it.Type
	if s, ok := it.Header["type"].(string); ok && typ == "" {
		typ = s
	}
	buf = append(buf, `{"type":`...)
	buf, err := appendJSON(buf, typ, false)
	if err != nil {
		return nil, err
	}
	buf = append(buf, `,"length":`...)
	buf = strconv.AppendInt(buf, int64(len(it.Payload)), 10)
	keys := make([]string, 0, len(it.Header))
	for k := range it.Header {
		if k != "type" && k != "length" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		buf = append(buf, ',')
		if buf, err = appendJSON(buf, k, false); err != nil {
			return nil, err
		}
		buf = append(buf, ':')
		if buf, err = appendJSON(buf, it.Header[k], false); err != nil {
			return nil, fmt.Errorf("key %q: %w", shorten(k, 40), err)
		}
	}
	buf = append(buf, '}', '\n')
	return append(buf, it.Payload...), nil
}

// appendJSON appends v as compact JSON without HTML escaping (headers are
// not HTML, and "<" stays readable); a nil object map becomes {}.
func appendJSON(buf []byte, v any, object bool) ([]byte, error) {
	if m, ok := v.(map[string]any); object && ok && m == nil {
		return append(buf, '{', '}'), nil
	}
	var w bytes.Buffer
	enc := json.NewEncoder(&w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(buf, bytes.TrimSuffix(w.Bytes(), []byte{'\n'})...), nil
}

// cloneObject deep-copies a decoded JSON object; strings, numbers,
// booleans and nil are immutable and shared.
func cloneObject(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = cloneJSON(v)
	}
	return c
}

func cloneJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneObject(v)
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneJSON(e)
		}
		return c
	default:
		return v
	}
}

// equalJSON reports whether a (a header as the caller left it) equals orig
// (what was decoded). orig holds only decoded JSON types, so any other
// type in a is a change.
func equalJSON(a, orig any) bool {
	switch o := orig.(type) {
	case map[string]any:
		m, ok := a.(map[string]any)
		if !ok || m == nil || len(m) != len(o) {
			return false
		}
		for k, ov := range o {
			v, ok := m[k]
			if !ok || !equalJSON(v, ov) {
				return false
			}
		}
		return true
	case []any:
		s, ok := a.([]any)
		if !ok || s == nil || len(s) != len(o) {
			return false
		}
		for i := range o {
			if !equalJSON(s[i], o[i]) {
				return false
			}
		}
		return true
	case string:
		v, ok := a.(string)
		return ok && v == o
	case json.Number:
		v, ok := a.(json.Number)
		return ok && v == o
	case bool:
		v, ok := a.(bool)
		return ok && v == o
	case nil:
		return a == nil
	default:
		return false
	}
}

// Category is the Sentry data category of an item type, the name
// X-Sentry-Rate-Limits uses for it (tunnel.md §A3, §C3). It follows what
// Relay counts items as (relay-server/src/envelope/item.rs
// Item::quantities, relay-base-schema DataCategory names) where that
// differs from the browser SDK's own table (DATA_CATEGORY_OVERRIDES in
// packages/core/src/utils/envelope.ts): Relay is the one that enforces.
//
// Types Relay counts in no category (unknown ones included) are "default".
func Category(itemType string) string {
	switch itemType {
	case "event":
		return "error"
	case "transaction":
		return "transaction"
	case "session", "sessions":
		return "session"
	case "attachment":
		return "attachment"
	case "replay_event", "replay_recording", "replay_video":
		return "replay"
	case "client_report":
		// Never rate limited (tunnel.md §C3); Relay counts no quantity.
		return "internal"
	case "profile":
		return "profile"
	case "profile_chunk":
		// Relay splits chunks into profile_chunk and profile_chunk_ui by
		// platform (ProfileType::from_platform); the SDK table says
		// "profile". Item.Category reads the platform.
		return "profile_chunk"
	case "profile_chunk_ui":
		// An alias of profile_chunk in Relay's ItemType::from_str.
		return "profile_chunk_ui"
	case "check_in":
		return "monitor"
	case "log":
		// Relay also counts log_byte; log_item is the per-log category.
		return "log_item"
	case "span":
		return "span"
	case "trace_metric":
		// The SDK table says "metric"; Relay's category is trace_metric.
		return "trace_metric"
	case "feedback":
		// DataCategory::UserReportV2, named "feedback".
		return "feedback"
	case "user_report":
		// Relay counts legacy user reports as UserReportV2 ("feedback");
		// the SDK table says "default".
		return "feedback"
	case "security", "raw_security":
		return "security"
	case "statsd", "metric_buckets":
		return "metric_bucket"
	default:
		return "default"
	}
}

// Category is the item's data category: Category(it.Type), except that a
// profile chunk from a UI platform is "profile_chunk_ui", as Relay decides
// from the item header's "platform" (relay-profiling ProfileType::
// from_platform: cocoa, android and javascript are UI). Browser chunks are
// "javascript".
func (it *Item) Category() string {
	if it.Type == "profile_chunk" {
		switch p, _ := it.Header["platform"].(string); p {
		case "cocoa", "android", "javascript":
			return "profile_chunk_ui"
		}
	}
	return Category(it.Type)
}
