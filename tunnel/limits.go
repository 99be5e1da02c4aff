package tunnel

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Limits bound what the tunnel accepts: Relay's defaults (relay-config
// Limits, tunnel.md §C1) scaled to a sidecar that holds each envelope in
// memory. A zero field takes its default, so a partly filled Limits is
// still bounded everywhere.
type Limits struct {
	// Body bounds the request body on the wire. Default 20 MiB, the
	// developer docs' limit for a compressed envelope request
	// (envelopes.mdx, Size Limits); Relay now takes 200 MiB.
	Body int64
	// Decompressed bounds the body after Content-Encoding, so a
	// decompression bomb stops here. Default 100 MiB (Relay: 200 MiB).
	Decompressed int64
	// Event bounds each event, transaction, feedback, replay_event,
	// security, user_report, statsd and metric_buckets payload. Default
	// 1 MiB, Relay's max_event_size (and its statsd and bucket limits).
	Event int64
	// Replay bounds each replay_recording and replay_video payload.
	// Default 10 MiB, Relay's max_replay_compressed_size.
	Replay int64
	// Attachment bounds each attachment payload. Default 20 MiB (Relay:
	// 200 MiB).
	Attachment int64
	// Session bounds each session, sessions, client_report and check_in
	// payload. Default 100 KiB: Relay's max_client_reports_size and
	// max_check_in_size; its 10 MiB for sessions is far above the few
	// hundred bytes a browser session update is.
	Session int64
	// Container bounds each log, span and trace_metric item (containers of
	// many logs, spans or metrics; a v1 span is one) and integration
	// items. Default 12 MiB, Relay's max_container_size.
	Container int64
	// Profile bounds each profile and profile_chunk payload. Default
	// 20 MiB: Relay's 50 MiB max_profile_size capped like attachments.
	Profile int64
	// Items bounds the number of items in one envelope. Default 100.
	// Relay has no such limit (only per-type counts: 100 sessions, 100
	// client reports, 30 attachments); a browser envelope holds one to a
	// few items, and 100 matches Relay's largest per-type count.
	Items int
}

// DefaultLimits returns the limits a zero field stands for.
func DefaultLimits() Limits {
	return Limits{
		Body:         20 << 20,
		Decompressed: 100 << 20,
		Event:        1 << 20,
		Replay:       10 << 20,
		Attachment:   20 << 20,
		Session:      100 << 10,
		Container:    12 << 20,
		Profile:      20 << 20,
		Items:        100,
	}
}

// withDefaults fills zero (or negative) fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	fill := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&l.Body, d.Body)
	fill(&l.Decompressed, d.Decompressed)
	fill(&l.Event, d.Event)
	fill(&l.Replay, d.Replay)
	fill(&l.Attachment, d.Attachment)
	fill(&l.Session, d.Session)
	fill(&l.Container, d.Container)
	fill(&l.Profile, d.Profile)
	if l.Items <= 0 {
		l.Items = d.Items
	}
	return l
}

// TooLargeError says which limit was exceeded; the handler answers 413 with
// it. Relay answers 413 for an oversized envelope or item too (PR
// getsentry/relay#5474), and SDKs then drop the envelope instead of
// retrying (tunnel.md §C2).
type TooLargeError struct {
	// Limit is "body", "decompressed", "items" or "item:<type>" (such as
	// "item:replay_recording").
	Limit string
	// Max is the limit: bytes, or items for "items".
	Max int64
}

// Error implements error.
func (e *TooLargeError) Error() string {
	switch {
	case e.Limit == "items":
		return fmt.Sprintf("envelope too large: more than %d items", e.Max)
	case strings.HasPrefix(e.Limit, "item:"):
		return fmt.Sprintf("envelope too large: a %s item exceeds %d bytes", strings.TrimPrefix(e.Limit, "item:"), e.Max)
	default:
		return fmt.Sprintf("envelope too large: %s size exceeds %d bytes", e.Limit, e.Max)
	}
}

