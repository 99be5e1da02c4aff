package enrich

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func crumb(i int) Crumb { return Crumb{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Status: 200} }

func paths(cs []Crumb) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Path
	}
	return out
}

func TestTrailsKeepLastNInOrder(t *testing.T) {
	t.Parallel()
	tr := NewTrails(3, 10, time.Hour, nil)
	for i := range 5 {
		tr.Add("u1", crumb(i))
	}
	tr.Add("u2", crumb(100))
	got := fmt.Sprint(paths(tr.Trail("u1", nil)))
	if want := "[/r/2 /r/3 /r/4]"; got != want {
		t.Errorf("u1 trail = %s, want %s", got, want)
	}
	if got := fmt.Sprint(paths(tr.Trail("u2", nil))); got != "[/r/100]" {
		t.Errorf("u2 trail = %s", got)
	}
	if got := tr.Trail("", nil); len(got) != 0 {
		t.Errorf("anonymous trail = %v, want none", got)
	}
	tr.Add("", crumb(1))
	if tr.Users() != 2 {
		t.Errorf("Users = %d, want 2 (anonymous requests keep no trail)", tr.Users())
	}
}

func TestTrailsBoundedLRUAndTTL(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	tr := NewTrails(2, 3, time.Minute, func() time.Time { return now })
	for _, u := range []string{"a", "b", "c"} {
		tr.Add(u, crumb(1))
	}
	tr.Add("a", crumb(2)) // a is now the most recent
	tr.Add("d", crumb(1)) // evicts b, the least recently active
	if tr.Users() != 3 {
		t.Fatalf("Users = %d, want 3", tr.Users())
	}
	if len(tr.Trail("b", nil)) != 0 {
		t.Error("b should have been evicted")
	}
	if len(tr.Trail("a", nil)) != 2 {
		t.Error("a should have kept its trail")
	}
	if tr.Evictions() != 1 {
		t.Errorf("Evictions = %d, want 1", tr.Evictions())
	}

	now = now.Add(2 * time.Minute)
	if len(tr.Trail("a", nil)) != 0 {
		t.Error("an idle trail must be gone after the TTL")
	}
	tr.Add("e", crumb(1)) // expires every idle user
	if tr.Users() != 1 {
		t.Errorf("Users = %d after expiry, want 1", tr.Users())
	}
	tr.Add("e", crumb(2))
	if got := fmt.Sprint(paths(tr.Trail("e", nil))); got != "[/r/1 /r/2]" {
		t.Errorf("e trail = %s", got)
	}
}

func TestTrailsConcurrentUsersKeepTheirOwn(t *testing.T) {
	t.Parallel()
	tr := NewTrails(20, 100, time.Hour, nil)
	var wg sync.WaitGroup
	for u := range 50 {
		wg.Go(func() {
			user := fmt.Sprint("user-", u)
			for i := range 30 {
				tr.Add(user, Crumb{Method: "GET", Path: fmt.Sprintf("/%s/%d", user, i)})
				for _, c := range tr.Trail(user, nil) {
					if want := "/" + user + "/"; len(c.Path) < len(want) || c.Path[:len(want)] != want {
						t.Errorf("%s sees %s", user, c.Path)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestTrailsAddDoesNotAllocateForKnownUser(t *testing.T) {
	tr := NewTrails(20, 100, time.Hour, nil)
	c := crumb(1)
	tr.Add("u", c)
	if n := testing.AllocsPerRun(100, func() { tr.Add("u", c) }); n != 0 {
		t.Errorf("Add allocates %v times for a known user", n)
	}
}
