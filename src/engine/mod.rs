//! `Engine`: the embeddable API. A cheap `Clone` handle that validates every input, routes it
//! to the shard that owns the user (`hash(user) mod N`) through one `submit`, and returns a
//! `Pending` reply that the sync API waits for and the async API awaits. The message runs on
//! the caller's thread when its shard is free (`shard::cell`).
//!
//! **Invariant:** the engine never touches user state; only shards do. It owns the catalog's
//! authoritative copy, the shards' cells and the timer thread.

pub mod pending;
pub mod validate;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
use crate::shard::msg::{Reply, ValidEvent};
use crate::shard::{Counters, Msg, Shard, ShardCell};
use crate::sync::oneshot;

pub use pending::{Pending, PendingBatch};
pub use validate::{MAX_ATTRS, MAX_VECTOR_LEN};

struct Inner {
    cfg: Arc<Config>,
    space: FeatureSpace,
    /// The shards, each behind its cell; a caller runs its message in the cell.
    cells: Vec<ShardCell>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    /// The timer thread, stopped once by `shutdown`.
    timer: Mutex<Option<Timer>>,
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
    /// Validates the configuration, recovers the data directory (if any) and starts the
    /// engine.
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
        let counters: Vec<Arc<Counters>> = (0..n).map(|_| Arc::default()).collect();
        let mut shards: Vec<Shard> = (0..n)
            .map(|i| {
                Shard::new(
                    ShardId(i as u16),
                    cfg.clone(),
                    first_sequence,
                    mixer.clone(),
                    counters[i].clone(),
                )
                .with_log(self.log.clone())
            })
            .collect();
        let recovery_started = std::time::Instant::now();
        let catalog = Catalog::default();
        let mut log_counters = Vec::new();
        let mut recovered_records = 0;
        if let Some(data) = &data {
            let opts = SegmentOptions {
                fsync: cfg.durability.fsync,
                segment_bytes: cfg.durability.segment_bytes,
                repair: self.repair,
            };
            let logs = (0..n)
                .map(|i| data.shard_log(i as u16, opts.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            // Every shard replays its own log, all at once.
            let fsync = cfg.durability.fsync;
            let recovered: Vec<_> = std::thread::scope(|scope| {
                let running: Vec<_> = shards
                    .iter_mut()
                    .zip(logs)
                    .map(|(shard, log)| {
                        scope.spawn(move || shard.recover(log, fsync, first_sequence))
                    })
                    .collect();
                running.into_iter().map(|t| t.join()).collect()
            });
            for (i, r) in recovered.into_iter().enumerate() {
                let recovered = match r {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(StartError::Spawn(std::io::Error::other(
                            "a shard panicked while recovering",
                        )))
                    }
                };
                if i == 0 {
                    for item in recovered.catalog {
                        catalog.insert(item);
                    }
                }
                log_counters.push(recovered.counters);
                recovered_records += recovered.report.records;
            }
        }
        let cells = shards
            .into_iter()
            .zip(&counters)
            .map(|(shard, c)| ShardCell::new(shard, cfg.inbox_capacity, cfg.drain_batch, c.clone()))
            .collect();
        let space = FeatureSpace {
            dim: cfg.model.dim,
            item_embedding_init: cfg.model.item_embedding_init,
        };
        let on_full = cfg.on_full;
        let inner = Arc::new(Inner {
            spin: Config::spin(cfg.reply_spin_us),
            cfg,
            space,
            cells,
            catalog,
            clock,
            timer: Mutex::new(None),
            closing: AtomicBool::new(false),
            next_subscription: AtomicU64::new(1),
            logging: self.log.is_some(),
            data,
            log_counters,
            recovery: (
                recovered_records,
                recovery_started.elapsed().as_millis() as u64,
            ),
        });
        *inner.timer.lock() = Some(Timer::spawn(&inner)?);
        Ok(Engine { inner, on_full })
    }
}

/// The thread that sends every shard its `Tick` (passivation, mixing, writing a log batch of
/// only ticks) every `mix_interval_ms`, through the same submit path as requests.
struct Timer {
    stop: crossbeam_channel::Sender<()>,
    thread: JoinHandle<()>,
}

