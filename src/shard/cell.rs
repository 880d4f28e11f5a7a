//! `ShardCell`: where a shard's messages are executed. Flat combining: the shard sits behind a
//! lock that is almost never contended, and the thread that submits a message runs it inline
//! when the shard is free. When another thread holds the shard, the message goes on the
//! shard's bounded lock-free queue, and whoever holds the lock drains the queue before
//! releasing it. There is no shard thread, so a request costs no thread hand-off unless two
//! threads want the same shard at once.
//!
//! **Invariants.** One writer per shard (the lock holder), so one writer per user. Messages
//! of one submitter reach the shard in submission order: a message runs inline only when the
//! queue is empty, and a lock holder drains what was queued before it returns. The queue is
//! bounded (`inbox_capacity`): past it a submitter either fails with `Busy` or takes the lock
//! itself and helps drain (back-pressure by doing the work). Nothing queued is stranded: a
//! submitter that queued tries the lock after pushing, and a holder re-checks the queue after
//! releasing, with a full fence between each side's write and read, so one of them sees the
//! other (Dekker's argument).
//!
//! **Fairness.** A submitter that finds work queued by others drains at most `drain_batch` of
//! it before it returns to its own caller; what is left then goes to the engine's sweeper
//! thread (woken only in that case), so one busy thread is never stuck serving everyone
//! else's requests while its own connections wait.
//!
//! Everything that changes a shard goes through `Shard::handle` here, so a log of handled
//! messages replays exactly whichever threads ran them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use parking_lot::{Mutex, MutexGuard};
use tracing::error;

use crate::config::OnFull;
use crate::error::Error;
use crate::ids::ShardId;

use super::{Counters, Msg, Shard};

/// How the engine's sweeper thread is told that a cell has work left over, or to stop.
#[derive(Default)]
pub struct Sweeper {
    thread: OnceLock<Thread>,
    wanted: AtomicBool,
    stopping: AtomicBool,
}

