//! `dispatch`: turns a parsed `Op` into engine calls and a `Reply`, for the session (and
//! `ingest_many` for Segment ingestion).
//!
//! Ordering: an op reaches its shard when its future is first polled, and front ends poll in
//! request order, so the requests of one connection reach the engine in order (unless an
//! inbox is full and `on_full = "wait"` makes one wait). Dispatch never touches user state and
//! knows nothing of sockets or JSON.

use crate::api::Event;
use crate::engine::Engine;
use crate::error::{Error, Problem};
use crate::wire::{EventRequest, Op, Rejected, Reply, ReqId, Request, TemplateOp, WireError};

/// Runs one op. `subscribe`/`unsubscribe` need a session that can push, so they are
/// refused here (the session handles them itself; inside a batch they are refused).
pub async fn execute(engine: &Engine, op: Op) -> Reply {
    match op {
        Op::Batch(ops) => Reply::Batch(batch(engine, ops).await),
        op => single(engine, op).await,
    }
}

/// Runs one op that is not a batch (the parser never nests batches).
async fn single(engine: &Engine, op: Op) -> Reply {
    match op {
        Op::Event(e) => match resolve(engine, e) {
            Ok(e) => match engine.ingest_async(e).await {
                Ok(ack) => Reply::Acked(ack),
                Err(e) => failed(e),
            },
            Err(e) => failed(e),
        },
        Op::Decide(d) => match engine.decide_async(d).await {
            Ok(d) => Reply::Decided(d),
            Err(e) => failed(e),
        },
        Op::Consent(user, update) => match engine.update_consent_async(&user, update).await {
            Ok((consent, erased)) => Reply::Consented(consent, erased),
            Err(e) => failed(e),
        },
        Op::Tone(t) => match engine.tone_async(t).await {
            Ok(t) => Reply::Toned(t),
            Err(e) => failed(e),
        },
        Op::Reward {
            decision,
            item,
            value,
            ts_ms,
        } => match engine.reward_async(decision, &item, value, ts_ms).await {
            Ok(()) => Reply::Rewarded,
            Err(e) => failed(e),
        },
        // Catalog calls reach every shard when the future is first polled (futures are polled
        // in request order), so a pipelined `decide` after an `item` sees the item.
        Op::Item(spec) => match engine.upsert_item_async(spec).await {
            Ok(new) => Reply::ItemStored { new },
            Err(e) => failed(e),
        },
        Op::RemoveItem(id) => match engine.remove_item_async(&id).await {
            Ok(removed) => Reply::ItemRemoved { removed },
            Err(e) => failed(e),
        },
        Op::User(id) => match engine.user_async(&id).await {
            Ok(u) => Reply::User(u.map(Box::new)),
            Err(e) => failed(e),
        },
        Op::Forget(id) => match engine.forget_async(&id).await {
            Ok(existed) => Reply::Forgot { existed },
            Err(e) => failed(e),
        },
        // Experiment changes take the registry's lock for a moment; results wait for every
        // shard's counters (through the queues, like `stats` of a user).
        Op::CreateExperiment { experiment, reason } => {
            match experiment
                .to_spec()
                .and_then(|s| engine.create_experiment(s, &reason))
            {
                Ok(()) => Reply::ExperimentCreated,
                Err(e) => failed(e),
            }
        }
        Op::StopExperiment { name, reason } => match engine.stop_experiment(&name, &reason) {
            Ok(was_running) => Reply::ExperimentStopped { was_running },
            Err(e) => failed(e),
        },
        Op::PromoteExperiment { name, arm, reason } => {
            match engine.promote_experiment(&name, &arm, &reason) {
                Ok(()) => Reply::ExperimentPromoted,
                Err(e) => failed(e),
            }
        }
        Op::UpdateExperiment { experiment, reason } => {
            match experiment
                .to_spec()
                .and_then(|s| engine.update_experiment(s, &reason))
            {
                Ok(changed) => Reply::ExperimentsChanged { changed },
                Err(e) => failed(e),
            }
        }
        Op::RestoreExperiments { version, reason } => {
            match engine.restore_experiments(version, &reason) {
                Ok(changed) => Reply::ExperimentsChanged { changed },
                Err(e) => failed(e),
            }
        }
        Op::ExperimentResults(name) => match engine.experiment_results_async(&name).await {
            Ok(r) => Reply::ExperimentResults(Box::new(r)),
            Err(e) => failed(e),
        },
        Op::Experiments => Reply::Experiments(engine.experiments(), engine.experiment_audit()),
        // A replacement takes the rule set's lock for a moment; a bad rule changes nothing.
        Op::Rules(Some(rules)) => match engine.set_rules(&rules) {
            Ok(_) => Reply::Rules(engine.rules()),
            Err(e) => failed(e),
        },
        Op::Rules(None) => Reply::Rules(engine.rules()),
        // A replacement reaches every shard (each logs it) before the reply; a bad trigger
        // changes nothing.
        Op::Triggers(Some(triggers)) => match engine.set_triggers(&triggers) {
            Ok(_) => Reply::Triggers(engine.triggers()),
            Err(e) => failed(e),
        },
        Op::Triggers(None) => Reply::Triggers(engine.triggers()),
        Op::Features(id) => match engine.user_async(&id).await {
            Ok(u) => Reply::Features(u.map(|u| u.features)),
            Err(e) => failed(e),
        },
        Op::DecideTemplate(req) => match engine.decide_template_async(*req).await {
            Ok(d) => Reply::TemplateDecided(Box::new(d)),
            Err(e) => failed(e),
        },
        Op::RewardDecision {
            decision,
            value,
            ts_ms,
        } => match engine.reward_decision_async(decision, value, ts_ms).await {
            Ok(placements) => Reply::RewardedDecision { placements },
            Err(e) => failed(e),
        },
        Op::Template(op) => template(engine, op),
        Op::Ping => Reply::Pong,
        Op::Stats => {
            let mut stats = engine.stats();
            match engine.segments_async().await {
                Ok(segments) => stats.segments = segments,
                Err(e) => return failed(e),
            }
            Reply::Stats(Box::new(stats))
        }
        Op::Segments { segment, name } => {
            if let Some(name) = name {
                let Some(segment) = segment else {
                    return failed(Error::invalid("segment", Problem::Missing));
                };
                if let Err(e) = engine.name_segment(&segment, &name) {
                    return failed(e);
                }
            }
            match engine.segments_async().await {
                Ok(all) => Reply::Segments(all),
                Err(e) => failed(e),
            }
        }
        Op::Batch(_) => Reply::Failed(WireError::NestedBatch),
        Op::Subscribe(_)
        | Op::Unsubscribe(_)
        | Op::SubscribeTrigger(_)
        | Op::UnsubscribeTrigger(_) => Reply::Failed(WireError::Unsupported(
            "subscriptions are available on WebSocket only",
        )),
    }
}

