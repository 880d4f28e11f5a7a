//! The WebSocket front end (actix-ws) at `/v1/ws`: one op or batch per text frame, replies
//! in request order, plus `subscribe`/`unsubscribe` pushes of `UserUpdate`s.
//!
//! Each socket has a bounded push queue (`ws_push_queue`) that drops its oldest update when
//! the client falls behind, and counts the drop (per socket in each push's `dropped`, and in
//! `nudge_ws_push_dropped_total`). Heartbeat: a ping every `ws_heartbeat_s`; a socket silent
//! for `ws_client_timeout_s` is closed. Close codes: 1009 for a message over
//! `ws_max_frame_bytes`, 1003 for binary frames, 1002 for protocol errors, 1001 at shutdown
//! (after in-flight replies are sent), 1008 for a heartbeat timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::dispatch;
use super::metrics::{MetricOp, Metrics, Transport};
use super::Shared;
use crate::api::{UpdateSink, UserUpdate};
use crate::wire::{write_push, write_reply, Op, Parser, Reply, ReqId};

/// A socket's bounded queue of pushes: the engine's shard threads push, the socket's task
/// drains. Never blocks a shard: when full, the oldest update is dropped and counted.
pub(super) struct PushQueue {
    queue: Mutex<VecDeque<UserUpdate>>,
    capacity: usize,
    /// Updates this socket lost because it fell behind.
    dropped: AtomicU64,
    /// Wakes the socket's task when an update arrives.
    notify: Notify,
    metrics: Arc<Metrics>,
}

