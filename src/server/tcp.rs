//! The TCP front end: newline-delimited JSON, one request per line, pipelined. It owns the
//! framing and TCP's limits; the protocol is the shared `session`'s.
//!
//! Per connection: one reused read buffer split into lines without copying; each line parsed
//! and handed to the session at once, so many requests are in flight together; the replies
//! the session hands back are written in request order, a newline after each, all ready ones
//! in one write. At most `max_in_flight` requests are in flight: past that the connection
//! reads no further (back-pressure), it never buffers without bound.
//!
//! Limits: a line over `max_line_bytes` gets a `too_large` error and is skipped up to the next
//! newline; a connection over `max_connections` gets one refusal line and is closed; a
//! connection idle for `idle_timeout_s` is closed; a line not whole within
//! `request_timeout_ms` of its first byte, or a reply write that long, closes the connection
//! (a `timeout` error first, for the line). Shutdown: stop reading, finish what is in
//! flight, write the replies, close.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::metrics::Transport;
use super::session::{Done, Session};
use super::Shared;
use crate::error::ErrorCode;
use crate::wire::{write_error, write_reply, OpKind, Parser, ReqId, WireError};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Accepts connections until shutdown, then waits (bounded by `shutdown_timeout_s`) for the
/// open ones to finish.
pub(super) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let max = shared
        .cfg
        .max_connections
        .min(Semaphore::MAX_PERMITS)
        .min(u32::MAX as usize);
    shared
        .metrics
        .tcp_max_connections
        .store(max as i64, Relaxed);
    // One permit per open connection; shutdown waits by taking them all back.
    let slots = Arc::new(Semaphore::new(max));
    // Out of descriptors, accepting fails at once: wait, longer while it keeps failing, and
    // log the first failure of a run and the count when it ends rather than every one.
    let mut backoff = Duration::ZERO;
    let mut failed_in_a_row = 0u64;
    let mut stop = shared.stop.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    if failed_in_a_row > 0 {
                        warn!(failed = failed_in_a_row, "tcp accepting works again");
                        (backoff, failed_in_a_row) = (Duration::ZERO, 0);
                    }
                    admit(sock, &slots, &shared, max);
                }
                Err(e) => {
                    shared.metrics.accept_errors_total.fetch_add(1, Relaxed);
                    if failed_in_a_row == 0 {
                        warn!(error = %e, "tcp accept failed (out of descriptors?); backing off");
                    }
                    failed_in_a_row += 1;
                    let (least, most) = (Duration::from_millis(10), Duration::from_secs(1));
                    backoff = (backoff * 2).clamp(least, most);
                    tokio::time::sleep(backoff).await;
                }
            },
        }
    }
    drop(listener);
    let grace = Duration::from_secs(shared.cfg.shutdown_timeout_s);
    let _ = tokio::time::timeout(grace, slots.acquire_many(max as u32)).await;
}

/// Serves an accepted socket if a slot is free, else refuses it with one error line.
fn admit(sock: TcpStream, slots: &Arc<Semaphore>, shared: &Arc<Shared>, max: usize) {
    match slots.clone().try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(connection(sock, shared.clone(), permit));
        }
        Err(_) => {
            shared.metrics.tcp_refused_total.fetch_add(1, Relaxed);
            // Its reply is a refusal of no request: counted as one under `event`, as any
            // reply whose op is unknown.
            let (op, code) = (OpKind::Event.into(), Some(ErrorCode::TooManyConnections));
            shared
                .metrics
                .record(Transport::Tcp, op, code, Instant::now(), 1);
            tokio::spawn(refuse(sock, max));
        }
    }
}

/// `limit`, or about a year when it is zero (off).
fn never_if_zero(limit: Duration) -> Duration {
    if limit.is_zero() {
        Duration::from_secs(86_400 * 365)
    } else {
        limit
    }
}

async fn refuse(mut sock: TcpStream, max: usize) {
    let mut line = Vec::with_capacity(160);
    write_error(
        &mut line,
        &ReqId::None,
        &WireError::TooManyConnections { max },
    );
    line.push(b'\n');
    let _ = sock.write_all(&line).await;
    let _ = sock.shutdown().await;
}