// UnsupportedEncodingError says the body's Content-Encoding is not one
// ReadBody decodes; the handler answers 415, as Relay does for an encoding
// its decompression layer does not know.
type UnsupportedEncodingError struct {
	// Encoding is the Content-Encoding as sent.
	Encoding string
}

// Error implements error.
func (e *UnsupportedEncodingError) Error() string {
	return fmt.Sprintf("unsupported content encoding %q (want gzip, x-gzip, deflate or identity)", shorten(e.Encoding, 64))
}

// DecodeError says the body is not valid data in its Content-Encoding (a
// truncated or corrupt gzip stream); the handler answers 400, as Relay does
// for decompression errors (relay-server/src/middlewares/decompression.rs).
type DecodeError struct {
	// Encoding is the normalised Content-Encoding: gzip, x-gzip or deflate.
	Encoding string
	Err      error
}

// Error implements error.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode %s body: %v", e.Encoding, e.Err)
}

// Unwrap returns the decoder's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// ReadBody reads an envelope request body within l:
//
//   - A Content-Length over l.Body is refused before anything is read.
//   - A body without Content-Length (chunked) is read up to l.Body+1 bytes
//     at most, so one byte too many is an error and nothing beyond it is
//     read.
//   - Content-Encoding gzip, x-gzip and deflate are decoded; identity, an
//     empty value and "utf-8" mean none (Relay ignores the last two:
//     sentry-ruby 5.x and sentry-java android 2.0.0 send them,
//     relay-server/src/middlewares/decompression.rs). br, zstd and anything
//     else are an *UnsupportedEncodingError: browsers never compress
//     envelopes and Node sends gzip (tunnel.md §A4), and the standard
//     library has no decoder for them.
//   - deflate is the zlib format (RFC 9110 §8.4.1.2, RFC 1950), but raw
//     deflate without the zlib wrapper is accepted too: some senders
//     confuse the two, which is why Chromium sniffs for the zlib header and
//     falls back to raw deflate (net/filter/gzip_source_stream.h,
//     crbug.com/677001).
//   - Decoding is bounded by l.Decompressed without holding more than the
//     wire bytes: a first pass only counts the decoded bytes (stopping at
//     l.Decompressed+1), a second fills a buffer of exactly that size. A
//     bomb costs its compressed size in memory, never its inflated size.
//
// Errors: *TooLargeError ("body" or "decompressed"), *UnsupportedEncodingError,
// *DecodeError, or the body's own read error, wrapped.
func ReadBody(r *http.Request, l Limits) ([]byte, error) {
	l = l.withDefaults()
	enc, err := bodyEncoding(r.Header)
	if err != nil {
		return nil, err
	}
	if r.ContentLength > l.Body {
		return nil, &TooLargeError{Limit: "body", Max: l.Body}
	}
	if r.Body == nil {
		return []byte{}, nil
	}
	// Room for the announced body and ReadFrom's next MinRead, so a body
	// of that size needs no second allocation, but at most 1 MiB up front:
	// a client must send bytes, not just claim them, to cost memory.
	hint := int64(bytes.MinRead)
	if r.ContentLength > 0 {
		hint += min(r.ContentLength, 1<<20)
	}
	buf := bytes.NewBuffer(make([]byte, 0, hint))
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, l.Body+1)); err != nil {
		return nil, fmt.Errorf("read envelope body: %w", err)
	}
	if int64(buf.Len()) > l.Body {
		return nil, &TooLargeError{Limit: "body", Max: l.Body}
	}
	wire := buf.Bytes()
	if enc == "identity" {
		if int64(len(wire)) > l.Decompressed {
			return nil, &TooLargeError{Limit: "decompressed", Max: l.Decompressed}
		}
		return wire, nil
	}

	// First pass: count, keeping nothing.
	n, err := decodeBody(enc, wire, func(dec io.Reader) (int64, error) {
		return io.Copy(io.Discard, io.LimitReader(dec, l.Decompressed+1))
	})
	if err != nil {
		return nil, &DecodeError{Encoding: enc, Err: err}
	}
	if n > l.Decompressed {
		return nil, &TooLargeError{Limit: "decompressed", Max: l.Decompressed}
	}
	// Second pass: the same bytes decode to the same n bytes.
	out := make([]byte, n)
	if _, err := decodeBody(enc, wire, func(dec io.Reader) (int64, error) {
		m, err := io.ReadFull(dec, out)
		return int64(m), err
	}); err != nil {
		return nil, &DecodeError{Encoding: enc, Err: err}
	}
	return out, nil
}