impl Timer {
    fn spawn(inner: &Arc<Inner>) -> std::io::Result<Timer> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let every = Duration::from_millis(inner.cfg.mix_interval_ms.max(1));
        // Weak: the timer must not keep the engine alive.
        let weak = Arc::downgrade(inner);
        let thread = std::thread::Builder::new()
            .name("nudge-timer".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let Some(inner) = weak.upgrade() else { return };
                    for cell in &inner.cells {
                        cell.tick(inner.clock.now_ms());
                    }
                }
            })?;
        Ok(Timer { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        // The timer's own thread can end up dropping the last handle; it cannot join itself.
        if self.thread.thread().id() != std::thread::current().id() {
            let _ = self.thread.join();
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
        self.inner.cells.len()
    }

    /// The shard that owns `user`.
    pub fn shard_of(&self, user: &UserId) -> ShardId {
        ShardId((user.key() % self.inner.cells.len() as u64) as u16)
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

    /// The one submit path: validates nothing (callers did), builds the message with its
    /// reply slot, and hands it to its shard, where it runs at once on this thread if the
    /// shard is free (`ShardCell::submit`). The reply is waited for or awaited by the caller.
    fn submit<T>(&self, shard: ShardId, make: impl FnOnce(Reply<T>) -> Msg) -> Pending<T> {
        self.submit_with(shard, self.on_full, make)
    }

    fn submit_with<T>(
        &self,
        shard: ShardId,
        on_full: OnFull,
        make: impl FnOnce(Reply<T>) -> Msg,
    ) -> Pending<T> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Pending::failed(Error::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        match self.inner.cells[shard.0 as usize].submit(make(tx), on_full) {
            Ok(()) => Pending::new(rx, self.inner.spin),
            Err(e) => Pending::failed(e),
        }
    }

    /// Sends a message to every shard (always waiting for room: a partial broadcast would
    /// split the shards) and gathers the replies.
    fn broadcast<T>(&self, make: impl Fn(Reply<T>) -> Msg) -> Vec<Pending<T>> {
        (0..self.shard_count())
            .map(|s| self.submit_with(ShardId(s as u16), OnFull::Wait, &make))
            .collect()
    }

    fn valid_event(&self, ev: Event) -> Result<(ShardId, ValidEvent), Error> {
        let inner = &self.inner;
        let valid = validate::event(&inner.cfg, &inner.space, ev, inner.clock.now_ms())?;
        Ok((self.shard_of(&valid.user), valid))
    }

    fn submit_event(&self, event: Event) -> Pending<Result<Ack, Error>> {
        match self.valid_event(event) {
            Ok((shard, ev)) => self.submit(shard, |r| Msg::Event(ev, r)),
            Err(e) => Pending::failed(e),
        }
    }

    /// Applies one event and returns once its shard has (the acknowledgement).
    pub fn ingest(&self, event: Event) -> Result<Ack, Error> {
        self.submit_event(event).wait()?
    }

    /// `ingest`, as a future.
    pub async fn ingest_async(&self, event: Event) -> Result<Ack, Error> {
        self.submit_event(event).await?
    }

    /// Splits a batch by shard (the one place that does): validates each event, sends each
    /// shard its part as one message, and returns the replies to gather in input order.
    fn submit_batch(&self, events: Vec<Event>) -> PendingBatch {
        let mut results: Vec<Result<Ack, Error>> = vec![Ok(Ack::default()); events.len()];
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
        let parts = per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, (evs, _))| !evs.is_empty())
            .map(|(s, (evs, positions))| {
                let reply = self.submit(ShardId(s as u16), |r| Msg::Events(evs, r));
                (positions, reply)
            })
            .collect();
        PendingBatch::new(results, parts)
    }

    /// Applies many events: one message per shard. Results come back in input order; an
    /// invalid event gets its error and the others still apply.
    pub fn ingest_batch(&self, events: Vec<Event>) -> Vec<Result<Ack, Error>> {
        self.submit_batch(events).wait()
    }

    /// `ingest_batch`, as a future.
    pub async fn ingest_batch_async(&self, events: Vec<Event>) -> Vec<Result<Ack, Error>> {
        self.submit_batch(events).await
    }

    fn submit_decide(&self, request: DecideRequest) -> Pending<Result<Decision, Error>> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        match validate::decide(&inner.cfg, &inner.space, request, now, inner.logging) {
            Ok(req) => self.submit(self.shard_of(&req.user), |r| Msg::Decide(req, r)),
            Err(e) => Pending::failed(e),
        }
    }

    /// Ranks candidates for a user and opens the decision for attribution.
    pub fn decide(&self, request: DecideRequest) -> Result<Decision, Error> {
        self.submit_decide(request).wait()?
    }

    /// `decide`, as a future.
    pub async fn decide_async(&self, request: DecideRequest) -> Result<Decision, Error> {
        self.submit_decide(request).await?
    }

    fn submit_reward(
        &self,
        decision: DecisionId,
        item: &str,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Pending<Result<(), Error>> {
        let shard = decision.shard();
        if shard.0 as usize >= self.shard_count() {
            return Pending::failed(Error::UnknownDecision(decision));
        }
        let now_ms = self.inner.clock.now_ms();
        let valid = validate::timestamp(&self.inner.cfg, ts_ms, now_ms)
            .and_then(|ts_ms| validate::reward(decision, item, value, ts_ms));
        match valid {
            Ok(r) => self.submit(shard, |tx| Msg::Reward(r, tx)),
            Err(e) => Pending::failed(e),
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
        self.submit_reward(decision, item, value, ts_ms).wait()?
    }

    /// `reward_at`, as a future.
    pub async fn reward_async(
        &self,
        decision: DecisionId,
        item: &str,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Result<(), Error> {
        self.submit_reward(decision, item, value, ts_ms).await?
    }

    /// Inserts or replaces a catalog item; returns whether it was new. Every shard has it
    /// before this returns.
    pub fn upsert_item(&self, item: ItemSpec) -> Result<bool, Error> {
        let features = Arc::new(validate::item(&self.inner.cfg, &self.inner.space, item)?);
        let new = self.inner.catalog.insert(features.clone());
        for done in self.broadcast(|r| Msg::UpsertItem(features.clone(), r)) {
            done.wait()?;
        }
        Ok(new)
    }

    /// Removes a catalog item and its learned parameters; returns whether it was present.
    pub fn remove_item(&self, id: &str) -> Result<bool, Error> {
        let key = ItemId::new(id)?.key();
        let present = self.inner.catalog.remove(key);
        for done in self.broadcast(|r| Msg::RemoveItem(key, r)) {
            done.wait()?;
        }
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

    fn submit_user(&self, id: &str) -> Pending<Option<UserExport>> {
        match UserId::new(id) {
            Ok(user) => self.submit(self.shard_of(&user), |r| Msg::User(user, r)),
            Err(e) => Pending::failed(e),
        }
    }

    /// Everything stored about one user, or `None` if the engine holds nothing for them.
    pub fn user(&self, id: &str) -> Result<Option<UserExport>, Error> {
        self.submit_user(id).wait()
    }

    /// `user`, as a future.
    pub async fn user_async(&self, id: &str) -> Result<Option<UserExport>, Error> {
        self.submit_user(id).await
    }

    fn submit_forget(&self, id: &str) -> Pending<bool> {
        match UserId::new(id) {
            Ok(user) => self.submit(self.shard_of(&user), |r| Msg::Forget(user, r)),
            Err(e) => Pending::failed(e),
        }
    }

    /// Erases every trace of one user (state, model, open decisions); returns whether the
    /// engine held anything for them.
    pub fn forget(&self, id: &str) -> Result<bool, Error> {
        self.submit_forget(id).wait()
    }

    /// `forget`, as a future.
    pub async fn forget_async(&self, id: &str) -> Result<bool, Error> {
        self.submit_forget(id).await
    }

    /// Pushes `user`'s updates to `sink` after each of their events, until `unsubscribe`;
    /// when the engine holds state for the user, the first update (cause `Subscribed`) is
    /// pushed at once. Returns the subscription's id.
    pub fn subscribe(&self, user: &str, sink: Arc<dyn UpdateSink>) -> Result<u64, Error> {
        let user = UserId::new(user)?;
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard_of(&user);
        let now_ms = self.inner.clock.now_ms();
        self.submit_with(shard, OnFull::Wait, |r| {
            Msg::Subscribe(user, id, sink, now_ms, r)
        })
        .wait()??;
        Ok(id)
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, user: &str, subscription: u64) -> Result<(), Error> {
        let user = UserId::new(user)?;
        let shard = self.shard_of(&user);
        self.submit_with(shard, OnFull::Wait, |r| {
            Msg::Unsubscribe(user, subscription, r)
        })
        .wait()
    }

    /// Returns once every shard has handled everything sent to it before this call.
    pub fn flush(&self) -> Result<(), Error> {
        for done in self.broadcast(Msg::Barrier) {
            done.wait()?;
        }
        Ok(())
    }

    /// Moves every shard's event time to the engine's current time (expiry and ignored
    /// placements, which otherwise follow the times of the messages a shard handles), and runs
    /// the timer's work (passivation, mixing) now instead of at the next timer tick.
    pub fn tick(&self) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        for done in self.broadcast(|r| Msg::Advance(now, r)) {
            done.wait()?;
        }
        Ok(())
    }

    /// Counters of every shard and the catalog.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let shards = inner
            .cells
            .iter()
            .map(|cell| {
                let mut s = cell.counters().read();
                s.inbox_depth = cell.queued() as u64;
                s.failed = cell.failed();
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

    /// Stops accepting calls, lets every shard finish what is already queued, writes and
    /// fsyncs the logs, and stops the timer. Idempotent; later calls fail with `ShuttingDown`.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(timer) = self.timer.lock().take() {
            timer.stop();
        }
        for cell in &self.cells {
            cell.close();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