async fn connection(mut sock: TcpStream, shared: Arc<Shared>, _permit: OwnedSemaphorePermit) {
    let _ = sock.set_nodelay(true);
    shared.metrics.tcp_connections.fetch_add(1, Relaxed);
    let mut conn = Conn::new(shared.clone());
    if let Err(e) = conn.serve(&mut sock).await {
        debug!(error = %e, "tcp connection ended with an error");
    }
    shared.metrics.tcp_connections.fetch_sub(1, Relaxed);
}

struct Conn {
    shared: Arc<Shared>,
    parser: Parser,
    /// Bytes read and not yet consumed; complete lines are parsed in place.
    rbuf: Vec<u8>,
    /// How much of `rbuf` is known to hold no newline.
    scanned: usize,
    /// Discarding an oversized line until its newline.
    skipping: bool,
    /// When the line now arriving must be complete (`request_timeout_ms` after its first
    /// byte); `None` when no partial line is buffered or the timeout is off.
    line_deadline: Option<tokio::time::Instant>,
    /// Replies waiting for one write.
    out: Vec<u8>,
    /// The protocol: requests in flight, replies in request order.
    session: Session,
}

impl Conn {
    fn new(shared: Arc<Shared>) -> Conn {
        Conn {
            session: Session::new(shared.clone(), Transport::Tcp),
            shared,
            parser: Parser::new(),
            rbuf: Vec::with_capacity(READ_CHUNK),
            scanned: 0,
            skipping: false,
            line_deadline: None,
            out: Vec::with_capacity(READ_CHUNK),
        }
    }

    async fn serve(&mut self, sock: &mut TcpStream) -> io::Result<()> {
        let (mut rd, mut wr) = sock.split();
        let max = self.shared.cfg.max_in_flight;
        let idle_limit = never_if_zero(Duration::from_secs(self.shared.cfg.idle_timeout_s));
        let write_limit = never_if_zero(self.request_timeout());
        let idle = tokio::time::sleep(idle_limit);
        tokio::pin!(idle);
        // One timer for the line deadline, moved only when the deadline changes.
        let line_timer = tokio::time::sleep(idle_limit);
        tokio::pin!(line_timer);
        let mut armed = None;
        let mut stop = self.shared.stop.clone();
        // `eof`: nothing more will be read (the peer closed, or the server is stopping);
        // `peer_eof`: the peer closed, so a last line without a newline still counts. Lines
        // already read are answered either way: a request the server read is never dropped.
        let mut eof = *stop.borrow();
        let mut peer_eof = false;
        loop {
            while let Some(Some(done)) = self.session.next().now_or_never() {
                self.finish(done);
            }
            if self.session.requests() < max {
                self.process_lines();
                if eof {
                    self.end_of_input(peer_eof);
                }
            }
            if !self.out.is_empty() {
                // A client that stops reading its replies cannot hold the slot either.
                if tokio::time::timeout(write_limit, wr.write_all(&self.out))
                    .await
                    .is_err()
                {
                    self.count_slow();
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.out.clear();
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + idle_limit);
                if self.out.capacity() > 4 * READ_CHUNK {
                    self.out.shrink_to(READ_CHUNK);
                }
                continue;
            }
            if eof && self.session.is_empty() && self.rbuf.is_empty() {
                break;
            }
            let can_read = !eof && self.session.requests() < max;
            if can_read && self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            if self.line_deadline != armed {
                armed = self.line_deadline;
                if let Some(at) = armed {
                    line_timer.as_mut().reset(at);
                }
            }
            tokio::select! {
                done = self.session.next(), if !self.session.is_empty() => {
                    if let Some(done) = done {
                        self.finish(done);
                    }
                }
                read = rd.read_buf(&mut self.rbuf), if can_read => {
                    if read? == 0 {
                        eof = true;
                        peer_eof = true;
                    } else {
                        idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                    }
                }
                _ = &mut line_timer, if can_read && armed.is_some() => {
                    debug!("closing a tcp connection whose line arrived too slowly");
                    self.line_timed_out();
                    eof = true;
                }
                _ = stop.changed(), if !eof => eof = true,
                _ = &mut idle, if !eof && self.session.is_empty() => {
                    debug!("closing an idle tcp connection");
                    break;
                }
            }
        }
        wr.shutdown().await
    }

