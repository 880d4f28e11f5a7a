//! `Engine`: the embeddable API. A cheap `Clone` handle that validates every input, routes it
//! to the shard that owns the user (`hash(user) mod N`) through one `submit`, and returns a
//! `Pending` reply that the sync API waits for and the async API awaits. The message runs on
//! the caller's thread when its shard is free (`shard::cell`).
//!
//! **Invariant:** the engine never touches user state; only shards do. It owns the catalog's
//! authoritative copy, the shards' cells and the timer thread.

mod consent;
mod definitions;
mod experiments;
pub mod pending;
mod segments;
mod templates;
mod tone;
pub mod validate;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::api::{
    Ack, DecideRequest, Decision, DecisionLog, DurabilityStats, Event, EventKind, ItemSpec, Stats,
    UpdateSink, UserExport,
};
use crate::catalog::Catalog;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, FsyncPolicy, OnFull, PolicyKind};
use crate::error::{Error, Problem, StartError};
use crate::experiment::{AuditEntry, ExperimentResults, ExperimentSpec, Registry};
use crate::ids::{DecisionId, ItemId, ShardId, UserId};
use crate::model::segments::SegmentMaster;
use crate::model::{FeatureSpace, Mixer};
use crate::persist::experiments::Change;
use crate::persist::{store, Checkpointer, DataDir, LogCounters, SegmentOptions, FSYNC_BUCKETS_US};
use crate::rules::RuleSet;
use crate::shard::checkpoint::Checkpoints;
use crate::shard::msg::{Reply, ValidEvent};
use crate::shard::{Counters, Msg, Shard, ShardCell, Sweeper};
use crate::sync::oneshot;
use crate::triggers::{DeliveryCounters, TriggerHub, TriggerSet};

pub use pending::{Pending, PendingAll, PendingBatch};
pub use validate::{MAX_ATTRS, MAX_VECTOR_LEN};

/// The fewest events of one shard's part of a batch that are handed to the timer thread
/// instead of run by the caller.
const MIN_HANDED_OFF: usize = 64;

