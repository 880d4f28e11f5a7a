//! Starting a nudge server for a run: in this process (`--spawn-server`), or as a child
//! process running the harness's own `loadtest serve` mode (`--spawn-child`), which prints its
//! ports and can be paused with `SIGSTOP` (an in-process server cannot be paused without
//! pausing the harness). Using the harness's own binary means tests find it through Cargo's
//! `CARGO_BIN_EXE_loadtest`, with no search of target directories for a `nudge` binary.
//! It owns the child's lifetime (killed on drop), not the server itself.

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
}

impl Endpoints {
    /// The line `loadtest serve` prints.
    pub fn line(&self) -> String {
        format!("listening tcp={} http={}", self.tcp, self.http)
    }

    /// Parses `line`.
    pub fn parse(line: &str) -> Option<Endpoints> {
        let rest = line.trim().strip_prefix("listening ")?;
        let mut tcp = None;
        let mut http = None;
        for part in rest.split_whitespace() {
            match part.split_once('=') {
                Some(("tcp", a)) => tcp = a.parse().ok(),
                Some(("http", a)) => http = a.parse().ok(),
                _ => {}
            }
        }
        Some(Endpoints {
            tcp: tcp?,
            http: http?,
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
    /// Starts this executable's `serve` mode.
    pub fn spawn(shards: usize) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding the harness's own executable")?;
        Child::spawn_exe(&exe, shards)
    }

    /// Starts `exe serve` and waits for its `listening` line.
    pub fn spawn_exe(exe: &Path, shards: usize) -> anyhow::Result<Child> {
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--shards")
            .arg(shards.to_string())
            .stdin(Stdio::null())
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
    /// Where it listens.
    pub endpoints: Endpoints,
}

impl InProcess {
    /// Starts nudge's server on loopback ports.
    pub async fn start(shards: usize) -> anyhow::Result<InProcess> {
        let _ = shards;
        bail!("nudge::server is not available yet")
    }

    /// Stops it.
    pub async fn stop(self) {}
}

/// `loadtest serve`: serves until killed.
pub fn serve_child(shards: usize) -> anyhow::Result<()> {
    let _ = shards;
    bail!("nudge::server is not available yet")
}
