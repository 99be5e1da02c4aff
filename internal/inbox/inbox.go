// Package inbox is the local sink the sidecar sends events to when there is
// no DSN (or in development without sentry.debug): a bounded in-memory store,
// an optional JSON-lines file and an admin page, so a first run needs no
// Sentry account and a developer sees exactly what would have been sent.
//
// An *Inbox is a sentry.Transport. Each event is kept as the bytes Sentry
// would have received (json.Marshal of the *sentry.Event, which is what the
// SDK's own HTTP transport puts in the envelope) plus a small Summary parsed
// back from those bytes. Working from the bytes, not the struct, is also the
// seam for tunneled browser envelopes: their event items arrive as JSON and
// will go through the same add path.
package inbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"os"
	"sync"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/sentry-sidecar/sentry-sidecar/enrich"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	// DefaultSize is the number of error events kept when Options.Size is 0.
	DefaultSize = 200
	// DefaultMaxEventBytes caps one stored event when Options.MaxEventBytes
	// is 0. Sentry itself accepts events up to 1 MiB; a quarter of that is
	// far above what the proxy builds (a trail of requests, a 4 KiB response
	// excerpt) and keeps the worst case of a full inbox near 60 MiB.
	DefaultMaxEventBytes = 256 << 10
)

// Options configures an Inbox. The zero value is usable.
type Options struct {
	// Size is the number of error events kept in memory, oldest dropped
	// first; 0 means DefaultSize. Transactions (and any other non-error
	// telemetry) get a separate ring of Size/4 (at least 1) so that a busy
	// development server's per-request transactions never push errors out.
	Size int
	// File, if set, is a JSON-lines file each event is appended to, one line
	// per event, byte for byte the JSON that would have been sent (never
	// truncated). It is created with mode 0600: events hold user ids and
	// request URLs.
	File string
	// MaxEventBytes caps the bytes kept in memory for one event; 0 means
	// DefaultMaxEventBytes. A larger event is kept as valid JSON with its
	// largest top-level members removed, and its Summary says which.
	MaxEventBytes int
	// Log receives one line per event, never the event itself: errors at
	// info, transactions at debug (a development server makes one per
	// request, and the access log already has that line). nil means no
	// logging.
	Log *zap.Logger
	// Now is the clock for received times and the page's "ago"; nil means
	// time.Now.
	Now func() time.Time
}

// Inbox keeps the events the sidecar would have sent to Sentry. It is safe
// for concurrent use: SendEvent runs on every capturing request goroutine.
type Inbox struct {
	log      *zap.Logger
	now      func() time.Time
	maxBytes int
	page     *template.Template

	mu      sync.Mutex
	errs    *ring // error events
	txs     *ring // transactions and other non-error telemetry
	dropped int   // events evicted from a ring or never encoded, since the last Clear

	// fileMu orders whole lines in the file and guards file against Close.
	fileMu      sync.Mutex
	file        *os.File
	fileFailing bool // last write failed; log again only when it recovers
}

var _ sentry.Transport = (*Inbox)(nil)

// New returns an Inbox. If o.File is set it is opened for appending
// (created 0600 if missing).
func New(o Options) (*Inbox, error) {
	if o.Size < 0 {
		return nil, fmt.Errorf("inbox size must not be negative, got %d", o.Size)
	}
	if o.MaxEventBytes < 0 {
		return nil, fmt.Errorf("inbox max event bytes must not be negative, got %d", o.MaxEventBytes)
	}
	size := o.Size
	if size == 0 {
		size = DefaultSize
	}
	maxBytes := o.MaxEventBytes
	if maxBytes == 0 {
		maxBytes = DefaultMaxEventBytes
	}
	page, err := parsePage()
	if err != nil {
		return nil, fmt.Errorf("parse inbox page: %w", err)
	}
	i := &Inbox{
		log:      o.Log,
		now:      o.Now,
		maxBytes: maxBytes,
		page:     page,
		errs:     newRing(size),
		txs:      newRing(max(1, size/4)),
	}
	if i.log == nil {
		i.log = zap.NewNop()
	}
	if i.now == nil {
		i.now = time.Now
	}
	if o.File != "" {
		f, err := os.OpenFile(o.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open inbox file %s: %w", o.File, err)
		}
		// OpenFile only applies 0600 when it creates the file; an existing
		// file keeps its mode, which the operator chose, but say so.
		if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
			i.log.Warn("inbox file is readable by others; events hold user ids and URLs",
				zap.String("file", o.File), zap.Stringer("mode", st.Mode().Perm()))
		}
		i.file = f
	}
	return i, nil
}

