//! A shard's checkpoints: at one log position, the shard's state (model replica, open
//! decisions, remembered event ids, counters) and every user changed since the last
//! checkpoint go to the store, and the log before that position is deleted.
//!
//! A checkpoint begins at a drain boundary on the timer's tick: the shard writes its batch,
//! rolls its log to a new segment at position `P`, encodes its own (small) state, takes the
//! open decisions changed since the last checkpoint (shared, copy-on-write: encoded by the
//! checkpointer, not here) and marks its dirty users owed (`Users::begin_checkpoint`). The
//! owed users are then copied a slice per tick (copy-on-write keeps each as it was at `P`),
//! and sent to the checkpointer thread, which writes them in the same transaction as the
//! state. Once that commits, the segments before `P` are deleted. Recovery is "state at
//! `P`, then replay from `P`" (`Shard::recover`).
//!
//! Nothing on the shard's side of a checkpoint is proportional to the number of open
//! decisions or of users, except a pass over the users' one-byte marks: the shard stops for
//! the time of the changed decisions' `Arc` clones, not for an encoding of everything.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::model::global::GlobalReplica;
use crate::persist::store::{self, Checkpointer, Committed, Job};
use crate::persist::{PersistError, Position};
use crate::shard::passive::Passive;
use crate::shard::pending::Open;
use crate::shard::worker::Shard;

/// Users copied per tick while a checkpoint is in progress.
const SLICE_USERS: usize = 512;

/// A shard's side of checkpointing.
pub struct Checkpoints {
    checkpointer: Arc<Checkpointer>,
    committed: Arc<Committed>,
    interval: Duration,
    /// `durability.max_parked_bytes`: a quarter of it starts a checkpoint early.
    parked_limit: usize,
    last_began: Instant,
    in_progress: Option<InProgress>,
    /// The model copy the last checkpoint encoded, handed back by the checkpointer for the
    /// next copy to reuse its memory.
    spare: Arc<parking_lot::Mutex<Option<GlobalReplica>>>,
}

struct InProgress {
    position: Position,
    /// What `Users::committed` takes back once it commits.
    gen: u64,
    /// `Committed::count` when it began: a change means it ended.
    count: u64,
    /// Every owed user was sent, and `Finish`.
    finished: bool,
    /// The open decisions it stores and deletes, handed back if it fails.
    decisions: (Vec<u64>, Vec<u64>),
}

impl Checkpoints {
    /// Checkpoints of shard `shard` through `checkpointer`, every `interval`, with at most
    /// `parked_limit` bytes of parked users.
    pub fn new(
        checkpointer: Arc<Checkpointer>,
        shard: u16,
        interval: Duration,
        parked_limit: usize,
    ) -> Self {
        Checkpoints {
            committed: checkpointer.committed(shard).clone(),
            checkpointer,
            interval,
            parked_limit,
            last_began: Instant::now(),
            in_progress: None,
            spare: Arc::default(),
        }
    }

    /// The store the checkpoints go to.
    pub fn store(&self) -> &Arc<crate::persist::Store> {
        self.checkpointer.store()
    }
}

impl Shard {
    /// Attaches the store and checkpoints to this shard (before recovery): users out of
    /// memory are found in the store from now on.
    pub(super) fn attach_store(&mut self, checkpoints: Checkpoints) {
        let store = checkpoints.checkpointer.store().clone();
        self.users.attach(Passive::new(Some(store)));
        self.users.limit_parked(checkpoints.parked_limit);
        self.checkpoints = Some(checkpoints);
    }

    /// The shard's own state (everything but the users and the open decisions), copied for
    /// a checkpoint and encoded later, on the checkpointer's thread: a copy of the model's
    /// dense arrays is a few memcpys, where encoding them here held the shard for 0.3–0.6 s
    /// per checkpoint (100k items, ~100 MB).
    fn snapshot_state(&self) -> store::Deferred<Vec<u8>> {
        // The open decisions' part of the state is small (numbering, the ignored queue).
        let pending = store::encode(&self.pending);
        let spare = match &self.checkpoints {
            Some(c) => c.spare.clone(),
            None => Arc::default(),
        };
        let reused = spare.lock().take();
        let global = match reused {
            Some(mut copy) => {
                copy.copy_from(&self.learner.global);
                copy
            }
            None => self.learner.global.clone(),
        };
        let copy = (
            self.event_ms,
            self.next_mix_ms,
            self.stats.clone(),
            global,
            self.learner.rng.clone(),
            self.learner.cooccurrence.clone(),
            self.seen.clone(),
            self.tallies.clone(),
            self.consents.changed(),
        );
        Box::new(move || {
            let (event_ms, next_mix_ms, stats, global, rng, co, seen, tallies, consents) = copy;
            let bytes = store::encode(&(
                event_ms,
                next_mix_ms,
                &stats,
                &global,
                &rng,
                &co,
                &pending,
                &seen,
                &tallies,
                &consents,
            ));
            *spare.lock() = Some(global);
            bytes
        })
    }

