//! `Engine`: the embeddable API. A cheap `Clone` handle that validates every input, routes it
//! to the shard that owns the user (`hash(user) mod N`), and waits for the one-shot reply,
//! blocking (spin, then park) or as a future.
//!
//! **Invariant:** the engine never touches user state; only shards do. It owns the catalog's
//! authoritative copy and the shard threads' lifetime.

pub mod validate;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;

use crate::api::{
    Ack, DecideRequest, Decision, DecisionLog, DurabilityStats, Event, EventKind, ItemSpec, Stats,
    UpdateSink, UserExport,
};
use crate::catalog::Catalog;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, FsyncPolicy, OnFull, PolicyKind};
use crate::error::{Error, Problem, StartError};
use crate::ids::{DecisionId, ItemId, ShardId, UserId};
use crate::model::{FeatureSpace, Mixer};
use crate::persist::{DataDir, LogCounters, SegmentOptions};
use crate::shard::msg::{Reply, ValidEvent, ValidReward};
use crate::shard::{self, Control, Counters, DurableSetup, Msg, ShardSetup};
use crate::sync::oneshot;

pub use validate::{MAX_ATTRS, MAX_VECTOR_LEN};

struct Inner {
    cfg: Arc<Config>,
    space: FeatureSpace,
    /// One bounded inbox per shard; dropping them (with `Inner`) lets the threads exit.
    inboxes: Vec<Sender<Control>>,
    counters: Vec<Arc<Counters>>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    /// Shard threads, joined once by `shutdown`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set by `shutdown`: new calls fail with `ShuttingDown`.
    closing: AtomicBool,
    spin: Duration,
    next_subscription: AtomicU64,
    /// Whether shards write a decision log (decide keeps the raw context for it).
    logging: bool,
    /// The data directory (its lock is held as long as this is), when durable.
    data: Option<DataDir>,
    /// Each shard's write-ahead log counters, when durable.
    log_counters: Vec<Arc<LogCounters>>,
    /// Records replayed at start, and how long recovery took (ms).
    recovery: (u64, u64),
}

/// A running engine. Clones share it; it shuts down when `shutdown` is called or the last
/// clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    on_full: OnFull,
}

/// Builds an `Engine`: start from defaults or a `Config`, adjust, `build`.
#[derive(Default)]
pub struct EngineBuilder {
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    log: Option<Arc<dyn DecisionLog>>,
    repair: bool,
}

