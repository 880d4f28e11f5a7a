//! A shard's write-ahead side: what it appends to its log as it handles messages, when it
//! writes (once per drain: group commit), which replies wait for the disk, and recovery by
//! replaying the log through the same handlers.
//!
//! The acknowledgement of a state change (event, reward, forget) is held until the drain's
//! batch is written (as Redis writes its AOF buffer before replying), so a process crash loses
//! nothing acknowledged under any policy; under `fsync = always` also until it is fsynced, so
//! neither does an OS crash. A batch past `MAX_BATCH_BYTES` is written mid-drain. `forget`'s
//! batch is fsynced before its reply under every policy: an acknowledged erasure is never
//! undone by a crash. Fsyncs run on a syncer thread beside the shard, which then sends the
//! held replies: the shard goes on with the next drain meanwhile, so a decision never waits
//! behind a disk (and fsyncs queued while one runs are covered by one). Ticks are logged too (with what their mix pulled) so a
//! replay is exact, but a batch of nothing but ticks is written at most once a second.
//!
//! It does not know the file format (`persist::codec`) or the files (`persist::log`).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use tracing::error;

use crate::config::FsyncPolicy;
use crate::error::Error;
use crate::model::ItemFeatures;
use crate::persist::codec::{self, Record};
use crate::persist::{
    Batch, DeferredSync, LogCounters, PersistError, Position, ReplayReport, ShardLog,
};
use crate::shard::checkpoint::Checkpoints;
use crate::shard::worker::{Replayed, Shard};

/// A reply held until the batch that covers it is durable; called with the write's error,
/// if it failed.
type Held = Box<dyn FnOnce(Option<&Error>) + Send>;

/// A batch this large is written at once, without waiting for the end of the drain.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// How long a batch of nothing but ticks may wait before it is written.
const TICKS_WAIT: Duration = Duration::from_secs(1);

/// A shard's log and the batch of the current drain.
pub struct Wal {
    log: Box<dyn ShardLog>,
    batch: Batch,
    policy: FsyncPolicy,
    held: Vec<Held>,
    /// Whether the batch holds anything but ticks.
    has_state: bool,
    /// Whether this batch must be fsynced whatever the policy (it holds a `forget`).
    sync_requested: bool,
    /// Batches waiting for their fsync go to the syncer thread, which then sends their
    /// replies; dropping the sender (at `close`) lets it finish and exit.
    syncer: Option<(Sender<SyncJob>, JoinHandle<()>)>,
    last_write: Instant,
}

/// What a shard's recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// What the log replay found.
    pub report: ReplayReport,
    /// The catalog as replayed (items with catalog features).
    pub catalog: Vec<Arc<ItemFeatures>>,
    /// The log's counters.
    pub counters: Arc<LogCounters>,
}

/// One written batch waiting for its fsync, with the replies it holds.
struct SyncJob {
    segment: Position,
    sync: DeferredSync,
    replies: Vec<Held>,
}

/// Runs a sync and sends the replies it held, with its error if it failed.
fn finish(sync: DeferredSync, replies: Vec<Held>) {
    let err = sync().err().map(|e| Error::Unavailable(e.to_string()));
    for reply in replies {
        reply(err.as_ref());
    }
}

/// The syncer: takes every job queued, runs one sync per segment (the latest, which covers
/// the earlier ones), then sends the jobs' replies in order.
fn sync_loop(jobs: Receiver<SyncJob>) {
    while let Ok(first) = jobs.recv() {
        let queued: Vec<SyncJob> = std::iter::once(first).chain(jobs.try_iter()).collect();
        let mut syncs: Vec<(Position, DeferredSync)> = Vec::new();
        let mut replies = Vec::new();
        for job in queued {
            match syncs.last_mut() {
                Some((segment, latest)) if *segment == job.segment => *latest = job.sync,
                _ => syncs.push((job.segment, job.sync)),
            }
            replies.extend(job.replies);
        }
        let mut err = None;
        for (_, sync) in syncs {
            if let Err(e) = sync() {
                error!("write-ahead log fsync: {e}");
                err = Some(Error::Unavailable(e.to_string()));
            }
        }
        for reply in replies {
            reply(err.as_ref());
        }
    }
}

impl Wal {
    /// Makes this batch durable before its replies whatever the policy: an erasure is
    /// acknowledged only once it cannot be lost.
    pub fn require_sync(&mut self) {
        self.sync_requested = true;
    }

