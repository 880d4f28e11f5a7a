//! The server's own counters, sampled beside the load: resident users and open decisions
//! (`stats`), which account for a server's memory in a soak run. It asks over a connection
//! of its own (TCP: the `stats` op; HTTP: `GET /v1/stats`; embedded: `Engine::stats`), so
//! the load's connections and their reply order are untouched. WebSocket and Redis targets
//! are not asked (the columns stay empty). It owns that connection and the reply's parsing;
//! it does not decide when to sample (`timeline` does).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nudge::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::Target;
use crate::http;

/// How long one sample may take before it is given up (the column is left empty).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The counters sampled, summed over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerCounters {
    /// Users whose state is in memory.
    pub resident_users: u64,
    /// Decisions still open for attribution (they live for `attribution.window_s`).
    pub open_decisions: u64,
}

/// Where the counters come from.
pub enum Probe {
    /// The `stats` op on a TCP connection of its own.
    Tcp(BufReader<TcpStream>),
    /// `GET /v1/stats` on a keep-alive HTTP connection of its own.
    Http(TcpStream, Vec<u8>),
    /// The in-process engine.
    Embedded(Engine),
}

impl Probe {
    /// Connects to `target`; `None` for targets it cannot ask (WebSocket, Redis).
    pub async fn connect(target: &Target) -> anyhow::Result<Option<Self>> {
        let stream = |addr: SocketAddr| async move {
            let s = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting the stats probe to {addr}"))?;
            s.set_nodelay(true)?;
            anyhow::Ok(s)
        };
        Ok(match target {
            Target::Tcp(addr) => Some(Probe::Tcp(BufReader::new(stream(*addr).await?))),
            Target::Http(addr) => Some(Probe::Http(stream(*addr).await?, Vec::new())),
            Target::Embedded(engine) => Some(Probe::Embedded(engine.clone())),
            Target::Ws(_) | Target::Redis(_) => None,
        })
    }

    /// One sample, or `None` when the server did not answer in time or answered nonsense
    /// (a soak's row is still written; the cells stay empty).
    pub async fn sample(&mut self) -> Option<ServerCounters> {
        tokio::time::timeout(SAMPLE_TIMEOUT, self.ask())
            .await
            .ok()?
            .ok()
    }

    async fn ask(&mut self) -> anyhow::Result<ServerCounters> {
        let body = match self {
            Probe::Embedded(engine) => {
                let total = engine.stats().total();
                return Ok(ServerCounters {
                    resident_users: total.resident_users,
                    open_decisions: total.open_decisions,
                });
            }
            Probe::Tcp(s) => {
                s.get_mut()
                    .write_all(b"{\"op\":\"stats\",\"id\":1}\n")
                    .await?;
                let mut line = Vec::new();
                if s.read_until(b'\n', &mut line).await? == 0 {
                    bail!("the server closed the stats connection");
                }
                line
            }
            Probe::Http(s, buf) => {
                let mut req = Vec::new();
                http::write_request(&mut req, "GET", "/v1/stats", &[], b"");
                s.write_all(&req).await?;
                buf.clear();
                loop {
                    if let Some((r, _)) =
                        http::parse_response(buf, false).map_err(anyhow::Error::msg)?
                    {
                        break r.body;
                    }
                    if s.read_buf(buf).await? == 0 {
                        bail!("the server closed the stats connection");
                    }
                }
            }
        };
        parse_stats(&body)
    }
}

/// Reads `resident_users` and `open_decisions` from a `stats` reply (`{"stats":{"total":…}}`,
/// with or without the request's `id`).
pub fn parse_stats(body: &[u8]) -> anyhow::Result<ServerCounters> {
    let v: serde_json::Value = serde_json::from_slice(body).context("a stats reply")?;
    let total = &v["stats"]["total"];
    let field = |name: &str| {
        total[name]
            .as_u64()
            .with_context(|| format!("the stats reply has no total.{name}"))
    };
    Ok(ServerCounters {
        resident_users: field("resident_users")?,
        open_decisions: field("open_decisions")?,
    })
}
