package enrich

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ScrubEventMap is ScrubEvent for an event that exists only as decoded JSON:
// a browser SDK's event or transaction passing through the tunnel, which the
// sidecar never turns into a *sentry.Event (that would drop every field
// sentry-go does not know). The rules are ScrubEvent's, applied to the map in
// place:
//
//   - request.data and request.cookies go (request bodies and cookies are
//     never sent);
//   - request.url keeps its path and its query's harmless parameters, the
//     values of sensitive ones become [Filtered] (ScrubQuery), and its path
//     and fragment get ScrubText (OAuth's implicit flow puts access_token in
//     the fragment);
//   - request.query_string, a string or a list of [key, value] pairs as the
//     protocol allows, is scrubbed like a query;
//   - headers and env, as an object or a list of pairs, have every sensitive
//     key's value filtered (Authorization, Cookie, X-Api-Key, ...);
//   - everything else, at any depth (message, exception values, tags, extra,
//     user, contexts, breadcrumbs, spans), goes through ScrubJSON: sensitive
//     keys are filtered and every string gets ScrubText.
//
// Unlike ScrubEvent it scrubs the trace context too: a browser's trace
// context carries span data (URLs), and its ids are hex text that ScrubText
// never changes. Numbers decoded as json.Number are left as they are.
func ScrubEventMap(ev map[string]any) map[string]any {
	if ev == nil {
		return nil
	}
	for k, v := range ev {
		if k == "request" {
			if r, ok := v.(map[string]any); ok {
				scrubRequestMap(r)
				continue
			}
		}
		if SensitiveKey(k) {
			ev[k] = Filtered
			continue
		}
		ev[k] = ScrubJSON(v)
	}
	return ev
}

func scrubRequestMap(r map[string]any) {
	delete(r, "data")
	delete(r, "cookies")
	for k, v := range r {
		switch k {
		case "url":
			if s, ok := v.(string); ok {
				r[k] = scrubURL(s)
				continue
			}
		case "query_string":
			switch q := v.(type) {
			case string:
				r[k] = ScrubQuery(q)
				continue
			case []any:
				scrubPairs(q)
				continue
			}
		case "headers", "env":
			if pairs, ok := v.([]any); ok {
				scrubPairs(pairs)
				continue
			}
		}
		if SensitiveKey(k) {
			r[k] = Filtered
			continue
		}
		r[k] = ScrubJSON(v)
	}
}

// scrubURL scrubs an absolute or relative URL as text: ScrubText on the
// part before the query and on the fragment, ScrubQuery on the query.
func scrubURL(s string) string {
	rest, frag, hasFrag := strings.Cut(s, "#")
	base, query, hasQuery := strings.Cut(rest, "?")
	out := ScrubText(base)
	if hasQuery {
		out += "?" + ScrubQuery(query)
	}
	if hasFrag {
		out += "#" + ScrubText(frag)
	}
	return out
}

// scrubPairs filters, in place, a list of [key, value] pairs (the protocol's
// other form of headers and query_string): the value of a sensitive key
// becomes [Filtered], any other value is scrubbed as JSON.
func scrubPairs(pairs []any) {
	for i, p := range pairs {
		pair, ok := p.([]any)
		if !ok || len(pair) != 2 {
			pairs[i] = ScrubJSON(p)
			continue
		}
		if k, ok := pair[0].(string); ok && SensitiveKey(k) {
			pair[1] = Filtered
			continue
		}
		pair[1] = ScrubJSON(pair[1])
	}
}

// JSONMayNeedScrub reports whether ScrubJSON could change the value encoded
// in raw, a JSON document: it holds a sensitive word (as a key or in text,
// in any case, a dash for an underscore), something that may be a JWT, an
// escape that could spell either (\u of a letter, a digit, _ or -, or of
// anything beyond ASCII, which may lower-case into a letter), or bytes that
// are not UTF-8. It looks at the bytes only, so the tunnel can leave what
// has nothing to hide (a stack trace, mostly) undecoded.
func JSONMayNeedScrub(raw []byte) bool {
	return hasWord(keyWords, raw) || hasWord(textWords, raw) ||
		bytes.Contains(raw, []byte("eyJ")) || escapesWordByte(raw) || !utf8.Valid(raw)
}

// escapesWordByte reports whether raw holds a \u escape of a byte a word or
// a JWT could be made of. Escapes of control characters and of <, > and &,
// which encoders write, are harmless.
func escapesWordByte(raw []byte) bool {
	for rest := raw; ; {
		i := bytes.Index(rest, []byte(`\u`))
		if i < 0 {
			return false
		}
		rest = rest[i+2:]
		if len(rest) < 4 {
			return true // malformed: let the decoder say so
		}
		r, err := strconv.ParseUint(string(rest[:4]), 16, 16)
		if err != nil || r >= utf8.RuneSelf || r == '_' || r == '-' ||
			'0' <= r && r <= '9' || 'a' <= r|0x20 && r|0x20 <= 'z' {
			return true
		}
	}
}
