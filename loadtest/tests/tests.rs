//! The harness's one integration-test binary; one module per concern.

/// The SIGKILL crash loop against a child serving from a data directory.
mod crash;
/// Short closed- and open-loop runs against an in-process engine.
mod embedded;
/// The loopback floor's echo server and its announcement.
mod floor;
/// The open loop's schedule: due counts, connections' shares, the pacer's wake times.
mod pace;
/// Short runs against nudge's server in process, over TCP, WebSocket and HTTP.
mod server;
/// The stall self-test against a pausable child server.
mod stall;
/// The timeline (`--timeline`, the soak run) and its plot.
mod timeline;
/// The workload: determinism for a seed, the shape of the stream.
mod workload;
