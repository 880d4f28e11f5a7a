//! `loadtest crash`: the durability crash loop (issue 11). A child serves nudge from a data
//! directory; several connections send pipelined click events, each user's events numbered;
//! the child is killed with SIGKILL at a seeded random moment, restarted on the same directory,
//! and every user's recovered event count is checked against what was acknowledged and sent.
//!
//! A recovered count below the acknowledged one (a lost acknowledged event) or above the sent
//! one (an event applied twice) is a violation under every policy: nudge acknowledges an event
//! only after its batch is written, and a killed process loses nothing the kernel already has
//! (only an OS crash or power loss can lose `everysec`'s last second, which this loop cannot
//! cause). Each round also forgets one user, who must stay forgotten, and the catalog must come
//! back whole. It does not measure latency.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use nudge::rng::Rng;
use nudge::FsyncPolicy;

use crate::serve::Child;

/// `loadtest crash` options.
#[derive(Args, Debug, Clone)]
pub struct CrashArgs {
    /// Seed of the kill moments.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many times to kill the server.
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// The write-ahead log's fsync policy: always, everysec or no.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Users the events are spread over.
    #[arg(long, default_value_t = 64)]
    pub users: usize,
    /// Connections sending at once.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Shards of the server.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Longest run before a kill, ms (each run lasts a seeded time up to this).
    #[arg(long, default_value_t = 1_000)]
    pub max_run_ms: u64,
    /// The data directory (default: a fresh one under the temporary directory, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The executable to serve with (default: this harness's own `serve` mode).
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// Seconds between the server's checkpoints: short, so that kills land during
    /// checkpoints and restarts recover from a checkpoint plus the log after it.
    #[arg(long, default_value_t = 1)]
    pub checkpoint_interval_s: u64,
}

/// Parses an fsync policy name.
pub fn fsync_policy(name: &str) -> anyhow::Result<FsyncPolicy> {
    Ok(match name {
        "always" => FsyncPolicy::Always,
        "everysec" => FsyncPolicy::Everysec,
        "no" => FsyncPolicy::No,
        other => bail!("fsync must be always, everysec or no, not `{other}`"),
    })
}

/// One round: a run, then a kill.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Events written to the sockets.
    pub sent: u64,
    /// Events acknowledged without error.
    pub acked: u64,
    /// Acknowledged events missing after the restart.
    pub lost: u64,
    /// Recovered events beyond what was sent (applied twice).
    pub extra: u64,
    /// From spawning the restarted server to its first answer, ms.
    pub restart_ms: u64,
}

/// The whole loop's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    /// The policy.
    pub fsync: String,
    /// Per round.
    pub rounds: Vec<Round>,
    /// What broke a guarantee; empty when all held.
    pub violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "crash loop, fsync = {}", self.fsync)?;
        writeln!(
            f,
            "| round | sent | acked | lost acked | applied twice | restart ms |"
        )?;
        writeln!(f, "|---:|---:|---:|---:|---:|---:|")?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                r.sent,
                r.acked,
                r.lost,
                r.extra,
                r.restart_ms
            )?;
        }
        let sum = |g: fn(&Round) -> u64| self.rounds.iter().map(g).sum::<u64>();
        writeln!(
            f,
            "| total | {} | {} | {} | {} | |",
            sum(|r| r.sent),
            sum(|r| r.acked),
            sum(|r| r.lost),
            sum(|r| r.extra)
        )?;
        if self.violations.is_empty() {
            writeln!(f, "no violation")
        } else {
            for v in &self.violations {
                writeln!(f, "VIOLATION: {v}")?;
            }
            Ok(())
        }
    }
}

/// Per user: acknowledged and sent events so far (the bounds a restart must land between).
struct Ledger {
    acked: Vec<u64>,
    sent: Vec<u64>,
    forgotten: Vec<bool>,
}

const ITEMS: usize = 50;

