package tunnel

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// rewriteEvent returns the JSON object p with its user replaced by user
// (unless nil) and, if scrub, scrubbed by enrich.ScrubEventMap's rules.
// Only the members that may need scrubbing are decoded (each by the rule
// for its key) and encoded again; the others keep their bytes. Decoding and
// encoding the whole of a 10 KiB browser event was most of the tunnel's
// CPU, and most of an event (its stack trace, mostly) has nothing to hide
// (BENCHMARKS.md). FuzzRewriteEvent checks that the result is the whole
// event's ScrubEventMap.
func rewriteEvent(p []byte, user any, scrub bool) ([]byte, error) {
	members, err := objectMembers(p)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(members)+1)
	for k, raw := range members {
		// Bytes that are not UTF-8 are decoded too, which makes them U+FFFD
		// as before: Sentry would refuse them.
		if utf8.Valid(raw) && (!scrub || k != "request" && !enrich.SensitiveKey(k) && !enrich.JSONMayNeedScrub(raw)) {
			out[k] = json.RawMessage(raw)
			continue
		}
		v, err := decodeValue(raw)
		if err != nil {
			return nil, errors.New("payload is not valid JSON")
		}
		if !scrub {
			out[k] = v // decoded for its UTF-8 only
			continue
		}
		member := map[string]any{k: v}
		enrich.ScrubEventMap(member)
		out[k] = member[k]
	}
	if user != nil {
		out["user"] = user
	}
	return encodeMembers(out)
}

// objectMembers splits the JSON object p into its members, values as
// written. A key given twice keeps its last value, as json.Unmarshal does.
func objectMembers(p []byte) (map[string][]byte, error) {
	i := skipSpace(p, 0)
	if !json.Valid(p) || i == len(p) || p[i] != '{' {
		return nil, errors.New("payload is not a JSON object")
	}
	// p is valid JSON from here on, which keeps the scan below simple.
	members := map[string][]byte{}
	for i = skipSpace(p, i+1); p[i] != '}'; {
		end := stringEnd(p, i)
		key, err := decodeKey(p[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(p, skipSpace(p, end)+1) // past the colon
		end = valueEnd(p, i)
		members[key] = p[i:end]
		if i = skipSpace(p, end); p[i] == ',' {
			i = skipSpace(p, i+1)
		}
	}
	return members, nil
}

func decodeKey(quoted []byte) (string, error) {
	if bytes.IndexByte(quoted, '\\') < 0 && utf8.Valid(quoted) {
		return string(quoted[1 : len(quoted)-1]), nil
	}
	var k string
	err := json.Unmarshal(quoted, &k)
	return k, err
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at p[i].
func stringEnd(p []byte, i int) int {
	for i++; p[i] != '"'; i++ {
		if p[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value that starts at p[i].
func valueEnd(p []byte, i int) int {
	switch p[i] {
	case '"':
		return stringEnd(p, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch p[i] {
			case '"':
				i = stringEnd(p, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(p) && p[i] != ',' && p[i] != '}' && p[i] != ']' && p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r' {
		i++
	}
	return i
}

// decodeValue decodes a JSON value keeping numbers as written.
func decodeValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// encodeMembers writes an object of the members, keys sorted as
// json.Marshal sorts them, without HTML escapes (the browser SDK writes
// none); json.RawMessage values go as they are.
func encodeMembers(m map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	put := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1) // Encode's newline
		return nil
	}
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := put(k); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if raw, ok := m[k].(json.RawMessage); ok {
			b.Write(raw)
			continue
		}
		if err := put(m[k]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
