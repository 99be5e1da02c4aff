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

// StashDSC returns the DSCContext that carries dsc to the transport. The
// map goes as it is, one value of the context: a context of its entries
// would box every string, eight allocations a sampled request. dsc must not
// change afterwards.
func StashDSC(dsc map[string]string) sentry.Context {
	return sentry.Context{dscEntries: dsc}
}

// dscEntries is the key of the sampling context in a DSCContext.
const dscEntries = "entries"

// TakeDSC removes the stashed sampling context from ev and returns it, or
// nil when there is none.
func TakeDSC(ev *sentry.Event) map[string]string {
	c, ok := ev.Contexts[DSCContext]
	if !ok {
		return nil
	}
	delete(ev.Contexts, DSCContext)
	dsc, _ := c[dscEntries].(map[string]string)
	return dsc
}

// PeekDSC returns the sampling context stashed in ev, leaving it there.
func PeekDSC(ev *sentry.Event) map[string]string {
	dsc, _ := ev.Contexts[DSCContext][dscEntries].(map[string]string)
	return dsc
}
