package enrich

import (
	"container/list"
	"sync"
	"time"
)

// Crumb is one request in a user's trail: what becomes an http breadcrumb.
type Crumb struct {
	Time     time.Time
	Method   string
	Path     string // as requested, without the query
	URL      string // path and scrubbed query
	Status   int
	Duration time.Duration
	// Action names the request when a configured action matched it; its
	// breadcrumb is then a user_action with the allowed Fields.
	Action string
	Fields map[string]any
}

// Trails keeps the last requests of each user so an event on one request
// carries what that user did just before. Memory is bounded whatever the
// traffic: at most PerUser crumbs for at most Users users; the least
// recently active user is evicted first, and a user idle for TTL is gone.
type Trails struct {
	perUser, maxUsers int
	ttl               time.Duration
	now               func() time.Time

	mu        sync.Mutex
	users     map[string]*list.Element
	lru       list.List // front: most recently active
	evictions uint64
}

type trail struct {
	user  string
	last  time.Time
	ring  []Crumb
	next  int // where the next crumb goes
	count int
}

// NewTrails returns a store of perUser crumbs for up to maxUsers users, each
// forgotten after ttl without a request. now is the clock.
func NewTrails(perUser, maxUsers int, ttl time.Duration, now func() time.Time) *Trails {
	if now == nil {
		now = time.Now
	}
	return &Trails{perUser: perUser, maxUsers: maxUsers, ttl: ttl, now: now, users: map[string]*list.Element{}}
}

// Add appends c to user's trail. Anonymous requests (user "") have no trail.
func (t *Trails) Add(user string, c Crumb) {
	if user == "" || t.perUser <= 0 || t.maxUsers <= 0 {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var tr *trail
	if e, ok := t.users[user]; ok {
		tr = e.Value.(*trail)
		if now.Sub(tr.last) > t.ttl {
			tr.count, tr.next = 0, 0
		}
		t.lru.MoveToFront(e)
	} else {
		t.expire(now)
		for len(t.users) >= t.maxUsers {
			t.evict(t.lru.Back())
		}
		tr = &trail{user: user, ring: make([]Crumb, t.perUser)}
		t.users[user] = t.lru.PushFront(tr)
	}
	tr.last = now
	tr.ring[tr.next] = c
	tr.next = (tr.next + 1) % len(tr.ring)
	if tr.count < len(tr.ring) {
		tr.count++
	}
}

// Trail appends user's crumbs to dst, oldest first, and returns it.
func (t *Trails) Trail(user string, dst []Crumb) []Crumb {
	if user == "" {
		return dst
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.users[user]
	if !ok {
		return dst
	}
	tr := e.Value.(*trail)
	if now.Sub(tr.last) > t.ttl {
		return dst
	}
	start := tr.next - tr.count
	if start < 0 {
		start += len(tr.ring)
	}
	for i := range tr.count {
		dst = append(dst, tr.ring[(start+i)%len(tr.ring)])
	}
	return dst
}

// expire drops users idle longer than the TTL, oldest first; called on
// insert so idle users do not hold their slots.
func (t *Trails) expire(now time.Time) {
	for e := t.lru.Back(); e != nil; e = t.lru.Back() {
		if now.Sub(e.Value.(*trail).last) <= t.ttl {
			return
		}
		t.evict(e)
	}
}

func (t *Trails) evict(e *list.Element) {
	delete(t.users, e.Value.(*trail).user)
	t.lru.Remove(e)
	t.evictions++
}

// Users returns the number of users with a trail.
func (t *Trails) Users() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.users)
}

// Evictions returns how many trails were dropped for room or idleness.
func (t *Trails) Evictions() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evictions
}
