//! Reply and push serialization. Every reply is one JSON object carrying the request's `id`;
//! the caller adds the line or frame boundary. Written by hand into a reused buffer.

use super::json::{
    key, write_bool, write_f32, write_f32s, write_f64, write_id, write_str, write_u64,
};
use super::{ReqId, WireError};
use crate::api::{
    Ack, Decision, EventKind, ItemSpec, ShardStats, SignalSummary, Stats, ToneDecision, UserExport,
    UserUpdate,
};
use crate::error::ErrorCode;

/// The outcome of one request, ready to be written.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// An event was applied.
    Acked(Ack),
    /// A decision was made.
    Decided(Decision),
    /// A tone was chosen.
    Toned(ToneDecision),
    /// A user's consent in force, and whether the change erased anything.
    Consented(crate::consent::Consent, bool),
    /// A reward was attributed.
    Rewarded,
    /// An item was stored; `new` says whether it was not in the catalog before.
    ItemStored {
        /// Whether the item is new.
        new: bool,
    },
    /// An item was removed (`removed`: it was present).
    ItemRemoved {
        /// Whether the item was present.
        removed: bool,
    },
    /// A catalog item as stored (HTTP `GET /v1/items/{id}`).
    Item(Option<ItemSpec>),
    /// A user's export (`None`: the engine holds nothing for them).
    User(Option<Box<UserExport>>),
    /// A user was erased (`existed`: the engine held something for them).
    Forgot {
        /// Whether anything was erased.
        existed: bool,
    },
    /// The answer to `ping`.
    Pong,
    /// Engine counters.
    Stats(Box<Stats>),
    /// The replies of a batch's ops, in order, each with its own id.
    Batch(Vec<(ReqId, Reply)>),
    /// A subscription was opened.
    Subscribed {
        /// Its id.
        subscription: u64,
    },
    /// A subscription was closed.
    Unsubscribed,
    /// An experiment was created.
    ExperimentCreated,
    /// An arm was promoted.
    ExperimentPromoted,
    /// An experiment was updated, or the experiments restored (`changed`: anything differs).
    ExperimentsChanged {
        /// Whether anything changed.
        changed: bool,
    },
    /// An experiment was stopped (`was_running`: it ran until now).
    ExperimentStopped {
        /// Whether it was running.
        was_running: bool,
    },
    /// An experiment's results.
    ExperimentResults(Box<crate::experiment::ExperimentResults>),
    /// Every experiment, whether it runs, and the audit trail.
    Experiments(
        Vec<(crate::experiment::ExperimentSpec, bool)>,
        Vec<crate::experiment::AuditEntry>,
    ),
    /// The rule set in force (after a replacement, the new one).
    Rules(std::sync::Arc<crate::rules::RuleSet>),
    /// The threshold triggers in force (after a replacement, or read).
    Triggers(std::sync::Arc<crate::triggers::TriggerSet>),
    /// A user's live features (`None`: the engine holds nothing for them).
    Features(Option<Vec<(crate::actor::Feature, crate::actor::features::FeatureValue)>>),
    /// A template decision was made (issue 15).
    TemplateDecided(Box<crate::template::TemplateDecision>),
    /// A reward went to every placement of a decision; how many took it.
    RewardedDecision {
        /// Placements rewarded.
        placements: u32,
    },
    /// A template's versions (after a registration or rollback, the new state).
    Template(Box<crate::template::TemplateVersions>),
    /// Every segment (after a naming, with the new name).
    Segments(Vec<crate::api::SegmentReport>),
    /// The request failed.
    Failed(WireError),
}

impl Reply {
    /// The error code of a failed reply, or `None` for success.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Reply::Failed(e) => Some(e.code()),
            _ => None,
        }
    }
}

/// Appends `{"id":…,"error":{"code":…,"message":…}}`.
pub fn write_error(out: &mut Vec<u8>, id: &ReqId, error: &WireError) {
    out.extend_from_slice(b"{\"id\":");
    write_id(out, id);
    out.extend_from_slice(b",\"error\":{\"code\":");
    write_str(out, error.code().as_str());
    if let WireError::Engine(crate::error::Error::Invalid { field, .. }) = error {
        // The field a client would highlight, besides the message that names it.
        out.extend_from_slice(b",\"field\":");
        write_str(out, field);
    }
    out.extend_from_slice(b",\"message\":");
    write_str(out, &error.to_string());
    out.extend_from_slice(b"}}");
}

