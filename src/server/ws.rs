//! The WebSocket front end (actix-ws) at `/v1/ws`: one op or batch per text frame, replies
//! in request order, plus `subscribe`/`unsubscribe` pushes of `UserUpdate`s and of the
//! firings of a trigger subscribed to by name.
//!
//! The protocol, subscriptions included, is the shared `session`'s (given this socket's push
//! queue); this module owns the framing, the push queue and WebSocket's own rules. Like TCP, a
//! socket takes every frame already received in one go (up to `MAX_FRAMES_PER_READ`, and at
//! most `max_in_flight` requests in flight) and hands them to the session, which ingests a
//! run of consecutive `event` frames as one batch; the replies that are ready together are
//! sent together, one frame each.
//!
//! Each socket has a bounded push queue (`ws_push_queue`) that drops its oldest update when
//! the client falls behind, and counts the drop (per socket in each push's `dropped`, and in
//! `nudge_ws_push_dropped_total`). Heartbeat: a ping every `ws_heartbeat_s`; a socket silent
//! for `ws_client_timeout_s` is closed. Close codes: 1009 for a message over
//! `ws_max_frame_bytes`, 1007 for text that is not UTF-8, 1003 for binary frames, 1002 for
//! other protocol errors, 1001 at shutdown (after in-flight replies are sent), 1008 for a
//! heartbeat timeout. A handshake with oversized headers is refused (`431`) before the
//! upgrade; subscribing twice to one user keeps one subscription.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session as WsSession};
use bytestring::ByteString;
use futures_util::{FutureExt as _, StreamExt as _};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::http_errors::error_reply_as;
use super::metrics::{Metrics, Transport};
use super::session::{Done, Session};
use super::Shared;
use crate::api::{TriggerFiring, UpdateSink, UserUpdate};
use crate::wire::{write_push, write_reply, write_trigger_push, Parser, WireError};
use actix_web::http::StatusCode;

/// One push waiting for its socket.
enum Push {
    /// A subscribed user's update.
    User(UserUpdate),
    /// A firing of a trigger subscribed to by name.
    Trigger(TriggerFiring),
}

/// A socket's bounded queue of pushes: the thread that runs the shard pushes, the socket's task
/// drains. Never blocks a shard: when full, the oldest update is dropped and counted.
pub(super) struct PushQueue {
    queue: Mutex<VecDeque<Push>>,
    capacity: usize,
    /// Updates this socket lost because it fell behind.
    dropped: AtomicU64,
    /// Wakes the socket's task when an update arrives.
    notify: Notify,
    metrics: Arc<Metrics>,
}

impl UpdateSink for PushQueue {
    fn push(&self, update: UserUpdate) {
        self.enqueue(Push::User(update));
    }

    fn fired(&self, firing: &TriggerFiring) {
        self.enqueue(Push::Trigger(firing.clone()));
    }
}

impl PushQueue {
    fn enqueue(&self, update: Push) {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Relaxed);
                self.metrics.ws_push_dropped_total.fetch_add(1, Relaxed);
            }
            q.push_back(update);
        }
        self.notify.notify_one();
    }
}

/// Most bytes of header names and values a handshake may carry; a larger one is refused with
/// `431` before the upgrade (a browser's handshake is well under 2 KiB).
pub const MAX_HANDSHAKE_HEADER_BYTES: usize = 8 * 1024;

/// Upgrades the request and runs the socket on this worker.
pub(super) async fn handler(
    req: actix_web::HttpRequest,
    body: actix_web::web::Payload,
    shared: actix_web::web::Data<Shared>,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HANDSHAKE_HEADER_BYTES {
        let limit = MAX_HANDSHAKE_HEADER_BYTES;
        return Ok(error_reply_as(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &WireError::TooLarge { limit },
        ));
    }
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    let limit = shared.cfg.ws_max_frame_bytes;
    let stream = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    actix_web::rt::spawn(run(shared.into_inner(), ws, stream));
    Ok(response)
}

/// Frames taken from the socket in one go, at most, before they are dispatched (the
/// in-flight bound applies as well): what one read of 64 KiB holds on TCP.
const MAX_FRAMES_PER_READ: usize = 512;

