package enrich

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/getsentry/sentry-go"
)

// Filtered replaces every value that may be a secret, as in Sentry's own
// data scrubbing.
const Filtered = "[Filtered]"

// sensitiveWords are Relay's password-key words (relay-pii regexes.rs, plus
// "bearer" from Sentry's docs, and session/csrf names from its sensitive
// cookie list). A key containing any of them, in any case, is sensitive.
var sensitiveWords = []string{
	"password", "secret", "passwd", "api_key", "apikey", "auth",
	"credentials", "mysql_pwd", "privatekey", "private_key", "token",
	"bearer", "session", "csrf", "xsrf", "cookie", "signature", "jwt",
}

// SensitiveKey reports whether a header, query parameter, cookie or JSON key
// names a value that must never leave the sidecar.
func SensitiveKey(key string) bool {
	return keyWords.in(key)
}

// keyWords finds sensitiveWords in keys, where a dash stands for an
// underscore (api-key is api_key); textWords finds them in free text, with
// the credential schemes of ScrubText's expressions.
var (
	keyWords  = newWordSet(true, sensitiveWords)
	textWords = newWordSet(false, sensitiveWords, credentialSchemes)
)

// wordSet tells whether a text contains any of a set of lower-case ASCII
// words, in any case. Scrubbing asks it of every key and string of every
// event, so it looks at each byte of the text once, through a table of the
// words by first letter, and allocates nothing; asking word by word with
// strings.Contains was most of the tunnel's CPU on a 10 KiB event
// (BENCHMARKS.md).
type wordSet struct {
	first [256][]string // the words by their first byte, in either case
	dash  bool          // '-' in the text matches '_' in a word
}

func newWordSet(dash bool, lists ...[]string) *wordSet {
	ws := &wordSet{dash: dash}
	for _, l := range lists {
		for _, w := range l {
			c := w[0]
			ws.first[c] = append(ws.first[c], w)
			if 'a' <= c && c <= 'z' {
				ws.first[c-'a'+'A'] = append(ws.first[c-'a'+'A'], w)
			}
		}
	}
	return ws
}

// in reports whether s contains one of the words.
func (ws *wordSet) in(s string) bool { return hasWord(ws, s) }

// hasWord reports whether s contains one of ws's words. Text that is not
// ASCII is lower-cased by Unicode's rules first, so that what
// strings.ToLower folds into a word (the Kelvin sign into k) still counts.
func hasWord[T string | []byte](ws *wordSet, s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return hasWordASCII(ws, strings.ToLower(string(s)))
		}
	}
	return hasWordASCII(ws, s)
}

func hasWordASCII[T string | []byte](ws *wordSet, s T) bool {
	for i := 0; i < len(s); i++ {
		for _, w := range ws.first[s[i]] {
			if wordAt(ws, s[i:], w) {
				return true
			}
		}
	}
	return false
}

// wordAt reports whether s starts with w, whose first letter is known to
// match.
func wordAt[T string | []byte](ws *wordSet, s T, w string) bool {
	if len(s) < len(w) {
		return false
	}
	for j := 1; j < len(w); j++ {
		c := asciiLower(s[j])
		if ws.dash && c == '-' {
			c = '_'
		}
		if c != w[j] {
			return false
		}
	}
	return true
}

// ScrubQuery returns the raw query with the value of every sensitive
// parameter replaced by [Filtered]. Everything else is kept byte for byte,
// including the order, repeated keys and odd encodings. Both "&" and ";"
// separate parameters: some servers (Python's among them, in older
// versions) split on ";" too. A query with nothing to hide is returned as it
// is, without allocating.
func ScrubQuery(raw string) string {
	if !anySensitiveParam(raw) {
		return raw
	}
	var b strings.Builder
	b.Grow(len(raw))
	for rest := raw; ; {
		i := strings.IndexAny(rest, "&;")
		pair := rest
		if i >= 0 {
			pair = rest[:i]
		}
		if k, v, ok := strings.Cut(pair, "="); ok && (sensitiveParam(k) || looksLikeJWT(v)) {
			b.WriteString(k)
			b.WriteString("=" + Filtered)
		} else {
			b.WriteString(pair)
		}
		if i < 0 {
			return b.String()
		}
		b.WriteByte(rest[i])
		rest = rest[i+1:]
	}
}

