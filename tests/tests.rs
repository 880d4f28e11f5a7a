//! nudge's one integration-test binary. Each module tests one boundary or concern; see the
//! comment at the top of each. Regression tests are named after the issue they fix.

// Durability (issue 11): restart and crash recovery, the log's faults, the directory lock.
mod durability;
// The embeddable API: learning, attribution, bad input, concurrency, export and erasure.
mod engine_api;
// Properties of the model's math, policies and hashing (proptest).
mod model_props;
// Decision quality: a short seeded simulation orders full nudge > global-only > random.
mod quality;
// Shared helpers of the server tests: in-process server, line and HTTP clients.
mod server_support;
// The TCP line-JSON front end: ops, pipelining, limits, half-close, graceful shutdown.
mod server_tcp;
// The HTTP front end: every route, and /metrics as Prometheus text.
mod server_http;
// The WebSocket front end: ops per frame, subscription pushes, close codes.
mod server_ws;
// Segment-compatible ingestion: auth, mapping, dedup, clock skew, gzip, limits.
mod server_segment;
// The wire parser never panics on arbitrary bytes (proptest).
mod wire_props;