async fn run(shared: Arc<Shared>, ws: WsSession, mut stream: actix_ws::AggregatedMessageStream) {
    let metrics = shared.metrics.clone();
    metrics.ws_connections.fetch_add(1, Relaxed);
    let cfg = &shared.cfg;
    let max_in_flight = cfg.max_in_flight;
    let mut socket = Socket::new(shared.clone(), ws);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(cfg.ws_heartbeat_s));
    let client_timeout = Duration::from_secs(cfg.ws_client_timeout_s);
    let mut last_heard = Instant::now();
    let mut stop = shared.stop.clone();
    let mut stopping = *stop.borrow();

    let close: Option<CloseReason> = loop {
        // Every reply that is ready leaves now, together.
        while let Some(Some(done)) = socket.session.next().now_or_never() {
            socket.finish(done);
        }
        if !socket.send().await {
            break None;
        }
        if stopping && socket.session.is_empty() {
            break Some(reason(CloseCode::Away, "the server is shutting down"));
        }
        tokio::select! {
            Some(done) = socket.session.next(), if !socket.session.is_empty() => {
                socket.finish(done);
            }
            _ = socket.queue.notify.notified() => socket.take_pushes(),
            msg = stream.next(), if !stopping && socket.session.requests() < max_in_flight => {
                last_heard = Instant::now();
                if let Flow::Close(close) = socket.read(msg, last_heard, &mut stream).await {
                    break close;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > client_timeout {
                    break Some(reason(CloseCode::Policy, "heartbeat timeout"));
                }
                if socket.ws.ping(b"").await.is_err() {
                    break None;
                }
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
    };
    socket.session.close().await;
    let _ = socket.ws.close(close).await;
    metrics.ws_connections.fetch_sub(1, Relaxed);
}

/// The close for a frame the stream refused: 1007 for a text message that is not UTF-8 (actix
/// reports it as invalid data), 1009 for a message over the limit in continuations, 1002
/// for any other violation of the protocol.
fn protocol_error(e: ProtocolError, limit: usize) -> CloseReason {
    match e {
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            reason(CloseCode::Invalid, "a text message is not valid UTF-8")
        }
        ProtocolError::Io(io) if io.to_string().contains("continuation size") => {
            let why = format!("a message is larger than {limit} bytes");
            reason(CloseCode::Size, &why)
        }
        e => reason(CloseCode::Protocol, &e.to_string()),
    }
}

fn reason(code: CloseCode, why: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(why.to_string()),
    }
}

/// What to do after a message from the client.
enum Flow {
    /// Keep going.
    Go,
    /// Close the socket (with this reason, if any).
    Close(Option<CloseReason>),
}

/// One socket's state, apart from its incoming stream.
struct Socket {
    shared: Arc<Shared>,
    /// The socket's sending side.
    ws: WsSession,
    /// This socket's pushes; subscriptions opened by its session push into it.
    queue: Arc<PushQueue>,
    /// The protocol: requests in flight, replies in request order, subscriptions.
    session: Session,
    parser: Parser,
    /// The frame being parsed (parsed in place, so copied out of the frame).
    input: Vec<u8>,
    /// Replies and pushes waiting to be sent, written back to back.
    out: Vec<u8>,
    /// Where each frame in `out` ends, and whether it is a push.
    frames: Vec<(usize, bool)>,
}

