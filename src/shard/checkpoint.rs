//! A shard's checkpoints: at one log position, the shard's state (model replica, open
//! decisions, remembered event ids, counters) and every user changed since the last
//! checkpoint go to the store, and the log before that position is deleted.
//!
//! A checkpoint begins at a drain boundary on the timer's tick: the shard writes its batch,
//! rolls its log to a new segment at position `P`, encodes its own state and marks its dirty
//! users owed (`Users::begin_checkpoint`). The owed users are then copied a slice per tick
//! (copy-on-write keeps each as it was at `P`), and sent to the checkpointer thread, which
//! writes them in the same transaction as the state. Once that commits, the segments before
//! `P` are deleted. Recovery is "state at `P`, then replay from `P`" (`Shard::recover`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::persist::store::{self, Checkpointer, Committed, Job};
use crate::persist::{PersistError, Position};
use crate::shard::passive::Passive;
use crate::shard::worker::Shard;

/// Users copied per tick while a checkpoint is in progress.
const SLICE_USERS: usize = 512;

/// Parked users past this many bytes start a checkpoint early, so memory stays bounded by the
/// resident cap and this.
const PARKED_BYTES_LIMIT: usize = 64 << 20;

/// A shard's side of checkpointing.
pub struct Checkpoints {
    checkpointer: Arc<Checkpointer>,
    committed: Arc<Committed>,
    interval: Duration,
    last_began: Instant,
    in_progress: Option<InProgress>,
}

struct InProgress {
    position: Position,
    /// What `Users::committed` takes back once it commits.
    gen: u64,
    /// `Committed::count` when it began: a change means it ended.
    count: u64,
    /// Every owed user was sent, and `Finish`.
    finished: bool,
}

impl Checkpoints {
    /// Checkpoints of shard `shard` through `checkpointer`, every `interval`.
    pub fn new(checkpointer: Arc<Checkpointer>, shard: u16, interval: Duration) -> Self {
        Checkpoints {
            committed: checkpointer.committed(shard).clone(),
            checkpointer,
            interval,
            last_began: Instant::now(),
            in_progress: None,
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
        self.checkpoints = Some(checkpoints);
    }

    /// The shard's own state (everything but the users), encoded for a checkpoint.
    fn encode_state(&self) -> Vec<u8> {
        store::encode(&(
            self.event_ms,
            self.next_mix_ms,
            &self.stats,
            &self.learner.global,
            &self.learner.rng,
            &self.learner.cooccurrence,
            &self.pending,
            &self.seen,
            &self.tallies,
        ))
    }

    /// Restores the state a checkpoint encoded (`encode_state`), keeping this run's settings.
    pub(super) fn restore_state(
        &mut self,
        bytes: &[u8],
        file: &std::path::Path,
    ) -> Result<(), PersistError> {
        let (event_ms, next_mix_ms, stats, global, rng, co, pending, seen, tallies) =
            store::decode(bytes, file, &format!("shard {}'s state", self.id().0))?;
        self.event_ms = event_ms;
        self.next_mix_ms = next_mix_ms;
        self.stats = stats;
        self.learner.global.adopt(global);
        self.learner.rng = rng;
        self.learner.cooccurrence.adopt(co);
        self.pending.adopt(pending);
        self.seen.adopt(seen);
        self.tallies = tallies;
        Ok(())
    }

    /// One step of checkpointing, on the timer's tick: take note of a commit, copy a slice
    /// of owed users, or begin a checkpoint when one is due.
    pub(super) fn checkpoint_step(&mut self) {
        let Some(c) = &self.checkpoints else {
            return;
        };
        let due = c.last_began.elapsed() >= c.interval
            || self.users.passive().parked_bytes() > PARKED_BYTES_LIMIT;
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
        while committed.count() == count {
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
        wal.commit(true);
        let position = match wal.roll() {
            Ok(p) => p,
            Err(e) => {
                error!("checkpoint of shard {}: {e}", self.id().0);
                return;
            }
        };
        let state = self.encode_state();
        let master = self.mixer.as_ref().map(|m| store::encode(&m.snapshot()));
        let (users, gen) = self.users.begin_checkpoint();
        let shard = self.id().0;
        let c = self.checkpoints.as_mut().expect("checked by the caller");
        c.last_began = Instant::now();
        c.in_progress = Some(InProgress {
            position,
            gen,
            count: c.committed.count(),
            finished: false,
        });
        c.checkpointer.send(Job::Begin {
            shard,
            position,
            state,
            master,
            users,
        });
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
