package transport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Item types and content types sentry-go gives these event kinds
// (sentry-go v0.46.2 interfaces.go, transport.go envelopeFromBody).
const (
	typeEvent       = "event"
	typeTransaction = "transaction"
	typeCheckIn     = "check_in"
	typeLog         = "log"
	typeTraceMetric = "trace_metric"

	contentTypeLog         = "application/vnd.sentry.items.log+json"
	contentTypeTraceMetric = "application/vnd.sentry.items.trace-metric+json"
)

// job is one envelope waiting to be sent. Everything but sent_at is encoded
// when the event is handed over, so nothing of the event is read later.
type job struct {
	seq      uint64
	eventID  sentry.EventID
	category string
	header   envelopeHeader
	items    []byte // every item, each header "\n" payload "\n"
}

// envelopeHeader is the first line of an envelope (tunnel.md §A2).
type envelopeHeader struct {
	EventID string            `json:"event_id,omitempty"`
	SentAt  string            `json:"sent_at"`
	DSN     string            `json:"dsn"`
	SDK     sdkInfo           `json:"sdk"`
	Trace   map[string]string `json:"trace,omitempty"`
}

type sdkInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type itemHeader struct {
	Type        string `json:"type"`
	Length      int    `json:"length"`
	ItemCount   int    `json:"item_count,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Filename    string `json:"filename,omitempty"`
}

// categoryOf returns the rate-limit category of an event, as sentry-go's
// Event.toCategory does.
func categoryOf(ev *sentry.Event) string {
	switch ev.Type {
	case "", typeEvent:
		return CategoryError
	case typeTransaction:
		return CategoryTransaction
	case typeCheckIn:
		return CategoryMonitor
	case typeLog:
		return CategoryLog
	case typeTraceMetric:
		return CategoryTraceMetric
	default:
		return CategoryUnknown
	}
}

// newJob encodes ev into an envelope without its sent_at. It runs on the
// capturing goroutine: with a custom transport sentry-go calls SendEvent
// there and does not call Event.MakeSerializationSafe, so the event still
// shares breadcrumbs, tags and user data with a scope that the request may
// go on changing. Encoding here, before SendEvent returns, is the only safe
// moment; a snapshot for a worker would cost the same marshalling.
func newJob(ev *sentry.Event, dsn string, fallback sdkInfo) (j *job, err error) {
	defer func() {
		// json.Marshal of user-supplied values (a MarshalJSON that panics)
		// must not take the request down; sentry-go guards the same way.
		if r := recover(); r != nil {
			j, err = nil, fmt.Errorf("encode event %s: panic: %v", ev.EventID, r)
		}
	}()
	stashed := enrich.TakeDSC(ev) // before encoding: it is no part of the event
	// Not json.Marshal(ev): it would compact and re-escape the method's
	// output once more, which was 40% of the cost (TestEventEncoding
	// checks the bytes are the same).
	payload, err := ev.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.EventID, err)
	}

	var b bytes.Buffer
	b.Grow(len(payload) + 128)
	h := itemHeader{Type: typeEvent, Length: len(payload)}
	switch ev.Type {
	case typeTransaction, typeCheckIn:
		h.Type = ev.Type
	case typeLog:
		h.Type, h.ItemCount, h.ContentType = typeLog, len(ev.Logs), contentTypeLog
	case typeTraceMetric:
		h.Type, h.ItemCount, h.ContentType = typeTraceMetric, len(ev.Metrics), contentTypeTraceMetric
	}
	if err := writeItem(&b, h, payload); err != nil {
		return nil, err
	}
	for _, a := range ev.Attachments {
		if a == nil {
			continue
		}
		name := a.Filename
		if name == "" {
			name = "attachment" // Relay requires a filename (envelope-items.mdx)
		}
		ah := itemHeader{Type: "attachment", Length: len(a.Payload), Filename: name, ContentType: a.ContentType}
		if err := writeItem(&b, ah, a.Payload); err != nil {
			return nil, err
		}
	}

	sdk := sdkInfo{Name: ev.Sdk.Name, Version: ev.Sdk.Version}
	if sdk.Name == "" {
		sdk = fallback
	}
	trace := ev.GetDynamicSamplingContext() // a copy; the event's sdkMetaData is unexported
	if stashed != nil {
		trace = stashed // the caller's frozen context (enrich.DSCContext)
	}
	if len(trace) == 0 {
		trace = nil
	}
	return &job{
		eventID:  ev.EventID,
		category: categoryOf(ev),
		header:   envelopeHeader{EventID: string(ev.EventID), DSN: dsn, SDK: sdk, Trace: trace},
		items:    b.Bytes(),
	}, nil
}

// writeItem frames one item with an explicit length, so payloads holding
// newlines (attachments) stay intact (tunnel.md §A1).
func writeItem(b *bytes.Buffer, h itemHeader, payload []byte) error {
	hb, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode %s item header: %w", h.Type, err)
	}
	b.Write(hb)
	b.WriteByte('\n')
	b.Write(payload)
	b.WriteByte('\n')
	return nil
}

// body returns the complete envelope with sent_at taken now, as close to
// sending as possible, for Sentry's clock-drift correction (tunnel.md §C8).
func (j *job) body(now time.Time) ([]byte, error) {
	h := j.header
	h.SentAt = now.UTC().Format(time.RFC3339Nano)
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode envelope header: %w", err)
	}
	out := make([]byte, 0, len(hb)+1+len(j.items))
	out = append(out, hb...)
	out = append(out, '\n')
	return append(out, j.items...), nil
}
