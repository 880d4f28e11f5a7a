//! nudge's one integration-test binary. Each module tests one boundary or concern; see the
//! comment at the top of each. Regression tests are named after the issue they fix.

// The `nudge` binary at first contact: banner, warnings, plain logs, bind errors.
#[cfg(feature = "cli")]
mod cli;
// Durability (issue 11): restart and crash recovery, the log's faults, the directory lock.
#[cfg(feature = "cli")]
mod durability;

mod checkpoints;
// Definitions given over the API (rules, triggers, templates, segment names) after restarts
// and crashes; the config file as baseline; the definitions log's faults.
mod definitions;
// The embeddable API: learning, attribution, bad input, concurrency, export and erasure.
mod engine_api;
// Issue 13: experiments as data, sticky arms through `decide`, attribution, results, SRM.
mod experiments;
// Issue 14, item 4: live segments: planted groups recovered, names, targeting, restart.
mod segments;
// Learning from a plain event stream: co-occurrence, negatives, impressions, previews, import.
mod event_stream;
// Properties of the model's math, policies and hashing (proptest).
mod model_props;
// Issue 14: live features from hand-made events; rules compiled, applied, explained, reloaded.
mod rules;
// Issue 15: frequency caps, fatigue and diversity; propensities; survival of a restart.
mod saturation;
// Issue 15: consent: personalization and storage denied mid-stream, on disk and after restarts;
// templates, export and triggers of users who limited it.
mod consent;
// Issue 15: tone decisions from a message's sentiment (given or lexicon-scored), learned.
mod tone;
// Issue 15: templates refused with positions, rendered, versioned, decided slot by slot.
mod templates;
// Issue 14, item 3: threshold triggers: crossings, cooldowns, refusals, delivery, replay.
mod triggers;
// Issue 12: the run-to-completion path under contention, panics, and async waiting.
mod request_path;
// Issue 15, item 4: `nudge replay` on template decisions: slate IPS and SNIPS against known values.
#[cfg(feature = "eval")]
mod replay;
// Decision quality: a short seeded simulation orders full nudge > global-only > random;
// on a small contextual bandit, informed and full nudge beat random.
#[cfg(feature = "eval")]
mod quality;
// Shared helpers of the server tests: in-process server, line and HTTP clients.
#[cfg(feature = "server")]
mod server_support;
// The TCP line-JSON front end: ops, pipelining, limits, half-close, graceful shutdown.
#[cfg(feature = "server")]
mod server_tcp;
// The HTTP front end: every route, and /metrics as Prometheus text.
#[cfg(feature = "server")]
mod server_http;
// Issue 13 over the wire: the experiment ops on TCP and the `/v1/experiments` routes.
#[cfg(feature = "server")]
mod server_experiments;
// Issue 13: the live dashboard, loaded and driven in headless Chromium.
#[cfg(feature = "server")]
mod server_dashboard;
// Issue 14 over the wire: the `rules` and `features` ops, triggers and explain in replies.
#[cfg(feature = "server")]
mod server_rules;
// Issue 15 over the wire: the `template` op, `decide` with a template, a decision's reward.
#[cfg(feature = "server")]
mod server_templates;
// Issue 14, item 3 over the wire: the `triggers` op, replies, pushes, the webhook, replay.
#[cfg(feature = "server")]
mod server_triggers;
// The WebSocket front end: ops per frame, subscription pushes, close codes.
#[cfg(feature = "server")]
mod server_ws;
// Issue 12: one session for TCP, WebSocket and HTTP (same request, same reply) and one table
// of outcomes (every error code's HTTP status and metric label, as documented).
#[cfg(feature = "server")]
mod server_session;
// Segment-compatible ingestion: auth, mapping, dedup, clock skew, gzip, limits.
#[cfg(feature = "server")]
mod server_segment;
// Issue 16: slow senders, values, ids and errors a hostile or careless client sends.
#[cfg(feature = "server")]
mod server_hardening;
// Bounded fuzzing over real sockets: TCP lines, WebSocket frames, Segment bodies (proptest).
#[cfg(feature = "server")]
mod server_fuzz;
// The wire parser never panics on arbitrary bytes (proptest).
#[cfg(feature = "server")]
mod wire_props;
