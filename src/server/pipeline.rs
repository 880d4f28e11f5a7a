//! `pipeline`: one connection's requests in flight, shared by the TCP and WebSocket front ends.
//!
//! The connection hands it each parsed request in arrival order; it dispatches them at once,
//! coalescing a run of consecutive `event`s into one `ingest_batch_async`
//! (`dispatch::ingest_many`: one message per shard instead of one per event), and yields the
//! replies in request order, recording the per-op metrics as each reply leaves. It counts
//! requests, not futures, so the connection can bound them by `max_in_flight`.
//!
//! It does not read or write sockets, frame replies, or know about subscriptions: the
//! connection decides when to take more requests, calls `flush` once it has taken all that
//! are available now, and writes the replies `finish` hands it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::FuturesOrdered;

use super::dispatch;
use super::metrics::{MetricOp, Transport};
use super::Shared;
use crate::api::Event;
use crate::wire::{Op, OpKind, Rejected, Reply, ReqId, Request};

/// What a finished unit of work yields: one reply, or the replies of a coalesced run.
pub(super) enum Done {
    One(ReqId, MetricOp, Reply, Instant),
    Events(Vec<ReqId>, Vec<Reply>, Instant),
}

type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A connection's dispatched requests, in order, and the run of events not yet dispatched.
pub(super) struct Pipeline {
    shared: Arc<Shared>,
    transport: Transport,
    /// Polled in request order: an op reaches its shard when its future is first polled.
    in_flight: FuturesOrdered<Pending>,
    /// Requests (not futures) dispatched and not yet finished.
    in_flight_requests: usize,
    /// The current run of consecutive events, not yet dispatched.
    run: Vec<Event>,
    run_ids: Vec<ReqId>,
    run_started: Option<Instant>,
}

impl Pipeline {
    pub(super) fn new(shared: Arc<Shared>, transport: Transport) -> Pipeline {
        Pipeline {
            shared,
            transport,
            in_flight: FuturesOrdered::new(),
            in_flight_requests: 0,
            run: Vec::new(),
            run_ids: Vec::new(),
            run_started: None,
        }
    }

    /// Requests taken and not yet answered, the undispatched run included: what
    /// `max_in_flight` bounds.
    pub(super) fn requests(&self) -> usize {
        self.in_flight_requests + self.run.len()
    }

    /// True when nothing is dispatched (call `flush` first: an undispatched run is not
    /// counted here).
    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Takes one parsed request (or the parser's refusal) in its place: events join the
    /// current run; anything else ends the run and is dispatched at once.
    pub(super) fn request(&mut self, parsed: Result<Request, Rejected>, started: Instant) {
        match parsed {
            Ok(Request {
                id,
                op: Op::Event(e),
            }) => {
                self.run_started.get_or_insert(started);
                self.run.push(e);
                self.run_ids.push(id);
            }
            Ok(Request { id, op: Op::Ping }) => {
                self.ready(id, MetricOp::of(OpKind::Ping), Reply::Pong, started)
            }
            Ok(Request { id, op }) => {
                let metric = MetricOp::of(op.kind());
                let shared = self.shared.clone();
                self.push(id, metric, started, async move {
                    dispatch::execute(&shared.engine, op).await
                });
            }
            Err(Rejected { id, error }) => {
                let metric = MetricOp::of(OpKind::Event);
                self.ready(id, metric, Reply::Failed(error), started)
            }
        }
    }

    /// Queues a reply that is already known, in its place (after the current run).
    pub(super) fn ready(&mut self, id: ReqId, op: MetricOp, reply: Reply, started: Instant) {
        self.flush();
        self.in_flight_requests += 1;
        let done = Done::One(id, op, reply, started);
        self.in_flight.push_back(Box::pin(std::future::ready(done)));
    }

    /// Queues the reply `work` computes, in its place (after the current run).
    pub(super) fn push(
        &mut self,
        id: ReqId,
        op: MetricOp,
        started: Instant,
        work: impl Future<Output = Reply> + Send + 'static,
    ) {
        self.flush();
        self.in_flight_requests += 1;
        self.in_flight.push_back(Box::pin(async move {
            let reply = work.await;
            Done::One(id, op, reply, started)
        }));
    }

    /// Dispatches the current run of events, if any: one `ingest_batch_async` for all of them.
    pub(super) fn flush(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.run);
        let ids = std::mem::take(&mut self.run_ids);
        let started = self.run_started.take().unwrap_or_else(Instant::now);
        let shared = self.shared.clone();
        self.in_flight_requests += events.len();
        self.in_flight.push_back(Box::pin(async move {
            let replies = dispatch::ingest_many(&shared.engine, events).await;
            Done::Events(ids, replies, started)
        }));
    }

    /// The next finished unit of work, in request order; `None` when nothing is dispatched.
    /// Cancel safe (a `select!` branch may drop it).
    pub(super) async fn next(&mut self) -> Option<Done> {
        futures_util::StreamExt::next(&mut self.in_flight).await
    }

    /// Records the metrics of a finished unit and hands each of its replies, in order, to
    /// `write`.
    pub(super) fn finish(&mut self, done: Done, mut write: impl FnMut(&ReqId, &Reply)) {
        let metrics = &self.shared.metrics;
        match done {
            Done::One(id, op, reply, started) => {
                metrics.record_reply(self.transport, op, &reply, started);
                write(&id, &reply);
                self.in_flight_requests -= 1;
            }
            Done::Events(ids, replies, started) => {
                let op = MetricOp::of(OpKind::Event);
                let failed = replies.iter().filter(|r| r.error_code().is_some()).count();
                let ok = (replies.len() - failed) as u64;
                if ok > 0 {
                    metrics.record(self.transport, op, None, started, ok);
                }
                for (id, reply) in ids.iter().zip(&replies) {
                    if failed > 0 && reply.error_code().is_some() {
                        metrics.record_reply(self.transport, op, reply, started);
                    }
                    write(id, reply);
                }
                self.in_flight_requests -= replies.len();
            }
        }
    }
}