/// The `template` op: registering or rolling back takes the registry's lock for a moment;
/// each answers with the template's versions as they now stand.
fn template(engine: &Engine, op: TemplateOp) -> Reply {
    let name = match op {
        TemplateOp::Register(spec) => {
            let name = spec.name.clone();
            if let Err(e) = engine.register_template(*spec) {
                return failed(e);
            }
            name
        }
        TemplateOp::Rollback(name, version) => {
            if let Err(e) = engine.rollback_template(&name, version) {
                return failed(e);
            }
            name
        }
        TemplateOp::Read(name) => name,
    };
    match engine.template_versions(&name) {
        Ok(v) => Reply::Template(Box::new(v)),
        Err(e) => failed(e),
    }
}

/// Runs a batch's ops: all events in one `ingest_batch_async` (one message per shard), the
/// other ops concurrently (`subscribe` is refused inside a batch). Replies come back in the batch's order.
pub async fn batch(engine: &Engine, ops: Vec<Result<Request, Rejected>>) -> Vec<(ReqId, Reply)> {
    let mut out: Vec<(ReqId, Reply)> = Vec::with_capacity(ops.len());
    let mut events = Vec::new();
    let mut event_slots = Vec::new();
    let mut others = Vec::new();
    for (i, r) in ops.into_iter().enumerate() {
        match r {
            Ok(Request {
                id,
                op: Op::Event(e),
            }) => match resolve(engine, e) {
                Ok(e) => {
                    out.push((id, Reply::Pong));
                    events.push(e);
                    event_slots.push(i);
                }
                Err(e) => out.push((id, failed(e))),
            },
            Ok(Request { id, op }) => {
                out.push((id, Reply::Pong));
                others.push((i, op));
            }
            Err(Rejected { id, error }) => out.push((id, Reply::Failed(error))),
        }
    }
    let other_futures = others
        .into_iter()
        .map(|(i, op)| async move { (i, single(engine, op).await) });
    let (acks, other_replies) = futures_util::future::join(
        ingest_many(engine, events),
        futures_util::future::join_all(other_futures),
    )
    .await;
    for (i, reply) in event_slots.into_iter().zip(acks) {
        out[i].1 = reply;
    }
    for (i, reply) in other_replies {
        out[i].1 = reply;
    }
    out
}

/// Ingests many events at once; replies in input order.
pub async fn ingest_many(engine: &Engine, events: Vec<Event>) -> Vec<Reply> {
    match events.len() {
        0 => Vec::new(),
        1 => {
            let e = events.into_iter().next().expect("one event");
            vec![match engine.ingest_async(e).await {
                Ok(ack) => Reply::Acked(ack),
                Err(e) => failed(e),
            }]
        }
        _ => engine
            .ingest_batch_async(events)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(ack) => Reply::Acked(ack),
                Err(e) => failed(e),
            })
            .collect(),
    }
}

/// An event's type resolved by the engine's configuration (built-in names or aliases).
fn resolve(engine: &Engine, e: EventRequest) -> Result<Event, Error> {
    e.resolve(|name| engine.event_kind(name))
}

fn failed(e: Error) -> Reply {
    Reply::Failed(WireError::Engine(e))
}