impl Sweeper {
    /// Registers the sweeper thread (once, from that thread).
    pub fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Asks the sweeper to drain the cells that have work queued.
    pub fn wake(&self) {
        self.wanted.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Takes the request to sweep (the sweeper's side).
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// Tells the sweeper to exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Whether the sweeper was told to exit.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Who is draining: a submitter (bounded, it has its own caller to return to), the timer
/// running a tick (bounded too, and not counted as activity), or the sweeper (until the
/// queue is empty).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drainer {
    Submitter,
    Timer,
    Sweeper,
}

/// One shard, its queue, and its counters.
pub struct ShardCell {
    id: ShardId,
    /// Messages handled between two group commits, and the most a submitter drains for
    /// others (`drain_batch`).
    batch: usize,
    sweeper: Arc<Sweeper>,
    core: Mutex<Core>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    counters: Arc<Counters>,
    /// A timer tick waiting to run (its time, Unix ms; 0: none). The timer never queues a
    /// tick behind requests: it leaves it here, and whoever holds the shard next runs it.
    tick_due: AtomicU64,
    /// Set by every holder; the timer clears it. A shard that was held since the last tick
    /// gets its tick from its next holder, so the timer never takes a busy shard (where it
    /// would end up draining, and so delaying, a submitter's own request).
    active: AtomicBool,
    /// Set when a panic escaped everything but the cell (not one user's message): the shard
    /// still serves, but its state may be inconsistent, so the engine reports not ready.
    failed: AtomicBool,
}

struct Core {
    shard: Shard,
    /// After `close`: messages are dropped, so their callers see the engine shutting down.
    closed: bool,
}

impl ShardCell {
    /// Wraps a shard (recovered already, when durable) with a queue of `capacity`.
    pub fn new(
        shard: Shard,
        capacity: usize,
        batch: usize,
        counters: Arc<Counters>,
        sweeper: Arc<Sweeper>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        ShardCell {
            id: shard.id(),
            batch: batch.max(1),
            sweeper,
            core: Mutex::new(Core {
                shard,
                closed: false,
            }),
            tx,
            rx,
            counters,
            failed: AtomicBool::new(false),
            tick_due: AtomicU64::new(0),
            active: AtomicBool::new(false),
        }
    }

    /// Delivers `msg` to the shard: runs it here if the shard is free, else queues it for the
    /// thread that holds the shard. `Err(Busy)` only when the queue is full and `on_full` is
    /// `Fail`; the message's reply slot then closes unused.
    pub fn submit(&self, msg: Msg, on_full: OnFull) -> Result<(), Error> {
        if self.rx.is_empty() {
            if let Some(core) = self.core.try_lock() {
                self.run_locked(core, Some(msg), Drainer::Submitter);
                return Ok(());
            }
        }
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => match on_full {
                OnFull::Fail => {
                    self.counters.count_busy();
                    return Err(Error::Busy(self.id));
                }
                // Back-pressure by helping: wait for the shard and drain it, then run this.
                OnFull::Wait => {
                    let core = self.core.lock();
                    self.run_locked(core, Some(msg), Drainer::Submitter);
                    return Ok(());
                }
            },
            // The cell holds the receiver as long as it holds the sender.
            Err(TrySendError::Disconnected(_)) => return Err(Error::ShuttingDown),
        }
        // Pushed: make the push visible before looking at the lock, so that either this
        // `try_lock` succeeds or the holder's re-check after its unlock sees the message.
        fence(Ordering::SeqCst);
        if let Some(core) = self.core.try_lock() {
            self.run_locked(core, None, Drainer::Submitter);
        }
        Ok(())
    }

    /// Queues `msg` for another thread to run (the sweeper, woken for it), so that the caller
    /// can work on something else meanwhile: how a batch's parts for several shards run on
    /// several cores. A full queue falls back to `submit`.
    pub fn defer(&self, msg: Msg, on_full: OnFull) -> Result<(), Error> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.sweeper.wake();
                Ok(())
            }
            Err(TrySendError::Full(msg)) => self.submit(msg, on_full),
            Err(TrySendError::Disconnected(_)) => Err(Error::ShuttingDown),
        }
    }

    /// The timer's work at `now_ms`: runs now if the shard is free, else by the thread that
    /// holds it, when it is done with what it is handling.
    pub fn tick(&self, now_ms: u64) {
        self.tick_due.store(now_ms.max(1), Ordering::Release);
        if self.active.swap(false, Ordering::AcqRel) {
            // Busy since the last tick: its next holder runs this one (or the timer, next
            // time, if it went idle meanwhile).
            return;
        }
        fence(Ordering::SeqCst);
        if let Some(core) = self.core.try_lock() {
            self.run_locked(core, None, Drainer::Timer);
        }
    }

    /// The sweeper's work: drains the queue completely, if anything is queued.
    pub fn sweep(&self) {
        if !self.rx.is_empty() {
            let core = self.core.lock();
            self.run_locked(core, None, Drainer::Sweeper);
        }
    }

    /// Runs `first` (if any) and what is queued, ends the batch (the write-ahead log's group
    /// commit), unlocks, and takes the lock again if something was queued meanwhile. A
    /// submitter stops after `batch` queued messages and hands the rest to the sweeper.
    fn run_locked<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        mut first: Option<Msg>,
        drainer: Drainer,
    ) {
        if drainer == Drainer::Submitter {
            self.active.store(true, Ordering::Relaxed);
        }
        loop {
            let mut left_over = false;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let core = &mut *core;
                let mut handled = 0usize;
                if let Some(msg) = first.take() {
                    core.run(msg);
                    handled += 1;
                }
                let mut drained = 0usize;
                loop {
                    if drainer != Drainer::Sweeper && drained >= self.batch {
                        left_over = !self.rx.is_empty();
                        break;
                    }
                    drained += 1;
                    match self.rx.try_recv() {
                        Ok(msg) => core.run(msg),
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                    handled += 1;
                    // Bound how long a held reply waits for its group commit.
                    if handled % self.batch == 0 && !core.closed {
                        core.shard.end_batch();
                    }
                }
                let tick = self.tick_due.swap(0, Ordering::AcqRel);
                if tick != 0 && !core.closed {
                    core.shard.handle(Msg::Tick(tick));
                    handled += 1;
                }
                if handled > 0 && !core.closed {
                    core.shard.end_batch();
                }
            }));
            if let Err(payload) = outcome {
                self.failed.store(true, Ordering::Release);
                error!(
                    shard = self.id.0,
                    "a panic outside any one user's work: {}",
                    super::worker::panic_message(payload.as_ref())
                );
            }
            drop(core);
            if left_over {
                self.sweeper.wake();
                return;
            }
            // The holder's half of the handshake in `submit`.
            fence(Ordering::SeqCst);
            if self.rx.is_empty() && self.tick_due.load(Ordering::Acquire) == 0 {
                return;
            }
            match self.core.try_lock() {
                Some(again) => core = again,
                // Another thread holds it now and will drain.
                None => return,
            }
        }
    }

    /// The counters the shard publishes.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Messages waiting in the queue.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Whether a panic escaped a shard-wide step (see `failed`).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Runs everything queued, checkpoints (if `checkpoint`), writes and fsyncs the log, and
    /// refuses messages from now on (they are dropped, so their callers see `ShuttingDown`).
    pub fn close(&self, checkpoint: bool) {
        let mut core = self.core.lock();
        while let Ok(msg) = self.rx.try_recv() {
            core.run(msg);
        }
        core.shard.close_log(checkpoint);
        core.closed = true;
        // Anything queued while closing is dropped, with the usual unlock handshake.
        self.run_locked(core, None, Drainer::Sweeper);
    }
}

impl Core {
    fn run(&mut self, msg: Msg) {
        if !self.closed {
            self.shard.handle(msg);
        }
    }
}