func anySensitiveParam(raw string) bool {
	for rest := raw; rest != ""; {
		pair := rest
		if i := strings.IndexAny(rest, "&;"); i >= 0 {
			pair, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if k, v, ok := strings.Cut(pair, "="); ok && (sensitiveParam(k) || looksLikeJWT(v)) {
			return true
		}
	}
	return false
}

// ScrubPath filters the values of sensitive matrix parameters in a path
// ("/settings;secret=x" keeps "/settings;secret=[Filtered]"): servers that
// read them would take a secret from there as from a query. A segment that
// is a JWT becomes [Filtered] too. A path with neither is returned as it
// is, without allocating.
func ScrubPath(path string) string {
	if strings.IndexByte(path, ';') < 0 && !strings.Contains(path, "eyJ") {
		return path
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		head, params, ok := strings.Cut(seg, ";")
		if looksLikeJWT(head) {
			head = Filtered
		}
		if ok {
			head += ";" + ScrubQuery(params)
		}
		segs[i] = head
	}
	return strings.Join(segs, "/")
}

// looksLikeJWT reports whether a query value or path segment is a token
// (a bearer JWT in a share link, a callback URL) whatever its name: the
// token never leaves, even under a harmless key. "eyJ" is base64 of `{"`,
// how every JWT starts; the check costs nothing for anything else.
func looksLikeJWT(v string) bool {
	i := strings.Index(v, "eyJ")
	if i < 0 {
		return false
	}
	if u, err := url.QueryUnescape(v); err == nil {
		v = u
	}
	return jwtRE.MatchString(v)
}

// sensitiveParam matches the decoded key, so "%74oken" hides as "token".
func sensitiveParam(rawKey string) bool {
	if k, err := url.QueryUnescape(rawKey); err == nil {
		rawKey = k
	}
	return SensitiveKey(rawKey)
}

// ScrubHeaders returns h as Sentry wants it (one string per header,
// repeated values joined with ", ") with every sensitive header's value
// replaced by [Filtered]: Authorization, Proxy-Authorization, Cookie,
// Set-Cookie, X-Api-Key, X-Auth-Token, X-CSRFToken and anything else
// SensitiveKey matches.
func ScrubHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if SensitiveKey(k) {
			out[k] = Filtered
			continue
		}
		out[k] = ScrubText(strings.Join(v, ", "))
	}
	return out
}

// ScrubBody returns a printable, scrubbed excerpt of a response body: JSON
// with every sensitive key's value filtered, or text with secret-looking
// values filtered. Binary bodies are summarised, never sent.
func ScrubBody(body []byte, contentType string) string {
	if len(body) == 0 {
		return ""
	}
	if isJSON(contentType, body) {
		var v any
		if json.Unmarshal(body, &v) == nil {
			b, err := json.Marshal(ScrubJSON(v))
			if err == nil {
				return string(b)
			}
		}
	}
	if !utf8.Valid(body) {
		// A cut at MaxBodyExcerpt may split a rune: drop the tail before
		// judging.
		trimmed := body
		for i := 0; i < 3 && len(trimmed) > 0 && !utf8.Valid(trimmed); i++ {
			trimmed = trimmed[:len(trimmed)-1]
		}
		if !utf8.Valid(trimmed) {
			return "[binary body: " + strconv.Itoa(len(body)) + " bytes]"
		}
		body = trimmed
	}
	return ScrubText(string(body))
}

// ScrubJSON returns a decoded JSON value with the value of every
// sensitive key, at any depth, replaced by [Filtered] and the text of every
// string scrubbed. Maps and slices are never written: contexts of the base
// scope are shared by every event, and writing into them from concurrent
// captures would race (and crash on "concurrent map writes"). What changes
// is copied; what has nothing to hide, most of an event, is returned as it
// is, which saved a sampled transaction a tenth of its allocations.
func ScrubJSON(v any) any {
	out, _ := scrubJSON(v)
	return out
}

// scrubJSON is ScrubJSON, also reporting whether anything changed.
func scrubJSON(v any) (any, bool) {
	switch t := v.(type) {
	case map[string]any:
		var out map[string]any // a copy of t, made at the first change
		for k, val := range t {
			nv, changed := any(Filtered), val != Filtered
			if !SensitiveKey(k) {
				nv, changed = scrubJSON(val)
			}
			if !changed {
				continue
			}
			if out == nil {
				out = make(map[string]any, len(t))
				for k2, v2 := range t {
					out[k2] = v2
				}
			}
			out[k] = nv
		}
		if out == nil {
			return t, false
		}
		return out, true
	case []any:
		var out []any
		for i, val := range t {
			nv, changed := scrubJSON(val)
			if !changed {
				continue
			}
			if out == nil {
				out = append([]any(nil), t...)
			}
			out[i] = nv
		}
		if out == nil {
			return t, false
		}
		return out, true
	case string:
		s := ScrubText(t)
		return s, s != t
	}
	return v, false
}

