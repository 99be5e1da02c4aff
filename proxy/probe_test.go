package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	statusUpstream := func(status int, seen chan<- string) string {
		return mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case seen <- r.Method + " " + r.RequestURI:
			default:
			}
			w.WriteHeader(status)
		}).URL
	}
	tests := []struct {
		name       string
		upstream   func(seen chan<- string) string
		healthPath string
		wantSeen   string // request the upstream got; "" for none
		ok         bool
	}{
		{"TCP connect succeeds", func(seen chan<- string) string { return statusUpstream(http.StatusOK, seen) }, "", "", true},
		{"TCP connect refused", func(chan<- string) string { return "http://" + mustClosedPort(t) }, "", "", false},
		{"health 200", func(seen chan<- string) string { return statusUpstream(http.StatusOK, seen) }, "/healthz", "GET /healthz", true},
		{"health 404 still answers", func(seen chan<- string) string { return statusUpstream(http.StatusNotFound, seen) }, "/healthz", "GET /healthz", true},
		{"health 503", func(seen chan<- string) string { return statusUpstream(http.StatusServiceUnavailable, seen) }, "/healthz", "GET /healthz", false},
		{"health path under the upstream's base path", func(seen chan<- string) string { return statusUpstream(http.StatusOK, seen) + "/base/" }, "/healthz", "GET /base/healthz", true},
		{"health refused", func(chan<- string) string { return "http://" + mustClosedPort(t) }, "/healthz", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seen := make(chan string, 1)
			p, _, _ := mustNewProxy(t, tc.upstream(seen), func(c *Config) { c.HealthPath = tc.healthPath })
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := p.Probe(ctx)
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
			select {
			case got := <-seen:
				assert.Equal(t, tc.wantSeen, got)
			default:
				assert.Empty(t, tc.wantSeen, "the upstream got no request")
			}
		})
	}
}

func TestProbeHonoursContext(t *testing.T) {
	t.Parallel()
	p, _, _ := mustNewProxy(t, mustUpstream(t, slowUpstream(5*time.Second)).URL, func(c *Config) { c.HealthPath = "/healthz" })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Probe(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)
}