/// Appends one reply object.
pub fn write_reply(out: &mut Vec<u8>, id: &ReqId, reply: &Reply) {
    if let Reply::Failed(e) = reply {
        return write_error(out, id, e);
    }
    out.extend_from_slice(b"{\"id\":");
    write_id(out, id);
    out.push(b',');
    match reply {
        Reply::Acked(ack) => {
            out.extend_from_slice(b"\"ok\":true,");
            key(out, "attributed");
            write_bool(out, ack.attributed);
            out.push(b',');
            key(out, "trained");
            write_bool(out, ack.trained);
            out.push(b',');
            key(out, "outlier");
            write_bool(out, ack.outlier);
            if ack.duplicate {
                out.push(b',');
                key(out, "duplicate");
                write_bool(out, true);
            }
            if ack.withheld {
                out.push(b',');
                key(out, "withheld");
                write_bool(out, true);
            }
            super::triggers::fired(out, &ack.triggers);
        }
        Reply::Decided(d) => decision(out, d),
        Reply::Consented(c, erased) => {
            key(out, "personalization");
            write_bool(out, c.personalization);
            out.extend_from_slice(b",\"storage\":");
            write_bool(out, c.storage);
            out.extend_from_slice(b",\"erased\":");
            write_bool(out, *erased);
        }
        Reply::Toned(t) => {
            key(out, "tone");
            write_str(out, &t.tone);
            out.extend_from_slice(b",\"sentiment\":");
            match t.sentiment {
                Some(s) => write_f64(out, s),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"source\":");
            write_str(out, t.source.name());
            out.push(b',');
            decision(out, &t.decision);
        }
        Reply::Rewarded => out.extend_from_slice(b"\"ok\":true"),
        Reply::ItemStored { new } => {
            out.extend_from_slice(b"\"ok\":true,\"new\":");
            write_bool(out, *new);
        }
        Reply::ItemRemoved { removed } => {
            out.extend_from_slice(b"\"ok\":true,\"removed\":");
            write_bool(out, *removed);
        }
        Reply::Item(spec) => {
            key(out, "item");
            match spec {
                Some(s) => item(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        Reply::User(export) => {
            key(out, "user");
            match export {
                Some(u) => user(out, u),
                None => out.extend_from_slice(b"null"),
            }
        }
        Reply::Forgot { existed } => {
            out.extend_from_slice(b"\"ok\":true,\"forgotten\":");
            write_bool(out, *existed);
        }
        Reply::Pong => out.extend_from_slice(b"\"ok\":true,\"pong\":true"),
        Reply::Stats(s) => {
            key(out, "stats");
            stats(out, s);
        }
        Reply::Batch(replies) => {
            key(out, "results");
            out.push(b'[');
            for (i, (id, r)) in replies.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_reply(out, id, r);
            }
            out.push(b']');
        }
        Reply::Subscribed { subscription } => {
            out.extend_from_slice(b"\"ok\":true,\"subscription\":");
            write_u64(out, *subscription);
        }
        Reply::Unsubscribed | Reply::ExperimentCreated | Reply::ExperimentPromoted => {
            out.extend_from_slice(b"\"ok\":true")
        }
        Reply::ExperimentsChanged { changed } => {
            out.extend_from_slice(b"\"ok\":true,\"changed\":");
            write_bool(out, *changed);
        }
        Reply::ExperimentStopped { was_running } => {
            out.extend_from_slice(b"\"ok\":true,\"was_running\":");
            write_bool(out, *was_running);
        }
        Reply::ExperimentResults(r) => super::experiment::results(out, r),
        Reply::Experiments(all, audit) => super::experiment::list(out, all, audit),
        Reply::Rules(set) => super::rules::set(out, set),
        Reply::Triggers(set) => super::triggers::set(out, set),
        Reply::Features(features) => {
            key(out, "features");
            match features {
                Some(f) => super::rules::features(out, f),
                None => out.extend_from_slice(b"null"),
            }
        }
        Reply::TemplateDecided(d) => super::template::decision(out, d),
        Reply::RewardedDecision { placements } => {
            out.extend_from_slice(b"\"ok\":true,\"rewarded\":");
            write_u64(out, u64::from(*placements));
        }
        Reply::Template(v) => super::template::versions(out, v),
        Reply::Segments(all) => super::segmentation::list(out, all),
        Reply::Failed(_) => unreachable!("handled above"),
    }
    out.push(b'}');
}

fn decision(out: &mut Vec<u8>, d: &Decision) {
    key(out, "decision");
    write_str(out, &d.id.to_string());
    out.extend_from_slice(b",\"items\":[");
    for (i, p) in d.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"item\":");
        write_str(out, &p.item);
        out.extend_from_slice(b",\"score\":");
        write_f32(out, p.score);
        out.extend_from_slice(b",\"propensity\":");
        write_f32(out, p.propensity);
        if let Some(e) = &p.explain {
            explain(out, e);
        }
        out.push(b'}');
    }
    out.push(b']');
    experiment_arm(out, d.experiment.as_ref());
    super::rules::decision(out, &d.triggers, &d.rules);
    super::saturation::effects(out, &d.saturation);
    if d.segment.is_some() {
        super::segmentation::label(out, d.segment.as_ref());
    }
}