impl UpdateSink for PushQueue {
    fn push(&self, update: UserUpdate) {
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

/// Upgrades the request and runs the socket on this worker.
pub(super) async fn handler(
    req: actix_web::HttpRequest,
    body: actix_web::web::Payload,
    shared: actix_web::web::Data<Shared>,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let limit = shared.cfg.ws_max_frame_bytes;
    let stream = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    actix_web::rt::spawn(run(shared.into_inner(), session, stream));
    Ok(response)
}

type Pending = Pin<Box<dyn Future<Output = (ReqId, MetricOp, Reply, Instant)>>>;

async fn run(
    shared: Arc<Shared>,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let metrics = shared.metrics.clone();
    metrics.ws_connections.fetch_add(1, Relaxed);
    let cfg = &shared.cfg;
    let queue = Arc::new(PushQueue {
        queue: Mutex::new(VecDeque::with_capacity(cfg.ws_push_queue.min(1024))),
        capacity: cfg.ws_push_queue,
        dropped: AtomicU64::new(0),
        notify: Notify::new(),
        metrics: metrics.clone(),
    });
    let mut subscriptions: Vec<(String, u64)> = Vec::new();
    let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut parser = Parser::new();
    let mut input = Vec::new();
    let mut out = Vec::new();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(cfg.ws_heartbeat_s));
    let client_timeout = Duration::from_secs(cfg.ws_client_timeout_s);
    let mut last_heard = Instant::now();
    let mut stop = shared.stop.clone();
    let mut stopping = *stop.borrow();

    let close: Option<CloseReason> = loop {
        if stopping && in_flight.is_empty() {
            break Some(reason(CloseCode::Away, "the server is shutting down"));
        }
        tokio::select! {
            Some((id, op, reply, started)) = in_flight.next(), if !in_flight.is_empty() => {
                metrics.record_reply(Transport::Ws, op, &reply, started);
                out.clear();
                write_reply(&mut out, &id, &reply);
                if session.text(text(&out)).await.is_err() {
                    break None;
                }
            }
            _ = queue.notify.notified() => {
                if !send_pushes(&queue, &mut session, &mut out, &metrics).await {
                    break None;
                }
            }
            msg = stream.next(), if !stopping && in_flight.len() < cfg.max_in_flight => {
                last_heard = Instant::now();
                match msg {
                    None => break None,
                    Some(Ok(AggregatedMessage::Text(t))) => {
                        input.clear();
                        input.extend_from_slice(t.as_bytes());
                        let fut = frame(&shared, &queue, &mut parser, &mut input, &mut subscriptions);
                        in_flight.push_back(fut);
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        break Some(reason(CloseCode::Unsupported, "send JSON in text frames"));
                    }
                    Some(Ok(AggregatedMessage::Ping(b))) => {
                        if session.pong(&b).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(r))) => break r,
                    Some(Err(ProtocolError::Overflow)) => {
                        let why = format!("a message is larger than {} bytes", cfg.ws_max_frame_bytes);
                        break Some(reason(CloseCode::Size, &why));
                    }
                    Some(Err(e)) => break Some(reason(CloseCode::Protocol, &e.to_string())),
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > client_timeout {
                    break Some(reason(CloseCode::Policy, "heartbeat timeout"));
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
    };
    for (user, id) in subscriptions {
        let engine = shared.engine.clone();
        let _ = dispatch::blocking(move || engine.unsubscribe(&user, id)).await;
    }
    let _ = session.close(close).await;
    metrics.ws_connections.fetch_sub(1, Relaxed);
}

fn reason(code: CloseCode, why: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(why.to_string()),
    }
}

fn text(out: &[u8]) -> String {
    // The wire writer only emits UTF-8 (it copies valid strings and escapes ASCII).
    String::from_utf8_lossy(out).into_owned()
}

/// Sends every queued push; false if the socket is gone.
async fn send_pushes(
    queue: &PushQueue,
    session: &mut Session,
    out: &mut Vec<u8>,
    metrics: &Metrics,
) -> bool {
    loop {
        let Some(update) = queue.queue.lock().pop_front() else {
            return true;
        };
        out.clear();
        write_push(out, &update, queue.dropped.load(Relaxed));
        if session.text(text(out)).await.is_err() {
            return false;
        }
        metrics.ws_pushes_total.fetch_add(1, Relaxed);
    }
}

/// Parses one text frame and returns the future of its reply. Subscriptions are opened here
/// (inline: `subscribe` only enqueues a message) and remembered in `subscriptions`.
fn frame(
    shared: &Arc<Shared>,
    queue: &Arc<PushQueue>,
    parser: &mut Parser,
    input: &mut [u8],
    subscriptions: &mut Vec<(String, u64)>,
) -> Pending {
    let started = Instant::now();
    let req = match parser.parse(input, &shared.engine, None) {
        Ok(req) => req,
        Err(r) => {
            let op = MetricOp::of(crate::wire::OpKind::Event);
            let reply = Reply::Failed(r.error);
            return Box::pin(std::future::ready((r.id, op, reply, started)));
        }
    };
    let op = MetricOp::of(req.op.kind());
    let id = req.id;
    let shared = shared.clone();
    match req.op {
        Op::Subscribe(user) => {
            let sink: Arc<dyn UpdateSink> = queue.clone();
            let engine = shared.engine.clone();
            let name = user.clone();
            let result = engine.subscribe(&name, sink);
            // `subscribe` only enqueues a message (waiting only if that inbox is full).
            let reply = match result {
                Ok(subscription) => {
                    subscriptions.push((user, subscription));
                    Reply::Subscribed { subscription }
                }
                Err(e) => Reply::Failed(e.into()),
            };
            Box::pin(std::future::ready((id, op, reply, started)))
        }
        Op::Unsubscribe(user) => {
            let mine: Vec<u64> = subscriptions
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|s| s.1)
                .collect();
            subscriptions.retain(|(u, _)| *u != user);
            Box::pin(async move {
                for sub in mine {
                    let engine = shared.engine.clone();
                    let user = user.clone();
                    let _ = dispatch::blocking(move || engine.unsubscribe(&user, sub)).await;
                }
                (id, op, Reply::Unsubscribed, started)
            })
        }
        op_value => Box::pin(async move {
            let reply = dispatch::execute(&shared.engine, op_value).await;
            (id, op, reply, started)
        }),
    }
}
