package enrich

import (
	"net/url"
	"strings"
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
	if key == "" {
		return false
	}
	k := strings.ToLower(key)
	k = strings.ReplaceAll(k, "-", "_")
	for _, w := range sensitiveWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// ScrubQuery returns the raw query with the value of every sensitive
// parameter replaced by [Filtered]. Everything else is kept byte for byte,
// including the order, repeated keys and odd encodings. A query with nothing
// to hide is returned as it is, without allocating.
func ScrubQuery(raw string) string {
	if !anySensitiveParam(raw) {
		return raw
	}
	pairs := strings.Split(raw, "&")
	for i, p := range pairs {
		if k, _, ok := strings.Cut(p, "="); ok && sensitiveParam(k) {
			pairs[i] = k + "=" + Filtered
		}
	}
	return strings.Join(pairs, "&")
}

func anySensitiveParam(raw string) bool {
	for rest := raw; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if k, _, ok := strings.Cut(pair, "="); ok && sensitiveParam(k) {
			return true
		}
	}
	return false
}

// sensitiveParam matches the decoded key, so "%74oken" hides as "token".
func sensitiveParam(rawKey string) bool {
	if k, err := url.QueryUnescape(rawKey); err == nil {
		rawKey = k
	}
	return SensitiveKey(rawKey)
}
