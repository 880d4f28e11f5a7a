//! `session`: the one protocol session every front end runs: parse → submit → replies in
//! request order → write. TCP (lines), WebSocket (text frames) and HTTP (bodies) differ only
//! in framing and in their transport's limits; what a request does and what it answers is
//! decided here, once.
//!
//! A front end hands the session each parsed request in arrival order (`request`), or a
//! refusal of its own framing in its place (`refuse`: a line too long, a line too slow). The
//! session resolves what parsing left open (an event type that is an alias), submits at once,
//! coalescing a run of consecutive `event`s into one `ingest_batch_async` (`dispatch::
//! ingest_many`: one message per shard instead of one per event), and yields the replies in
//! request order (`next`, `finish`), recording the per-op metrics as each reply leaves. It
//! counts requests, not futures, so the front end can bound them by `max_in_flight`.
//! Subscriptions are the session's too, on a session given a push sink (`with_pushes`, the
//! WebSocket's); elsewhere `subscribe` answers `bad_request`.
//!
//! It does not read or write sockets, frame replies, or push updates: the front end decides
//! when to take more requests, calls `flush` once it has taken all that are available now,
//! and frames and writes the replies `finish` hands it. `dispatch` turns one op into engine
//! calls and a `Reply`.

pub(super) mod dispatch;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::FuturesOrdered;

use super::metrics::Transport;
use super::Shared;
use crate::api::{Event, UpdateSink};
use crate::wire::{Op, OpKind, Rejected, Reply, ReqId, Request, WireError};

/// What a finished unit of work yields: one reply, or the replies of a coalesced run.
pub(super) enum Done {
    One(ReqId, OpKind, Reply, Instant),
    Events(Vec<ReqId>, Vec<Reply>, Instant),
}

type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

/// A connection's (or an HTTP request's) requests in flight, in order, and the run of events
/// not yet submitted.
pub(super) struct Session {
    shared: Arc<Shared>,
    transport: Transport,
    /// Polled in request order: an op reaches its shard when its future is first polled.
    in_flight: FuturesOrdered<Pending>,
    /// Requests (not futures) submitted and not yet finished.
    in_flight_requests: usize,
    /// The current run of consecutive events, not yet submitted.
    run: Vec<Event>,
    run_ids: Vec<ReqId>,
    run_started: Option<Instant>,
    /// Where subscriptions push (`None`: this transport cannot push), and those opened.
    pushes: Option<Subscriptions>,
    /// The op a refused request is counted under: an HTTP route's, else `event`.
    refused_as: OpKind,
}

/// A pushing session's subscriptions.
struct Subscriptions {
    /// The front end's push queue; every subscription of the session pushes into it.
    sink: Arc<dyn UpdateSink>,
    /// Open subscriptions (user, id), closed by `close`.
    open: Vec<(String, u64)>,
    /// Open subscriptions to triggers' names (name, id), closed by `close`.
    triggers: Vec<(String, u64)>,
}

impl Session {
    pub(super) fn new(shared: Arc<Shared>, transport: Transport) -> Session {
        Session {
            shared,
            transport,
            in_flight: FuturesOrdered::new(),
            in_flight_requests: 0,
            run: Vec::new(),
            run_ids: Vec::new(),
            run_started: None,
            pushes: None,
            refused_as: OpKind::Event,
        }
    }

    /// A session for one HTTP route: a body that cannot be parsed counts under its op.
    pub(super) fn for_route(mut self, op: OpKind) -> Session {
        self.refused_as = op;
        self
    }

    /// A session that can `subscribe`: the users' updates go to `sink`.
    pub(super) fn with_pushes(mut self, sink: Arc<dyn UpdateSink>) -> Session {
        self.pushes = Some(Subscriptions {
            sink,
            open: Vec::new(),
            triggers: Vec::new(),
        });
        self
    }

    /// Requests taken and not yet answered, the unsubmitted run included: what
    /// `max_in_flight` bounds.
    pub(super) fn requests(&self) -> usize {
        self.in_flight_requests + self.run.len()
    }

