//! The `loadtest` binary: parses the command line, starts a target when asked (an in-process
//! engine, an in-process server, or a pausable child server), runs the harness, prints the
//! report, writes the JSON summary, and exits non-zero when a threshold is broken.
//!
//! Exit codes: 0 all good; 1 a threshold was broken or the run is invalid; 2 the run failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use loadtest::client::Target;
use loadtest::driver::{self, Load, RunSpec};
use loadtest::stall::StallSpec;
use loadtest::workload::WorkloadConfig;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Load-testing harness for nudge: open loop (corrected for coordinated omission) or closed
/// loop, HdrHistogram tails, JSON summary.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve nudge on a loopback port from this process and print `listening tcp=… ws=… http=…`
    /// (the pausable child the stall test and `--spawn-child` use).
    Serve {
        /// Engine shards (0: one per core).
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Exit when standard input closes (how `--spawn-child` ties the child to the harness).
        #[arg(long)]
        exit_on_stdin_eof: bool,
        /// Keep state in this data directory (default: in memory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The write-ahead log's fsync policy with --data-dir: always, everysec or no.
        #[arg(long, default_value = "everysec")]
        fsync: String,
        /// Seconds between checkpoints with --data-dir.
        #[arg(long, default_value_t = 60)]
        checkpoint_interval_s: u64,
    },
    /// Crash loop: serve from a data directory as a child, drive pipelined events, SIGKILL the
    /// child at random moments, restart it on the same directory and check what survived.
    Crash(loadtest::crash::CrashArgs),
    /// Draw a timeline CSV (`--timeline`) as a PNG: RSS, latency percentiles and rate over time.
    Plot {
        /// The timeline CSV.
        timeline: PathBuf,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// The figure's title.
        #[arg(long, default_value = "loadtest timeline")]
        title: String,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// tcp://HOST:PORT, ws://HOST:PORT/v1/ws, http://HOST:PORT, embedded, or redis://HOST:PORT.
    /// With --spawn-server or --spawn-child, just tcp, ws or http.
    #[arg(long, default_value = "embedded")]
    target: String,
    /// Open loop: requests per second, all connections together (omit for closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// Closed loop: requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up seconds, excluded from the results.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Users.
    #[arg(long, default_value_t = 1_000_000)]
    users: u32,
    /// Catalog items.
    #[arg(long, default_value_t = 100_000)]
    items: u32,
    /// Candidates per decision.
    #[arg(long, default_value_t = 100)]
    candidates: u16,
    /// Items shown per decision.
    #[arg(long, default_value_t = 10)]
    top: u16,
    /// Share of requests that are events (the rest are decisions).
    #[arg(long, default_value_t = 0.8)]
    mix: f64,
    /// Requests between a decision and its follow-up events.
    #[arg(long, default_value_t = 1024)]
    lag: u32,
    /// Send consecutive events as one batch request of this many (TCP and WebSocket: a `batch`
    /// op; HTTP: a JSON array to /v1/events; embedded: `ingest_batch_async`).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Do not load the catalog first (it is already there).
    #[arg(long)]
    no_catalog: bool,
    /// Before the run, send one event per user (batches of 256) so every user is resident
    /// when it starts (a soak's memory then shows growth, not users arriving).
    #[arg(long)]
    prefill: bool,
    /// Write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit 1 when any op's corrected p99 exceeds this (µs).
    #[arg(long)]
    max_p99_us: Option<f64>,
    /// Exit 1 when the achieved rate is below this (requests/s).
    #[arg(long)]
    min_rate: Option<f64>,
    /// A send this many µs behind schedule counts as late (open loop).
    #[arg(long, default_value_t = 1000.0)]
    late_us: f64,
    /// Open loop: the pacer wakes at most once per this many µs; requests due within one
    /// tick leave together.
    #[arg(long, default_value_t = 200.0)]
    tick_us: f64,
    /// Print a progress line every second (default: on for runs of 10 s or more).
    #[arg(long)]
    progress: bool,
    /// Worker threads of the harness (default: the CPUs it may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// Shards of an embedded or spawned engine (0: one per core).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Start nudge's server in this process and target it.
    #[arg(long, conflicts_with = "spawn_child")]
    spawn_server: bool,
    /// Start `loadtest serve` as a child process and target it (pausable: see --stall-ms).
    #[arg(long)]
    spawn_child: bool,
    /// Stop the server for this many ms mid-run (SIGSTOP, then SIGCONT).
    #[arg(long)]
    stall_ms: Option<u64>,
    /// The process to stop (default: the --spawn-child server).
    #[arg(long)]
    stall_pid: Option<u32>,
    /// When to stop it, seconds into the measured window.
    #[arg(long, default_value_t = 1.0)]
    stall_at: f64,
    /// Before the run, measure the loopback floor against this echo server (`loadtest serve`
    /// prints it as `echo=`): the same request bytes, one at a time. With --spawn-child the
    /// child's echo server is used without asking.
    #[arg(long)]
    floor: Option<SocketAddr>,
    /// Write one CSV row per interval: each op's corrected p50/p99/p99.9/max of that interval,
    /// the achieved rate, errors, late sends and the server's RSS (`loadtest plot` draws it).
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// The timeline's interval, seconds.
    #[arg(long, default_value_t = 1.0)]
    timeline_interval_s: f64,
    /// Whose RSS the timeline samples (default: the --spawn-child server, else this process,
    /// which holds the engine with --target embedded or --spawn-server).
    #[arg(long)]
    rss_pid: Option<u32>,
    /// Pin the --spawn-child server to these CPUs (`taskset -c LIST`), e.g. 0 while the
    /// harness runs under `taskset -c 1`.
    #[arg(long, requires = "spawn_child")]
    child_cpus: Option<String>,
}