/// `,"explain":{…}`: a score's parts.
pub(super) fn explain(out: &mut Vec<u8>, e: &crate::api::ScoreParts) {
    out.extend_from_slice(b",\"explain\":{");
    let parts = [
        ("bias", e.bias),
        ("global", e.global),
        ("personal", e.personal),
        ("context", e.context),
        ("state", e.state),
        ("cooccurrence", e.cooccurrence),
        ("prior", e.prior),
        ("logit", e.logit()),
    ];
    // A prior exists only in tone decisions: elsewhere it is left out.
    let parts = parts
        .into_iter()
        .filter(|(n, v)| *n != "prior" || *v != 0.0);
    for (j, (name, v)) in parts.enumerate() {
        if j > 0 {
            out.push(b',');
        }
        key(out, name);
        write_f32(out, v);
    }
    out.push(b'}');
}

fn item(out: &mut Vec<u8>, s: &ItemSpec) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &s.id);
    out.extend_from_slice(b",\"attrs\":[");
    for (i, (k, v)) in s.attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_str(out, k);
        out.push(b',');
        write_str(out, v);
        out.push(b']');
    }
    out.extend_from_slice(b"],\"vector\":");
    match &s.vector {
        Some(v) => write_f32s(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn user(out: &mut Vec<u8>, u: &UserExport) {
    out.extend_from_slice(b"{\"user\":");
    write_str(out, &u.user);
    out.extend_from_slice(b",\"first_seen_ms\":");
    write_u64(out, u.first_seen_ms);
    out.extend_from_slice(b",\"last_seen_ms\":");
    write_u64(out, u.last_seen_ms);
    out.extend_from_slice(b",\"events_by_kind\":{");
    for (i, kind) in EventKind::ALL.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, kind.name());
        write_u64(out, u.events_by_kind[i]);
    }
    out.extend_from_slice(b"},\"decisions\":");
    write_u64(out, u.decisions);
    out.extend_from_slice(b",\"training_steps\":");
    write_u64(out, u.training_steps);
    out.extend_from_slice(b",\"state\":");
    write_f32s(out, &u.state);
    out.extend_from_slice(b",\"personal_weights\":");
    write_f32s(out, &u.personal_weights);
    out.extend_from_slice(b",\"signals\":");
    signals(out, &u.signals);
    out.extend_from_slice(b",\"features\":");
    super::rules::features(out, &u.features);
    super::segmentation::label(out, u.segment.as_ref());
    if u.memory_only {
        // Only when true, so that everyone else's export is byte for byte as before.
        out.extend_from_slice(b",\"memory_only\":true");
    }
    out.extend_from_slice(b",\"open_decisions\":[");
    for (i, d) in u.open_decisions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"decision\":");
        write_str(out, &d.id.to_string());
        out.extend_from_slice(b",\"created_ms\":");
        write_u64(out, d.created_ms);
        out.extend_from_slice(b",\"expires_ms\":");
        write_u64(out, d.expires_ms);
        out.extend_from_slice(b",\"placements\":[");
        for (j, (item, reward)) in d.placements.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"item\":");
            write_str(out, item);
            out.extend_from_slice(b",\"reward\":");
            match reward {
                Some(r) => write_f32(out, *r),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
}

