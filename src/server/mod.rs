//! `server`: the network front ends of `nudge serve`, each speaking the `wire` protocol:
//! - `tcp`: newline-delimited JSON on tokio, pipelined, replies in request order;
//! - `http`: actix-web routes mirroring the ops, health checks and `/metrics`;
//! - `ws`: the same ops per WebSocket text frame, plus `subscribe` pushes;
//! - `segment`: Segment-compatible ingestion (`/v1/track`, `/v1/batch`, …);
//! - `deadline`: the HTTP socket wrapper that enforces the request deadline;
//! - `fd_limit`: `max_connections` fitted to the open-file limit at start;
//! - `http_errors`: 404, 405 and actix's own refusals in the JSON error shape;
//! - `session`: the one protocol session all three run (parse → submit → replies in request
//!   order), events coalesced, subscriptions; `session::dispatch`: op → engine call → reply;
//! - `metrics`: counters, labelled from the protocol's tables (`OpKind`, `ErrorCode`).
//!
//! **Invariants:** the server never touches user state (it parses, routes to the engine's
//! async API, and awaits replies); every queue it owns is bounded (in-flight requests per
//! connection, connections, line and frame sizes, pushes per socket). Shutdown is graceful:
//! stop accepting, finish in-flight requests, then drain the engine's shards.
//!
//! Use `spawn` for an in-process server on its own threads, or `serve` inside a tokio runtime
//! with a shutdown future (what `main` does).

mod dashboard;
mod deadline;
mod fd_limit;
mod http;
mod http_errors;
pub mod metrics;
mod segment;
mod session;
mod tcp;
mod webhook;
mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

pub use crate::config::ServerConfig;
use crate::engine::Engine;
use metrics::Metrics;

/// What every front end shares: the engine handle, the configuration and the counters.
pub(crate) struct Shared {
    /// The engine, with `ServerConfig::on_full` applied.
    engine: Engine,
    cfg: ServerConfig,
    metrics: Arc<Metrics>,
    /// False once shutdown begins (`/readyz` answers 503).
    ready: AtomicBool,
    /// Flips to `true` when shutdown begins: connections stop reading, finish what is in
    /// flight, and close.
    stop: watch::Receiver<bool>,
}

/// Listening sockets, bound before the server starts so their addresses are known at once.
pub struct Listeners {
    tcp: Option<std::net::TcpListener>,
    http: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses (port 0 picks a free port). An error names the front
    /// end, the address and its setting (`cannot listen for tcp on 127.0.0.1:7070 (server.tcp,
    /// --tcp): Address already in use`).
    pub fn bind(cfg: &ServerConfig) -> io::Result<Listeners> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let bind = |what: &str, addr: Option<SocketAddr>| {
            addr.map(|a| {
                let l = std::net::TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .transpose()
            .map_err(|e: io::Error| {
                let why = format!(
                    "cannot listen for {what} on {} (server.{what}, --{what}): {e}",
                    addr.map_or_else(String::new, |a| a.to_string())
                );
                io::Error::new(e.kind(), why)
            })
        };
        Ok(Listeners {
            tcp: bind("tcp", cfg.tcp_addr().map_err(invalid)?)?,
            http: bind("http", cfg.http_addr().map_err(invalid)?)?,
        })
    }

    /// The TCP front end's address, if on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTP (and WebSocket, Segment) front end's address, if on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// A server running on its own threads (see `spawn`).
pub struct RunningServer {
    tcp: Option<SocketAddr>,
    http: Option<SocketAddr>,
    /// Dropping or sending on it starts the graceful shutdown.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    /// Where the TCP front end listens.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Where the HTTP, WebSocket (`/v1/ws`) and Segment front ends listen.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Stops accepting, finishes in-flight requests, drains the engine's shards
    /// (`Engine::shutdown`), and returns once all of that is done.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(e)) => warn!(error = %e, "server stopped with an error"),
                Err(_) => warn!("server thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the front ends on their own threads (a tokio runtime for TCP, actix workers for
/// HTTP) and returns once they listen.
pub fn spawn(engine: Engine, cfg: ServerConfig) -> io::Result<RunningServer> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listeners = Listeners::bind(&cfg)?;
    let (tcp, http) = (listeners.tcp_addr(), listeners.http_addr());
    let runtime = runtime(&cfg)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("nudge-server".into())
        .spawn(move || {
            runtime.block_on(serve_on(engine, cfg, listeners, async move {
                let _ = rx.await;
            }))
        })?;
    Ok(RunningServer {
        tcp,
        http,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// The tokio runtime for the TCP front end (`ServerConfig::tcp_threads` workers).
pub fn runtime(cfg: &ServerConfig) -> io::Result<tokio::runtime::Runtime> {
    let threads = match cfg.tcp_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("nudge-io")
        .enable_all()
        .build()
}

/// Binds the configured addresses and serves until `shutdown` completes, then shuts down
/// gracefully. Must run inside a tokio runtime.
pub async fn serve(
    engine: Engine,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listeners = Listeners::bind(&cfg)?;
    serve_on(engine, cfg, listeners, shutdown).await
}

/// Serves on already-bound `listeners` until `shutdown` completes; then stops accepting,
/// finishes in-flight requests (up to `shutdown_timeout_s`), and drains the engine.
pub async fn serve_on(
    engine: Engine,
    cfg: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Fired triggers go to the webhook from its own thread, through a bounded queue.
    let hook =
        webhook::Webhook::start(&engine.config().webhook, engine.trigger_delivery_counters())?;
    let hook = Arc::new(hook);
    engine.add_trigger_sink(hook.clone());
    let mut cfg = cfg;
    cfg.max_connections = fd_limit::fit(cfg.max_connections);
    let shared = Arc::new(Shared {
        engine: engine.clone().on_full(cfg.on_full),
        cfg,
        metrics: Arc::new(Metrics::default()),
        ready: AtomicBool::new(true),
        stop: stop_rx,
    });
    let tcp_task = match listeners.tcp {
        Some(l) => {
            let listener = tokio::net::TcpListener::from_std(l)?;
            info!(addr = %listener.local_addr()?, "tcp front end listening");
            Some(tokio::spawn(tcp::run(listener, shared.clone())))
        }
        None => None,
    };
    let http_server = match listeners.http {
        Some(l) => {
            info!(addr = %l.local_addr()?, "http front end listening (ws at /v1/ws)");
            Some(http::server(l, shared.clone())?)
        }
        None => None,
    };
    let http_handle = http_server.as_ref().map(|s| s.handle());
    let http_task = http_server.map(tokio::spawn);

    shutdown.await;
    info!("shutting down: no new connections; finishing in-flight requests");
    shared.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(shared.cfg.shutdown_timeout_s);
    let drain = async {
        let http = async {
            if let Some(h) = http_handle {
                h.stop(true).await;
            }
        };
        let tcp = async {
            if let Some(t) = tcp_task {
                let _ = t.await;
            }
        };
        futures_util::future::join(http, tcp).await;
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        warn!(
            seconds = grace.as_secs(),
            "in-flight requests did not finish in time"
        );
    }
    if let Some(t) = http_task {
        t.abort();
    }
    info!("draining the engine's shards");
    let engine = shared.engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    // Firings still queued for the webhook are dropped (and counted), not waited for.
    hook.close();
    info!("stopped");
    Ok(())
}