    /// The buffer to encode one record into; the record is closed by the next call or commit.
    pub fn record(&mut self, encode: impl FnOnce(&mut Vec<u8>), state: bool) {
        encode(self.batch.begin());
        self.batch.finish();
        self.has_state |= state;
    }

    /// Holds a reply until the batch is written (and, by policy, fsynced); a large batch is
    /// written now.
    pub fn hold(&mut self, reply: Held) {
        self.held.push(reply);
        if self.batch.bytes().len() >= MAX_BATCH_BYTES {
            self.commit(true);
        }
    }

    /// Writes the batch (once per drain). A batch of only ticks waits up to `TICKS_WAIT`
    /// unless `force`.
    pub fn commit(&mut self, force: bool) {
        if self.batch.is_empty() {
            // Replies that wait for no record (every request of theirs was refused before
            // it was logged) go now.
            for reply in self.held.drain(..) {
                reply(None);
            }
            return;
        }
        if !force && !self.has_state && self.last_write.elapsed() < TICKS_WAIT {
            return;
        }
        let needs_sync = self.policy == FsyncPolicy::Always || self.sync_requested;
        let result = self.log.append_batch(&self.batch).and_then(|_| {
            if needs_sync {
                self.log.deferred_sync().map(Some)
            } else {
                Ok(None)
            }
        });
        self.sync_requested = false;
        self.batch.clear();
        self.has_state = false;
        self.last_write = Instant::now();
        let err = match result {
            Ok(Some((segment, sync))) => {
                let replies = std::mem::take(&mut self.held);
                let job = SyncJob {
                    segment,
                    sync,
                    replies,
                };
                match &self.syncer {
                    // The syncer only exits after `close` dropped its sender.
                    Some((jobs, _)) => {
                        if let Err(back) = jobs.send(job) {
                            let job = back.into_inner();
                            finish(job.sync, job.replies);
                        }
                    }
                    None => finish(job.sync, job.replies),
                }
                return;
            }
            Ok(None) => None,
            Err(e) => {
                error!("write-ahead log: {e}");
                Some(Error::Unavailable(e.to_string()))
            }
        };
        for reply in self.held.drain(..) {
            reply(err.as_ref());
        }
    }

    /// Starts a new log segment at the end; returns that position (a checkpoint's).
    pub fn roll(&mut self) -> Result<Position, PersistError> {
        self.log.roll()
    }

    /// Deletes the log segments a committed checkpoint covers.
    pub fn discard_before(&mut self, position: Position) -> Result<(), PersistError> {
        self.log.discard_before(position)
    }

    /// Writes everything, lets the syncer send what it holds, and fsyncs (shutdown).
    pub fn close(&mut self) {
        self.commit(true);
        if let Some((jobs, thread)) = self.syncer.take() {
            drop(jobs);
            let _ = thread.join();
        }
        if let Err(e) = self.log.sync() {
            error!("write-ahead log at shutdown: {e}");
        }
    }
}

impl Shard {
    /// Replays `log` into this fresh shard, then logs to it from now on. `next_sequence` is
    /// the engine's starting decision sequence; a replayed later one wins, so ids never repeat.
    pub fn recover(
        &mut self,
        mut log: Box<dyn ShardLog>,
        policy: FsyncPolicy,
        next_sequence: u64,
        checkpoints: Option<Checkpoints>,
    ) -> Result<Recovered, PersistError> {
        // The last checkpoint's state, then the log from its position.
        let mut from = 0;
        if let Some(c) = checkpoints {
            let store = c.store().clone();
            self.attach_store(c);
            if let Some((position, state)) = store.shard(self.id().0)? {
                self.restore_state(&state, store.path())?;
                self.restore_decisions(store.decisions(self.id().0)?, store.path())?;
                from = position;
            }
        }
        let decision_log = self.take_decision_log();
        let report = log.replay(from, &mut |bytes| {
            self.replay(codec::decode(bytes)?);
            Ok(())
        })?;
        self.restore_decision_log(decision_log);
        if let Some(segments) = &mut self.segments {
            // What the replay gathered was shared with the centroids by the run that logged it.
            segments.forget_sums();
        }
        let next = self.resume_sequence(next_sequence);
        let counters = log.counters();
        let mut wal = Wal {
            log,
            batch: Batch::default(),
            policy,
            held: Vec::new(),
            has_state: false,
            sync_requested: false,
            syncer: None,
            last_write: Instant::now(),
        };
        let (jobs, queue) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("nudge-wal-sync".into())
            .spawn(move || sync_loop(queue))
            .map_err(|e| PersistError::io(std::path::Path::new("nudge-wal-sync"), e))?;
        wal.syncer = Some((jobs, thread));
        wal.record(|out| codec::start(out, next), true);
        wal.commit(true);
        self.wal = Some(wal);
        self.publish();
        Ok(Recovered {
            report,
            catalog: self.catalog(),
            counters,
        })
    }