fn signals(out: &mut Vec<u8>, s: &SignalSummary) {
    let parts = [
        ("engagement_per_hour", s.engagement_per_hour),
        ("clicks_per_hour", s.clicks_per_hour),
        ("dwell_mean_s", s.dwell_mean_s),
        ("dwell_std_s", s.dwell_std_s),
        ("sentiment_trend", s.sentiment_trend),
    ];
    out.push(b'{');
    for (name, v) in parts {
        key(out, name);
        write_f64(out, v);
        out.push(b',');
    }
    key(out, "outliers_filtered");
    write_u64(out, s.outliers_filtered);
    out.push(b'}');
}

fn shard_stats(out: &mut Vec<u8>, s: &ShardStats) {
    let parts = [
        ("resident_users", s.resident_users),
        ("open_decisions", s.open_decisions),
        ("parked_bytes", s.parked_bytes),
        ("inbox_depth", s.inbox_depth),
        ("events_total", s.events_total),
        ("decisions_total", s.decisions_total),
        ("rewards_attributed_total", s.rewards_attributed_total),
        ("decisions_expired_total", s.decisions_expired_total),
        ("outliers_filtered_total", s.outliers_filtered_total),
        ("evictions_total", s.evictions_total),
        ("busy_total", s.busy_total),
        ("training_steps_total", s.training_steps_total),
        ("mixes_total", s.mixes_total),
        ("rules_fired_total", s.rules_fired_total),
        ("rule_errors_total", s.rule_errors_total),
        ("triggers_fired_total", s.triggers_fired_total),
    ];
    out.push(b'{');
    for (i, (name, v)) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, name);
        write_u64(out, v);
    }
    out.push(b'}');
}

fn stats(out: &mut Vec<u8>, s: &Stats) {
    out.extend_from_slice(b"{\"catalog_items\":");
    write_u64(out, s.catalog_items);
    out.extend_from_slice(b",\"total\":");
    shard_stats(out, &s.total());
    out.extend_from_slice(b",\"shards\":[");
    for (i, sh) in s.shards.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        shard_stats(out, sh);
    }
    out.extend_from_slice(b"],\"triggers\":");
    trigger_stats(out, &s.triggers);
    out.extend_from_slice(b",\"durability\":");
    match &s.durability {
        None => out.extend_from_slice(b"null"),
        Some(d) => {
            out.extend_from_slice(b"{\"data_dir\":");
            write_str(out, &d.data_dir);
            out.extend_from_slice(b",\"fsync\":");
            write_str(out, d.fsync);
            out.extend_from_slice(b",\"writable\":");
            write_bool(out, d.writable);
            for (name, v) in [
                ("log_bytes_total", d.log_bytes_total),
                ("log_records_total", d.log_records_total),
                ("fsyncs_total", d.fsyncs_total),
                ("fsync_us_total", d.fsync_us_total),
                ("recovered_records", d.recovered_records),
                ("recovery_ms", d.recovery_ms),
                ("checkpoints_total", d.checkpoints_total),
                ("checkpoint_failures_total", d.checkpoint_failures_total),
                ("last_checkpoint_ms", d.last_checkpoint_ms),
                ("last_checkpoint_bytes", d.last_checkpoint_bytes),
                ("last_checkpoint_unix_ms", d.last_checkpoint_unix_ms),
                ("max_checkpoint_pause_us", d.max_checkpoint_pause_us),
                ("parked_refusals_total", d.parked_refusals_total),
                ("stored_users", d.stored_users),
                ("passivations_total", d.passivations_total),
                ("loads_total", d.loads_total),
                ("users_written_total", d.users_written_total),
                ("users_deleted_total", d.users_deleted_total),
            ] {
                out.push(b',');
                key(out, name);
                write_u64(out, v);
            }
            out.push(b'}');
        }
    }
    out.push(b',');
    super::segmentation::list(out, &s.segments);
    out.push(b'}');
}

fn trigger_stats(out: &mut Vec<u8>, t: &crate::api::TriggerStats) {
    out.extend_from_slice(b"{\"fired\":{");
    for (i, (name, n)) in t.fired.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, name);
        write_u64(out, *n);
    }
    out.push(b'}');
    for (name, v) in [
        ("webhook_delivered_total", t.webhook_delivered_total),
        ("webhook_retried_total", t.webhook_retried_total),
        ("webhook_failed_total", t.webhook_failed_total),
        ("webhook_dropped_total", t.webhook_dropped_total),
    ] {
        out.push(b',');
        key(out, name);
        write_u64(out, v);
    }
    out.push(b'}');
}