struct Inner {
    cfg: Arc<Config>,
    space: FeatureSpace,
    /// The shards, each behind its cell; a caller runs its message in the cell.
    cells: Vec<ShardCell>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    /// The timer thread, stopped once by `shutdown`.
    timer: Mutex<Option<Timer>>,
    /// How cells reach the timer thread when they leave work queued.
    sweeper: Arc<Sweeper>,
    /// Whether this process may run on more than one core (a batch's parts then run on two).
    parallel: bool,
    /// Set by `shutdown`: new calls fail with `ShuttingDown`.
    closing: AtomicBool,
    /// Set by `shutdown_without_checkpoint`.
    skip_checkpoint: AtomicBool,
    spin: Duration,
    next_subscription: AtomicU64,
    /// Whether shards write a decision log (decide keeps the raw context for it).
    logging: bool,
    /// The data directory (its lock is held as long as this is), when durable.
    data: Option<DataDir>,
    /// Each shard's write-ahead log counters, when durable.
    log_counters: Vec<Arc<LogCounters>>,
    /// The thread writing checkpoints to the store, when durable.
    checkpointer: Option<Arc<Checkpointer>>,
    /// Records replayed at start, and how long recovery took (ms).
    recovery: (u64, u64),
    /// The experiments; a decision reads its snapshot to find the user's arm.
    experiments: Arc<Registry>,
    /// Where experiment changes are kept (`None` in memory): held while one is applied and
    /// written, so the log has the registry's order.
    experiment_log: Option<Mutex<crate::persist::experiments::ExperimentLog>>,
    /// The rule set in force, replaced whole (`set_rules`); a decision takes one `Arc`
    /// clone of it, so it sees the old set or the new one, never a mix.
    rules: RwLock<Arc<RuleSet>>,
    /// Whether the set in force has rules: while it has none, a decision skips the lock.
    any_rules: AtomicBool,
    /// Every version of every template (issue 15); a decision takes the current one's `Arc`.
    templates: crate::template::Registry,
    /// The threshold triggers in force (issue 14). Every shard holds a copy (`set_triggers`
    /// hands each the new set and logs it there); this is the copy `triggers()` reads.
    triggers: RwLock<Arc<TriggerSet>>,
    /// The definitions log (`None` in memory). Its lock is held by every change of a
    /// definition (rules, triggers, templates, segment names) from its check to its install,
    /// so changes are stored and take effect in one order, and a trigger set reaches every
    /// shard in that order; readers of the definitions never wait for it.
    definitions: Mutex<Option<crate::persist::definitions::DefinitionLog>>,
    /// Where shards deliver fired triggers beyond the reply.
    trigger_hub: Arc<TriggerHub>,
    /// The shared segment centroids and their names (`None`: `segments.k = 0`).
    segments: Option<Arc<SegmentMaster>>,
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
    /// Most users each shard keeps in memory (`max_users_per_shard`); with a data directory
    /// the others wait in the store.
    pub fn max_users_per_shard(mut self, n: usize) -> Self {
        self.config.max_users_per_shard = n;
        self
    }
    /// Seconds between checkpoints (`durability.checkpoint_interval_s`).
    pub fn checkpoint_interval_s(mut self, seconds: u64) -> Self {
        self.config.durability.checkpoint_interval_s = seconds;
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
    /// Sets the number of shards, the partitions of users each run by one thread at a time (0: one per core).
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
        let seg = &cfg.segments;
        let segments = (seg.k > 0).then(|| {
            let dim = crate::model::segments::point_dim(cfg.model.dim, seg.state_weight);
            Arc::new(SegmentMaster::new(seg.k, dim, seg.memory, cfg.seed))
        });
        // Decision ids start from the start time so ids of two runs do not collide.
        let first_sequence = ((clock.now_ms() / 1000) << 16) & 0x7fff_ffff_ffff;
        let data = match cfg.data_dir.as_deref() {
            Some(dir) if !dir.is_empty() => Some(DataDir::open(std::path::Path::new(dir), &cfg)?),
            _ => None,
        };
        // Before the shards replay their logs: a replayed decision finds its arm here.
        let experiments = Arc::new(Registry::default());
        let experiment_log =
            experiments::restore(&experiments, data.as_ref(), &cfg, clock.now_ms())?;
        let definitions = definitions::open(data.as_ref())?;
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
                .with_segments(segments.clone())
                .with_experiments(experiments.clone())
            })
            .collect();
        let recovery_started = std::time::Instant::now();
        let catalog = Catalog::default();
        let mut log_counters = Vec::new();
        let mut recovered_records = 0;
        let mut checkpointer = None;
        if let Some(data) = &data {
            let opts = SegmentOptions {
                fsync: cfg.durability.fsync,
                segment_bytes: cfg.durability.segment_bytes,
                repair: self.repair,
            };
            let logs = (0..n)
                .map(|i| data.shard_log(i as u16, opts.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let store = Arc::new(data.store(self.repair)?);
            if let (Some(mixer), Some(bytes)) = (&mixer, store.master()?) {
                mixer.restore(store::decode(&bytes, store.path(), "the master model")?);
            }
            if let (Some(segments), Some(bytes)) = (&segments, store.segments()?) {
                segments.restore(store::decode(&bytes, store.path(), "the segments")?);
            }
            // Names given since the last checkpoint are only in the definitions log.
            definitions.name_segments(segments.as_deref());
            let every = Duration::from_secs(cfg.durability.checkpoint_interval_s);
            let spawned = Checkpointer::spawn(store, n)?;
            let mut checkpoints: Vec<_> = (0..n)
                .map(|i| {
                    let limit = cfg.durability.max_parked_bytes as usize;
                    Some(Checkpoints::new(spawned.clone(), i as u16, every, limit))
                })
                .collect();
            checkpointer = Some(spawned);
            // Every shard replays its own log, all at once.
            let fsync = cfg.durability.fsync;
            let recovered: Vec<_> = std::thread::scope(|scope| {
                let running: Vec<_> = shards
                    .iter_mut()
                    .zip(logs)
                    .zip(&mut checkpoints)
                    .map(|((shard, log), c)| {
                        let c = c.take();
                        scope.spawn(move || shard.recover(log, fsync, first_sequence, c))
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
        let space = FeatureSpace {
            dim: cfg.model.dim,
            item_embedding_init: cfg.model.item_embedding_init,
        };
        // The definitions in force: the definitions log's, or the config file's
        // (`engine::definitions` says which wins).
        let restored = definitions.restore(&cfg, &space)?;
        // After recovery (which checked the logged sets and delivered nothing): the set in
        // force, logged in each shard where it differs from the recovered one, and delivery.
        let triggers = Arc::new(restored.triggers);
        let trigger_hub = Arc::new(TriggerHub::default());
        for shard in &mut shards {
            shard.install_triggers(triggers.clone());
            shard.attach_trigger_hub(trigger_hub.clone());
        }
        let sweeper = Arc::new(Sweeper::default());
        let cells = shards
            .into_iter()
            .zip(&counters)
            .map(|(shard, c)| {
                let (capacity, batch) = (cfg.inbox_capacity, cfg.drain_batch);
                ShardCell::new(shard, capacity, batch, c.clone(), sweeper.clone())
            })
            .collect();
        let on_full = cfg.on_full;
        let rules = restored.rules;
        let inner = Arc::new(Inner {
            templates: restored.templates,
            definitions: Mutex::new(restored.log),
            segments,
            experiments,
            experiment_log,
            any_rules: AtomicBool::new(!rules.is_empty()),
            rules: RwLock::new(Arc::new(rules)),
            triggers: RwLock::new(triggers),
            trigger_hub,
            spin: Config::spin(cfg.reply_spin_us),
            cfg,
            space,
            cells,
            catalog,
            clock,
            timer: Mutex::new(None),
            sweeper,
            parallel: std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
            closing: AtomicBool::new(false),
            skip_checkpoint: AtomicBool::new(false),
            next_subscription: AtomicU64::new(1),
            logging: self.log.is_some(),
            data,
            log_counters,
            checkpointer,
            recovery: (
                recovered_records,
                recovery_started.elapsed().as_millis() as u64,
            ),
        });
        *inner.timer.lock() = Some(Timer::spawn(&inner)?);
        Ok(Engine { inner, on_full })
    }
}

/// The engine's one background thread: every `mix_interval_ms` it leaves each shard a
/// `Tick` (mixing, passivation, writing a log batch of only ticks), and whenever a submitter
/// left queued work behind (`shard::cell`, fairness) it drains those queues. It goes through
/// the same cells as requests.
struct Timer {
    sweeper: Arc<Sweeper>,
    thread: JoinHandle<()>,
}

impl Timer {
    fn spawn(inner: &Arc<Inner>) -> std::io::Result<Timer> {
        let every = Duration::from_millis(inner.cfg.mix_interval_ms.max(1));
        let sweeper = inner.sweeper.clone();
        // Weak: the timer must not keep the engine alive.
        let weak = Arc::downgrade(inner);
        let thread = std::thread::Builder::new()
            .name("nudge-timer".into())
            .spawn({
                let sweeper = sweeper.clone();
                move || {
                    sweeper.register();
                    let mut next_tick = Instant::now() + every;
                    while !sweeper.stopping() {
                        std::thread::park_timeout(
                            next_tick.saturating_duration_since(Instant::now()),
                        );
                        if sweeper.stopping() {
                            return;
                        }
                        let Some(inner) = weak.upgrade() else { return };
                        if sweeper.take_wanted() {
                            for cell in &inner.cells {
                                cell.sweep();
                            }
                        }
                        if Instant::now() >= next_tick {
                            for cell in &inner.cells {
                                cell.tick(inner.clock.now_ms());
                            }
                            next_tick = Instant::now() + every;
                        }
                    }
                }
            })?;
        Ok(Timer { sweeper, thread })
    }

    fn stop(self) {
        self.sweeper.stop();
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

    /// `submit`, but run by the timer thread rather than this one (`ShardCell::defer`).
    fn submit_deferred<T>(&self, shard: ShardId, make: impl FnOnce(Reply<T>) -> Msg) -> Pending<T> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Pending::failed(Error::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        match self.inner.cells[shard.0 as usize].defer(make(tx), self.on_full) {
            Ok(()) => Pending::new(rx, self.inner.spin),
            Err(e) => Pending::failed(e),
        }
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
    /// split the shards); done when all are, then `value`.
    fn broadcast<T>(&self, make: impl Fn(Reply<()>) -> Msg, value: T) -> PendingAll<T> {
        let parts = (0..self.shard_count())
            .map(|s| self.submit_with(ShardId(s as u16), OnFull::Wait, &make))
            .collect();
        PendingAll::new(parts, value)
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
        let parts: Vec<_> = per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, (evs, _))| !evs.is_empty())
            .collect();
        // With more than one core, every large part but the last goes to the timer thread
        // while this thread runs the last: a batch spread over shards uses both cores, as
        // it did with a thread per shard. Small parts are not worth a thread's wake-up.
        let last = parts.len().saturating_sub(1);
        let parts = parts
            .into_iter()
            .enumerate()
            .map(|(i, (s, (evs, positions)))| {
                let shard = ShardId(s as u16);
                let hand_off = self.inner.parallel && i < last && evs.len() >= MIN_HANDED_OFF;
                let reply = if hand_off {
                    self.submit_deferred(shard, |r| Msg::Events(evs, r))
                } else {
                    self.submit(shard, |r| Msg::Events(evs, r))
                };
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
        self.submit_decide_as(request, None)
    }

    /// `submit_decide`; `tone` makes it a tone decision (`engine/tone.rs`).
    fn submit_decide_as(
        &self,
        request: DecideRequest,
        tone: Option<crate::shard::msg::ToneInput>,
    ) -> Pending<Result<Decision, Error>> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let rules = match inner.any_rules.load(Ordering::Acquire) {
            true => Some(inner.rules.read().clone()).filter(|r| !r.is_empty()),
            false => None,
        };
        // Rules read the context as given, so a decision under rules keeps it.
        // So do experiments' targeting conditions, which may read it.
        let keep_context = inner.logging || rules.is_some() || inner.experiments.any_target();
        match validate::decide(&inner.cfg, &inner.space, request, now, keep_context) {
            Ok(mut req) => {
                req.arm = inner.experiments.assign(req.user.as_str());
                req.rules = rules;
                req.tone = tone;
                self.submit(self.shard_of(&req.user), |r| Msg::Decide(req, r))
            }
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
        self.submit_upsert(item).wait()
    }

    /// `upsert_item`, as a future. It reaches every shard when first polled.
    pub async fn upsert_item_async(&self, item: ItemSpec) -> Result<bool, Error> {
        self.submit_upsert(item).await
    }

    fn submit_upsert(&self, item: ItemSpec) -> PendingAll<bool> {
        match validate::item(&self.inner.cfg, &self.inner.space, item) {
            Ok(features) => {
                let features = Arc::new(features);
                let new = self.inner.catalog.insert(features.clone());
                self.broadcast(|r| Msg::UpsertItem(features.clone(), r), new)
            }
            Err(e) => PendingAll::failed(e),
        }
    }

    /// Removes a catalog item and its learned parameters; returns whether it was present.
    pub fn remove_item(&self, id: &str) -> Result<bool, Error> {
        self.submit_remove(id).wait()
    }

    /// `remove_item`, as a future. It reaches every shard when first polled.
    pub async fn remove_item_async(&self, id: &str) -> Result<bool, Error> {
        self.submit_remove(id).await
    }

    fn submit_remove(&self, id: &str) -> PendingAll<bool> {
        match ItemId::new(id) {
            Ok(id) => {
                let key = id.key();
                let present = self.inner.catalog.remove(key);
                self.broadcast(|r| Msg::RemoveItem(key, r), present)
            }
            Err(e) => PendingAll::failed(e),
        }
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

    /// The id the engine keeps for `id`: validated, and pseudonymised when
    /// `consent.pseudonymize_key` is set.
    fn user_id(&self, id: &str) -> Result<UserId, Error> {
        self.inner.cfg.consent.user_id(id.to_string())
    }

    fn submit_user(&self, id: &str) -> Pending<Option<UserExport>> {
        match self.user_id(id) {
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
        match self.user_id(id) {
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
        let (id, pending) = self.submit_subscribe(user, sink)?;
        pending.wait()??;
        Ok(id)
    }

    /// `subscribe`, as a future.
    pub async fn subscribe_async(
        &self,
        user: &str,
        sink: Arc<dyn UpdateSink>,
    ) -> Result<u64, Error> {
        let (id, pending) = self.submit_subscribe(user, sink)?;
        pending.await??;
        Ok(id)
    }

    /// Sends a subscription to the user's shard: its id at once (a session records it before
    /// the shard has answered), and the shard's answer.
    pub fn submit_subscribe(
        &self,
        user: &str,
        sink: Arc<dyn UpdateSink>,
    ) -> Result<(u64, Pending<Result<(), Error>>), Error> {
        let user = self.user_id(user)?;
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard_of(&user);
        let now_ms = self.inner.clock.now_ms();
        let pending = self.submit_with(shard, OnFull::Wait, |r| {
            Msg::Subscribe(user, id, sink, now_ms, r)
        });
        Ok((id, pending))
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, user: &str, subscription: u64) -> Result<(), Error> {
        self.submit_unsubscribe(user, subscription).wait()
    }

    /// `unsubscribe`, as a future.
    pub async fn unsubscribe_async(&self, user: &str, subscription: u64) -> Result<(), Error> {
        self.submit_unsubscribe(user, subscription).await
    }

    fn submit_unsubscribe(&self, user: &str, subscription: u64) -> Pending<()> {
        match self.user_id(user) {
            Ok(user) => self.submit_with(self.shard_of(&user), OnFull::Wait, |r| {
                Msg::Unsubscribe(user, subscription, r)
            }),
            Err(e) => Pending::failed(e),
        }
    }

    /// Returns once every shard has handled everything sent to it before this call.
    pub fn flush(&self) -> Result<(), Error> {
        self.broadcast(Msg::Barrier, ()).wait()
    }

    /// Checkpoints every shard now (users changed since the last checkpoint, each shard's
    /// state, the master model) and deletes the log it covers; returns once all committed.
    /// In memory it does nothing. The timer checkpoints every
    /// `durability.checkpoint_interval_s` and shutdown does too; this is for operators
    /// (before a backup, after an erasure that must reach the disk now) and tests.
    pub fn checkpoint(&self) -> Result<(), Error> {
        let pending: Vec<_> = (0..self.shard_count())
            .map(|s| self.submit_with(ShardId(s as u16), OnFull::Wait, Msg::Checkpoint))
            .collect();
        let mut first_error = None;
        for p in pending {
            let failed = match p.wait() {
                Ok(None) => continue,
                Ok(Some(e)) => Error::Unavailable(format!("checkpoint: {e}")),
                Err(e) => e,
            };
            first_error.get_or_insert(failed);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Moves every shard's event time to the engine's current time (expiry and ignored
    /// placements, which otherwise follow the times of the messages a shard handles), and runs
    /// the timer's work (passivation, mixing) now instead of at the next timer tick.
    pub fn tick(&self) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        self.broadcast(|r| Msg::Advance(now, r), ()).wait()
    }

    /// Starts an experiment; refused, with nothing changed, if the definition is invalid
    /// (the error names the field), the name is taken, or its buckets overlap a running
    /// experiment's in its layer. Decisions from now on fall in its arms.
    pub fn create_experiment(&self, spec: ExperimentSpec, reason: &str) -> Result<(), Error> {
        let ts_ms = self.inner.clock.now_ms();
        let reason = reason.to_string();
        let change = Change::Created {
            spec,
            ts_ms,
            reason,
        };
        self.change_experiments(change).map(|_| ())
    }

    /// Stops an experiment: its users go back to the configured policy, its counters stay
    /// readable. Returns whether it was running.
    pub fn stop_experiment(&self, name: &str, reason: &str) -> Result<bool, Error> {
        let (ts_ms, name, reason) = (self.inner.clock.now_ms(), name.into(), reason.into());
        self.change_experiments(Change::Stopped {
            name,
            ts_ms,
            reason,
        })
    }

    /// Promotes `arm`: every user the experiment takes (all but its holdout) gets it from now
    /// on. Refused for an unknown experiment, a stopped one (field `name`) or an unknown arm
    /// (field `arm`).
    pub fn promote_experiment(&self, name: &str, arm: &str, reason: &str) -> Result<(), Error> {
        let (ts_ms, name, arm) = (self.inner.clock.now_ms(), name.into(), arm.into());
        let reason = reason.to_string();
        let change = Change::Promoted {
            name,
            arm,
            ts_ms,
            reason,
        };
        self.change_experiments(change).map(|_| ())
    }

    /// Applies one change to the experiments and, with a data directory, stores it.
    pub(crate) fn change_experiments(&self, change: Change) -> Result<bool, Error> {
        let log = self.inner.experiment_log.as_ref();
        experiments::change(&self.inner.experiments, log, change)
    }

    /// An experiment's definition and whether it runs.
    pub fn experiment(&self, name: &str) -> Result<(ExperimentSpec, bool), Error> {
        let (live, running) = self.found(name)?;
        Ok((live.spec.clone(), running))
    }

    /// Every experiment (stopped ones too), in creation order, and whether each runs.
    pub fn experiments(&self) -> Vec<(ExperimentSpec, bool)> {
        let all = self.inner.experiments.list();
        all.into_iter()
            .map(|(l, on)| (l.spec.clone(), on))
            .collect()
    }

    /// Every change to the experiments, oldest first.
    pub fn experiment_audit(&self) -> Vec<AuditEntry> {
        self.inner.experiments.audit()
    }

    /// The arm `user` falls in now (`None`: held out, in no running experiment, or in
    /// another experiment of an earlier layer), without deciding anything.
    pub fn experiment_arm(&self, name: &str, user: &str) -> Result<Option<String>, Error> {
        self.found(name)?;
        let user = self.user_id(user)?;
        let chosen = self.inner.experiments.assign(user.as_str());
        Ok(chosen
            .filter(|c| *c.experiment.name == *name)
            .map(|c| c.reply().arm.to_string()))
    }

    /// Replaces the rule set whole (hot reload) and returns the new set's version. A bad rule
    /// refuses the whole update with `invalid` naming `rules` (the message names the rule, the
    /// field and the position of the error) and the running set stays as it was. Decisions
    /// already taken keep the set they started with. With a data directory the set is stored
    /// (fsynced) before it is in force, and comes back after a restart (`docs/rules.md`); one
    /// that cannot be stored is refused with `unavailable`.
    pub fn set_rules(&self, rules: &[crate::config::RuleConfig]) -> Result<u64, Error> {
        let mut log = self.inner.definitions.lock();
        let next = self
            .rules()
            .replaced_by(rules)
            .map_err(|e| Error::invalid("rules", Problem::Rejected(e.to_string())))?;
        definitions::store(&mut log, &definitions::rules_record(&next))?;
        let version = next.version();
        let mut current = self.inner.rules.write();
        self.inner
            .any_rules
            .store(!next.is_empty(), Ordering::Release);
        *current = Arc::new(next);
        Ok(version)
    }

    /// The rule set in force (its version, and each rule as given with its version).
    pub fn rules(&self) -> Arc<RuleSet> {
        self.inner.rules.read().clone()
    }

    /// Replaces the threshold triggers (`docs/triggers.md`) and returns the new set's
    /// version, once every shard checks the new set; a set with one bad trigger is refused
    /// whole with `invalid` naming `triggers` (the message names the trigger, the field and
    /// the position), and the set in force stays. Each shard logs the set, so a replay
    /// checks the set that was in force at each event. Blocks until every shard took it.
    /// With a data directory the set is stored (fsynced) first and is the one in force after
    /// a restart (`docs/triggers.md`); one that cannot be stored is refused (`unavailable`).
    pub fn set_triggers(&self, specs: &[crate::config::TriggerConfig]) -> Result<u64, Error> {
        let mut log = self.inner.definitions.lock();
        let current = self.inner.triggers.read().clone();
        let next = current
            .replaced_by(specs, &self.inner.cfg.webhook.url)
            .map_err(|e| Error::invalid("triggers", Problem::Rejected(e.to_string())))?;
        definitions::store(&mut log, &definitions::triggers_record(&next))?;
        let next = Arc::new(next);
        let version = next.version();
        self.broadcast(|r| Msg::SetTriggers(next.clone(), r), ())
            .wait()?;
        *self.inner.triggers.write() = next;
        Ok(version)
    }

    /// The threshold triggers in force.
    pub fn triggers(&self) -> Arc<TriggerSet> {
        self.inner.triggers.read().clone()
    }

    /// Pushes every firing of trigger `name` (for any user) to `sink`'s `fired`, until
    /// `unsubscribe_trigger`; the name need not be defined yet. Returns the subscription's id.
    pub fn subscribe_trigger(&self, name: &str, sink: Arc<dyn UpdateSink>) -> Result<u64, Error> {
        crate::ids::validate_id("trigger", name)?;
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        self.inner.trigger_hub.subscribe(name, id, sink);
        Ok(id)
    }

    /// Ends a subscription to a trigger's name; true if it was open.
    pub fn unsubscribe_trigger(&self, subscription: u64) -> bool {
        self.inner.trigger_hub.unsubscribe(subscription)
    }

    /// Adds a sink that takes every fired trigger from now on (the server's webhook).
    pub fn add_trigger_sink(&self, sink: Arc<dyn crate::api::TriggerSink>) {
        self.inner.trigger_hub.add_sink(sink);
    }

    /// The webhook's counters, for the sender to count what it delivered, retried, gave up
    /// and dropped; `stats` reports them.
    pub fn trigger_delivery_counters(&self) -> Arc<DeliveryCounters> {
        self.inner.trigger_hub.counters()
    }

    /// The experiment's results now: every shard's counters summed, each arm against the
    /// first by the always-valid test, the sample-ratio check, the status.
    pub fn experiment_results(&self, name: &str) -> Result<ExperimentResults, Error> {
        let (live, running, parts) = self.submit_tallies(name)?;
        let mut arms = vec![crate::experiment::ArmTally::default(); live.spec.arms.len()];
        for part in parts {
            for (sum, tally) in arms.iter_mut().zip(part.wait()?) {
                sum.merge(&tally);
            }
        }
        Ok(live.results(running, &arms))
    }

    /// `experiment_results`, as a future.
    pub async fn experiment_results_async(&self, name: &str) -> Result<ExperimentResults, Error> {
        let (live, running, parts) = self.submit_tallies(name)?;
        let mut arms = vec![crate::experiment::ArmTally::default(); live.spec.arms.len()];
        for part in parts {
            for (sum, tally) in arms.iter_mut().zip(part.await?) {
                sum.merge(&tally);
            }
        }
        Ok(live.results(running, &arms))
    }

    /// Asks every shard for its counters of the experiment `name`.
    #[allow(clippy::type_complexity)]
    fn submit_tallies(
        &self,
        name: &str,
    ) -> Result<
        (
            Arc<crate::experiment::registry::Live>,
            bool,
            Vec<Pending<Vec<crate::experiment::ArmTally>>>,
        ),
        Error,
    > {
        let (live, running) = self.found(name)?;
        let parts = (0..self.shard_count())
            .map(|s| {
                self.submit_with(ShardId(s as u16), OnFull::Wait, |r| {
                    Msg::ExperimentTally(live.id, r)
                })
            })
            .collect();
        Ok((live, running, parts))
    }

    fn found(&self, name: &str) -> Result<(Arc<crate::experiment::registry::Live>, bool), Error> {
        self.inner
            .experiments
            .get(name)
            .ok_or_else(|| Error::UnknownExperiment(name.to_string()))
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
                fsync_us_histogram: FSYNC_BUCKETS_US
                    .iter()
                    .enumerate()
                    .scan(0, |below, (i, &le)| {
                        *below += inner
                            .log_counters
                            .iter()
                            .map(|c| c.fsync_buckets[i].load(Ordering::Relaxed))
                            .sum::<u64>();
                        Some((le, *below))
                    })
                    .collect(),
                recovered_records: inner.recovery.0,
                writable: inner
                    .log_counters
                    .iter()
                    .all(|c| !c.failing.load(Ordering::Relaxed)),
                recovery_ms: inner.recovery.1,
                ..store_stats(inner.checkpointer.as_deref())
            }
        });
        Stats {
            catalog_items: inner.catalog.len() as u64,
            shards,
            durability,
            triggers: inner.trigger_hub.stats(),
            segments: Vec::new(),
        }
    }

    /// Stops accepting calls, lets every shard finish what is already queued, writes and
    /// fsyncs the logs, and stops the timer. Idempotent; later calls fail with `ShuttingDown`.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// `shutdown`, but without the final checkpoint: the data directory is left as a crash
    /// right after the last write would leave it (its log written and fsynced, the store at
    /// the last periodic checkpoint), so the next start replays the log. For recovery tests,
    /// and for an operator who wants the fastest stop.
    pub fn shutdown_without_checkpoint(&self) {
        self.inner.skip_checkpoint.store(true, Ordering::Release);
        self.inner.shutdown();
    }
}

/// The store's figures for `stats` (zeros in memory).
fn store_stats(checkpointer: Option<&Checkpointer>) -> DurabilityStats {
    let Some(c) = checkpointer else {
        return DurabilityStats::default();
    };
    let n = c.store().counters();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    DurabilityStats {
        checkpoints_total: get(&n.checkpoints_total),
        checkpoint_failures_total: get(&n.failures_total),
        last_checkpoint_ms: get(&n.last_checkpoint_ms),
        last_checkpoint_bytes: get(&n.last_checkpoint_bytes),
        last_checkpoint_unix_ms: get(&n.last_checkpoint_unix_ms),
        max_checkpoint_pause_us: get(&n.max_checkpoint_pause_us),
        parked_refusals_total: get(&n.parked_refusals_total),
        stored_users: c.store().user_count().unwrap_or(0),
        passivations_total: get(&n.passivations_total),
        loads_total: get(&n.loads_total),
        users_written_total: get(&n.users_written_total),
        users_deleted_total: get(&n.users_deleted_total),
        ..DurabilityStats::default()
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
        let checkpoint = !self.skip_checkpoint.load(Ordering::Acquire);
        for cell in &self.cells {
            cell.close(checkpoint);
        }
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
