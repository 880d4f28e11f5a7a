//! The stall self-test's lever: stops a process with `SIGSTOP` for a while mid-run, then
//! resumes it with `SIGCONT`, so the report can be checked for the pause (a harness that
//! corrects for coordinated omission must show it in the corrected tail). It owns only the
//! signalling; it uses the system's `kill` command, so the harness needs no `unsafe`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::time::sleep_until;

/// What to pause, when, for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct StallSpec {
    /// The process to stop.
    pub pid: u32,
    /// When, after the start of the measured window.
    pub at: Duration,
    /// For how long.
    pub pause: Duration,
}

/// What was done.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StallReport {
    /// The process.
    pub pid: u32,
    /// Seconds into the measured window it was stopped.
    pub at_s: f64,
    /// How long it stayed stopped, as measured.
    pub paused_ms: f64,
}

/// Sends signal `name` (`STOP`, `CONT`, `KILL`) to `pid` with the system's `kill`.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .with_context(|| format!("running kill -{name} {pid}"))?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

/// Stops `spec.pid` at `measure_from + spec.at` and resumes it `spec.pause` later.
pub async fn run(spec: StallSpec, measure_from: Instant) -> anyhow::Result<StallReport> {
    sleep_until((measure_from + spec.at).into()).await;
    let stopped = Instant::now();
    signal(spec.pid, "STOP")?;
    sleep_until((stopped + spec.pause).into()).await;
    // Resume even if something above went wrong later: never leave the target stopped.
    let resumed = signal(spec.pid, "CONT");
    let paused = stopped.elapsed();
    resumed?;
    Ok(StallReport {
        pid: spec.pid,
        at_s: (stopped - measure_from).as_secs_f64(),
        paused_ms: paused.as_secs_f64() * 1000.0,
    })
}