var (
	// keyValueRE finds "password": "x", password=x, token: x, ... in text,
	// such as a truncated JSON body or an error message.
	keyValueRE = regexp.MustCompile(`(?i)([\w.-]*(?:password|secret|passwd|api_key|apikey|api-key|auth|credentials|mysql_pwd|privatekey|private_key|private-key|token|bearer|session|csrf|xsrf|cookie|signature|jwt)[\w.-]*["']?\s*[:=]\s*)(\[Filtered\]|"(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]"']+)`)
	// bearerRE finds an Authorization value's credentials.
	bearerRE = regexp.MustCompile(`(?i)\b(bearer|basic|token)\s+[A-Za-z0-9\-._~+/]+=*`)
	// jwtRE finds anything shaped like a JWT (base64url header starting
	// with {" and two dots).
	jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*`)
)

// ScrubText filters secret-looking values in free text: key=value and
// "key": "value" pairs with a sensitive key, bearer credentials and JWTs.
func ScrubText(s string) string {
	if s == "" {
		return s
	}
	// The expressions backtrack at every position of the text; most text
	// (routes, user agents, messages) holds none of their words, which a
	// plain scan tells for a fraction of the cost.
	if strings.Contains(s, "eyJ") && jwtRE.MatchString(s) {
		s = jwtRE.ReplaceAllString(s, Filtered)
	}
	if !textWords.in(s) {
		return s
	}
	if bearerRE.MatchString(s) {
		s = bearerRE.ReplaceAllString(s, "${1} "+Filtered)
	}
	if keyValueRE.MatchString(s) {
		s = keyValueRE.ReplaceAllStringFunc(s, func(m string) string {
			sub := keyValueRE.FindStringSubmatch(m)
			val := sub[2]
			if val == Filtered || val == `"`+Filtered+`"` {
				return m
			}
			if strings.HasPrefix(val, `"`) {
				return sub[1] + `"` + Filtered + `"`
			}
			return sub[1] + Filtered
		})
	}
	return s
}

// credentialSchemes are the words of bearerRE and keyValueRE that
// sensitiveWords lacks.
var credentialSchemes = []string{"basic", "api-key", "private-key"}

func asciiLower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ScrubEvent is the last line before anything leaves for Sentry
// (BeforeSend and BeforeSendTransaction): whatever built the event, request
// bodies, cookies and every sensitive header, query parameter, JSON key and
// secret-looking text become [Filtered] or go.
func ScrubEvent(ev *sentry.Event) *sentry.Event {
	if ev == nil {
		return nil
	}
	ev.Message = ScrubText(ev.Message)
	ev.Transaction = ScrubText(ev.Transaction)
	for i, f := range ev.Fingerprint {
		ev.Fingerprint[i] = ScrubText(f)
	}
	for i := range ev.Exception {
		ev.Exception[i].Value = ScrubText(ev.Exception[i].Value)
	}
	if r := ev.Request; r != nil {
		r.Data = ""
		r.Cookies = ""
		r.QueryString = ScrubQuery(r.QueryString)
		u, q, hasQuery := strings.Cut(r.URL, "?")
		r.URL = ScrubText(u)
		if hasQuery {
			r.URL += "?" + ScrubQuery(q)
		}
		for k, v := range r.Headers {
			if SensitiveKey(k) {
				r.Headers[k] = Filtered
			} else {
				r.Headers[k] = ScrubText(v)
			}
		}
		for k := range r.Env {
			if SensitiveKey(k) {
				r.Env[k] = Filtered
			}
		}
	}
	for k, v := range ev.Tags {
		if SensitiveKey(k) {
			ev.Tags[k] = Filtered
		} else {
			ev.Tags[k] = ScrubText(v)
		}
	}
	if len(ev.User.Data) > 0 {
		data := make(map[string]string, len(ev.User.Data)) // the scope's user shares the map
		for k, v := range ev.User.Data {
			if SensitiveKey(k) {
				data[k] = Filtered
			} else {
				data[k] = ScrubText(v)
			}
		}
		ev.User.Data = data
	}
	contexts := make(map[string]sentry.Context, len(ev.Contexts)) // shared with the scope, one level down
	for name, c := range ev.Contexts {
		switch name {
		case DSCContext:
			contexts[name] = c // the sampling context: ids and rates, for the envelope header
		case "trace":
			// Ids stay intact; span data (url.path, ...) is scrubbed.
			if d, ok := c["data"].(map[string]any); ok {
				if scrubbed, changed := scrubJSON(d); changed {
					c = maps.Clone(c)
					c["data"] = scrubbed
				}
			}
			contexts[name] = c
		default:
			contexts[name] = ScrubJSON(c).(sentry.Context)
		}
	}
	ev.Contexts = contexts
	for _, sp := range ev.Spans {
		sp.Description = ScrubText(sp.Description)
		if sp.Data != nil {
			sp.Data = ScrubJSON(sp.Data).(map[string]any)
		}
	}
	for i, b := range ev.Breadcrumbs {
		c := *b
		c.Message = ScrubText(b.Message)
		data, changed := scrubJSON(b.Data)
		if m, ok := data.(map[string]any); ok {
			if u, ok := m["url"].(string); ok {
				if p, q, found := strings.Cut(u, "?"); found {
					if scrubbed := p + "?" + ScrubQuery(q); scrubbed != u {
						if !changed {
							m = maps.Clone(m) // still the trail's own map
						}
						m["url"] = scrubbed
					}
				}
			}
			c.Data = m
		}
		ev.Breadcrumbs[i] = &c
	}
	return ev
}
