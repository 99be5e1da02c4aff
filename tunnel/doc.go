// Package tunnel is a Sentry tunnel you can use on its own. It is the
// endpoint a browser SDK posts envelopes to when Sentry.init has
// tunnel: "/...", and it forwards them to Sentry only once they are known to
// be safe.
//
// An envelope is handled as bytes, never re-serialised as a whole. Parse
// reads it with Relay's framing rules: items with and without "length",
// binary replay payloads, unknown item types and header keys. Bytes writes
// back, byte for byte, every part the tunnel did not change. ReadBody reads
// the request body within Limits, which also bounds decompression, and
// Limits.Check applies the per-item limits. Category maps item types to the
// data categories that Sentry's rate limits name.
//
// The HTTP handler builds on these pieces. It maps the browser's DSN to a
// configured one, forwards only to URLs built from configuration, and
// passes back Sentry's status and rate limits, answering 429 itself while a
// limit holds. It also applies per-client rate limits and CORS, and gives
// event items the verified user and the same scrubbing as server events.
//
// The reasoning, with sources, is in the project's research notes on the
// tunnel: §A covers the envelope protocol and §C how Relay behaves. Comments
// here cite the Relay or SDK code behind each rule.
package tunnel
