package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
)

// syncCounter is a log destination that counts Sync calls, as an
// *os.File would fsync on each.
type syncCounter struct {
	mu    sync.Mutex
	b     strings.Builder
	syncs int
}

func (s *syncCounter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncCounter) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	return nil
}

func (s *syncCounter) state() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.syncs
}

// TestLoggerBuffersWithoutSync: lines are written within the flush
// interval and at stop, and the destination is never synced (an fsync
// every 100 ms, under the logger's lock, would stall every request while a
// slow disk answers).
func TestLoggerBuffersWithoutSync(t *testing.T) {
	t.Parallel()
	w := &syncCounter{}
	log, stop, err := newLogger(config.Log{Level: "info", Format: "json"}, w)
	require.NoError(t, err)
	log.Info("first")
	assert.Eventually(t, func() bool {
		out, _ := w.state()
		return strings.Contains(out, `"msg":"first"`)
	}, 10*logFlushInterval, 10*time.Millisecond, "a line waited past the flush interval")
	log.Info("last")
	stop()
	out, syncs := w.state()
	assert.Contains(t, out, `"msg":"last"`, "stop writes out the rest")
	assert.Zero(t, syncs, "the destination was synced")
}
