//! The trigger webhook (issue 14, item 3): fired triggers posted as JSON to an HTTP endpoint
//! (`[webhook] url`, or a trigger's own `webhook_url`), from one delivery thread of its own.
//!
//! A shard hands a firing over with `try_send` on a bounded queue (`webhook.queue_capacity`):
//! when it is full the firing is dropped and counted, so **a slow or dead endpoint never
//! blocks a shard or a request**. The thread posts each firing with a hand-written HTTP/1.1
//! `POST` over `std::net` (`Connection: close`; connect, write and read each bounded by
//! `webhook.timeout_ms`), and retries a 5xx, a 408 or 429, a connection error or a timeout
//! after `backoff_ms`, doubling, up to `max_attempts` attempts; then it gives up and counts.
//! A 2xx is delivered; another 4xx is given up at once (retrying would not change it).
//!
//! When the server stops (`close`), the thread ends after its current attempt; firings still
//! queued are dropped and counted.
//!
//! Only `http://` URLs: TLS would need a crate and a trust store; put a proxy in front. The
//! body is `wire::write_firing`'s (`{"trigger":…,"user":…,"ts":…}`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing::warn;

use crate::api::{TriggerFiring, TriggerSink};
use crate::config::WebhookConfig;
use crate::triggers::DeliveryCounters;

/// The sink the engine's trigger hub hands firings to; the queue's sending side.
pub struct Webhook {
    queue: Sender<TriggerFiring>,
    counters: Arc<DeliveryCounters>,
    /// Set by `close` (the server stopping): the thread stops after its current attempt.
    closed: Arc<AtomicBool>,
}

impl TriggerSink for Webhook {
    fn fired(&self, firing: &TriggerFiring) {
        if firing.webhook.is_none() {
            return;
        }
        if self.closed.load(Relaxed) {
            self.counters.webhook_dropped_total.fetch_add(1, Relaxed);
            return;
        }
        match self.queue.try_send(firing.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.webhook_dropped_total.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Webhook {
    /// Starts the delivery thread; it ends when the last `Webhook` handle is dropped (with
    /// the engine that holds it) and its current firing is done.
    pub fn start(cfg: &WebhookConfig, counters: Arc<DeliveryCounters>) -> std::io::Result<Webhook> {
        let (queue, jobs) = crossbeam_channel::bounded(cfg.queue_capacity.max(1));
        let cfg = cfg.clone();
        let thread_counters = counters.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let thread_closed = closed.clone();
        std::thread::Builder::new()
            .name("nudge-webhook".into())
            .spawn(move || deliver_all(&cfg, &jobs, &thread_counters, &thread_closed))?;
        Ok(Webhook {
            queue,
            counters,
            closed,
        })
    }

    /// Stops delivering: the thread ends after its current attempt, and what is still queued
    /// (or fired later) is dropped and counted.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }
}

fn deliver_all(
    cfg: &WebhookConfig,
    jobs: &Receiver<TriggerFiring>,
    counters: &DeliveryCounters,
    closed: &AtomicBool,
) {
    let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
    while let Ok(firing) = jobs.recv() {
        if closed.load(Relaxed) {
            let left = 1 + jobs.try_iter().count() as u64;
            counters.webhook_dropped_total.fetch_add(left, Relaxed);
            return;
        }
        let Some(url) = firing.webhook.clone() else {
            continue;
        };
        let mut body = Vec::with_capacity(128);
        crate::wire::write_firing(&mut body, &firing);
        let mut backoff = Duration::from_millis(cfg.backoff_ms);
        for attempt in 1..=cfg.max_attempts.max(1) {
            let outcome = post(&url, &body, timeout);
            let retry = match outcome {
                Ok(status) if (200..300).contains(&status) => {
                    counters.webhook_delivered_total.fetch_add(1, Relaxed);
                    break;
                }
                Ok(status) => status >= 500 || status == 408 || status == 429,
                Err(_) => true,
            };
            if !retry || attempt == cfg.max_attempts {
                counters.webhook_failed_total.fetch_add(1, Relaxed);
                warn!(
                    trigger = &*firing.trigger,
                    attempts = attempt,
                    "webhook gave up: {}",
                    match outcome {
                        Ok(status) => format!("HTTP {status}"),
                        Err(e) => e.to_string(),
                    }
                );
                break;
            }
            counters.webhook_retried_total.fetch_add(1, Relaxed);
            if closed.load(Relaxed) {
                counters.webhook_dropped_total.fetch_add(1, Relaxed);
                break;
            }
            std::thread::sleep(backoff);
            backoff = backoff.saturating_mul(2);
        }
    }
}

/// Posts `body` to `url` and returns the status code of the answer.
fn post(url: &str, body: &[u8], timeout: Duration) -> std::io::Result<u16> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // A port follows the last `:`, unless that colon is inside an IPv6 literal `[…]`.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok() && !authority.ends_with(']'));
    let target = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid("the host has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: nudge\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    status(&mut stream)
}

/// Reads the status line (`HTTP/1.1 200 OK`) and returns its code; the rest is not read.
fn status(stream: &mut impl Read) -> std::io::Result<u16> {
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !line.windows(2).any(|w| w == b"\r\n") {
        if line.len() > 4096 {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&line);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not HTTP/1.x",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_gives_the_code() {
        assert_eq!(
            status(&mut &b"HTTP/1.1 503 Busy\r\nX: y\r\n"[..]).unwrap(),
            503
        );
        assert_eq!(status(&mut &b"HTTP/1.0 200 OK\r\n"[..]).unwrap(), 200);
        assert!(status(&mut &b"SSH-2.0\r\n"[..]).is_err());
        assert!(status(&mut &b""[..]).is_err());
    }
}