    /// Restores the state a checkpoint encoded (`encode_state`), keeping this run's settings.
    pub(super) fn restore_state(
        &mut self,
        bytes: &[u8],
        file: &std::path::Path,
    ) -> Result<(), PersistError> {
        let what = format!("shard {}'s state", self.id().0);
        let experiments = self.experiments.clone();
        let (event_ms, next_mix_ms, stats, global, rng, co, pending, seen, tallies, consents): (
            _,
            _,
            _,
            _,
            _,
            _,
            Vec<u8>,
            _,
            _,
            _,
        ) = store::decode_or_previous(bytes, file, &what, |s: v3::ShardState| {
            let (event_ms, next_mix_ms, stats, global, rng, co, pending, seen, tallies, c) = s;
            let tallies = tallies.convert(&experiments);
            (
                event_ms,
                next_mix_ms,
                stats,
                global,
                rng,
                co,
                pending,
                seen,
                tallies,
                c,
            )
        })?;
        let pending = store::decode(&pending, file, &what)?;
        self.event_ms = event_ms;
        self.next_mix_ms = next_mix_ms;
        self.stats = stats;
        self.learner.global.adopt(global);
        self.learner.rng = rng;
        self.learner.cooccurrence.adopt(co);
        self.pending.adopt(pending);
        self.seen.adopt(seen);
        self.tallies = tallies;
        self.consents.adopt(consents);
        Ok(())
    }

    /// Restores the open decisions a checkpoint stored (after `restore_state`).
    pub(super) fn restore_decisions(
        &mut self,
        rows: Vec<(u64, Vec<u8>)>,
        file: &std::path::Path,
    ) -> Result<(), PersistError> {
        let decoded = rows
            .into_iter()
            .map(|(id, bytes)| {
                let what = format!("open decision {id:#x}");
                let open = store::decode_or_previous(&bytes, file, &what, v3::Open::convert)?;
                Ok((id, open))
            })
            .collect::<Result<Vec<_>, PersistError>>()?;
        self.pending.restore(decoded);
        Ok(())
    }

    /// One step of checkpointing, on the timer's tick: take note of a commit, copy a slice
    /// of owed users, or begin a checkpoint when one is due.
    pub(super) fn checkpoint_step(&mut self) {
        let Some(c) = &self.checkpoints else {
            return;
        };
        let due = c.last_began.elapsed() >= c.interval
            || self.users.passive().parked_bytes() > c.parked_limit / 4;
        match &c.in_progress {
            Some(p) if c.committed.count() != p.count => {
                self.checkpoint_ended();
            }
            Some(p) if !p.finished => self.checkpoint_slice(SLICE_USERS),
            Some(_) => {}
            None if due => self.checkpoint_begin(),
            None => {}
        }
    }

