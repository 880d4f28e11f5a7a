//! `fd_limit`: fits `max_connections` to the process's file-descriptor limit at start.
//!
//! Each TCP connection holds one descriptor. With `max_connections` above the limit, accepts
//! failed with `EMFILE` in a loop while the semaphore still had permits, and clients hung.
//! At start the soft limit is raised toward what the cap needs (up to the hard limit); if
//! that is not enough, the cap is lowered to fit and the log says so. It does not watch the
//! limit afterwards (the accept loop backs off on `EMFILE`).

use tracing::{info, warn};

/// Descriptors kept for the rest of the process: listeners, the epoll instances, shard and
/// worker threads' needs, log files, and HTTP/WebSocket connections (which actix caps itself).
pub const RESERVED_FDS: u64 = 256;

/// The TCP connection cap that fits the descriptor limit (raising the soft limit first when
/// allowed).
pub(super) fn fit(max_connections: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let needed = max_connections as u64 + RESERVED_FDS;
        let limit = getrlimit(Resource::Nofile);
        let soft = limit.current.unwrap_or(u64::MAX);
        if soft >= needed {
            return max_connections;
        }
        let hard = limit.maximum.unwrap_or(u64::MAX);
        let target = needed.min(hard);
        let raised = rustix::process::Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        let soft = match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                info!(from = soft, to = target, "raised the open-file soft limit");
                target
            }
            Err(_) => soft,
        };
        if soft >= needed {
            return max_connections;
        }
        let fitted = soft.saturating_sub(RESERVED_FDS).max(1) as usize;
        warn!(
            configured = max_connections,
            lowered_to = fitted,
            open_file_limit = soft,
            "server.max_connections is above what the open-file limit allows; lowered (raise `ulimit -n` to keep it)"
        );
        fitted
    }
    #[cfg(not(unix))]
    {
        max_connections
    }
}