    /// `request_timeout_ms` as a duration (zero when off).
    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.cfg.request_timeout_ms)
    }

    fn count_slow(&self) {
        let metrics = &self.shared.metrics;
        metrics.slow_connections_closed_total.fetch_add(1, Relaxed);
    }

    /// The buffered partial line missed its deadline: answer `timeout` after the replies
    /// already due, read nothing more, and let the loop close the connection.
    fn line_timed_out(&mut self) {
        self.count_slow();
        self.rbuf.clear();
        self.scanned = 0;
        self.line_deadline = None;
        let ms = self.shared.cfg.request_timeout_ms;
        let error = WireError::RequestTimeout { ms };
        self.session.refuse(ReqId::None, error, Instant::now());
    }

    /// Arms the line deadline when a partial line is buffered (again after each complete
    /// line, so a deadline covers one line), and disarms it when nothing is.
    fn track_deadline(&mut self, completed_line: bool) {
        let timeout = self.request_timeout();
        if timeout.is_zero() || (self.rbuf.is_empty() && !self.skipping) {
            self.line_deadline = None;
        } else if completed_line || self.line_deadline.is_none() {
            self.line_deadline = Some(tokio::time::Instant::now() + timeout);
        }
    }

    /// Parses and submits every complete line in the buffer (until the in-flight bound),
    /// then drops the consumed bytes.
    fn process_lines(&mut self) {
        let max_line = self.shared.cfg.max_line_bytes;
        let max = self.shared.cfg.max_in_flight;
        let mut start = 0;
        let mut completed_line = false;
        while self.session.requests() < max {
            let from = start.max(self.scanned);
            match self.rbuf[from..].iter().position(|&b| b == b'\n') {
                Some(offset) => {
                    let end = from + offset;
                    if self.skipping {
                        self.skipping = false;
                    } else if end - start > max_line {
                        self.too_long(max_line);
                    } else {
                        self.line(start, end);
                    }
                    start = end + 1;
                    self.scanned = 0;
                    completed_line = true;
                }
                None => {
                    self.scanned = self.rbuf.len();
                    if self.skipping {
                        start = self.rbuf.len();
                    } else if self.rbuf.len() - start > max_line {
                        self.too_long(max_line);
                        self.skipping = true;
                        start = self.rbuf.len();
                    }
                    break;
                }
            }
        }
        self.session.flush();
        self.rbuf.drain(..start);
        self.scanned = self.scanned.saturating_sub(start);
        self.track_deadline(completed_line);
    }

    /// After the last read, once every complete line buffered has been taken (they may wait
    /// for room under `max_in_flight`): a last line without a newline counts when the peer
    /// closed (it finished sending it), and is dropped when the server stopped reading
    /// mid-line (that request was never whole).
    fn end_of_input(&mut self, peer_eof: bool) {
        if self.rbuf[self.scanned.min(self.rbuf.len())..].contains(&b'\n') {
            return;
        }
        if peer_eof && !self.skipping && !self.rbuf.is_empty() {
            self.rbuf.push(b'\n');
            self.scanned = 0;
            self.process_lines();
            if self.rbuf.contains(&b'\n') {
                // No room for it yet: the next round takes it.
                return;
            }
        }
        self.rbuf.clear();
        self.scanned = 0;
    }

    fn too_long(&mut self, max_line: usize) {
        self.shared
            .metrics
            .lines_too_long_total
            .fetch_add(1, Relaxed);
        let error = WireError::TooLarge { limit: max_line };
        // After the run before it: `refuse` submits that first.
        self.session.refuse(ReqId::None, error, Instant::now());
    }

    fn line(&mut self, start: usize, end: usize) {
        let mut end = end;
        while end > start && self.rbuf[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if self.rbuf[start..end].iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let started = Instant::now();
        let parsed = self.parser.parse(&mut self.rbuf[start..end], None);
        self.session.request(parsed, started);
    }

    fn finish(&mut self, done: Done) {
        let out = &mut self.out;
        self.session.finish(done, |id, reply| {
            write_reply(out, &id, &reply);
            out.push(b'\n');
        });
    }
}
