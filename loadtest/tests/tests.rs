//! The harness's one integration-test binary; one module per concern.

/// Short closed- and open-loop runs against an in-process engine.
mod embedded;
/// The workload: determinism for a seed, the shape of the stream.
mod workload;
