package enrich

import "github.com/getsentry/sentry-go"

// DSCContext is the event context that carries a traced request's dynamic
// sampling context from the proxy to the transport, which moves it into the
// envelope's trace header and drops it from the event.
//
// sentry-go v0.46.2 rebuilds the envelope's sampling context from the
// client's own DSN for every event whose scope has a span
// (DynamicSamplingContextFromTransaction), which replaces the browser's
// frozen one: Sentry would then judge a continued trace as if the sidecar
// had started it. The root transaction's baggage still holds the right one.
const DSCContext = "sentry_sidecar.dsc"

// TakeDSC removes the stashed sampling context from ev and returns it, or
// nil when there is none.
func TakeDSC(ev *sentry.Event) map[string]string {
	c, ok := ev.Contexts[DSCContext]
	if !ok {
		return nil
	}
	delete(ev.Contexts, DSCContext)
	out := make(map[string]string, len(c))
	for k, v := range c {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}