/// The loopback floor with the bytes of the workload's first request.
async fn measure_floor(
    addr: SocketAddr,
    workload: &WorkloadConfig,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let w = std::sync::Arc::new(
        loadtest::workload::Workload::new(workload.clone()).map_err(anyhow::Error::msg)?,
    );
    let op = loadtest::workload::Generator::new(w.clone(), 0, 1).next_op();
    let mut payload = Vec::new();
    loadtest::wire::encode(&op, 1, &w, &mut payload);
    loadtest::floor::measure(addr, &payload, 2_000, loadtest::floor::ROUNDS).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Plot {
        timeline,
        out,
        title,
    }) = &cli.command
    {
        let drawn = std::fs::read_to_string(timeline)
            .with_context(|| format!("reading {}", timeline.display()))
            .and_then(|text| loadtest::timeline::parse(&text))
            .and_then(|rows| loadtest::plot::draw(&rows, title, out));
        return match drawn {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest plot: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Crash(args)) = &cli.command {
        return match loadtest::crash::run(args) {
            Ok(report) => {
                print!("{report}");
                if report.violations.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("loadtest crash: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Serve {
        shards,
        exit_on_stdin_eof,
        data_dir,
        fsync,
        checkpoint_interval_s,
    }) = cli.command
    {
        let durable = match (&data_dir, loadtest::crash::fsync_policy(&fsync)) {
            (None, _) => Ok(None),
            (Some(dir), Ok(policy)) => Ok(Some((dir.as_path(), policy, checkpoint_interval_s))),
            (Some(_), Err(e)) => Err(e),
        };
        let served =
            durable.and_then(|d| loadtest::serve::serve_child(shards, exit_on_stdin_eof, d));
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest serve: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let threads = cli
        .run
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build();
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli.run)));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn addr(rest: &str) -> anyhow::Result<SocketAddr> {
    let host = rest.split('/').next().unwrap_or(rest);
    host.parse()
        .with_context(|| format!("`{host}` is not HOST:PORT (an IP address and a port)"))
}

/// Parses `--target`; `spawned` names the server this run started, if any.
fn parse_target(
    text: &str,
    spawned: Option<&loadtest::serve::Endpoints>,
    shards: usize,
) -> anyhow::Result<Target> {
    if let Some(ep) = spawned {
        return Ok(match text.split("://").next().unwrap_or(text) {
            "tcp" => Target::Tcp(ep.tcp),
            "ws" => Target::Ws(format!("ws://{}/v1/ws", ep.http)),
            "http" => Target::Http(ep.http),
            other => bail!("a spawned server serves tcp, ws or http, not `{other}`"),
        });
    }
    if text == "embedded" {
        let engine = nudge::Engine::builder().shards(shards).build()?;
        return Ok(Target::Embedded(engine));
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        bail!("--target `{text}`: expected SCHEME://HOST:PORT or embedded");
    };
    Ok(match scheme {
        "tcp" => Target::Tcp(addr(rest)?),
        "http" => Target::Http(addr(rest)?),
        "redis" => Target::Redis(addr(rest)?),
        "ws" => Target::Ws(text.to_string()),
        other => bail!("unknown target scheme `{other}`"),
    })
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let mut child = None;
    let mut in_process = None;
    let endpoints = if args.spawn_child {
        let c = loadtest::serve::Child::spawn(args.shards, args.child_cpus.as_deref())?;
        let ep = c.endpoints.clone();
        child = Some(c);
        Some(ep)
    } else if args.spawn_server {
        let shards = args.shards;
        let s = tokio::task::spawn_blocking(move || loadtest::serve::InProcess::start(shards))
            .await??;
        let ep = s.endpoints.clone();
        in_process = Some(s);
        Some(ep)
    } else {
        None
    };
    let target = parse_target(&args.target, endpoints.as_ref(), args.shards)?;
    let load = match args.rate {
        Some(rate) if rate > 0.0 => Load::Open { rate },
        Some(rate) => bail!("--rate must be positive, not {rate}"),
        None => Load::Closed {
            pipeline: args.pipeline.max(1),
        },
    };
    let stall = match args.stall_ms {
        None => None,
        Some(ms) => {
            let pid = match (args.stall_pid, &child) {
                (Some(pid), _) => pid,
                (None, Some(c)) => c.pid(),
                (None, None) => bail!("--stall-ms needs --stall-pid or --spawn-child"),
            };
            let at = Duration::from_secs_f64(args.stall_at);
            Some(StallSpec {
                pid,
                at,
                pause: Duration::from_millis(ms),
            })
        }
    };
    let workload = WorkloadConfig {
        seed: args.seed,
        users: args.users,
        items: args.items,
        candidates: args.candidates,
        top: args.top,
        event_share: args.mix,
        lag: args.lag,
    };
    let floor_addr = args.floor.or(endpoints
        .as_ref()
        .and_then(|e| e.echo)
        .filter(|_| child.is_some()));
    let floor = match floor_addr {
        Some(addr) => Some(measure_floor(addr, &workload).await?),
        None => None,
    };
    let mut spec = RunSpec::new(target, workload);
    spec.load = load;
    spec.connections = args.connections.max(1);
    spec.duration = Duration::from_secs_f64(args.duration);
    spec.warmup = Duration::from_secs_f64(args.warmup);
    spec.load_catalog = !args.no_catalog;
    spec.prefill = args.prefill;
    spec.pace_tick = Duration::try_from_secs_f64(args.tick_us / 1e6)
        .context("--tick-us must be a non-negative number of µs")?;
    spec.stall = stall;
    spec.progress = args.progress || args.duration + args.warmup >= 10.0;
    spec.late_threshold = Duration::from_secs_f64(args.late_us / 1e6);
    spec.batch = args.batch.max(1);
    if let Some(path) = &args.timeline {
        let interval = Duration::try_from_secs_f64(args.timeline_interval_s)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--timeline-interval-s must be a positive number of seconds")?;
        spec.timeline = Some(loadtest::timeline::TimelineSpec {
            path: path.clone(),
            interval,
            rss_pid: args
                .rss_pid
                .or(child.as_ref().map(|c| c.pid()))
                .or(Some(std::process::id())),
        });
    }
    let result = driver::run(&spec).await?;
    let mut summary = result.summary();
    print!("{}", summary.table());
    if let Some(floor) = &floor {
        // The excess is read against the run's main op kind (a ping-pong has one).
        if let Some(op) = summary.ops.values().max_by_key(|op| op.ok_total) {
            let run = &op.uncorrected;
            print!("{}", loadtest::floor::report(floor, run.p50_us, run.p99_us));
        }
        summary.floor = Some(loadtest::report::Percentiles::of(floor));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(s) = in_process {
        tokio::task::spawn_blocking(move || s.stop()).await?;
    }
    drop(child);
    let violations = summary.violations(args.max_p99_us, args.min_rate);
    for v in &violations {
        eprintln!("loadtest: threshold broken: {v}");
    }
    Ok(violations.is_empty())
}
