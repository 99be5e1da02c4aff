package admin

import (
	"context"
	"sync"
	"time"
)

// Readiness tracks whether the sidecar should get traffic: the upstream
// answered its last probe, and shutdown has not begun.
type Readiness struct {
	mu       sync.Mutex
	draining bool
	probed   bool
	lastErr  error
	lastAt   time.Time
	maxAge   time.Duration
	now      func() time.Time
}

// NewReadiness returns a Readiness that is not ready until a probe succeeds.
func NewReadiness() *Readiness {
	return &Readiness{now: time.Now}
}

// Run probes at once and then every interval until ctx ends. Each probe
// gets the interval as its deadline. A result older than three intervals
// counts as a failure, so a stuck prober cannot keep the sidecar ready.
func (r *Readiness) Run(ctx context.Context, probe func(context.Context) error, interval time.Duration) {
	r.mu.Lock()
	r.maxAge = 3 * interval
	r.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.probed, r.lastErr, r.lastAt = true, err, r.now()
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Drain marks the sidecar as shutting down: from now on it is not ready.
func (r *Readiness) Drain() {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
}

// Ready reports whether to take traffic and, if not, why.
func (r *Readiness) Ready() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.draining:
		return false, "shutting down"
	case !r.probed:
		return false, "upstream not probed yet"
	case r.lastErr != nil:
		return false, "upstream unreachable: " + r.lastErr.Error()
	case r.maxAge > 0 && r.now().Sub(r.lastAt) > r.maxAge:
		return false, "upstream probe is stale"
	}
	return true, ""
}
