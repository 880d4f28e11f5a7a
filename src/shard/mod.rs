//! Shards: one OS thread per shard, each the single owner of its users, fed by a bounded
//! lock-free inbox (crossbeam) that it drains in batches.
//!
//! The run loop is the shard's edge: it is the only place that reads the clock (to stamp
//! `Tick`s) and the only place that blocks. Everything it does to state goes through
//! `Shard::handle`, one `match` over `Msg`, so a log of handled messages replays exactly.

pub mod durable;
pub mod learner;
pub mod msg;
pub mod pending;
pub mod users;
pub mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::clock::Clock;
use crate::config::Config;
use crate::ids::ShardId;
use crate::model::Mixer;
pub use durable::Recovered;
pub use msg::Msg;
pub use worker::{Counters, Shard};

/// What a shard thread needs besides its inbox.
pub struct ShardSetup {
    /// The shard's index.
    pub id: ShardId,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// The clock that stamps ticks.
    pub clock: Arc<dyn Clock>,
    /// The replica mixer (`None` with one shard).
    pub mixer: Option<Arc<Mixer>>,
    /// Where the shard publishes its counters.
    pub counters: Arc<Counters>,
    /// First decision sequence number.
    pub first_sequence: u64,
    /// The decision log, if on.
    pub log: Option<Arc<dyn crate::api::DecisionLog>>,
    /// The write-ahead log, with a data directory.
    pub durable: Option<DurableSetup>,
}

/// A shard's write-ahead log and where it reports its recovery.
pub struct DurableSetup {
    /// The log, replayed before the shard takes messages.
    pub log: Box<dyn crate::persist::ShardLog>,
    /// The fsync policy.
    pub fsync: crate::config::FsyncPolicy,
    /// Receives the recovery's outcome; the engine is ready when every shard reported.
    pub ready:
        crate::sync::oneshot::Sender<Result<durable::Recovered, crate::persist::PersistError>>,
}

/// Starts a shard thread draining `inbox` until it is disconnected or told to stop.
pub fn spawn(setup: ShardSetup, inbox: Receiver<Control>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("nudge-shard-{}", setup.id.0))
        .spawn(move || run(setup, inbox))
}

/// What arrives in a shard's inbox: a message, or the order to stop after everything before it.
pub enum Control {
    /// Handle a message.
    Msg(Msg),
    /// Stop: everything sent earlier has been handled; acknowledge and exit.
    Shutdown(crate::sync::oneshot::Sender<()>),
}

fn run(setup: ShardSetup, inbox: Receiver<Control>) {
    let tick_every = Duration::from_millis(setup.cfg.mix_interval_ms.max(1));
    let spin = crate::config::Config::spin(setup.cfg.spin_before_park_us);
    let batch = setup.cfg.drain_batch;
    let clock = setup.clock.clone();
    let mut shard = Shard::new(
        setup.id,
        setup.cfg,
        setup.first_sequence,
        setup.mixer,
        setup.counters,
    )
    .with_log(setup.log);
    if let Some(d) = setup.durable {
        let recovered = shard.recover(d.log, d.fsync, setup.first_sequence);
        let failed = recovered.is_err();
        d.ready.send(recovered);
        if failed {
            return;
        }
    }
    let mut next_tick = Instant::now() + tick_every;
    loop {
        let mut handled = 0;
        while handled < batch {
            match inbox.try_recv() {
                Ok(Control::Msg(msg)) => shard.handle(msg),
                Ok(Control::Shutdown(done)) => return stop(shard, done),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return shard.close_log(),
            }
            handled += 1;
        }
        if handled > 0 {
            shard.end_batch();
        }
        let now = Instant::now();
        if now >= next_tick {
            shard.handle(Msg::Tick(clock.now_ms()));
            shard.end_batch();
            next_tick = now + tick_every;
        }
        if handled > 0 {
            continue;
        }
        // Idle: spin briefly (a reply a few µs away beats a futex wake-up), then park until
        // a message or the next tick.
        let spin_until = Instant::now() + spin;
        while inbox.is_empty() && Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        if !inbox.is_empty() {
            continue;
        }
        match inbox.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Control::Msg(msg)) => {
                shard.handle(msg);
                shard.end_batch();
            }
            Ok(Control::Shutdown(done)) => return stop(shard, done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return shard.close_log(),
        }
    }
}

fn stop(mut shard: Shard, done: crate::sync::oneshot::Sender<()>) {
    shard.close_log();
    done.send(());
}