// Configure implements sentry.Transport. The inbox needs nothing from the
// client options: it never dials, so DSN, HTTP client and proxies are moot.
func (i *Inbox) Configure(sentry.ClientOptions) {}

// SendEvent implements sentry.Transport. The SDK calls it synchronously on
// the capturing goroutine with an event that still shares breadcrumbs, tags
// and user data with the scope (a custom transport gets no
// MakeSerializationSafe copy), so it is encoded here, before returning, and
// only the bytes are kept.
func (i *Inbox) SendEvent(ev *sentry.Event) {
	if ev == nil {
		return
	}
	enrich.TakeDSC(ev) // envelope header material, not part of the event Sentry stores
	raw, err := json.Marshal(ev)
	if err != nil {
		// Sentry would not have received it either (the SDK's transport
		// drops what it cannot encode), but the developer should know.
		i.log.Error("inbox could not encode event", zap.String("event_id", string(ev.EventID)), zap.Error(err))
		i.mu.Lock()
		i.dropped++
		i.mu.Unlock()
		return
	}
	i.add(raw, ev.Type, string(ev.EventID))
}

// AddItem keeps an event or transaction that arrived through the browser
// tunnel, given as its envelope item's JSON payload; other item types
// (replays, attachments, sessions) are not kept. The payload is copied.
func (i *Inbox) AddItem(itemType string, payload []byte) {
	switch itemType {
	case "event", "transaction", "feedback":
		i.add(append([]byte(nil), payload...), itemType, "")
	}
}

// add stores one event given as the JSON Sentry would receive; raw must not
// be modified afterwards. typ and id are what the caller knows from outside
// the payload ("" means read it from the JSON), as Sentry itself classifies
// by envelope item type: sentry-go's log and check-in payloads carry no
// "type", and a check-in has check_in_id instead of event_id.
func (i *Inbox) add(raw []byte, typ, id string) {
	sum := summarize(raw)
	if typ != "" {
		sum.Type = normalType(typ)
	}
	if sum.EventID == "" {
		sum.EventID = id
	}
	sum.ReceivedAt = i.now()
	sum.Bytes = len(raw)
	stored := raw
	if len(raw) > i.maxBytes {
		stored, sum.Omitted = fit(raw, i.maxBytes)
		sum.Truncated = true
	}
	i.appendLine(raw)

	e := &entry{raw: stored, sum: sum}
	i.mu.Lock()
	r := i.errs
	if sum.Type != TypeError {
		r = i.txs
	}
	if r.push(e) {
		i.dropped++
	}
	i.mu.Unlock()

	i.logEvent(sum)
}

// appendLine writes the event to the file in one Write, so lines from
// concurrent events never interleave.
func (i *Inbox) appendLine(raw []byte) {
	i.fileMu.Lock()
	defer i.fileMu.Unlock()
	if i.file == nil {
		return
	}
	line := make([]byte, 0, len(raw)+1)
	line = append(append(line, raw...), '\n')
	_, err := i.file.Write(line)
	switch {
	case err != nil && !i.fileFailing:
		// A full disk would otherwise log once per request.
		i.fileFailing = true
		i.log.Warn("inbox file write failed; events stay in memory", zap.String("file", i.file.Name()), zap.Error(err))
	case err == nil && i.fileFailing:
		i.fileFailing = false
		i.log.Info("inbox file writable again", zap.String("file", i.file.Name()))
	}
}

// logEvent writes the one log line per event. Errors are logged at info;
// transactions at debug, since every proxied request makes one and the
// access log already has a line for it.
func (i *Inbox) logEvent(s Summary) {
	lvl := zapcore.InfoLevel
	if s.Type != TypeError {
		lvl = zapcore.DebugLevel
	}
	ce := i.log.Check(lvl, "event kept in local inbox")
	if ce == nil {
		return
	}
	fields := []zap.Field{zap.String("event_id", s.EventID), zap.String("type", s.Type)}
	add := func(key, v string) {
		if v != "" {
			fields = append(fields, zap.String(key, v))
		}
	}
	add("level", s.Level)
	add("message", s.Message)
	if s.User != nil {
		add("user_id", s.User.ID)
	}
	add("route", s.Route)
	add("method", s.Method)
	add("status", s.Status)
	if s.Truncated {
		fields = append(fields, zap.Int("bytes", s.Bytes), zap.Strings("omitted", s.Omitted))
	}
	ce.Write(fields...)
}

