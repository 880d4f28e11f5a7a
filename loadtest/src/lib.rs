//! nudge's load-testing harness: drives a nudge server (TCP, WebSocket, HTTP), an in-process
//! engine, or Redis running the same per-event math in Lua, with a seeded personalization
//! workload, and reports tail latency honestly (HdrHistogram; open loop corrected for
//! coordinated omission).
//!
//! A request travels, and the modules are listed in that order:
//! - `workload`: the seeded users, catalog and sessions, as a stream of ops (`zipf` beside it);
//! - `wire`: encodes ops as nudge's JSON and parses replies (`redis`: the Lua and RESP form);
//! - `client`: connections to each target, split into sending and receiving halves (`http`:
//!   the project's one HTTP/1.1 client codec, which nudge's server tests use too);
//! - `driver`: the open- or closed-loop run, one writer and one reader task per connection
//!   (`pace`: the open loop's schedule and the thread that wakes the writers when sends are due);
//! - `report`: percentile tables, rates, errors, validity, the JSON summary;
//! - `timeline`: the same per interval, with the server's RSS, as a CSV (the soak run), and
//!   `plot`, which draws it (`probe`: the server's resident users and open decisions beside it).
//!
//! Beside that path: `floor` (the loopback echo round trip a ping-pong is read against),
//! `stall` (pauses a process mid-run for the self-test), `serve` (the
//! harness's own child server mode, which the stall test can pause) and `crash` (the
//! SIGKILL crash loop against a child serving from a data directory).
#![warn(missing_docs)]

pub mod client;
pub mod crash;
pub mod driver;
pub mod floor;
pub mod http;
pub mod pace;
pub mod plot;
pub mod probe;
pub mod redis;
pub mod report;
pub mod serve;
pub mod stall;
pub mod timeline;
pub mod wire;
pub mod workload;
pub mod zipf;
