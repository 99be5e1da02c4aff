package enrich

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// Router turns request paths into route templates, so /api/v1/apps/101 and
// /api/v1/apps/205 are one route, one Sentry issue and one metric series.
//
// Configured templates come first: "{name}" matches one segment, anything
// else must match literally. The template matching the most leading
// segments wins, then the one with the most literal segments, so
// /api/v1/apps/catalog beats /api/v1/apps/{app_id}. Segments past the
// template, and paths no template matches, fall back to guessing: numbers,
// UUIDs, long hex strings and long random-looking tokens become {id}.
type Router struct {
	templates [][]string

	mu    sync.RWMutex
	cache map[string]string
	max   int
}

// NewRouter returns a router for the templates ("/api/v1/apps/{app_id}")
// that remembers up to cacheSize paths, so a known path costs a map lookup.
func NewRouter(templates []string, cacheSize int) (*Router, error) {
	r := &Router{cache: make(map[string]string), max: cacheSize}
	for _, t := range templates {
		if err := CheckTemplate(t); err != nil {
			return nil, err
		}
		r.templates = append(r.templates, strings.Split(t, "/"))
	}
	return r, nil
}

// CheckTemplate reports whether t is a usable route template; config
// validation uses it so a bad template fails at start.
func CheckTemplate(t string) error {
	if !strings.HasPrefix(t, "/") {
		return fmt.Errorf("route template %q must start with /", t)
	}
	for _, seg := range strings.Split(t, "/")[1:] {
		if strings.ContainsAny(seg, "{}") && !isParam(seg) {
			return fmt.Errorf("route template %q: segment %q must be literal or a whole {name}", t, seg)
		}
	}
	return nil
}

func isParam(seg string) bool {
	return len(seg) > 2 && seg[0] == '{' && seg[len(seg)-1] == '}' && !strings.ContainsAny(seg[1:len(seg)-1], "{}/")
}

// Template returns the route template of path.
func (r *Router) Template(path string) string {
	r.mu.RLock()
	t, ok := r.cache[path]
	r.mu.RUnlock()
	if ok {
		return t
	}
	t = r.template(path)
	if len(path) > maxCachedPath {
		return t // a long path is an attack or a one-off: not worth a cache slot
	}
	r.mu.Lock()
	if len(r.cache) >= r.max {
		// Distinct paths are unbounded (ids, scanners); start over rather
		// than grow.
		clear(r.cache)
	}
	if r.max > 0 {
		r.cache[path] = t
	}
	r.mu.Unlock()
	return t
}

// maxCachedPath bounds the paths the cache keeps: with max_header_bytes
// at 1 MiB, a few thousand long paths would otherwise hold gigabytes.
const maxCachedPath = 256

// maxSegment is the longest segment kept as a name; longer ones are ids,
// tokens or junk, and a route (a metric label, a fingerprint) stays short.
const maxSegment = 64

func (r *Router) template(path string) string {
	segs := strings.Split(path, "/")
	var best []string
	bestLiterals := -1
	for _, t := range r.templates {
		if len(t) > len(segs) || (best != nil && len(t) < len(best)) {
			continue
		}
		literals, ok := matchTemplate(t, segs)
		if !ok {
			continue
		}
		if best == nil || len(t) > len(best) || literals > bestLiterals {
			best, bestLiterals = t, literals
		}
	}
	changed := false
	for i, seg := range segs {
		switch {
		case i < len(best):
			if isParam(best[i]) {
				segs[i], changed = best[i], true
			}
		case looksLikeID(seg):
			segs[i], changed = "{id}", true
		case looksLikeFile(seg):
			segs[i], changed = "{file}", true
		}
	}
	if !changed {
		return path
	}
	return strings.Join(segs, "/")
}

func matchTemplate(t, segs []string) (literals int, ok bool) {
	for i, ts := range t {
		if isParam(ts) {
			if segs[i] == "" {
				return 0, false
			}
			continue
		}
		if ts != segs[i] {
			return 0, false
		}
		literals++
	}
	return literals, true
}

// looksLikeID guesses whether a path segment is an identifier rather than
// a name: a number, a UUID, a hex string of 12 or more characters with a
// digit in it (object ids, hashes), or a token of 20 or more letters and
// digits mixed (base64url ids). Words with dashes ("sentry-backend") stay.
func looksLikeID(seg string) bool {
	if seg == "" {
		return false
	}
	if len(seg) > maxSegment || strings.IndexByte(seg, '@') >= 0 || !utf8.ValidString(seg) {
		// An email is personal data, never a route name; bytes that are not
		// UTF-8 could be no metric label (Prometheus panics on them).
		return true
	}
	digits, hex, alnum := 0, 0, 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
			alnum++
		case c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F':
			hex++
			alnum++
		case c >= 'g' && c <= 'z' || c >= 'G' && c <= 'Z':
			alnum++
		case c == '-' || c == '_':
		default:
			return false
		}
	}
	n := len(seg)
	switch {
	case digits == n:
		return true
	case n == 36 && isUUID(seg):
		return true
	case hex == n && n >= 12 && digits > 0:
		return true
	case n >= 20 && digits > 0 && alnum >= n-2 && alnum > digits:
		return true
	}
	return false
}

// looksLikeFile guesses whether a segment is a built asset such as
// "index-4f3a9b.js": a name with a digit in it and a short extension. A
// UI served from the same origin would otherwise spend the route budget
// (metrics.max_routes) on one route per build.
func looksLikeFile(seg string) bool {
	dot := strings.LastIndexByte(seg, '.')
	if dot <= 0 || len(seg)-dot-1 < 1 || len(seg)-dot-1 > 5 {
		return false
	}
	if c := seg[dot+1] | 0x20; c < 'a' || c > 'z' {
		return false // "v1.2" is a version, not a file
	}
	for i := dot + 1; i < len(seg); i++ {
		if c := seg[i] | 0x20; c < 'a' || c > 'z' {
			if seg[i] < '0' || seg[i] > '9' {
				return false
			}
		}
	}
	return strings.ContainsAny(seg[:dot], "0123456789")
}

func isUUID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
