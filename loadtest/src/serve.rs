//! Starting a nudge server for a run: in this process (`--spawn-server`), or as a child
//! process running the harness's own `loadtest serve` mode (`--spawn-child`), which prints its
//! ports and can be paused with `SIGSTOP` (an in-process server cannot be paused without
//! pausing the harness). Using the harness's own binary means tests find it through Cargo's
//! `CARGO_BIN_EXE_loadtest`, with no search of target directories for a `nudge` binary.
//! It owns the child's lifetime (killed on drop; it also exits when its stdin closes), not
//! the server itself.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _};

/// Where a started server listens.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoints {
    /// The TCP line protocol.
    pub tcp: SocketAddr,
    /// HTTP, and WebSocket at `/v1/ws`.
    pub http: SocketAddr,
    /// A trivial echo server in the same process (`floor`), when it runs one.
    pub echo: Option<SocketAddr>,
}

impl Endpoints {
    /// The line `loadtest serve` prints.
    pub fn line(&self) -> String {
        let mut line = format!("listening tcp={} http={}", self.tcp, self.http);
        if let Some(echo) = self.echo {
            line.push_str(&format!(" echo={echo}"));
        }
        line
    }

    /// Parses `line`.
    pub fn parse(line: &str) -> Option<Endpoints> {
        let rest = line.trim().strip_prefix("listening ")?;
        let mut tcp = None;
        let mut http = None;
        let mut echo = None;
        for part in rest.split_whitespace() {
            match part.split_once('=') {
                Some(("tcp", a)) => tcp = a.parse().ok(),
                Some(("http", a)) => http = a.parse().ok(),
                Some(("echo", a)) => echo = a.parse().ok(),
                _ => {}
            }
        }
        Some(Endpoints {
            tcp: tcp?,
            http: http?,
            echo,
        })
    }
}

/// A `loadtest serve` child process; killed and reaped on drop.
pub struct Child {
    child: std::process::Child,
    /// Where it listens.
    pub endpoints: Endpoints,
}

impl Child {
    /// Starts this executable's `serve` mode, pinned to `cpus` (a `taskset -c` list) if given.
    pub fn spawn(shards: usize, cpus: Option<&str>) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding the harness's own executable")?;
        Child::start(&exe, shards, &[], cpus)
    }

    /// Starts `exe serve` and waits for its `listening` line.
    pub fn spawn_exe(exe: &Path, shards: usize) -> anyhow::Result<Child> {
        Child::spawn_with(exe, shards, &[])
    }

    /// Starts `exe serve` with `extra` arguments (`--data-dir`, `--fsync`) and waits for its
    /// `listening` line.
    pub fn spawn_with(exe: &Path, shards: usize, extra: &[String]) -> anyhow::Result<Child> {
        Child::start(exe, shards, extra, None)
    }

    /// `spawn_with`, run through `taskset -c cpus` when given (taskset execs the server, so
    /// the child's pid is the server's, for `--stall-ms` and the timeline's RSS).
    fn start(
        exe: &Path,
        shards: usize,
        extra: &[String],
        cpus: Option<&str>,
    ) -> anyhow::Result<Child> {
        let mut command = match cpus {
            Some(list) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(list).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("serve")
            .arg("--shards")
            .arg(shards.to_string())
            .args(extra)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        match read.ok().and(Endpoints::parse(&line)) {
            Some(endpoints) => Ok(Child { child, endpoints }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{} serve` did not report its ports (it said {line:?})",
                    exe.display()
                )
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server running inside this process.
pub struct InProcess {
    server: Option<nudge::server::RunningServer>,
    /// The engine behind it (for its counters).
    pub engine: nudge::Engine,
    /// Where it listens.
    pub endpoints: Endpoints,
}

/// A server configuration listening on free loopback ports.
pub fn loopback_config() -> nudge::server::ServerConfig {
    nudge::server::ServerConfig {
        tcp: "127.0.0.1:0".into(),
        http: "127.0.0.1:0".into(),
        ..Default::default()
    }
}

fn endpoints(server: &nudge::server::RunningServer) -> anyhow::Result<Endpoints> {
    match (server.tcp_addr(), server.http_addr()) {
        (Some(tcp), Some(http)) => Ok(Endpoints {
            tcp,
            http,
            echo: None,
        }),
        _ => bail!("the server did not report both of its addresses"),
    }
}

impl InProcess {
    /// Starts an engine with `shards` shards and nudge's server on loopback ports.
    pub fn start(shards: usize) -> anyhow::Result<InProcess> {
        InProcess::start_durable(shards, None)
    }

    /// `start`, keeping state in a data directory with an fsync policy when given.
    pub fn start_durable(
        shards: usize,
        durable: Option<(&Path, nudge::FsyncPolicy, u64)>,
    ) -> anyhow::Result<InProcess> {
        let mut builder = nudge::Engine::builder().shards(shards);
        if let Some((dir, fsync, checkpoint_s)) = durable {
            builder = builder
                .data_dir(dir)
                .fsync(fsync)
                .checkpoint_interval_s(checkpoint_s);
        }
        InProcess::start_with(builder.build()?)
    }

    /// Starts nudge's server for `engine` on loopback ports.
    pub fn start_with(engine: nudge::Engine) -> anyhow::Result<InProcess> {
        let server = nudge::server::spawn(engine.clone(), loopback_config())
            .context("starting nudge's server")?;
        let endpoints = endpoints(&server)?;
        Ok(InProcess {
            server: Some(server),
            engine,
            endpoints,
        })
    }

    /// Stops it gracefully (blocking: call it off async workers, or at the end of `main`).
    pub fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// `loadtest serve`: serves on loopback ports (and a loopback echo server for the floor) and
/// prints them; then runs until killed, or with
/// `exit_on_stdin_eof` until its standard input closes (a parent that exits or drops the pipe
/// takes its child server with it).
pub fn serve_child(
    shards: usize,
    exit_on_stdin_eof: bool,
    durable: Option<(&Path, nudge::FsyncPolicy, u64)>,
) -> anyhow::Result<()> {
    let mut server = InProcess::start_durable(shards, durable)?;
    // The loopback floor's echo server runs in this process, so it shares the server's pinning.
    server.endpoints.echo = Some(crate::floor::spawn_echo()?);
    println!("{}", server.endpoints.line());
    use std::io::Write;
    std::io::stdout().flush()?;
    if !exit_on_stdin_eof {
        // Serve until killed; the server runs on its own threads.
        loop {
            std::thread::park();
        }
    }
    let mut sink = [0u8; 256];
    while std::io::Read::read(&mut std::io::stdin(), &mut sink).is_ok_and(|n| n > 0) {}
    server.stop();
    Ok(())
}
