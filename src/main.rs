//! `nudge`: the command-line entry point. `nudge serve` runs the engine behind the TCP,
//! HTTP and WebSocket front ends until SIGINT or SIGTERM, then shuts down gracefully.
//!
//! Configuration: embedded defaults, then `--config FILE` (TOML), then `NUDGE_*` environment
//! variables (see `nudge::config`), then the command-line flags. This binary owns argument
//! parsing, logging setup and signal handling; everything else lives in the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal as _;

use tracing::{info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A real-time personalization engine.
#[derive(Parser)]
#[command(name = "nudge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands; each variant's arguments live in their own struct.
#[derive(Subcommand)]
enum Command {
    /// Serve the engine over TCP (line JSON), HTTP, WebSocket and Segment-compatible routes.
    Serve(ServeArgs),
    /// Evaluate an engine configuration off-policy against a decision log or the Open Bandit
    /// Dataset sample (replay, IPS, SNIPS with intervals; see docs/quality.md).
    Replay(nudge::eval::replay::ReplayArgs),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// A TOML configuration file (every field also has a NUDGE_* environment override).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address of the TCP line-JSON front end ("" turns it off).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<String>,
    /// Address of the HTTP/WebSocket front end ("" turns it off).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Shards: partitions of the users, each run by one thread at a time (0: one per core).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Tokio worker threads of the TCP front end (0: one per core).
    #[arg(long, value_name = "N")]
    tcp_threads: Option<usize>,
    /// actix-web worker threads of the HTTP front end.
    #[arg(long, value_name = "N")]
    http_workers: Option<usize>,
    /// The data directory (default `./nudge-data`; "" keeps everything in memory only).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// When the write-ahead log is fsynced: always, everysec (default) or no.
    #[arg(long, value_name = "POLICY")]
    fsync: Option<String>,
    /// Seconds between checkpoints of the data directory (default 60).
    #[arg(long, value_name = "S")]
    checkpoint_interval_s: Option<u64>,
    /// On corruption in the middle of a log, keep the valid prefix and move the rest aside
    /// instead of refusing to start.
    #[arg(long)]
    repair: bool,
}

fn main() -> anyhow::Result<()> {
    // Colours only for a person at a terminal: a log redirected to a file or a pipe gets
    // plain text, and `NO_COLOR` turns them off anywhere.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NUDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Replay(args) => {
            print!(
                "{}",
                nudge::eval::replay::run(&args).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = nudge::Config::load(args.config.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(tcp) = args.tcp {
        config.server.tcp = tcp;
    }
    if let Some(http) = args.http {
        config.server.http = http;
    }
    if let Some(n) = args.shards {
        config.shards = n;
    }
    if let Some(n) = args.tcp_threads {
        config.server.tcp_threads = n;
    }
    if let Some(n) = args.http_workers {
        config.server.http_workers = n;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = Some(dir);
    }
    if let Some(s) = args.checkpoint_interval_s {
        config.durability.checkpoint_interval_s = s;
    }
    // `nudge serve` is durable out of the box; an embedded engine is in memory unless told.
    config
        .data_dir
        .get_or_insert_with(|| "./nudge-data".to_string());
    if let Some(policy) = args.fsync {
        config.durability.fsync = match policy.as_str() {
            "always" => nudge::FsyncPolicy::Always,
            "everysec" => nudge::FsyncPolicy::Everysec,
            "no" => nudge::FsyncPolicy::No,
            other => anyhow::bail!("--fsync must be always, everysec or no, not `{other}`"),
        };
    }
    config.validate().map_err(anyhow::Error::msg)?;
    for name in nudge::Config::ignored_env_vars(std::env::vars()) {
        warn!("{name} is not a configuration variable and was ignored (sections nest with a double underscore, e.g. NUDGE_SERVER__SEGMENT__WRITE_KEY)");
    }
    let server_cfg = config.server.clone();
    let runtime = nudge::server::runtime(&server_cfg).context("starting the runtime")?;
    let listeners = nudge::server::Listeners::bind(&server_cfg)?;
    let engine = nudge::Engine::builder()
        .config(config)
        .repair(args.repair)
        .build()
        .context("starting the engine")?;
    println!(
        "nudge {} serving with {} shards",
        env!("CARGO_PKG_VERSION"),
        engine.shard_count()
    );
    match engine.stats().durability {
        Some(d) => println!(
            "  data {}   (write-ahead log, fsync {}, checkpoint every {} s; {} users stored; \
             replayed {} records in {} ms)",
            d.data_dir,
            d.fsync,
            engine.config().durability.checkpoint_interval_s,
            d.stored_users,
            d.recovered_records,
            d.recovery_ms
        ),
        None => println!("  data in memory only   (nothing survives a restart)"),
    }
    if let Some(addr) = listeners.tcp_addr() {
        println!("  tcp  {addr}   (one JSON request per line)");
        // No `nc` on a fresh machine, and `nc` waits for the server to close: bash's
        // /dev/tcp reads the one reply and returns.
        println!(
            r#"       try: bash -c 'exec 3<>/dev/tcp/{}/{}; echo "{{\"op\":\"ping\"}}" >&3; head -1 <&3'"#,
            addr.ip(),
            addr.port()
        );
    }
    if let Some(addr) = listeners.http_addr() {
        println!("  http http://{addr}   (ws://{addr}/v1/ws, metrics at /metrics)");
        println!("       try: curl -s http://{addr}/livez");
        let segment = &server_cfg.segment;
        if segment.write_key.is_empty() {
            println!("  segment ingestion (/v1/track, /v1/batch, …): NOT authenticated");
            warn!("Segment ingestion accepts calls without a write key: set server.segment.write_key (NUDGE_SERVER__SEGMENT__WRITE_KEY) unless every client is trusted");
        } else {
            println!("  segment ingestion (/v1/track, /v1/batch, …): authenticated by write key");
        }
    }
    runtime.block_on(nudge::server::serve_on(
        engine,
        server_cfg,
        listeners,
        signal(),
    ))?;
    info!("bye");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