impl Socket {
    fn new(shared: Arc<Shared>, ws: WsSession) -> Socket {
        let cfg = &shared.cfg;
        let queue = Arc::new(PushQueue {
            queue: Mutex::new(VecDeque::with_capacity(cfg.ws_push_queue.min(1024))),
            capacity: cfg.ws_push_queue,
            dropped: AtomicU64::new(0),
            notify: Notify::new(),
            metrics: shared.metrics.clone(),
        });
        let sink: Arc<dyn UpdateSink> = queue.clone();
        Socket {
            session: Session::new(shared.clone(), Transport::Ws).with_pushes(sink),
            shared,
            ws,
            queue,
            parser: Parser::new(),
            input: Vec::new(),
            out: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// Handles `first`, received by `now`, and every further message already received (so
    /// that a run of events is ingested as one batch, as on TCP), up to
    /// `MAX_FRAMES_PER_READ` and the in-flight bound; then dispatches the run they end with.
    async fn read(
        &mut self,
        first: Option<Result<AggregatedMessage, ProtocolError>>,
        now: Instant,
        stream: &mut actix_ws::AggregatedMessageStream,
    ) -> Flow {
        let max_in_flight = self.shared.cfg.max_in_flight;
        // One clock read for every frame taken now: they had all arrived by then.
        let mut flow = self.message(first, now).await;
        let mut taken = 1;
        while matches!(flow, Flow::Go)
            && taken < MAX_FRAMES_PER_READ
            && self.session.requests() < max_in_flight
        {
            let Some(msg) = stream.next().now_or_never() else {
                break;
            };
            flow = self.message(msg, now).await;
            taken += 1;
        }
        self.session.flush();
        flow
    }

    /// Handles one message from the client, received by `started`: a text frame is parsed
    /// and taken by the session (not yet submitted if it is an event: the caller flushes).
    async fn message(
        &mut self,
        msg: Option<Result<AggregatedMessage, ProtocolError>>,
        started: Instant,
    ) -> Flow {
        let limit = self.shared.cfg.ws_max_frame_bytes;
        match msg {
            None => Flow::Close(None),
            Some(Ok(AggregatedMessage::Text(t))) => {
                self.text(t.as_bytes(), started);
                Flow::Go
            }
            Some(Ok(AggregatedMessage::Binary(_))) => Flow::Close(Some(reason(
                CloseCode::Unsupported,
                "send JSON in text frames",
            ))),
            Some(Ok(AggregatedMessage::Ping(b))) => match self.ws.pong(&b).await {
                Ok(()) => Flow::Go,
                Err(_) => Flow::Close(None),
            },
            Some(Ok(AggregatedMessage::Pong(_))) => Flow::Go,
            Some(Ok(AggregatedMessage::Close(r))) => Flow::Close(r),
            Some(Err(ProtocolError::Overflow)) => {
                let why = format!("a message is larger than {limit} bytes");
                Flow::Close(Some(reason(CloseCode::Size, &why)))
            }
            Some(Err(e)) => Flow::Close(Some(protocol_error(e, limit))),
        }
    }

    /// Parses one text frame and hands it to the session.
    fn text(&mut self, frame: &[u8], started: Instant) {
        self.input.clear();
        self.input.extend_from_slice(frame);
        let parsed = self.parser.parse(&mut self.input, None);
        self.session.request(parsed, started);
    }

    /// Writes a finished unit's replies into `out`, one frame each.
    fn finish(&mut self, done: Done) {
        let (out, frames) = (&mut self.out, &mut self.frames);
        self.session.finish(done, |id, reply| {
            write_reply(out, &id, &reply);
            frames.push((out.len(), false));
        });
    }

    /// Writes every queued push into `out`, one frame each.
    fn take_pushes(&mut self) {
        loop {
            let Some(push) = self.queue.queue.lock().pop_front() else {
                return;
            };
            let dropped = self.queue.dropped.load(Relaxed);
            match push {
                Push::User(update) => write_push(&mut self.out, &update, dropped),
                Push::Trigger(firing) => write_trigger_push(&mut self.out, &firing, dropped),
            }
            self.frames.push((self.out.len(), true));
        }
    }

    /// Sends every frame in `out`, in order; false if the socket is gone. The frames are
    /// slices of one shared copy of `out` (no allocation per frame), and `out` keeps its
    /// capacity for the next ones.
    async fn send(&mut self) -> bool {
        if self.frames.is_empty() {
            return true;
        }
        let all = shared_text(&self.out);
        let mut from = 0;
        for &(end, push) in &self.frames {
            let frame = match all.get(from..end) {
                Some(frame) => all.slice_ref(frame),
                None => {
                    ByteString::from(String::from_utf8_lossy(&self.out[from..end]).into_owned())
                }
            };
            if self.ws.text(frame).await.is_err() {
                return false;
            }
            if push {
                self.shared.metrics.ws_pushes_total.fetch_add(1, Relaxed);
            }
            from = end;
        }
        self.frames.clear();
        self.out.clear();
        if self.out.capacity() > OUT_CAPACITY_KEPT {
            self.out.shrink_to(OUT_CAPACITY_KEPT);
        }
        true
    }
}

/// Bytes of `out` kept between sends (it grows as needed for one group of frames).
const OUT_CAPACITY_KEPT: usize = 256 * 1024;

/// One reference-counted copy of `out` as text.
fn shared_text(out: &[u8]) -> ByteString {
    match std::str::from_utf8(out) {
        Ok(text) => ByteString::from(text),
        // The wire writer only emits UTF-8 (it copies valid strings and escapes ASCII), so
        // this is not reached; if it were, each frame is made valid on its own in `send`.
        Err(_) => ByteString::default(),
    }
}