// Flush implements sentry.Transport. Nothing is buffered: SendEvent has
// stored the event and written its line before returning.
func (i *Inbox) Flush(time.Duration) bool { return true }

// FlushWithContext implements sentry.Transport; see Flush.
func (i *Inbox) FlushWithContext(context.Context) bool { return true }

// Close implements sentry.Transport: it closes the file. The events in
// memory stay readable (the admin listener may outlive the Sentry client
// during shutdown) and later events are still kept, only not written.
// Close may be called more than once.
func (i *Inbox) Close() {
	i.fileMu.Lock()
	defer i.fileMu.Unlock()
	if i.file == nil {
		return
	}
	if err := i.file.Close(); err != nil {
		i.log.Warn("close inbox file", zap.String("file", i.file.Name()), zap.Error(err))
	}
	i.file = nil
}

// Len returns the number of error events held (transactions not counted).
func (i *Inbox) Len() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.errs.len()
}

// Events returns copies of the error events held, newest first.
func (i *Inbox) Events() []json.RawMessage {
	i.mu.Lock()
	es := i.errs.newest(0)
	i.mu.Unlock()
	return raws(es)
}

// Transactions returns copies of the transactions (and other non-error
// telemetry) held, newest first.
func (i *Inbox) Transactions() []json.RawMessage {
	i.mu.Lock()
	es := i.txs.newest(0)
	i.mu.Unlock()
	return raws(es)
}

// Clear empties the inbox and resets the dropped count.
func (i *Inbox) Clear() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.errs.clear()
	i.txs.clear()
	i.dropped = 0
}

func raws(es []*entry) []json.RawMessage {
	out := make([]json.RawMessage, len(es))
	for k, e := range es {
		out[k] = bytes.Clone(e.raw)
	}
	return out
}

// snapshot is a consistent view for one response; entries are immutable
// once stored, so they are read without the lock.
type snapshot struct {
	errs, txs []*entry
	dropped   int
	errsLen   int
	txsLen    int
}

// snapshot takes up to limitErrs errors and limitTxs transactions, newest
// first; 0 means all of them and a negative limit none.
func (i *Inbox) snapshot(limitErrs, limitTxs int) snapshot {
	i.mu.Lock()
	defer i.mu.Unlock()
	s := snapshot{dropped: i.dropped, errsLen: i.errs.len(), txsLen: i.txs.len()}
	if limitErrs >= 0 {
		s.errs = i.errs.newest(limitErrs)
	}
	if limitTxs >= 0 {
		s.txs = i.txs.newest(limitTxs)
	}
	return s
}

// find returns the newest event with the id, in either ring.
func (i *Inbox) find(id string) *entry {
	i.mu.Lock()
	defer i.mu.Unlock()
	if e := i.errs.find(id); e != nil {
		return e
	}
	return i.txs.find(id)
}

// entry is one stored event; it never changes after add.
type entry struct {
	raw json.RawMessage // as sent, or the fitted copy if Summary.Truncated
	sum Summary
}

// ring keeps the newest size entries. Its slice grows on demand, so a
// large Size costs memory only once events arrive.
type ring struct {
	size int
	buf  []*entry
	next int // where the next push goes once buf is full
}

func newRing(size int) *ring { return &ring{size: size} }

func (r *ring) len() int { return len(r.buf) }

// push adds e and reports whether the oldest entry was evicted for it.
func (r *ring) push(e *entry) bool {
	if len(r.buf) < r.size {
		r.buf = append(r.buf, e)
		return false
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % r.size
	return true
}

// newest returns up to limit entries, newest first; limit <= 0 means all.
func (r *ring) newest(limit int) []*entry {
	n := len(r.buf)
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]*entry, 0, limit)
	// The newest entry sits just before next; until the ring is full next
	// is 0 and that wraps to the end of buf.
	for k := range limit {
		out = append(out, r.buf[(r.next-1-k+2*n)%n])
	}
	return out
}

func (r *ring) find(id string) *entry {
	for _, e := range r.newest(0) {
		if e.sum.EventID == id {
			return e
		}
	}
	return nil
}

func (r *ring) clear() {
	r.buf = nil
	r.next = 0
}