/// Runs the loop.
pub fn run(args: &CrashArgs) -> anyhow::Result<Report> {
    fsync_policy(&args.fsync)?;
    let exe = match &args.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("finding the harness's own executable")?,
    };
    let (dir, remove) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("nudge-crash-{}-{}", std::process::id(), args.seed)),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let extra = vec![
        "--data-dir".to_string(),
        dir.display().to_string(),
        "--fsync".to_string(),
        args.fsync.clone(),
        "--checkpoint-interval-s".to_string(),
        args.checkpoint_interval_s.to_string(),
    ];
    let mut rng = Rng::new(args.seed);
    let mut ledger = Ledger {
        acked: vec![0; args.users],
        sent: vec![0; args.users],
        forgotten: vec![false; args.users],
    };
    let mut report = Report {
        fsync: args.fsync.clone(),
        rounds: Vec::new(),
        violations: Vec::new(),
    };
    let mut child = Child::spawn_with(&exe, args.shards, &extra)?;
    load_catalog(child.endpoints.tcp)?;
    for round in 0..args.kills {
        let run_ms = 20 + rng.below(args.max_run_ms.max(21) as usize - 20) as u64;
        let forget = rng.below(args.users);
        let (sent, acked) = drive(&child, args, round, run_ms, forget, &mut ledger)?;
        drop(child);
        let started = Instant::now();
        child = Child::spawn_with(&exe, args.shards, &extra)?;
        let recovered = counts(child.endpoints.tcp, args.users)?;
        let mut r = Round {
            sent,
            acked,
            restart_ms: started.elapsed().as_millis() as u64,
            ..Round::default()
        };
        check(
            &mut ledger,
            &recovered,
            round,
            &mut r,
            &mut report.violations,
        );
        check_catalog(child.endpoints.tcp, round, &mut report.violations)?;
        report.rounds.push(r);
    }
    drop(child);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

fn load_catalog(addr: SocketAddr) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr)?;
    for i in 0..ITEMS {
        let line = format!(
            "{{\"op\":\"item\",\"id\":{i},\"item\":\"crash-item-{i}\",\"attrs\":{{\"category\":\"c{}\"}}}}",
            i % 5
        );
        conn.call(&line)?;
    }
    Ok(())
}

fn check_catalog(addr: SocketAddr, round: u32, violations: &mut Vec<String>) -> anyhow::Result<()> {
    let stats = Conn::open(addr)?.call("{\"op\":\"stats\",\"id\":1}")?;
    let items = stats["stats"]["catalog_items"].as_u64().unwrap_or(0);
    if items != ITEMS as u64 {
        violations.push(format!(
            "round {}: {items} catalog items after the restart, not {ITEMS}",
            round + 1
        ));
    }
    Ok(())
}

/// Compares recovered counts with the ledger, then resets the ledger to what was recovered.
fn check(
    ledger: &mut Ledger,
    recovered: &[Option<u64>],
    round: u32,
    r: &mut Round,
    violations: &mut Vec<String>,
) {
    for (u, got) in recovered.iter().enumerate() {
        if ledger.forgotten[u] {
            if got.is_some() {
                violations.push(format!(
                    "round {}: forgotten user crash-{u} came back",
                    round + 1
                ));
            }
            continue;
        }
        let got = got.unwrap_or(0);
        r.lost += ledger.acked[u].saturating_sub(got);
        r.extra += got.saturating_sub(ledger.sent[u]);
        if got < ledger.acked[u] {
            violations.push(format!(
                "round {}: user crash-{u} has {got} events, {} were acknowledged",
                round + 1,
                ledger.acked[u]
            ));
        }
        if got > ledger.sent[u] {
            violations.push(format!(
                "round {}: user crash-{u} has {got} events, only {} were sent",
                round + 1,
                ledger.sent[u]
            ));
        }
        ledger.acked[u] = got;
        ledger.sent[u] = got;
    }
}

/// One line-protocol connection with a read timeout.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).context("connecting")?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn call(&mut self, line: &str) -> anyhow::Result<serde_json::Value> {
        writeln!(self.writer, "{line}")?;
        self.recv()?.context("the server closed the connection")
    }

    fn recv(&mut self) -> anyhow::Result<Option<serde_json::Value>> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => Ok(None),
            Ok(_) => Ok(Some(serde_json::from_str(&line)?)),
        }
    }
}

