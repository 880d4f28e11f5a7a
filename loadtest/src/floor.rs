//! The loopback floor: what one request/reply round trip costs on this machine with nothing
//! but the sockets and the thread wake-ups, measured in the same run and with the same core
//! pinning as the server under test, so that a ping-pong figure can be read as "floor +
//! nudge's excess" (issue 12: the floor itself moves between days, the excess is what counts).
//!
//! `loadtest serve` runs an echo server beside nudge's (same process, same pinning); the
//! harness sends it the same bytes it sends nudge, one request at a time, and waits for them
//! to come back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a trivial echo server on a loopback port, one blocking thread per connection (the
/// least work a server can do per request: read, write back).
pub fn spawn_echo() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo server")?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("loadtest-echo".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("loadtest-echo-conn".into())
                    .spawn(move || echo(conn));
            }
        })?;
    Ok(addr)
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// The floor's round-trip times (ns), from `rounds` round trips of `payload` after `warmup`.
pub async fn measure(
    addr: SocketAddr,
    payload: &[u8],
    warmup: usize,
    rounds: usize,
) -> anyhow::Result<Histogram<u64>> {
    if payload.is_empty() {
        bail!("the floor needs a non-empty payload");
    }
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the echo server at {addr}"))?;
    conn.set_nodelay(true)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut back = vec![0u8; payload.len()];
    for i in 0..warmup + rounds {
        let start = Instant::now();
        conn.write_all(payload).await?;
        conn.read_exact(&mut back).await?;
        if i >= warmup {
            hist.record(start.elapsed().as_nanos().max(1) as u64)?;
        }
    }
    Ok(hist)
}

/// How long to spend on the floor at most: a few thousand round trips are plenty.
pub const ROUNDS: usize = 20_000;

/// Formats the floor and, given the run's p50 and p99 (µs), the excess over it.
pub fn report(floor: &Histogram<u64>, run_p50_us: f64, run_p99_us: f64) -> String {
    let us = |q: f64| Duration::from_nanos(floor.value_at_quantile(q)).as_secs_f64() * 1e6;
    format!(
        "loopback floor (echo, same pinning, same bytes): p50 {:.1} µs, p99 {:.1} µs\n\
         nudge's excess over the floor:                 p50 {:.1} µs, p99 {:.1} µs\n",
        us(0.5),
        us(0.99),
        run_p50_us - us(0.5),
        run_p99_us - us(0.99),
    )
}
