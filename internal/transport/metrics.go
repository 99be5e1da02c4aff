package transport

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome is what became of one envelope; it is the "outcome" label of
// sidecar_sentry_envelopes_total.
type Outcome string

// The outcomes of an envelope.
const (
	// OutcomeSent: Sentry answered 2xx.
	OutcomeSent Outcome = "sent"
	// OutcomeRejected: Sentry answered 4xx other than 429 (malformed,
	// unknown key, too large); sending it again would not help.
	OutcomeRejected Outcome = "rejected"
	// OutcomeFailed: a network error, a timeout, a 5xx or other non-2xx
	// answer, an event that could not be encoded, or an envelope still
	// queued when Close gave up.
	OutcomeFailed Outcome = "failed"
	// OutcomeRateLimited: Sentry answered 429, or the envelope was dropped
	// because its category was rate limited.
	OutcomeRateLimited Outcome = "rate_limited"
	// OutcomeQueueFull: dropped because the queue was full.
	OutcomeQueueFull Outcome = "queue_full"
)

var outcomes = [...]Outcome{OutcomeSent, OutcomeRejected, OutcomeFailed, OutcomeRateLimited, OutcomeQueueFull}

// classify maps Sentry's answer to an outcome (tunnel.md §C2): 2xx sent,
// 429 rate limited, other 4xx rejected, anything else (5xx, and 1xx/3xx,
// which an ingest endpoint never answers on purpose) failed.
func classify(status int) Outcome {
	switch {
	case status >= 200 && status <= 299:
		return OutcomeSent
	case status == 429:
		return OutcomeRateLimited
	case status >= 400 && status <= 499:
		return OutcomeRejected
	default:
		return OutcomeFailed
	}
}

type metrics struct {
	envelopes *prometheus.CounterVec
	duration  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, queueLength func() float64) (*metrics, error) {
	m := &metrics{
		envelopes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_sentry_envelopes_total",
			Help: "Envelopes the sidecar tried to deliver to Sentry, by rate-limit category and outcome.",
		}, []string{"category", "outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sidecar_sentry_send_duration_seconds",
			Help:    "Duration of one envelope POST to Sentry, answered or not.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sidecar_sentry_queue_length",
		Help: "Envelopes waiting for a free sender.",
	}, queueLength)
	for _, c := range []prometheus.Collector{m.envelopes, m.duration, queue} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register sentry transport metrics: %w", err)
		}
	}
	// Series that exist from the start make rate() and absent() alerts work
	// before the first failure.
	for _, c := range []string{CategoryError, CategoryTransaction} {
		for _, o := range outcomes {
			m.envelopes.WithLabelValues(c, string(o))
		}
	}
	return m, nil
}
