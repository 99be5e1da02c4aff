package tunnel

import (
	"container/list"
	"math"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/internal/transport"
)

// Rate is a token bucket: Burst envelopes at once, then one more every
// Every. The zero Rate is off.
type Rate struct {
	Burst int
	Every time.Duration
	// MaxClients caps the number of client addresses remembered; 0 means
	// DefaultMaxClients. When it is reached the least recently seen client
	// is forgotten (it starts again with a full bucket).
	MaxClients int
}

// DefaultMaxClients is the number of client addresses a per-IP limit
// remembers when Rate.MaxClients is 0: at ~150 bytes each, about 1.5 MiB.
const DefaultMaxClients = 10000

// categoryInternal is the data category of client reports, which Relay never
// rate limits (tunnel.md §C3): they are how SDKs report what they dropped.
const categoryInternal = "internal"

func (r Rate) off() bool { return r.Burst == 0 && r.Every == 0 }

// bucket is one token bucket; the caller holds the lock.
type bucket struct {
	tokens float64
	last   time.Time
}

func newBucket(r Rate, now time.Time) bucket {
	return bucket{tokens: float64(r.Burst), last: now}
}

func (b *bucket) refill(r Rate, now time.Time) {
	if now.After(b.last) {
		b.tokens = math.Min(float64(r.Burst), b.tokens+float64(now.Sub(b.last))/float64(r.Every))
		b.last = now
	}
}

// take spends a token, or reports how long until one is there.
func (b *bucket) take(r Rate, now time.Time) (bool, time.Duration) {
	b.refill(r, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(r.Every))
}

// full reports whether the bucket would be full at now: forgetting it then
// loses nothing.
func (b *bucket) full(r Rate, now time.Time) bool {
	return b.tokens+float64(now.Sub(b.last))/float64(r.Every) >= float64(r.Burst)
}

// clientLimiter is a token bucket per client address with bounded memory: a
// map into a least-recently-seen list. Every call forgets a few idle
// clients (full buckets) from the old end, and a new client beyond
// MaxClients pushes out the least recently seen one, so a flood of spoofed
// or rotating addresses costs O(1) per request and at most MaxClients
// entries.
type clientLimiter struct {
	rate Rate
	max  int

	mu      sync.Mutex
	clients map[string]*list.Element
	lru     list.List // of *clientEntry, most recently seen first
}

type clientEntry struct {
	key string
	b   bucket
}

func newClientLimiter(r Rate) *clientLimiter {
	if r.off() {
		return nil
	}
	max := r.MaxClients
	if max <= 0 {
		max = DefaultMaxClients
	}
	return &clientLimiter{rate: r, max: max, clients: make(map[string]*list.Element)}
}

// allow spends a token of key's bucket; when there is none it returns how
// long until there will be.
func (l *clientLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A few idle clients go on every call: amortised O(1), and the map stays
	// small when traffic is ordinary.
	for range 2 {
		back := l.lru.Back()
		if back == nil || back.Value.(*clientEntry).key == key || !back.Value.(*clientEntry).b.full(l.rate, now) {
			break
		}
		l.remove(back)
	}
	if el, ok := l.clients[key]; ok {
		l.lru.MoveToFront(el)
		return el.Value.(*clientEntry).b.take(l.rate, now)
	}
	if len(l.clients) >= l.max {
		l.remove(l.lru.Back())
	}
	e := &clientEntry{key: key, b: newBucket(l.rate, now)}
	l.clients[key] = l.lru.PushFront(e)
	return e.b.take(l.rate, now)
}

func (l *clientLimiter) remove(el *list.Element) {
	l.lru.Remove(el)
	delete(l.clients, el.Value.(*clientEntry).key)
}

func (l *clientLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// clientKey is the bucket a client address counts against: the address
// itself, or its /64 for IPv6, since one subscriber usually holds a whole
// /64 and could otherwise rotate through 2^64 addresses.
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.WithZone("").Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}

// sentryLimits are the rate limits Sentry announced for the target project
// (a Handler forwards to exactly one project with one key, so every scope
// Sentry names, key, project or organization, applies to all of it),
// parsed by the same code as the sidecar's own transport.
type sentryLimits struct {
	mu sync.Mutex
	l  transport.Limits
}

// update remembers the limits of one Sentry answer.
func (s *sentryLimits) update(status int, h http.Header, now time.Time) {
	got := transport.ParseRateLimits(status, h, now)
	if len(got) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.l == nil {
		s.l = transport.Limits{}
	}
	for c, until := range s.l {
		if !until.After(now) {
			delete(s.l, c)
		}
	}
	s.l.Merge(got)
}

// until returns when category may be sent again; client reports always may.
func (s *sentryLimits) until(category string) time.Time {
	if category == categoryInternal {
		return time.Time{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.l.Until(category)
}

// header formats the limits in force at now as X-Sentry-Rate-Limits, one
// entry per category with the seconds left (sorted, so the answer is
// stable), or "" when there is none. The scope is written as "key": the SDKs
// ignore it, and the limit is on the one key the tunnel sends with.
func (s *sentryLimits) header(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	cats := make([]string, 0, len(s.l))
	for c, until := range s.l {
		if until.After(now) {
			cats = append(cats, c)
		}
	}
	sort.Strings(cats)
	var b strings.Builder
	for _, c := range cats {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(seconds(s.l[c].Sub(now)))
		b.WriteString(":" + c + ":key")
	}
	return b.String()
}

// seconds renders a wait as whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}