// bodyEncoding normalises Content-Encoding to "identity", "gzip", "x-gzip"
// or "deflate". Only one coding is decoded; a list of several (other than
// identity) is unsupported.
func bodyEncoding(h http.Header) (string, error) {
	values := h.Values("Content-Encoding")
	var codings []string
	for _, v := range values {
		for c := range strings.SplitSeq(v, ",") {
			switch c = strings.ToLower(strings.TrimSpace(c)); c {
			case "", "identity", "utf-8":
			default:
				codings = append(codings, c)
			}
		}
	}
	if len(codings) == 0 {
		return "identity", nil
	}
	if len(codings) == 1 {
		switch codings[0] {
		case "gzip", "x-gzip", "deflate":
			return codings[0], nil
		}
	}
	return "", &UnsupportedEncodingError{Encoding: strings.Join(values, ", ")}
}

// decodeBody runs read on a fresh decoder of wire and closes it.
func decodeBody(enc string, wire []byte, read func(io.Reader) (int64, error)) (int64, error) {
	var dec io.ReadCloser
	switch enc {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(wire))
		if err != nil {
			return 0, err
		}
		dec = zr
	case "deflate":
		if hasZlibHeader(wire) {
			zr, err := zlib.NewReader(bytes.NewReader(wire))
			if err != nil {
				return 0, err
			}
			dec = zr
		} else {
			dec = flate.NewReader(bytes.NewReader(wire))
		}
	default:
		return 0, fmt.Errorf("no decoder for %q", enc)
	}
	n, err := read(dec)
	if cerr := dec.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if errors.Is(err, io.EOF) {
		// A stream that ends early is corrupt, not a clean end.
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// hasZlibHeader reports whether b starts with a zlib header (RFC 1950
// §2.2): compression method 8 with a window of at most 32 KiB, and the two
// bytes a multiple of 31.
func hasZlibHeader(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	cmf, flg := b[0], b[1]
	return cmf&0x0f == 8 && cmf>>4 <= 7 && (uint16(cmf)<<8|uint16(flg))%31 == 0
}

// Check applies the per-item and item-count limits to a parsed envelope,
// like Relay's check_envelope_size_limits (relay-server/src/utils/
// sizes.rs) but per item only: the body limits bound the totals. Unknown
// item types have no item limit, as in Relay. The first violation is
// returned as a *TooLargeError.
func (l Limits) Check(e *Envelope) error {
	if e == nil {
		return nil
	}
	l = l.withDefaults()
	if len(e.Items) > l.Items {
		return &TooLargeError{Limit: "items", Max: int64(l.Items)}
	}
	for _, it := range e.Items {
		if it == nil {
			continue
		}
		if limit, ok := l.itemMax(it.Type); ok && int64(len(it.Payload)) > limit {
			return &TooLargeError{Limit: "item:" + it.Type, Max: limit}
		}
	}
	return nil
}

// itemMax is the payload limit of an item type, grouped as Relay groups
// them in check_envelope_size_limits, except user_report: Relay bounds it
// like an attachment, but it is a small JSON record; false for types
// without a limit.
func (l Limits) itemMax(itemType string) (int64, bool) {
	switch itemType {
	case "event", "transaction", "feedback", "replay_event", "security", "raw_security", "form_data",
		"user_report", "statsd", "metric_buckets":
		return l.Event, true
	case "replay_recording", "replay_video":
		return l.Replay, true
	case "attachment", "unreal_report":
		return l.Attachment, true
	case "session", "sessions", "client_report", "check_in":
		return l.Session, true
	case "log", "span", "trace_metric", "integration":
		return l.Container, true
	case "profile", "profile_chunk", "profile_chunk_ui":
		return l.Profile, true
	default:
		return 0, false
	}
}