impl EngineBuilder {
    /// Keeps state in `path` (a write-ahead log per shard), recovering what is there; without
    /// it the engine is in memory only.
    pub fn data_dir(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.config.data_dir = Some(path.as_ref().to_string_lossy().into_owned());
        self
    }
    /// Sets the write-ahead log's fsync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.config.durability.fsync = policy;
        self
    }
    /// On corruption in the middle of a log, keeps the valid prefix and moves the rest aside
    /// instead of refusing to start.
    pub fn repair(mut self, repair: bool) -> Self {
        self.repair = repair;
        self
    }
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// Sets the number of shard threads (0: one per core).
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }
    /// Sets the model width `d`.
    pub fn dim(mut self, d: usize) -> Self {
        self.config.model.dim = d;
        self
    }
    /// Sets the seed of every random choice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }
    /// Sets the exploration policy.
    pub fn policy(mut self, policy: PolicyKind) -> Self {
        self.config.exploration.policy = policy;
        self
    }
    /// Sets each shard inbox's capacity.
    pub fn inbox_capacity(mut self, n: usize) -> Self {
        self.config.inbox_capacity = n;
        self
    }
    /// Injects a clock (tests use `ManualClock`).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
    /// Writes every decision and outcome to `log` (off by default).
    pub fn decision_log(mut self, log: Arc<dyn DecisionLog>) -> Self {
        self.log = Some(log);
        self
    }
    /// Validates the configuration and starts the shard threads.
    pub fn build(self) -> Result<Engine, StartError> {
        self.config.validate().map_err(StartError::Config)?;
        let cfg = Arc::new(self.config);
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let n = cfg.shard_count();
        let mixer = (n > 1).then(|| Arc::new(Mixer::new(cfg.model.dim, n)));
        // Decision ids start from the start time so ids of two runs do not collide.
        let first_sequence = ((clock.now_ms() / 1000) << 16) & 0x7fff_ffff_ffff;
        let data = match cfg.data_dir.as_deref() {
            Some(dir) if !dir.is_empty() => Some(DataDir::open(std::path::Path::new(dir), &cfg)?),
            _ => None,
        };
        let mut inboxes = Vec::with_capacity(n);
        let mut counters = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut recovering = Vec::new();
        let recovery_started = std::time::Instant::now();
        for i in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(cfg.inbox_capacity);
            let c = Arc::new(Counters::default());
            let durable = match &data {
                Some(data) => {
                    let opts = SegmentOptions {
                        fsync: cfg.durability.fsync,
                        segment_bytes: cfg.durability.segment_bytes,
                        repair: self.repair,
                    };
                    let (ready, recovered) = oneshot::channel();
                    recovering.push(recovered);
                    Some(DurableSetup {
                        log: data.shard_log(i as u16, opts)?,
                        fsync: cfg.durability.fsync,
                        ready,
                    })
                }
                None => None,
            };
            let setup = ShardSetup {
                id: ShardId(i as u16),
                cfg: cfg.clone(),
                clock: clock.clone(),
                mixer: mixer.clone(),
                counters: c.clone(),
                first_sequence,
                log: self.log.clone(),
                durable,
            };
            threads.push(shard::spawn(setup, rx)?);
            inboxes.push(tx);
            counters.push(c);
        }
        // Ready once every shard has replayed its log (in parallel, one per shard thread).
        let catalog = Catalog::default();
        let mut log_counters = Vec::new();
        let mut recovered_records = 0;
        let mut failure = None;
        for (i, rx) in recovering.into_iter().enumerate() {
            match rx.wait(Duration::ZERO) {
                Ok(Ok(recovered)) => {
                    if i == 0 {
                        for item in recovered.catalog {
                            catalog.insert(item);
                        }
                    }
                    log_counters.push(recovered.counters);
                    recovered_records += recovered.report.records;
                }
                Ok(Err(e)) => failure = failure.or(Some(StartError::Storage(e))),
                Err(_) => {
                    failure = failure.or(Some(StartError::Spawn(std::io::Error::other(
                        "a shard thread died while recovering",
                    ))))
                }
            }
        }
        if let Some(e) = failure {
            // Dropping the inboxes stops the shards that did recover; their logs close.
            drop(inboxes);
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        let space = FeatureSpace {
            dim: cfg.model.dim,
            item_embedding_init: cfg.model.item_embedding_init,
        };
        let on_full = cfg.on_full;
        let inner = Inner {
            spin: Config::spin(cfg.reply_spin_us),
            cfg,
            space,
            inboxes,
            counters,
            catalog,
            clock,
            threads: Mutex::new(threads),
            closing: AtomicBool::new(false),
            next_subscription: AtomicU64::new(1),
            logging: self.log.is_some(),
            data,
            log_counters,
            recovery: (
                recovered_records,
                recovery_started.elapsed().as_millis() as u64,
            ),
        };
        Ok(Engine {
            inner: Arc::new(inner),
            on_full,
        })
    }
}

