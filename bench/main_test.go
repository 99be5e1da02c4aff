package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if anything a test or benchmark started (servers,
// the transport's workers, pooled connections) is still running at the
// end: every fixture must be stopped by its cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
