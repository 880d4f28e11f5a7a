//! `TriggerHub`: where shards hand the triggers they fired, for delivery beyond the event's
//! own reply: to sinks subscribed to a trigger's name (a WebSocket's push queue), and to the
//! sinks that take every firing (the server's webhook, an embedder's queue). It counts the
//! firings it delivered, by name, and holds the webhook's counters so `stats` can read them.
//!
//! One per engine, shared by its shards. A shard replaying its log has none, so recovery never
//! delivers a firing twice. **Sinks must not block**: they are called on the shard's thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::api::{TriggerFiring, TriggerSink, TriggerStats, UpdateSink};

/// The webhook's counters (incremented by its delivery thread, read by `stats`).
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    /// Firings the webhook accepted (2xx).
    pub webhook_delivered_total: AtomicU64,
    /// Attempts retried (5xx, a connection error, a timeout).
    pub webhook_retried_total: AtomicU64,
    /// Firings given up.
    pub webhook_failed_total: AtomicU64,
    /// Firings dropped at a full queue.
    pub webhook_dropped_total: AtomicU64,
}

/// A subscription to a trigger by name: the name, the subscription's id, the sink.
type ByName = (Arc<str>, u64, Arc<dyn UpdateSink>);

/// The engine's delivery of fired triggers (see the module's comment).
#[derive(Default)]
pub struct TriggerHub {
    /// Subscriptions by trigger name; read on each firing, written on (un)subscribe.
    by_name: RwLock<Vec<ByName>>,
    /// Sinks that take every firing.
    sinks: RwLock<Vec<Arc<dyn TriggerSink>>>,
    /// Firings delivered, by trigger name (bounded: names come from the trigger sets).
    fired: Mutex<Vec<(Arc<str>, u64)>>,
    counters: Arc<DeliveryCounters>,
}

impl TriggerHub {
    /// Delivers one firing to the subscribers of its name and to every sink, and counts it.
    pub fn deliver(&self, firing: &TriggerFiring) {
        {
            let mut fired = self.fired.lock();
            match fired.iter_mut().find(|(n, _)| *n == firing.trigger) {
                Some((_, count)) => *count += 1,
                None => fired.push((firing.trigger.clone(), 1)),
            }
        }
        for (name, _, sink) in self.by_name.read().iter() {
            if *name == firing.trigger {
                sink.fired(firing);
            }
        }
        for sink in self.sinks.read().iter() {
            sink.fired(firing);
        }
    }

    /// Pushes every firing of trigger `name` (defined yet or not) to `sink` as `id`.
    pub fn subscribe(&self, name: &str, id: u64, sink: Arc<dyn UpdateSink>) {
        self.by_name.write().push((name.into(), id, sink));
    }

    /// Ends subscription `id`; true if it was open.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut by_name = self.by_name.write();
        let before = by_name.len();
        by_name.retain(|(_, i, _)| *i != id);
        by_name.len() != before
    }

    /// Adds a sink that takes every firing from now on.
    pub fn add_sink(&self, sink: Arc<dyn TriggerSink>) {
        self.sinks.write().push(sink);
    }

    /// The webhook's counters, for the delivery thread to increment.
    pub fn counters(&self) -> Arc<DeliveryCounters> {
        self.counters.clone()
    }

    /// The figures `stats` reports.
    pub fn stats(&self) -> TriggerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TriggerStats {
            fired: (self.fired.lock().iter())
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            webhook_delivered_total: get(&c.webhook_delivered_total),
            webhook_retried_total: get(&c.webhook_retried_total),
            webhook_failed_total: get(&c.webhook_failed_total),
            webhook_dropped_total: get(&c.webhook_dropped_total),
        }
    }
}
