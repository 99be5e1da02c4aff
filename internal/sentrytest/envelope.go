package sentrytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// The causes Relay names for a malformed envelope (relay-server/src/envelope,
// EnvelopeError); a rejected request carries one of them in "causes".
var (
	// ErrMissingHeader means the body holds no envelope header at all.
	ErrMissingHeader = errors.New("missing envelope header")
	// ErrInvalidHeader means the envelope header is not a JSON object.
	ErrInvalidHeader = errors.New("invalid envelope header")
	// ErrInvalidItemHeader means an item header is not a JSON object with a
	// string "type" and, if present, an integer "length" in 0..2^32-1.
	ErrInvalidItemHeader = errors.New("invalid item header")
	// ErrMissingNewline means a header or a length-prefixed payload is
	// followed by something other than "\n" or the end of the body.
	ErrMissingNewline = errors.New("missing newline after header or payload")
	// ErrUnexpectedEOF means the body ends inside a length-prefixed payload,
	// or only whitespace follows the last item.
	ErrUnexpectedEOF = errors.New("unexpected end of file")
)

// Envelope is one envelope as the double received it.
type Envelope struct {
	// Header is the envelope header (event_id, sent_at, dsn, sdk, trace...).
	Header map[string]any
	// Items are the items in the order they were sent.
	Items []Item
	// Raw is the envelope body after Content-Encoding was undone.
	Raw []byte
	// HTTPHeader is the request's header; nil for ParseEnvelope results.
	HTTPHeader http.Header
	// URL is the request URI (path and query), empty for ParseEnvelope.
	URL string
	// ReceivedAt is when the double read the body.
	ReceivedAt time.Time
}

// Item is one envelope item.
type Item struct {
	// Header is the item header, unknown keys included.
	Header map[string]any
	// Type is Header["type"].
	Type string
	// Payload is the item's bytes, exactly as sent (binary kept as is; the
	// newline that ends the item is not part of it).
	Payload []byte
}

// JSON decodes the payload as a JSON object; it returns nil when the payload
// is not one (binary attachments, replay recordings).
func (it Item) JSON() map[string]any {
	var m map[string]any
	if err := json.Unmarshal(it.Payload, &m); err != nil {
		return nil
	}
	return m
}

// EventID returns the envelope header's event_id, or "".
func (e Envelope) EventID() string {
	id, _ := e.Header["event_id"].(string)
	return id
}

// ParseEnvelope splits raw into its header and items with Relay's framing
// rules (tunnel.md §A1, relay-server/src/envelope/item.rs Item::parse):
//
//   - the first JSON value is the envelope header and must be an object
//     followed by "\n" or EOF;
//   - each item header is a JSON object with a string "type", followed by
//     "\n" or EOF (an item header at EOF is an empty item);
//   - with "length", exactly that many payload bytes follow, then "\n" or
//     EOF; without it the payload runs to the next "\n" or EOF;
//   - unknown item types and empty items are valid, the trailing newline
//     is optional, and nothing but one newline may follow the last item.
//
// Like Relay's serde stream it tolerates whitespace before a header. The
// returned items alias raw.
func ParseEnvelope(raw []byte) (Envelope, error) {
	env := Envelope{Raw: raw}
	header, _, end, err := parseHeader(raw, 0)
	switch {
	case errors.Is(err, io.EOF):
		return env, ErrMissingHeader
	case err != nil:
		return env, fmt.Errorf("%w: %w", ErrInvalidHeader, err)
	}
	env.Header = header
	if err := requireTermination(raw, end); err != nil {
		return env, err
	}
	for offset := end + 1; offset < len(raw); {
		item, next, err := parseItem(raw, offset)
		if err != nil {
			return env, fmt.Errorf("item %d at byte %d: %w", len(env.Items), offset, err)
		}
		env.Items = append(env.Items, item)
		offset = next
	}
	return env, nil
}

// parseItem reads the item that starts at raw[offset:] and returns it with
// the offset just past its terminating newline.
func parseItem(raw []byte, offset int) (Item, int, error) {
	header, msg, end, err := parseHeader(raw, offset)
	switch {
	case errors.Is(err, io.EOF):
		// Only whitespace is left: Relay's stream yields no header here.
		return Item{}, 0, ErrUnexpectedEOF
	case err != nil:
		return Item{}, 0, fmt.Errorf("%w: %w", ErrInvalidItemHeader, err)
	}
	if err := requireTermination(raw, end); err != nil {
		return Item{}, 0, err
	}
	typ, ok := header["type"].(string)
	if !ok {
		return Item{}, 0, fmt.Errorf("%w: missing string \"type\"", ErrInvalidItemHeader)
	}
	length, hasLength, err := itemLength(msg)
	if err != nil {
		return Item{}, 0, err
	}

	start := min(end+1, len(raw))
	var stop int
	if hasLength {
		stop = start + length
		if stop > len(raw) || stop < start {
			return Item{}, 0, fmt.Errorf("%w: length %d, %d bytes left", ErrUnexpectedEOF, length, len(raw)-start)
		}
		if err := requireTermination(raw, stop); err != nil {
			return Item{}, 0, err
		}
	} else {
		stop = len(raw)
		if i := bytes.IndexByte(raw[start:], '\n'); i >= 0 {
			stop = start + i
		}
	}
	item := Item{Header: header, Type: typ, Payload: raw[start:stop:stop]}
	return item, stop + 1, nil
}

// itemLength reads the optional "length" header from the header's JSON text;
// null counts as absent, and anything but an integer in 0..2^32-1 is an
// error, as for Relay's Option<u32>.
func itemLength(msg json.RawMessage) (int, bool, error) {
	var h struct {
		Length json.RawMessage `json:"length"`
	}
	if err := json.Unmarshal(msg, &h); err != nil {
		return 0, false, fmt.Errorf("%w: %w", ErrInvalidItemHeader, err)
	}
	if len(h.Length) == 0 || string(h.Length) == "null" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(string(h.Length), 10, 32)
	if err != nil {
		return 0, false, fmt.Errorf("%w: length %s is not a u32", ErrInvalidItemHeader, h.Length)
	}
	return int(n), true, nil
}

// parseHeader decodes the JSON object starting at raw[offset:] and returns
// it, its JSON text and the offset just past it. io.EOF means only
// whitespace was left.
func parseHeader(raw []byte, offset int) (map[string]any, json.RawMessage, int, error) {
	dec := json.NewDecoder(bytes.NewReader(raw[offset:]))
	var msg json.RawMessage
	if err := dec.Decode(&msg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, 0, io.EOF
		}
		return nil, nil, 0, err
	}
	end := offset + int(dec.InputOffset())
	if !utf8.Valid(msg) {
		return nil, nil, 0, errors.New("header is not UTF-8")
	}
	if msg[0] != '{' {
		return nil, nil, 0, errors.New("header is not a JSON object")
	}
	var header map[string]any
	if err := json.Unmarshal(msg, &header); err != nil {
		return nil, nil, 0, err
	}
	return header, msg, end, nil
}

// requireTermination mirrors Relay's check that a header or payload ends at
// a newline or at the end of the body.
func requireTermination(raw []byte, offset int) error {
	if offset >= len(raw) || raw[offset] == '\n' {
		return nil
	}
	return fmt.Errorf("%w: byte %d is %q", ErrMissingNewline, offset, raw[offset])
}