    /// Applies one replayed record through the live handlers (replies go nowhere).
    fn replay(&mut self, record: Record) {
        match record {
            Record::Start { next_sequence } => self.restart_sequence(next_sequence),
            Record::Event(ev) => {
                let _ = self.guarded_event(ev);
            }
            Record::Decide(mut req, placed, arm) => {
                req.arm = arm.and_then(|(id, arm)| self.experiments.replayed(id, arm));
                if let Ok(decision) = self.guarded_decide(req) {
                    self.name_placements(decision.id.0, placed);
                }
            }
            Record::DecideTemplate(logged) => self.replay_template(logged),
            Record::Reward(r) => {
                let _ = self.guarded_reward(r);
            }
            Record::Upsert(f) => self.on_upsert(f),
            Record::Remove(key) => self.remove_item(key),
            Record::Forget(user) => {
                self.forget(&user);
            }
            Record::Consent(key, consent) => {
                self.on_consent(key, consent);
            }
            Record::Advance(now_ms) => self.advance_to(now_ms),
            Record::Triggers(version, specs) => self.replay_triggers(version, specs),
            Record::Tick { now_ms, mix } => {
                self.on_tick(now_ms, Replayed::Yes(mix));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EventKind;
    use crate::config::Config;
    use crate::ids::{ShardId, UserId};
    use crate::model::SparseVec;
    use crate::persist::{Position, ReplayReport};
    use crate::shard::msg::{Msg, ValidDecide, ValidEvent};
    use crate::shard::Counters;
    use crate::sync::oneshot;

    /// A log whose writes fail, as on a full disk.
    struct FullDisk;

    impl ShardLog for FullDisk {
        fn replay(
            &mut self,
            _from: Position,
            _apply: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        ) -> Result<ReplayReport, PersistError> {
            Ok(ReplayReport::default())
        }
        fn append_batch(&mut self, _batch: &Batch) -> Result<Position, PersistError> {
            let e = std::io::Error::from_raw_os_error(28);
            Err(PersistError::io(std::path::Path::new("full"), e))
        }
        fn sync(&mut self) -> Result<(), PersistError> {
            Ok(())
        }
        fn deferred_sync(&mut self) -> Result<(Position, DeferredSync), PersistError> {
            Ok((0, Box::new(|| Ok(()))))
        }
        fn end(&self) -> Position {
            0
        }
        fn roll(&mut self) -> Result<Position, PersistError> {
            Ok(0)
        }
        fn discard_before(&mut self, _position: Position) -> Result<(), PersistError> {
            Ok(())
        }
        fn counters(&self) -> Arc<LogCounters> {
            Arc::default()
        }
    }

    #[test]
    fn a_failed_write_refuses_state_changes_but_decisions_still_answer() {
        let cfg = Arc::new(Config::default());
        let mut shard = Shard::new(ShardId(0), cfg, 1, None, Arc::new(Counters::default()));
        shard
            .recover(Box::new(FullDisk), FsyncPolicy::Everysec, 1, None)
            .unwrap();
        let user = UserId::new("u").unwrap();
        let (tx, rx) = oneshot::channel();
        let ev = ValidEvent {
            user: user.clone(),
            kind: EventKind::Click,
            item: Some((7, "i7".into())),
            value: 1.0,
            ts_ms: 1_700_000_000_000,
            context: SparseVec::default(),
            decision: None,
            event_id: None,
            facts: None,
        };
        shard.handle(Msg::Event(ev, tx));
        shard.end_batch();
        let err = rx.wait(Duration::ZERO).unwrap().unwrap_err();
        assert_eq!(err.code(), "unavailable");
        assert!(err.to_string().contains("No space left"), "{err}");
        let (tx, rx) = oneshot::channel();
        let req = ValidDecide {
            arm: None,
            user,
            candidates: Vec::new(),
            n: 0,
            context: SparseVec::default(),
            ts_ms: 1_700_000_000_001,
            explain: false,
            track: true,
            raw_context: None,
            rules: None,
            saturation: None,
            tone: None,
        };
        shard.handle(Msg::Decide(req, tx));
        assert!(rx.wait(Duration::ZERO).unwrap().is_ok());
    }
}
