//! `deadline`: the HTTP (and WebSocket) connection's socket, with the request deadline.
//!
//! A request must arrive whole and its reply must start within `request_timeout_ms` of the
//! request's first byte; a reply must keep moving as well (a client that stops reading is
//! the same slow client). The rule is enforced here, below the HTTP parser, because only the
//! socket sees a request begin: the first byte read after a write (or after the connection
//! opened) arms the deadline; every write that makes progress disarms it. When it passes,
//! the connection gets a `408` with the JSON error (best effort, without blocking) and its
//! next read or write fails, which closes it; the close is counted.
//!
//! It does not parse HTTP, know about routes, or limit sizes (actix and the handlers do).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::metrics::Metrics;
use crate::wire::{write_error, ReqId, WireError};

/// A connection's socket with the request deadline (see the module doc).
pub(super) struct DeadlineStream {
    io: TcpStream,
    /// The deadline; zero turns it off.
    timeout: Duration,
    /// The deadline's timer, allocated on first use and reset for each request after (no
    /// allocation per request). A disarmed timer that fires only wakes the task once.
    timer: Option<Pin<Box<Sleep>>>,
    /// A request is arriving or a reply is stuck: the timer counts.
    armed: bool,
    /// The timer was armed by a request arriving (not by a stuck reply): a `408` may be sent.
    reading: bool,
    /// Set once the deadline has passed: every later read or write fails.
    expired: bool,
    metrics: Arc<Metrics>,
}

impl DeadlineStream {
    /// Wraps an accepted socket.
    pub(super) fn new(io: TcpStream, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        DeadlineStream {
            io,
            timeout,
            timer: None,
            armed: false,
            reading: false,
            expired: false,
            metrics,
        }
    }

    fn arm(&mut self, reading: bool) {
        if self.armed || self.timeout.is_zero() {
            return;
        }
        let at = Instant::now() + self.timeout;
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
        self.reading = reading;
    }

    /// True (and the connection answered and condemned) when the armed deadline has passed;
    /// otherwise the timer wakes this task when it does.
    fn passed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        let Some(timer) = self.timer.as_mut().filter(|_| self.armed) else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.expired = true;
        self.metrics
            .slow_connections_closed_total
            .fetch_add(1, Relaxed);
        if self.reading {
            let _ = self.io.try_write(&timeout_response(self.timeout));
        }
        true
    }
}

/// The `408` sent when the deadline passes.
fn timeout_response(timeout: Duration) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    let ms = timeout.as_millis() as u64;
    let error = WireError::RequestTimeout { ms };
    write_error(&mut body, &ReqId::None, &error);
    // The status its code owns (408), written by hand: actix is not answering here.
    let status = super::http::status_of(Some(error.code()));
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Request Timeout"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request deadline passed")
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.passed(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.arm(true);
            if this.passed(cx) {
                return Poll::Ready(Err(timed_out()));
            }
        }
        polled
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.passed(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                this.armed = false;
                if buf.starts_with(b"HTTP/1.1 101 ") {
                    // An upgraded WebSocket keeps its own heartbeat and timeouts: a client's
                    // pong is answered by nothing, so reads must not arm a deadline any more.
                    this.timeout = Duration::ZERO;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                // A reply the client does not take is held to the same deadline.
                this.arm(false);
                if this.passed(cx) {
                    return Poll::Ready(Err(timed_out()));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