/// Every user's recovered click count (`None`: the server holds nothing for the user).
fn counts(addr: SocketAddr, users: usize) -> anyhow::Result<Vec<Option<u64>>> {
    let mut conn = Conn::open(addr)?;
    (0..users)
        .map(|u| {
            let v = conn.call(&format!(
                "{{\"op\":\"user\",\"id\":{u},\"user\":\"crash-{u}\"}}"
            ))?;
            Ok(v["user"]["events_by_kind"]["click"].as_u64())
        })
        .collect()
}

/// Sends pipelined events from `args.connections` connections until the server dies: a killer
/// thread sends it SIGKILL after `run_ms`. Connection `c` sends for users `u ≡ c (mod
/// connections)`, so each user's events travel in order on one connection. Returns (sent,
/// acknowledged) and adds them to the ledger.
fn drive(
    child: &Child,
    args: &CrashArgs,
    round: u32,
    run_ms: u64,
    forget: usize,
    ledger: &mut Ledger,
) -> anyhow::Result<(u64, u64)> {
    let addr = child.endpoints.tcp;
    // Forget one user first: it must stay forgotten whatever comes after (it gets no events).
    if !ledger.forgotten[forget] {
        let line = format!("{{\"op\":\"forget\",\"id\":0,\"user\":\"crash-{forget}\"}}");
        if Conn::open(addr)?.call(&line)?.get("error").is_none() {
            ledger.forgotten[forget] = true;
        }
    }
    let mut workers = Vec::new();
    for c in 0..args.connections {
        let users: Vec<usize> = (c..args.users)
            .step_by(args.connections)
            .filter(|&u| !ledger.forgotten[u])
            .collect();
        let conn = Conn::open(addr)?;
        workers.push(std::thread::spawn(move || {
            send_until_closed(conn, users, round)
        }));
    }
    std::thread::sleep(Duration::from_millis(run_ms));
    // SIGKILL: no shutdown path runs.
    crate::stall::signal(child.pid(), "KILL")?;
    let (mut sent, mut acked) = (0, 0);
    for w in workers {
        let per_user = w.join().map_err(|_| anyhow::anyhow!("a sender panicked"))?;
        for (u, s, a) in per_user {
            ledger.sent[u] += s;
            ledger.acked[u] += a;
            sent += s;
            acked += a;
        }
    }
    Ok((sent, acked))
}

/// One connection until the server dies: a writer thread sends events as fast as the socket
/// takes them; this thread reads the acknowledgements. Returns (user, sent, acknowledged).
fn send_until_closed(conn: Conn, users: Vec<usize>, round: u32) -> Vec<(usize, u64, u64)> {
    if users.is_empty() {
        return Vec::new();
    }
    let Conn { mut reader, writer } = conn;
    let owners = users.clone();
    let writer_thread = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::with_capacity(16 << 10, writer);
        let mut sent = 0u64;
        loop {
            let u = owners[(sent % owners.len() as u64) as usize];
            let line = format!(
                "{{\"op\":\"event\",\"id\":{sent},\"user\":\"crash-{u}\",\"type\":\"click\",\"item\":\"crash-item-{}\",\"context\":{{\"round\":\"{round}\"}}}}\n",
                sent % ITEMS as u64
            );
            // `sent` counts lines still in the buffer too: an upper bound of what the server
            // may have applied, which is what the "applied twice" check needs.
            if out.write_all(line.as_bytes()).is_err() {
                return sent;
            }
            sent += 1;
            if sent & 63 == 0 && out.flush().is_err() {
                return sent;
            }
        }
    });
    let mut acked_by_id = Vec::new();
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let (None, Some(id)) = (v.get("error"), v["id"].as_u64()) {
                acked_by_id.push(id);
            }
        }
        line.clear();
    }
    let sent = writer_thread.join().unwrap_or(0);
    let n = users.len() as u64;
    let mut per_user: Vec<(usize, u64, u64)> = users.iter().map(|&u| (u, 0, 0)).collect();
    for i in 0..sent {
        per_user[(i % n) as usize].1 += 1;
    }
    for id in acked_by_id {
        per_user[(id % n) as usize].2 += 1;
    }
    per_user
}