    /// True when nothing is submitted (call `flush` first: an unsubmitted run is not
    /// counted here).
    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Takes one parsed request (or the parser's refusal) in its place: events join the
    /// current run; anything else ends the run and is submitted at once.
    pub(super) fn request(&mut self, parsed: Result<Request, Rejected>, started: Instant) {
        let Request { id, op } = match parsed {
            Ok(request) => request,
            Err(Rejected { id, error }) => return self.refuse(id, error, started),
        };
        match op {
            Op::Event(e) => match e.resolve(|name| self.shared.engine.event_kind(name)) {
                Ok(event) => {
                    self.run_started.get_or_insert(started);
                    self.run.push(event);
                    self.run_ids.push(id);
                }
                Err(e) => self.ready(id, OpKind::Event, Reply::Failed(e.into()), started),
            },
            Op::Ping => self.ready(id, OpKind::Ping, Reply::Pong, started),
            Op::Subscribe(user) => self.subscribe(id, user, started),
            Op::Unsubscribe(user) => self.unsubscribe(id, user, started),
            Op::SubscribeTrigger(name) => self.subscribe_trigger(id, name, started),
            Op::UnsubscribeTrigger(name) => self.unsubscribe_trigger(id, name, started),
            op => {
                let kind = op.kind();
                let shared = self.shared.clone();
                self.push(id, kind, started, async move {
                    dispatch::execute(&shared.engine, op).await
                });
            }
        }
    }

    /// Answers `error` in its place. Its op is unknown (not JSON, too large, too slow), so it
    /// counts under the route's op, or `event`, the protocol's commonest.
    pub(super) fn refuse(&mut self, id: ReqId, error: WireError, started: Instant) {
        self.ready(id, self.refused_as, Reply::Failed(error), started);
    }

    /// Queues a reply that is already known, in its place (after the current run).
    pub(super) fn ready(&mut self, id: ReqId, op: OpKind, reply: Reply, started: Instant) {
        self.flush();
        self.in_flight_requests += 1;
        let done = Done::One(id, op, reply, started);
        self.in_flight.push_back(Box::pin(std::future::ready(done)));
    }

    /// Queues the reply `work` computes, in its place (after the current run).
    fn push(
        &mut self,
        id: ReqId,
        op: OpKind,
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

    /// Submits the current run of events, if any: one `ingest_batch_async` for all of them.
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

    /// The next finished unit of work, in request order; `None` when nothing is submitted.
    /// Cancel safe (a `select!` branch may drop it).
    pub(super) async fn next(&mut self) -> Option<Done> {
        futures_util::StreamExt::next(&mut self.in_flight).await
    }

    /// Records the metrics of a finished unit and hands each of its replies, in order, to
    /// `write`.
    pub(super) fn finish(&mut self, done: Done, mut write: impl FnMut(ReqId, Reply)) {
        let metrics = &self.shared.metrics;
        match done {
            Done::One(id, op, reply, started) => {
                metrics.record_reply(self.transport, op.into(), &reply, started);
                write(id, reply);
                self.in_flight_requests -= 1;
            }
            Done::Events(ids, replies, started) => {
                let op = OpKind::Event.into();
                let count = replies.len();
                let failed = replies.iter().filter(|r| r.error_code().is_some()).count();
                let ok = (count - failed) as u64;
                if ok > 0 {
                    metrics.record(self.transport, op, None, started, ok);
                }
                for (id, reply) in ids.into_iter().zip(replies) {
                    if failed > 0 && reply.error_code().is_some() {
                        metrics.record_reply(self.transport, op, &reply, started);
                    }
                    write(id, reply);
                }
                self.in_flight_requests -= count;
            }
        }
    }

    /// Submits what is taken and hands every reply to `write`, in order, once all are in:
    /// an HTTP request's whole session.
    pub(super) async fn answer_all(&mut self, mut write: impl FnMut(ReqId, Reply)) {
        self.flush();
        while let Some(done) = self.next().await {
            self.finish(done, &mut write);
        }
    }

    /// Subscribes this session to `user`'s updates, or answers the subscription it already
    /// has: subscribing twice must not push every update twice. The subscription's id is
    /// recorded at once (a second `subscribe` in the same pipeline finds it, and closing the
    /// session ends it); the reply waits, in its place, for the shard to have registered it.
    fn subscribe(&mut self, id: ReqId, user: String, started: Instant) {
        let Some(pushes) = &mut self.pushes else {
            let why = "subscriptions are available on WebSocket only";
            let reply = Reply::Failed(WireError::Unsupported(why));
            return self.ready(id, OpKind::Subscribe, reply, started);
        };
        if let Some(&(_, subscription)) = pushes.open.iter().find(|(u, _)| *u == user) {
            return self.ready(
                id,
                OpKind::Subscribe,
                Reply::Subscribed { subscription },
                started,
            );
        }
        match self
            .shared
            .engine
            .submit_subscribe(&user, pushes.sink.clone())
        {
            Ok((subscription, pending)) => {
                pushes.open.push((user, subscription));
                self.push(id, OpKind::Subscribe, started, async move {
                    match pending.await {
                        Ok(Ok(())) => Reply::Subscribed { subscription },
                        Ok(Err(e)) | Err(e) => Reply::Failed(e.into()),
                    }
                });
            }
            Err(e) => self.ready(id, OpKind::Subscribe, Reply::Failed(e.into()), started),
        }
    }

    /// Closes this session's subscriptions to `user`, in its place.
    fn unsubscribe(&mut self, id: ReqId, user: String, started: Instant) {
        let Some(pushes) = &mut self.pushes else {
            let why = "subscriptions are available on WebSocket only";
            let reply = Reply::Failed(WireError::Unsupported(why));
            return self.ready(id, OpKind::Unsubscribe, reply, started);
        };
        let mine: Vec<(String, u64)> = pushes
            .open
            .iter()
            .filter(|(u, _)| *u == user)
            .cloned()
            .collect();
        pushes.open.retain(|(u, _)| *u != user);
        let shared = self.shared.clone();
        self.push(id, OpKind::Unsubscribe, started, async move {
            unsubscribe_all(&shared, mine).await;
            Reply::Unsubscribed
        });
    }

    /// Subscribes this session to every firing of trigger `name` (once: a second
    /// `subscribe` answers the same subscription). The engine's hub takes it at once.
    fn subscribe_trigger(&mut self, id: ReqId, name: String, started: Instant) {
        let Some(pushes) = &mut self.pushes else {
            let why = "subscriptions are available on WebSocket only";
            let reply = Reply::Failed(WireError::Unsupported(why));
            return self.ready(id, OpKind::Subscribe, reply, started);
        };
        let reply = match pushes.triggers.iter().find(|(n, _)| *n == name) {
            Some(&(_, subscription)) => Reply::Subscribed { subscription },
            None => match self
                .shared
                .engine
                .subscribe_trigger(&name, pushes.sink.clone())
            {
                Ok(subscription) => {
                    pushes.triggers.push((name, subscription));
                    Reply::Subscribed { subscription }
                }
                Err(e) => Reply::Failed(e.into()),
            },
        };
        self.ready(id, OpKind::Subscribe, reply, started);
    }

    /// Ends this session's subscription to trigger `name`, if it has one.
    fn unsubscribe_trigger(&mut self, id: ReqId, name: String, started: Instant) {
        let Some(pushes) = &mut self.pushes else {
            let why = "subscriptions are available on WebSocket only";
            let reply = Reply::Failed(WireError::Unsupported(why));
            return self.ready(id, OpKind::Unsubscribe, reply, started);
        };
        for (_, subscription) in pushes.triggers.iter().filter(|(n, _)| *n == name) {
            self.shared.engine.unsubscribe_trigger(*subscription);
        }
        pushes.triggers.retain(|(n, _)| *n != name);
        self.ready(id, OpKind::Unsubscribe, Reply::Unsubscribed, started);
    }

    /// Closes every subscription the session opened (when its connection ends).
    pub(super) async fn close(&mut self) {
        if let Some(pushes) = &mut self.pushes {
            for (_, subscription) in std::mem::take(&mut pushes.triggers) {
                self.shared.engine.unsubscribe_trigger(subscription);
            }
            unsubscribe_all(&self.shared, std::mem::take(&mut pushes.open)).await;
        }
    }
}

/// Closes `subscriptions`.
async fn unsubscribe_all(shared: &Shared, subscriptions: Vec<(String, u64)>) {
    for (user, id) in subscriptions {
        let _ = shared.engine.unsubscribe_async(&user, id).await;
    }
}