/// Appends the summary of a multi-event request (`POST /v1/events`):
/// `{"accepted":n,"rejected":m,"errors":[{"index":i,"id":…,"error":{…}}]}`, and
/// `"triggers":[{"index":i,"id":…,"triggers":[…]}]` when some event fired threshold triggers.
pub fn write_events_summary(out: &mut Vec<u8>, results: &[(ReqId, Reply)]) {
    let rejected = results
        .iter()
        .filter(|(_, r)| r.error_code().is_some())
        .count();
    out.extend_from_slice(b"{\"accepted\":");
    write_u64(out, (results.len() - rejected) as u64);
    out.extend_from_slice(b",\"rejected\":");
    write_u64(out, rejected as u64);
    out.extend_from_slice(b",\"errors\":[");
    let mut first = true;
    for (i, (id, r)) in results.iter().enumerate() {
        let Reply::Failed(e) = r else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"index\":");
        write_u64(out, i as u64);
        out.push(b',');
        let mut one = Vec::new();
        write_error(&mut one, id, e);
        // `one` is `{"id":…,"error":{…}}`: splice its members after `"index":i,`.
        out.extend_from_slice(&one[1..]);
    }
    out.push(b']');
    let mut first = true;
    for (i, (id, r)) in results.iter().enumerate() {
        let Reply::Acked(ack) = r else { continue };
        if ack.triggers.is_empty() {
            continue;
        }
        out.extend_from_slice(if first { &b",\"triggers\":["[..] } else { b"," });
        first = false;
        out.extend_from_slice(b"{\"index\":");
        write_u64(out, i as u64);
        out.extend_from_slice(b",\"id\":");
        write_id(out, id);
        super::triggers::fired(out, &ack.triggers);
        out.push(b'}');
    }
    if !first {
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends a push about a subscribed user: `{"push":"user_update",…}`. `dropped` is how many
/// pushes this connection has lost so far because it fell behind.
pub fn write_push(out: &mut Vec<u8>, u: &UserUpdate, dropped: u64) {
    out.extend_from_slice(b"{\"push\":\"user_update\",\"user\":");
    write_str(out, &u.user);
    out.extend_from_slice(b",\"cause\":");
    write_str(out, u.cause.name());
    out.extend_from_slice(b",\"ts\":");
    write_u64(out, u.ts_ms);
    out.extend_from_slice(b",\"top\":[");
    for (i, (item, score)) in u.top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"item\":");
        write_str(out, item);
        out.extend_from_slice(b",\"score\":");
        write_f32(out, *score);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"signals\":");
    signals(out, &u.signals);
    out.extend_from_slice(b",\"engagement_drop\":");
    write_bool(out, u.engagement_drop);
    super::triggers::fired(out, &u.triggers);
    out.extend_from_slice(b",\"dropped\":");
    write_u64(out, dropped);
    out.push(b'}');
}

/// `,"experiment":{"name":…,"arm":…}` of a decision made under an experiment arm (nothing
/// otherwise).
pub(super) fn experiment_arm(out: &mut Vec<u8>, arm: Option<&crate::api::ExperimentArm>) {
    if let Some(arm) = arm {
        out.extend_from_slice(b",\"experiment\":{\"name\":");
        write_str(out, &arm.experiment);
        out.extend_from_slice(b",\"arm\":");
        write_str(out, &arm.arm);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Placement;
    use crate::ids::DecisionId;

    #[test]
    fn replies_are_json_with_the_id() {
        let mut out = Vec::new();
        let d = Decision {
            id: DecisionId(0x3f0a),
            items: vec![Placement {
                item: "i\"2".into(),
                score: 0.71,
                propensity: 0.95,
                explain: None,
            }],
            experiment: None,
            triggers: Vec::new(),
            rules: Vec::new(),
            saturation: Vec::new(),
            segment: None,
        };
        write_reply(&mut out, &ReqId::Int(2), &Reply::Decided(d));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 2);
        assert_eq!(v["decision"], "0000000000003f0a");
        assert_eq!(v["items"][0]["item"], "i\"2");
        out.clear();
        let err = WireError::UnknownOp("x".into());
        write_reply(&mut out, &ReqId::None, &Reply::Failed(err));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["code"], "bad_request");
        out.clear();
        write_reply(&mut out, &ReqId::Int(1), &Reply::Stats(Box::default()));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stats"]["total"]["events_total"], 0);
    }
}