/// A future that is pending once, to let other tasks run while an inbox is full.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl Engine {
    /// A builder starting from the default configuration.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Starts an engine with `config` and the system clock.
    pub fn start(config: Config) -> Result<Engine, StartError> {
        Engine::builder().config(config).build()
    }

    /// This handle, but with calls that find a full inbox doing `on_full` (wait, or fail with
    /// `Error::Busy`).
    pub fn on_full(mut self, on_full: OnFull) -> Engine {
        self.on_full = on_full;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The engine's current time (Unix ms), from its clock.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.inboxes.len()
    }

    /// The shard that owns `user`.
    pub fn shard_of(&self, user: &UserId) -> ShardId {
        ShardId((user.key() % self.inner.inboxes.len() as u64) as u16)
    }

    /// Resolves an event type name: a built-in name or a configured alias.
    pub fn event_kind(&self, name: &str) -> Result<EventKind, Error> {
        EventKind::parse_builtin(name)
            .or_else(|| {
                self.inner
                    .cfg
                    .event_aliases
                    .get(name)
                    .and_then(|t| EventKind::parse_builtin(t))
            })
            .ok_or_else(|| Error::invalid("type", Problem::UnknownEventType(name.to_string())))
    }

    fn send(&self, shard: ShardId, msg: Msg) -> Result<(), Error> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let inbox = &self.inner.inboxes[shard.0 as usize];
        match self.on_full {
            OnFull::Wait => inbox
                .send(Control::Msg(msg))
                .map_err(|_| Error::ShuttingDown),
            OnFull::Fail => inbox.try_send(Control::Msg(msg)).map_err(|e| match e {
                TrySendError::Full(_) => {
                    self.inner.counters[shard.0 as usize].count_busy();
                    Error::Busy(shard)
                }
                TrySendError::Disconnected(_) => Error::ShuttingDown,
            }),
        }
    }

    async fn send_async(&self, shard: ShardId, msg: Msg) -> Result<(), Error> {
        let mut control = Control::Msg(msg);
        loop {
            if self.inner.closing.load(Ordering::Acquire) {
                return Err(Error::ShuttingDown);
            }
            match self.inner.inboxes[shard.0 as usize].try_send(control) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) if self.on_full == OnFull::Wait => {
                    control = back;
                    YieldNow(false).await;
                }
                Err(TrySendError::Full(_)) => {
                    self.inner.counters[shard.0 as usize].count_busy();
                    return Err(Error::Busy(shard));
                }
                Err(TrySendError::Disconnected(_)) => return Err(Error::ShuttingDown),
            }
        }
    }

    fn call<T>(&self, shard: ShardId, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(shard, make(tx))?;
        rx.wait(self.inner.spin).map_err(|_| Error::ShuttingDown)
    }

    async fn call_async<T>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T>) -> Msg,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send_async(shard, make(tx)).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    fn valid_event(&self, ev: Event) -> Result<(ShardId, ValidEvent), Error> {
        let inner = &self.inner;
        let valid = validate::event(&inner.cfg, &inner.space, ev, inner.clock.now_ms())?;
        Ok((self.shard_of(&valid.user), valid))
    }

    /// Applies one event and returns once its shard has (the acknowledgement).
    pub fn ingest(&self, event: Event) -> Result<Ack, Error> {
        let (shard, ev) = self.valid_event(event)?;
        self.call(shard, |r| Msg::Event(ev, r))?
    }

    /// `ingest`, as a future.
    pub async fn ingest_async(&self, event: Event) -> Result<Ack, Error> {
        let (shard, ev) = self.valid_event(event)?;
        self.call_async(shard, |r| Msg::Event(ev, r)).await?
    }

    /// Splits a batch by shard: per shard, the events and their positions in the batch.
    fn split_batch(
        &self,
        events: Vec<Event>,
        results: &mut [Result<Ack, Error>],
    ) -> Vec<(Vec<ValidEvent>, Vec<usize>)> {
        let mut per_shard: Vec<(Vec<ValidEvent>, Vec<usize>)> = (0..self.shard_count())
            .map(|_| (Vec::new(), Vec::new()))
            .collect();
        for (i, ev) in events.into_iter().enumerate() {
            match self.valid_event(ev) {
                Ok((shard, ev)) => {
                    per_shard[shard.0 as usize].0.push(ev);
                    per_shard[shard.0 as usize].1.push(i);
                }
                Err(e) => results[i] = Err(e),
            }
        }
        per_shard
    }

    /// Applies many events: one message per shard, all shards working at once. Results come
    /// back in input order; an invalid event gets its error and the others still apply.
    pub fn ingest_batch(&self, events: Vec<Event>) -> Vec<Result<Ack, Error>> {
        let mut results: Vec<Result<Ack, Error>> = vec![Ok(Ack::default()); events.len()];
        let per_shard = self.split_batch(events, &mut results);
        let mut waiting = Vec::new();
        for (s, (evs, positions)) in per_shard.into_iter().enumerate() {
            if evs.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let sent = self.send(ShardId(s as u16), Msg::Events(evs, tx));
            waiting.push((positions, sent.map(|()| rx)));
        }
        for (positions, rx) in waiting {
            let acks = rx.and_then(|rx| rx.wait(self.inner.spin).map_err(|_| Error::ShuttingDown));
            scatter(&mut results, positions, acks);
        }
        results
    }

    /// `ingest_batch`, as a future.
    pub async fn ingest_batch_async(&self, events: Vec<Event>) -> Vec<Result<Ack, Error>> {
        let mut results: Vec<Result<Ack, Error>> = vec![Ok(Ack::default()); events.len()];
        let per_shard = self.split_batch(events, &mut results);
        let mut waiting = Vec::new();
        for (s, (evs, positions)) in per_shard.into_iter().enumerate() {
            if evs.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let sent = self
                .send_async(ShardId(s as u16), Msg::Events(evs, tx))
                .await;
            waiting.push((positions, sent.map(|()| rx)));
        }
        for (positions, rx) in waiting {
            let acks = match rx {
                Ok(rx) => rx.await.map_err(|_| Error::ShuttingDown),
                Err(e) => Err(e),
            };
            scatter(&mut results, positions, acks);
        }
        results
    }

    /// Ranks candidates for a user and opens the decision for attribution.
    pub fn decide(&self, request: DecideRequest) -> Result<Decision, Error> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let req = validate::decide(&inner.cfg, &inner.space, request, now, inner.logging)?;
        self.call(self.shard_of(&req.user), |r| Msg::Decide(req, r))?
    }

    /// `decide`, as a future.
    pub async fn decide_async(&self, request: DecideRequest) -> Result<Decision, Error> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let req = validate::decide(&inner.cfg, &inner.space, request, now, inner.logging)?;
        let shard = self.shard_of(&req.user);
        self.call_async(shard, |r| Msg::Decide(req, r)).await?
    }

    fn decision_shard(&self, decision: DecisionId) -> Result<ShardId, Error> {
        let shard = decision.shard();
        if (shard.0 as usize) < self.shard_count() {
            Ok(shard)
        } else {
            Err(Error::UnknownDecision(decision))
        }
    }

    /// Attributes an explicit reward (0..=1) to an item of an open decision, and learns from it.
    pub fn reward(&self, decision: DecisionId, item: &str, value: f64) -> Result<(), Error> {
        self.reward_at(decision, item, value, None)
    }

    /// `reward` at time `ts_ms` (Unix ms; `None`: now), for rewards replayed from a history.
    pub fn reward_at(
        &self,
        decision: DecisionId,
        item: &str,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Result<(), Error> {
        let r = self.valid_reward(decision, item, value, ts_ms)?;
        self.call(self.decision_shard(decision)?, |tx| Msg::Reward(r, tx))?
    }

    /// `reward_at`, as a future.
    pub async fn reward_async(
        &self,
        decision: DecisionId,
        item: &str,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Result<(), Error> {
        let r = self.valid_reward(decision, item, value, ts_ms)?;
        let shard = self.decision_shard(decision)?;
        self.call_async(shard, |tx| Msg::Reward(r, tx)).await?
    }

    fn valid_reward(
        &self,
        decision: DecisionId,
        item: &str,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Result<ValidReward, Error> {
        let now_ms = self.inner.clock.now_ms();
        let ts_ms = validate::timestamp(&self.inner.cfg, ts_ms, now_ms)?;
        validate::reward(decision, item, value, ts_ms)
    }

    fn broadcast(&self, make: impl Fn() -> Msg) -> Result<(), Error> {
        // Catalog changes always wait for room: a partial broadcast would split the shards.
        for s in 0..self.shard_count() {
            self.clone()
                .on_full(OnFull::Wait)
                .send(ShardId(s as u16), make())?;
        }
        Ok(())
    }

    /// Inserts or replaces a catalog item; returns whether it was new. Shards see it before
    /// any later call from this thread.
    pub fn upsert_item(&self, item: ItemSpec) -> Result<bool, Error> {
        let features = Arc::new(validate::item(&self.inner.cfg, &self.inner.space, item)?);
        let new = self.inner.catalog.insert(features.clone());
        self.broadcast(|| Msg::UpsertItem(features.clone()))?;
        Ok(new)
    }

    /// Removes a catalog item and its learned parameters; returns whether it was present.
    pub fn remove_item(&self, id: &str) -> Result<bool, Error> {
        let key = ItemId::new(id)?.key();
        let present = self.inner.catalog.remove(key);
        self.broadcast(|| Msg::RemoveItem(key))?;
        Ok(present)
    }

    /// A catalog item as stored (attributes and vector).
    pub fn item(&self, id: &str) -> Result<Option<ItemSpec>, Error> {
        let key = ItemId::new(id)?.key();
        Ok(self.inner.catalog.get(key).map(|f| ItemSpec {
            id: f.id.as_str().to_string(),
            attrs: f.attrs.clone(),
            vector: f.vector.as_ref().map(|v| v.to_vec()),
        }))
    }

    /// Everything stored about one user, or `None` if the engine holds nothing for them.
    pub fn user(&self, id: &str) -> Result<Option<UserExport>, Error> {
        let user = UserId::new(id)?;
        self.call(self.shard_of(&user), |r| Msg::User(user, r))
    }

    /// `user`, as a future.
    pub async fn user_async(&self, id: &str) -> Result<Option<UserExport>, Error> {
        let user = UserId::new(id)?;
        let shard = self.shard_of(&user);
        self.call_async(shard, |r| Msg::User(user, r)).await
    }

    /// Erases every trace of one user (state, model, open decisions); returns whether the
    /// engine held anything for them.
    pub fn forget(&self, id: &str) -> Result<bool, Error> {
        let user = UserId::new(id)?;
        self.call(self.shard_of(&user), |r| Msg::Forget(user, r))
    }

    /// `forget`, as a future.
    pub async fn forget_async(&self, id: &str) -> Result<bool, Error> {
        let user = UserId::new(id)?;
        let shard = self.shard_of(&user);
        self.call_async(shard, |r| Msg::Forget(user, r)).await
    }

    /// Pushes `user`'s updates to `sink` after each of their events, until `unsubscribe`.
    /// Returns the subscription's id.
    pub fn subscribe(&self, user: &str, sink: Arc<dyn UpdateSink>) -> Result<u64, Error> {
        let user = UserId::new(user)?;
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard_of(&user);
        self.clone()
            .on_full(OnFull::Wait)
            .send(shard, Msg::Subscribe(user, id, sink))?;
        Ok(id)
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, user: &str, subscription: u64) -> Result<(), Error> {
        let user = UserId::new(user)?;
        let shard = self.shard_of(&user);
        self.clone()
            .on_full(OnFull::Wait)
            .send(shard, Msg::Unsubscribe(user, subscription))
    }

    /// Returns once every shard has handled everything sent to it before this call.
    pub fn flush(&self) -> Result<(), Error> {
        let waiting: Vec<_> = (0..self.shard_count())
            .map(|s| {
                let (tx, rx) = oneshot::channel();
                self.clone()
                    .on_full(OnFull::Wait)
                    .send(ShardId(s as u16), Msg::Barrier(tx))?;
                Ok(rx)
            })
            .collect::<Result<_, Error>>()?;
        for rx in waiting {
            rx.wait(self.inner.spin).map_err(|_| Error::ShuttingDown)?;
        }
        Ok(())
    }

    /// Moves every shard's event time to the engine's current time (expiry and ignored
    /// placements, which otherwise follow the times of the messages a shard handles), and runs
    /// the timer's work (passivation, mixing) now instead of at the next timer tick.
    pub fn tick(&self) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        for s in 0..self.shard_count() {
            self.clone()
                .on_full(OnFull::Wait)
                .send(ShardId(s as u16), Msg::Advance(now))?;
        }
        self.flush()
    }

    /// Counters of every shard and the catalog.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let shards = inner
            .counters
            .iter()
            .zip(&inner.inboxes)
            .map(|(c, inbox)| {
                let mut s = c.read();
                s.inbox_depth = inbox.len() as u64;
                s
            })
            .collect();
        let durability = inner.data.as_ref().map(|data| {
            let sum = |f: fn(&LogCounters) -> &AtomicU64| {
                inner
                    .log_counters
                    .iter()
                    .map(|c| f(c).load(Ordering::Relaxed))
                    .sum::<u64>()
            };
            DurabilityStats {
                data_dir: data.path().display().to_string(),
                fsync: inner.cfg.durability.fsync.name(),
                log_bytes_total: sum(|c| &c.bytes_total),
                log_records_total: sum(|c| &c.records_total),
                fsyncs_total: sum(|c| &c.fsyncs_total),
                fsync_us_total: sum(|c| &c.fsync_us_total),
                recovered_records: inner.recovery.0,
                writable: inner
                    .log_counters
                    .iter()
                    .all(|c| !c.failing.load(Ordering::Relaxed)),
                recovery_ms: inner.recovery.1,
            }
        });
        Stats {
            catalog_items: inner.catalog.len() as u64,
            shards,
            durability,
        }
    }

    /// Stops accepting calls, lets every shard finish what is already in its inbox, and joins
    /// the shard threads. Idempotent; later calls fail with `ShuttingDown`.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut waiting = Vec::new();
        for inbox in &self.inboxes {
            let (tx, rx) = oneshot::channel();
            if inbox.send(Control::Shutdown(tx)).is_ok() {
                waiting.push(rx);
            }
        }
        for rx in waiting {
            let _ = rx.wait(self.spin);
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn scatter(
    results: &mut [Result<Ack, Error>],
    positions: Vec<usize>,
    acks: Result<Vec<Result<Ack, Error>>, Error>,
) {
    match acks {
        Ok(acks) => {
            for (i, ack) in positions.into_iter().zip(acks) {
                results[i] = ack;
            }
        }
        Err(e) => {
            for i in positions {
                results[i] = Err(e.clone());
            }
        }
    }
}
