// Package enrich holds the pure functions that turn what the sidecar sees
// into what Sentry and the logs get: scrubbing of secrets, and (with later
// issues) users from tokens, breadcrumbs, route templates and events. It
// knows no server and no configuration tree, so every function is
// table-testable.
package enrich
