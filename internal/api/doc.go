// Package api is sundown's local HTTP interface: a JSON API over the
// daemon's snapshot (GET /api/v1/status), a Server-Sent Events stream of it
// (GET /api/v1/events), Prometheus metrics (GET /metrics, when a handler is
// given), a live status page (GET /), and three authenticated,
// rate-limited, audited state-changing calls (POST /api/v1/trigger, drill,
// ack).
//
// The package depends on the Daemon interface, not on the daemon itself;
// the actions are plain functions, so the server runs in tests without a
// daemon. The JSON views are explicit structs with snake_case fields: they
// are a public contract, documented in README.md beside this file, and they
// never change shape when an internal type does.
//
// Every goroutine has an owner: a request's handler runs on net/http's
// goroutine and returns when the client goes or the server stops; Serve
// returns only after its http.Server has shut down.
package api