    /// A full checkpoint now, waiting for it to commit (shutdown, `Engine::checkpoint`).
    /// Returns the error if it failed.
    pub(super) fn checkpoint_now(&mut self) -> Result<(), String> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        // One already in progress covers less than now: finish it, then take a fresh one.
        if self.in_progress().is_some() {
            let _ = self.checkpoint_complete();
        }
        self.checkpoint_begin();
        self.checkpoint_complete()
    }

    /// Sends the rest of the checkpoint in progress and waits for it to end.
    fn checkpoint_complete(&mut self) -> Result<(), String> {
        while self.in_progress().is_some_and(|p| !p.finished) {
            self.checkpoint_slice(usize::MAX);
        }
        let Some(p) = self.in_progress() else {
            return Err("the checkpoint could not begin (see the log)".into());
        };
        let (committed, count) = (self.checkpoints_committed(), p.count);
        let checkpointer = self.checkpoints.as_ref().map(|c| c.checkpointer.clone());
        while committed.count() == count {
            if !checkpointer.as_ref().is_some_and(|c| c.alive()) {
                return Err("the checkpointer thread has stopped".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match self.checkpoint_ended() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn in_progress(&self) -> Option<&InProgress> {
        self.checkpoints.as_ref()?.in_progress.as_ref()
    }

    fn checkpoints_committed(&self) -> Arc<Committed> {
        self.checkpoints
            .as_ref()
            .expect("checked by the caller")
            .committed
            .clone()
    }

    fn checkpoint_begin(&mut self) {
        let Some(wal) = &mut self.wal else {
            return;
        };
        let paused = Instant::now();
        wal.commit(true);
        let position = match wal.roll() {
            Ok(p) => p,
            Err(e) => {
                error!("checkpoint of shard {}: {e}", self.id().0);
                return;
            }
        };
        // A replay from this position begins with the triggers in force.
        self.log_trigger_set();
        let state = self.snapshot_state();
        let master: store::Deferred<Option<Vec<u8>>> = match &self.mixer {
            Some(m) => {
                let copy = m.snapshot();
                Box::new(move || Some(store::encode(&copy)))
            }
            None => Box::new(|| None),
        };
        let segments: store::Deferred<Option<Vec<u8>>> = match &self.segments {
            Some(s) => {
                let saved = s.saved();
                Box::new(move || Some(store::encode(&saved)))
            }
            None => Box::new(|| None),
        };
        let delta = self.pending.take_delta();
        let decision_ids = delta.ids();
        let decisions: store::DeferredRows = Box::new(move || {
            let deletes = delta.deletes.into_iter().map(|id| (id, None));
            let upserts = (delta.upserts.into_iter()).map(|(id, o)| (id, Some(store::encode(&*o))));
            deletes.chain(upserts).collect()
        });
        let (users, gen) = self.users.begin_checkpoint();
        let shard = self.id().0;
        let c = self.checkpoints.as_mut().expect("checked by the caller");
        c.last_began = Instant::now();
        c.in_progress = Some(InProgress {
            position,
            gen,
            count: c.committed.count(),
            finished: false,
            decisions: decision_ids,
        });
        c.checkpointer.send(Job::Begin {
            shard,
            position,
            state,
            master,
            segments,
            users,
            decisions,
        });
        let pause = paused.elapsed().as_micros() as u64;
        let counters = c.checkpointer.store().counters();
        counters.max_checkpoint_pause_us.fetch_max(pause, Relaxed);
    }

    fn checkpoint_slice(&mut self, budget: usize) {
        let shard = self.id().0;
        let chunk = self.users.copy_owed(budget);
        let c = self.checkpoints.as_mut().expect("checked by the caller");
        match chunk {
            Some(users) => c.checkpointer.send(Job::Users { shard, users }),
            None => {
                c.checkpointer.send(Job::Finish { shard });
                if let Some(p) = &mut c.in_progress {
                    p.finished = true;
                }
            }
        }
    }

    /// The checkpoint in progress ended: on success, what it stored leaves memory and the
    /// log before it is deleted. Returns its error if it failed.
    fn checkpoint_ended(&mut self) -> Option<String> {
        let c = self.checkpoints.as_mut()?;
        let p = c.in_progress.take()?;
        if let Some(e) = c.committed.take_failure() {
            warn!(
                "checkpoint of shard {} failed; its log is kept: {e}",
                self.id().0
            );
            // Whatever it owed is still dirty in memory or parked: the next one stores it.
            self.users.abandon_checkpoint();
            self.pending.requeue(p.decisions);
            return Some(e);
        }
        self.users.committed(p.gen);
        if let Some(wal) = &mut self.wal {
            if let Err(e) = wal.discard_before(p.position) {
                error!("deleting log segments of shard {}: {e}", self.id().0);
            }
        }
        None
    }
}

/// The store's format 3 where it differs from 4 (`store::PREVIOUS_STORE_VERSION`): an arm's
/// tag named its experiment's metric, and its tally held that one metric's moments. Read
/// and converted, never written, so a data directory of the build before survives a deploy.
mod v3 {
    use std::collections::HashMap;

    use serde::Deserialize;

    use crate::experiment::registry::Registry;
    use crate::experiment::{ArmTag, Earned, Metric, Moments, Tallies};
    use crate::model::SparseVec;
    use crate::shard::pending::Placed;

    /// A shard's checkpointed state with tallies `T`: format 3's (the default) or 4's.
    pub type ShardState<T = Tallies3> = (
        u64,
        u64,
        crate::api::ShardStats,
        crate::model::global::GlobalReplica,
        crate::rng::Rng,
        crate::model::cooccur::CoOccurrence,
        Vec<u8>,
        crate::shard::seen::SeenEvents,
        T,
        crate::shard::consent::ChangedConsents,
    );

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct Tag3 {
        experiment: u32,
        arm: u16,
        _metric: Metric,
    }

    #[derive(Clone, Default, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct ArmTally3 {
        users: u64,
        decisions: u64,
        clicks: u64,
        conversions: u64,
        metric: Moments,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct Tallies3 {
        arms: HashMap<u32, Vec<ArmTally3>>,
    }

    impl Tallies3 {
        /// Format 4's tallies: each arm's one metric goes to its experiment's primary metric
        /// (`experiments` are restored before the shards); the other metrics start empty.
        pub fn convert(self, experiments: &Registry) -> Tallies {
            let mut tallies = Tallies::default();
            for (experiment, arms) in self.arms {
                let metric = (experiments.replayed(experiment, 0))
                    .map_or(Metric::ClickThrough, |c| c.experiment.spec.metric);
                for (arm, old) in arms.into_iter().enumerate() {
                    let tally = tallies.arm(ArmTag {
                        experiment,
                        arm: arm as u16,
                    });
                    tally.users = old.users;
                    tally.decisions = old.decisions;
                    tally.clicks = old.clicks;
                    tally.conversions = old.conversions;
                    tally.metrics[metric.index()] = old.metric;
                }
            }
            tallies
        }
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct Open {
        user_key: u64,
        created_ms: u64,
        expires_ms: u64,
        ignored_at_ms: u64,
        context: SparseVec,
        placements: Vec<Placed>,
        arm: Option<(Tag3, Earned)>,
    }

    impl Open {
        /// Format 4's open decision: the arm's tag without its metric.
        pub fn convert(self) -> super::Open {
            super::Open {
                user_key: self.user_key,
                created_ms: self.created_ms,
                expires_ms: self.expires_ms,
                ignored_at_ms: self.ignored_at_ms,
                context: self.context,
                placements: self.placements,
                arm: (self.arm).map(|(t, earned)| {
                    let tag = ArmTag {
                        experiment: t.experiment,
                        arm: t.arm,
                    };
                    (tag, earned)
                }),
            }
        }
    }

    /// What the build before wrote: format 4's values taken back to format 3 (tests).
    #[cfg(test)]
    pub mod downgrade {
        use super::*;

        /// Experiment 0's tallies with `metric` as its one metric.
        pub fn tallies(t: &Tallies, metric: Metric) -> Tallies3 {
            let arms = (t.get(0).into_iter())
                .map(|a| ArmTally3 {
                    users: a.users,
                    decisions: a.decisions,
                    clicks: a.clicks,
                    conversions: a.conversions,
                    metric: a.metrics[metric.index()],
                })
                .collect();
            Tallies3 {
                arms: HashMap::from([(0, arms)]),
            }
        }

        /// An open decision whose arm's tag names `metric`.
        pub fn open(o: super::super::Open, metric: Metric) -> Open {
            Open {
                user_key: o.user_key,
                created_ms: o.created_ms,
                expires_ms: o.expires_ms,
                ignored_at_ms: o.ignored_at_ms,
                context: o.context,
                placements: o.placements,
                arm: (o.arm).map(|(t, earned)| {
                    let tag = Tag3 {
                        experiment: t.experiment,
                        arm: t.arm,
                        _metric: metric,
                    };
                    (tag, earned)
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::experiment::{ArmPolicy, ArmSpec, ExperimentSpec, Metric, Tallies};
    use crate::persist::store;
    use crate::{Config, DecideRequest, Engine, Event, EventKind, ItemSpec, ManualClock};

    const T0: u64 = 1_732_200_000_000;

    /// A data directory the build before wrote (format 3: one metric per arm, arm tags naming
    /// it) is read by this one: the tallies come back under the experiment's primary metric,
    /// open decisions keep their arms, and a click on one still counts for it.
    #[test]
    fn a_store_of_the_format_before_is_read_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let start = || {
            let mut cfg = Config {
                shards: 1,
                seed: 5,
                ..Config::default()
            };
            cfg.attribution.window_s = 60;
            let b = Engine::builder().config(cfg).clock(clock.clone());
            b.data_dir(dir.path()).build().unwrap()
        };
        let e = start();
        e.upsert_item(ItemSpec::new("x")).unwrap();
        e.upsert_item(ItemSpec::new("y")).unwrap();
        let arm = |name: &str, policy| ArmSpec {
            name: name.into(),
            weight: 1.0,
            policy,
        };
        let arms = vec![arm("a", ArmPolicy::Control), arm("b", ArmPolicy::Global)];
        e.create_experiment(ExperimentSpec::new("old", arms), "")
            .unwrap();
        // Twenty decisions close (a click on half of them), ten stay open.
        for u in 0..20 {
            let user = format!("u{u}");
            let d = e
                .decide(DecideRequest::new(&user, ["x", "y"], 1).at(T0 + u))
                .unwrap();
            if u % 2 == 0 {
                let item = d.items[0].item.clone();
                let click = Event::new(&user, EventKind::Click)
                    .item(item)
                    .decision(d.id);
                assert!(e.ingest(click.at(T0 + 100 + u)).unwrap().attributed);
            }
        }
        let mut open = Vec::new();
        for u in 20..30 {
            let user = format!("u{u}");
            let req = DecideRequest::new(&user, ["x", "y"], 1).at(T0 + 120_000 + u);
            let d = e.decide(req).unwrap();
            open.push((user, d.id, d.items[0].item.clone()));
        }
        e.checkpoint().unwrap();
        let before = e.experiment_results("old").unwrap();
        e.shutdown_without_checkpoint();
        drop(e);

        let path = dir.path().join(store::STORE_FILE);
        let old = |mut v: Vec<u8>| {
            v[0] = store::PREVIOUS_STORE_VERSION;
            v
        };
        let click = Metric::ClickThrough;
        store::rewrite_values(&path, |table, bytes| match table {
            "shards" => {
                type State = super::v3::ShardState<Tallies>;
                // The log position the checkpoint covers, then the state.
                let (position, state) = bytes.split_at(8);
                let (a, b, c, d, e, f, g, h, t, j): State =
                    store::decode(state, &path, "").unwrap();
                let t = super::v3::downgrade::tallies(&t, click);
                let mut value = position.to_vec();
                value.extend(old(store::encode(&(a, b, c, d, e, f, g, h, t, j))));
                value
            }
            "decisions" => {
                let o: super::Open = store::decode(bytes, &path, "").unwrap();
                old(store::encode(&super::v3::downgrade::open(o, click)))
            }
            _ => old(bytes.to_vec()),
        });

        let e = start();
        let after = e.experiment_results("old").unwrap();
        for (b, a) in before.arms.iter().zip(&after.arms) {
            let (b, a) = (&b.tally, &a.tally);
            assert_eq!(
                (a.users, a.decisions, a.clicks, a.conversions),
                (b.users, b.decisions, b.clicks, b.conversions)
            );
            assert_eq!(a.metric(click), b.metric(click), "the primary metric");
            assert_eq!(
                a.metric(Metric::MeanDwell).count,
                0,
                "the others start empty"
            );
        }
        let closed: u64 = after.arms.iter().map(|a| a.tally.metric(click).count).sum();
        assert_eq!(closed, 20, "the closed decisions' metric came across");
        assert!(e.user("u3").unwrap().is_some(), "users are read");
        let (user, id, item) = &open[0];
        let arm = e.experiment_arm("old", user).unwrap().unwrap();
        let i = usize::from(arm == "b");
        let click = Event::new(user, EventKind::Click).item(item).decision(*id);
        assert!(e.ingest(click.at(T0 + 130_000)).unwrap().attributed);
        let now = e.experiment_results("old").unwrap();
        assert_eq!(now.arms[i].tally.clicks, after.arms[i].tally.clicks + 1);
        e.shutdown();
    }
}
