//! The binary format of log records: one tag byte, then the fields in a fixed order,
//! little-endian, strings and vectors prefixed by a `u32` length. The segment header carries
//! the format version (`log::FORMAT_VERSION`); a change to any layout here bumps it.
//!
//! This is the one place that knows how core types (events, decisions, items, the global
//! model's mixing steps) look on disk: core types do not derive serde, and a new field of a
//! model type is added here, once, in its `put_*`/`get_*` pair.

use std::sync::Arc;

use crate::actor::features::EventFacts;
use crate::api::EventKind;
use crate::ids::{DecisionId, ItemId, UserId};
use crate::model::cooccur::{RecentItems, RECENT_ITEMS};
use crate::model::global::{Pulled, PulledDense, PulledItem};
use crate::model::{ItemFeatures, SparseVec};
use crate::saturation::{Diversity, Fatigue, FrequencyCap, SaturationConfig};
use crate::shard::msg::{ToneInput, ValidCandidate, ValidDecide, ValidEvent, ValidReward};
use crate::shard::templated::LoggedTemplateDecide;

/// Record tags. Never reuse a number.
mod tag {
    pub const START: u8 = 1;
    pub const EVENT: u8 = 2;
    pub const DECIDE: u8 = 3;
    pub const REWARD: u8 = 4;
    pub const UPSERT: u8 = 5;
    pub const REMOVE: u8 = 6;
    pub const FORGET: u8 = 7;
    pub const TICK: u8 = 8;
    pub const ADVANCE: u8 = 9;
    /// An event with an idempotency key: `EVENT`'s fields, then the key's hash.
    pub const EVENT_WITH_ID: u8 = 10;
    /// An event whose context named a device, location or hour (issue 14): `EVENT`'s
    /// fields, a presence byte and the key's hash, then the facts.
    pub const EVENT_WITH_FACTS: u8 = 11;
    /// A user's consent changed (issue 15): the user's key (never the id) and the bits.
    pub const CONSENT: u8 = 12;
    /// A template decision (issue 15): user, template name and version, per slot its name
    /// and its variants' item ids and attributes, context, time, flags.
    pub const DECIDE_TEMPLATE: u8 = 13;
    /// The threshold triggers in force from here on (issue 14): the set's version, then
    /// each trigger's definition and version.
    pub const TRIGGERS: u8 = 14;
}

/// One decoded log record: an input the shard applied, in the order it applied them.
#[derive(Debug)]
pub enum Record {
    /// A shard started; its next decision sequence number.
    Start {
        /// The next decision's sequence number.
        next_sequence: u64,
    },
    /// An event.
    Event(ValidEvent),
    /// A decision (its open-attribution record is rebuilt by making it again). Only the
    /// placed candidates' ids are kept (the second field, best slot first): the others
    /// travel as keys, and the candidates come back with empty ids. The third field is the
    /// experiment and arm the decision was made under, targeting applied (`None` in
    /// records written before arms were logged, and for a decision in no experiment).
    Decide(ValidDecide, Vec<String>, Option<(u32, u16)>),
    /// A template decision (its features are rebuilt from ids and attributes at replay).
    DecideTemplate(LoggedTemplateDecide),
    /// An explicit reward.
    Reward(ValidReward),
    /// A catalog upsert.
    Upsert(Arc<ItemFeatures>),
    /// A catalog removal.
    Remove(u64),
    /// An erasure.
    Forget(UserId),
    /// A user's consent changed: the user's key and the consent.
    Consent(u64, crate::consent::Consent),
    /// `Engine::tick` moved the shard's event time to this (Unix ms).
    Advance(u64),
    /// The threshold triggers in force from here on: the set's version and definitions.
    Triggers(u64, Vec<(crate::config::TriggerConfig, u64)>),
    /// A tick at `now_ms`; `mix` is what the tick's mix pulled, if it mixed.
    Tick {
        /// The tick's time.
        now_ms: u64,
        /// The mix, if one happened.
        mix: Option<Pulled>,
    },
}

/// `Triggers`: the set's version, the count, then per trigger its name, `when`,
/// `cooldown_s`, `webhook` (0 unset, 1 false, 2 true), `webhook_url` and version.
pub fn triggers(out: &mut Vec<u8>, set: &crate::triggers::TriggerSet) {
    out.push(tag::TRIGGERS);
    put_u64(out, set.version());
    put_u32(out, set.specs().len() as u32);
    for (t, version) in set.specs() {
        put_str(out, &t.name);
        put_str(out, &t.when);
        put_u64(out, t.cooldown_s);
        out.push(match t.webhook {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        put_opt_str(out, t.webhook_url.as_deref());
        put_u64(out, *version);
    }
}

/// `Start`.
pub fn start(out: &mut Vec<u8>, next_sequence: u64) {
    out.push(tag::START);
    put_u64(out, next_sequence);
}

/// `Event`.
pub fn event(out: &mut Vec<u8>, ev: &ValidEvent) {
    out.push(match (&ev.facts, ev.event_id) {
        (Some(_), _) => tag::EVENT_WITH_FACTS,
        (None, Some(_)) => tag::EVENT_WITH_ID,
        (None, None) => tag::EVENT,
    });
    put_str(out, ev.user.as_str());
    out.push(ev.kind as u8);
    match &ev.item {
        Some((key, id)) => {
            out.push(1);
            put_u64(out, *key);
            put_str(out, id);
        }
        None => out.push(0),
    }
    put_f64(out, ev.value);
    put_u64(out, ev.ts_ms);
    put_sparse(out, &ev.context);
    put_u64(out, ev.decision.map_or(0, |d| d.0));
    out.push(ev.decision.is_some() as u8);
    if let Some(facts) = &ev.facts {
        out.push(ev.event_id.is_some() as u8);
        put_u64(out, ev.event_id.unwrap_or(0));
        put_opt_str(out, facts.device.as_deref());
        put_opt_str(out, facts.location.as_deref());
        out.push(facts.hour.unwrap_or(u8::MAX));
    } else if let Some(id) = ev.event_id {
        put_u64(out, id);
    }
}

/// The input half of `Decide`, encoded before the decision is made; `decide_placed` completes
/// the record. Candidates are stored by key: a decision's record would otherwise be mostly
/// the ids of candidates it did not place.
pub fn decide(out: &mut Vec<u8>, req: &ValidDecide) {
    out.push(tag::DECIDE);
    put_str(out, req.user.as_str());
    put_u32(out, req.candidates.len() as u32);
    for c in &req.candidates {
        put_u64(out, c.key);
        match &c.inline {
            Some(f) => {
                out.push(1);
                put_item(out, f);
            }
            None => out.push(0),
        }
    }
    put_u32(out, req.n as u32);
    put_sparse(out, &req.context);
    put_u64(out, req.ts_ms);
    // Bit 0: explain; bit 1: untracked (a preview, which still draws from the shard's RNG);
    // bit 2: the request's own saturation control follows; bit 3: a tone decision.
    let own = req.saturation.as_deref();
    let tone = (req.tone.is_some() as u8) << 3;
    out.push(req.explain as u8 | (!req.track as u8) << 1 | (own.is_some() as u8) << 2 | tone);
    if let Some(s) = own {
        put_saturation(out, s);
    }
    if let Some(t) = req.tone {
        match t.message_sentiment {
            Some(s) => {
                out.push(1);
                put_f32(out, s);
            }
            None => out.push(0),
        }
    }
}

/// A decision's own saturation control.
fn put_saturation(out: &mut Vec<u8>, s: &SaturationConfig) {
    put_u32(out, s.caps.len() as u32);
    for c in &s.caps {
        put_opt_str(out, c.attribute.as_deref());
        put_u32(out, c.max);
        put_u64(out, c.window_s);
    }
    match &s.fatigue {
        Some(f) => {
            out.push(1);
            put_u32(out, f.after);
            put_f32(out, f.penalty);
        }
        None => out.push(0),
    }
    match &s.diversity {
        Some(d) => {
            out.push(1);
            put_str(out, &d.attribute);
            put_u32(out, d.max_per_value);
        }
        None => out.push(0),
    }
    put_u32(out, s.max_tracked);
}

/// The placed items' ids, best slot first: the second half of `Decide`.
pub fn decide_placed<'a>(
    out: &mut Vec<u8>,
    placed: impl ExactSizeIterator<Item = &'a str>,
    arm: Option<(u32, u16)>,
) {
    put_u32(out, placed.len() as u32);
    for id in placed {
        put_str(out, id);
    }
    match arm {
        Some((experiment, arm)) => {
            out.push(1);
            put_u32(out, experiment);
            out.extend_from_slice(&arm.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// `DecideTemplate`. A replay rebuilds the variants' features from their ids and attributes,
/// so the record keeps those and not the hashed vectors.
pub fn decide_template(out: &mut Vec<u8>, req: &LoggedTemplateDecide) {
    out.push(tag::DECIDE_TEMPLATE);
    put_str(out, req.user.as_str());
    put_str(out, &req.template.0);
    put_u64(out, req.template.1);
    put_u32(out, req.slots.len() as u32);
    for (name, variants) in &req.slots {
        put_str(out, name);
        put_u32(out, variants.len() as u32);
        for (id, attrs) in variants {
            put_str(out, id);
            put_u32(out, attrs.len() as u32);
            for (k, v) in attrs {
                put_str(out, k);
                put_str(out, v);
            }
        }
    }
    put_sparse(out, &req.context);
    put_u64(out, req.ts_ms);
    out.push(req.explain as u8 | (!req.track as u8) << 1);
    // The arm it was made under, targeting applied; records before experiments end above.
    if let Some((experiment, arm)) = req.arm {
        out.push(1);
        put_u32(out, experiment);
        out.extend_from_slice(&arm.to_le_bytes());
    }
}

/// `Reward`.
pub fn reward(out: &mut Vec<u8>, r: &ValidReward) {
    out.push(tag::REWARD);
    put_u64(out, r.decision.0);
    put_u64(out, r.item_key);
    put_str(out, &r.item);
    put_f32(out, r.value);
    put_u64(out, r.ts_ms);
}

/// `Upsert`.
pub fn upsert(out: &mut Vec<u8>, f: &ItemFeatures) {
    out.push(tag::UPSERT);
    put_item(out, f);
}

/// `Remove`.
pub fn remove(out: &mut Vec<u8>, key: u64) {
    out.push(tag::REMOVE);
    put_u64(out, key);
}

/// `Forget`.
pub fn forget(out: &mut Vec<u8>, user: &UserId) {
    out.push(tag::FORGET);
    put_str(out, user.as_str());
}

/// `Consent`.
pub fn consent(out: &mut Vec<u8>, user_key: u64, consent: crate::consent::Consent) {
    out.push(tag::CONSENT);
    put_u64(out, user_key);
    out.push(consent.bits());
}

/// `Advance`.
pub fn advance(out: &mut Vec<u8>, now_ms: u64) {
    out.push(tag::ADVANCE);
    put_u64(out, now_ms);
}

/// `Tick`.
pub fn tick(out: &mut Vec<u8>, now_ms: u64, mix: Option<&Pulled>) {
    out.push(tag::TICK);
    put_u64(out, now_ms);
    match mix {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            put_pulled(out, p);
        }
    }
}

/// Decodes one record's payload.
pub fn decode(bytes: &[u8]) -> Result<Record, String> {
    let mut d = Dec { bytes, at: 0 };
    let record = match d.u8()? {
        tag::START => Record::Start {
            next_sequence: d.u64()?,
        },
        tag::EVENT => Record::Event(d.event()?),
        tag::EVENT_WITH_ID => {
            let mut ev = d.event()?;
            ev.event_id = Some(d.u64()?);
            Record::Event(ev)
        }
        tag::EVENT_WITH_FACTS => {
            let mut ev = d.event()?;
            let has_id = d.u8()? != 0;
            let id = d.u64()?;
            ev.event_id = has_id.then_some(id);
            ev.facts = Some(Box::new(EventFacts {
                device: d.opt_string()?.map(Into::into),
                location: d.opt_string()?.map(Into::into),
                hour: Some(d.u8()?).filter(|h| *h < 24),
            }));
            Record::Event(ev)
        }
        tag::DECIDE => {
            let req = d.decide()?;
            let n = d.len()?;
            let placed = (0..n).map(|_| d.string()).collect::<Result<_, _>>()?;
            // Older records end here.
            let arm = match d.remaining() {
                0 => None,
                _ => match d.u8()? {
                    0 => None,
                    _ => Some((d.u32()?, d.u16()?)),
                },
            };
            Record::Decide(req, placed, arm)
        }
        tag::DECIDE_TEMPLATE => Record::DecideTemplate(d.decide_template()?),
        tag::REWARD => Record::Reward(ValidReward {
            decision: DecisionId(d.u64()?),
            item_key: d.u64()?,
            item: d.string()?,
            value: d.f32()?,
            ts_ms: d.u64()?,
        }),
        tag::UPSERT => Record::Upsert(Arc::new(d.item()?)),
        tag::REMOVE => Record::Remove(d.u64()?),
        tag::FORGET => Record::Forget(d.user()?),
        tag::CONSENT => Record::Consent(d.u64()?, crate::consent::Consent::from_bits(d.u8()?)),
        tag::ADVANCE => Record::Advance(d.u64()?),
        tag::TICK => Record::Tick {
            now_ms: d.u64()?,
            mix: match d.u8()? {
                0 => None,
                _ => Some(d.pulled()?),
            },
        },
        tag::TRIGGERS => {
            let version = d.u64()?;
            let n = d.len()?;
            let mut specs = Vec::new();
            for _ in 0..n {
                let spec = crate::config::TriggerConfig {
                    name: d.string()?,
                    when: d.string()?,
                    cooldown_s: d.u64()?,
                    webhook: match d.u8()? {
                        0 => None,
                        1 => Some(false),
                        _ => Some(true),
                    },
                    webhook_url: d.opt_string()?,
                };
                specs.push((spec, d.u64()?));
            }
            Record::Triggers(version, specs)
        }
        other => return Err(format!("unknown record tag {other}")),
    };
    if d.at != bytes.len() {
        return Err(format!("{} bytes left after a record", bytes.len() - d.at));
    }
    Ok(record)
}

/// A little-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, x: u32) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// A little-endian `u64`.
pub fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// A little-endian `f32`.
pub fn put_f32(out: &mut Vec<u8>, x: f32) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// A little-endian `f64`.
pub fn put_f64(out: &mut Vec<u8>, x: f64) {
    out.extend_from_slice(&x.to_le_bytes());
}

/// A string: its `u32` length, then its bytes.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// An optional string: a presence byte, then the string.
pub fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn put_f32s(out: &mut Vec<u8>, xs: &[f32]) {
    put_u32(out, xs.len() as u32);
    for x in xs {
        put_f32(out, *x);
    }
}

fn put_sparse(out: &mut Vec<u8>, v: &SparseVec) {
    put_u32(out, v.entries.len() as u32);
    for &(i, x) in &v.entries {
        put_u32(out, i);
        put_f32(out, x);
    }
}

/// An item's features: id, attributes, vector, and the computed `φ` and `e0` (stored, not
/// recomputed, so a replay does not depend on the feature hashing staying the same).
pub fn put_item(out: &mut Vec<u8>, f: &ItemFeatures) {
    put_str(out, f.id.as_str());
    put_u32(out, f.attrs.len() as u32);
    for (k, v) in &f.attrs {
        put_str(out, k);
        put_str(out, v);
    }
    match &f.vector {
        Some(v) => {
            out.push(1);
            put_f32s(out, v);
        }
        None => out.push(0),
    }
    put_f32s(out, &f.phi);
    put_f32s(out, &f.e0);
}

fn put_pulled(out: &mut Vec<u8>, p: &Pulled) {
    match &p.dense {
        Some(d) => {
            out.push(1);
            put_f32s(out, &d.g);
            put_f32s(out, &d.big_g);
            put_f32s(out, &d.state_w);
            put_f32(out, d.pop_w);
            put_f32(out, d.co_w);
            put_f64(out, d.pop_latest_tau);
        }
        None => out.push(0),
    }
    put_u32(out, p.items.len() as u32);
    for m in &p.items {
        put_u64(out, m.key);
        put_f32(out, m.bias);
        put_f32s(out, &m.embedding);
        put_f64(out, m.pop_log);
    }
    put_u32(out, p.engagements.len() as u32);
    for (key, recent) in &p.engagements {
        put_u64(out, *key);
        let recent = recent.as_slice();
        out.push(recent.len() as u8);
        for &k in recent {
            put_u64(out, k);
        }
    }
}

/// A reader over one record's bytes; every read checks the length.
pub struct Dec<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Dec { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("a record cut short at byte {}", self.at));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A little-endian `f32`.
    pub fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A little-endian `f64`.
    pub fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > self.bytes.len() - self.at {
            return Err(format!("a length {n} past the record's end"));
        }
        Ok(n)
    }

    /// A string written by `put_str`.
    pub fn string(&mut self) -> Result<String, String> {
        let n = self.len()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "a string that is not UTF-8".to_string())
    }

    /// An optional string written by `put_opt_str`.
    pub fn opt_string(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }

    fn f32s(&mut self) -> Result<Vec<f32>, String> {
        let n = self.len()?;
        (0..n).map(|_| self.f32()).collect()
    }

    fn sparse(&mut self) -> Result<SparseVec, String> {
        let n = self.len()?;
        let entries = (0..n)
            .map(|_| Ok((self.u32()?, self.f32()?)))
            .collect::<Result<_, String>>()?;
        Ok(SparseVec { entries })
    }

    fn user(&mut self) -> Result<UserId, String> {
        UserId::from_string(self.string()?).map_err(|e| e.to_string())
    }

    fn kind(&mut self) -> Result<EventKind, String> {
        let k = self.u8()? as usize;
        EventKind::ALL
            .get(k)
            .copied()
            .ok_or_else(|| format!("unknown event kind {k}"))
    }

    fn event(&mut self) -> Result<ValidEvent, String> {
        let user = self.user()?;
        let kind = self.kind()?;
        let item = match self.u8()? {
            0 => None,
            _ => Some((self.u64()?, self.string()?)),
        };
        let value = self.f64()?;
        let ts_ms = self.u64()?;
        let context = self.sparse()?;
        let decision = DecisionId(self.u64()?);
        let decision = (self.u8()? != 0).then_some(decision);
        Ok(ValidEvent {
            user,
            kind,
            item,
            value,
            ts_ms,
            context,
            decision,
            event_id: None,
            facts: None,
        })
    }

    fn decide(&mut self) -> Result<ValidDecide, String> {
        let user = self.user()?;
        let n = self.len()?;
        let mut candidates = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.u64()?;
            let id = String::new();
            let inline = match self.u8()? {
                0 => None,
                _ => Some(Arc::new(self.item()?)),
            };
            candidates.push(ValidCandidate { key, id, inline });
        }
        let (n, context) = (self.u32()? as usize, self.sparse()?);
        let ts_ms = self.u64()?;
        let flags = self.u8()?;
        let saturation = match flags & 4 {
            0 => None,
            _ => Some(Arc::new(self.saturation()?)),
        };
        let tone = match flags & 8 {
            0 => None,
            _ => Some(ToneInput {
                message_sentiment: match self.u8()? {
                    0 => None,
                    _ => Some(self.f32()?),
                },
            }),
        };
        Ok(ValidDecide {
            // Arms are assigned by the engine's registry, which the log does not record.
            arm: None,
            user,
            candidates,
            n,
            context,
            ts_ms,
            explain: flags & 1 != 0,
            track: flags & 2 == 0,
            raw_context: None,
            // Nor is the rule set (`docs/rules.md`, Replay).
            rules: None,
            saturation,
            tone,
        })
    }

    /// A decision's own saturation control, as `put_saturation` wrote it.
    fn saturation(&mut self) -> Result<SaturationConfig, String> {
        let n = self.len()?;
        let mut caps = Vec::with_capacity(n);
        for _ in 0..n {
            caps.push(FrequencyCap {
                attribute: self.opt_string()?,
                max: self.u32()?,
                window_s: self.u64()?,
            });
        }
        let fatigue = match self.u8()? {
            0 => None,
            _ => Some(Fatigue {
                after: self.u32()?,
                penalty: self.f32()?,
            }),
        };
        let diversity = match self.u8()? {
            0 => None,
            _ => Some(Diversity {
                attribute: self.string()?,
                max_per_value: self.u32()?,
            }),
        };
        let s = SaturationConfig {
            caps,
            fatigue,
            diversity,
            max_tracked: self.u32()?,
        };
        s.validate()?;
        Ok(s)
    }

    fn decide_template(&mut self) -> Result<LoggedTemplateDecide, String> {
        let user = self.user()?;
        let template = (self.string()?, self.u64()?);
        let n = self.len()?;
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.string()?;
            let n = self.len()?;
            let mut variants = Vec::with_capacity(n);
            for _ in 0..n {
                let id = self.string()?;
                let n = self.len()?;
                let attrs = (0..n)
                    .map(|_| Ok((self.string()?, self.string()?)))
                    .collect::<Result<_, String>>()?;
                variants.push((id, attrs));
            }
            slots.push((name, variants));
        }
        let context = self.sparse()?;
        let ts_ms = self.u64()?;
        let flags = self.u8()?;
        let arm = match self.remaining() {
            0 => None,
            _ => match self.u8()? {
                0 => None,
                _ => Some((self.u32()?, self.u16()?)),
            },
        };
        Ok(LoggedTemplateDecide {
            user,
            template,
            slots,
            context,
            ts_ms,
            explain: flags & 1 != 0,
            track: flags & 2 == 0,
            arm,
        })
    }

    /// An item's features, as `put_item` wrote them.
    pub fn item(&mut self) -> Result<ItemFeatures, String> {
        let id = ItemId::from_string(self.string()?).map_err(|e| e.to_string())?;
        let n = self.len()?;
        let attrs = (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect::<Result<_, String>>()?;
        let vector = match self.u8()? {
            0 => None,
            _ => Some(self.f32s()?.into_boxed_slice()),
        };
        Ok(ItemFeatures {
            id,
            attrs,
            vector,
            phi: self.f32s()?.into_boxed_slice(),
            e0: self.f32s()?.into_boxed_slice(),
        })
    }

    fn pulled(&mut self) -> Result<Pulled, String> {
        let dense = match self.u8()? {
            0 => None,
            _ => Some(PulledDense {
                g: self.f32s()?,
                big_g: self.f32s()?,
                state_w: self.f32s()?,
                pop_w: self.f32()?,
                co_w: self.f32()?,
                pop_latest_tau: self.f64()?,
            }),
        };
        let n = self.len()?;
        let items = (0..n)
            .map(|_| {
                Ok(PulledItem {
                    key: self.u64()?,
                    bias: self.f32()?,
                    embedding: self.f32s()?.into_boxed_slice(),
                    pop_log: self.f64()?,
                })
            })
            .collect::<Result<_, String>>()?;
        let n = self.len()?;
        let engagements = (0..n)
            .map(|_| {
                let key = self.u64()?;
                let len = self.u8()? as usize;
                if len > RECENT_ITEMS {
                    return Err(format!("{len} recent items (at most {RECENT_ITEMS})"));
                }
                let mut keys = [0u64; RECENT_ITEMS];
                for k in keys.iter_mut().take(len) {
                    *k = self.u64()?;
                }
                Ok((key, RecentItems::from_newest_first(&keys[..len])))
            })
            .collect::<Result<_, String>>()?;
        Ok(Pulled {
            dense,
            items,
            engagements,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_set_round_trips() {
        use crate::config::TriggerConfig;
        let specs = [
            TriggerConfig {
                name: "offer".into(),
                when: "user.scroll_depth > 0.7".into(),
                cooldown_s: 600,
                webhook: Some(false),
                webhook_url: None,
            },
            TriggerConfig {
                name: "souring".into(),
                when: "user.sentiment < -0.4".into(),
                cooldown_s: 0,
                webhook: None,
                webhook_url: Some("http://h:1/x".into()),
            },
        ];
        let v1 = crate::triggers::TriggerSet::compile(&specs[..1], 1, "").unwrap();
        let set = v1.replaced_by(&specs, "").unwrap();
        let mut out = Vec::new();
        triggers(&mut out, &set);
        let Record::Triggers(version, back) = decode(&out).unwrap() else {
            panic!("a trigger set")
        };
        assert_eq!((version, back.as_slice()), (2, set.specs()));
        for cut in 1..out.len() {
            assert!(decode(&out[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn an_event_round_trips() {
        let facts = EventFacts {
            device: Some("mobile".into()),
            location: None,
            hour: Some(21),
        };
        for event_id in [None, Some(99)] {
            for facts in [None, Some(Box::new(facts.clone()))] {
                event_round_trips(event_id, facts);
            }
        }
    }

    fn event_round_trips(event_id: Option<u64>, facts: Option<Box<EventFacts>>) {
        let ev = ValidEvent {
            event_id,
            user: UserId::new("u1").unwrap(),
            kind: EventKind::Dwell,
            item: Some((7, "i7".into())),
            value: 12.5,
            ts_ms: 1_700_000_000_000,
            context: SparseVec {
                entries: vec![(3, 0.5), (9, -0.5)],
            },
            decision: Some(DecisionId(42)),
            facts,
        };
        let mut out = Vec::new();
        event(&mut out, &ev);
        let Record::Event(back) = decode(&out).unwrap() else {
            panic!("not an event");
        };
        assert_eq!(format!("{ev:?}"), format!("{back:?}"));
        // Every prefix is refused, never a panic.
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err());
        }
    }

    proptest::proptest! {
        /// A record that passed its checksum but was written by something else never panics
        /// the decoder: it is an error, which recovery reports with the file and offset.
        #[test]
        fn decoding_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(0u8..=255, 0..256)) {
            let _ = decode(&bytes);
        }

        /// Every tag followed by garbage decodes or fails cleanly.
        #[test]
        fn decoding_a_known_tag_with_garbage_never_panics(
            tag in 1u8..=11,
            rest in proptest::collection::vec(0u8..=255, 0..128),
        ) {
            let mut bytes = vec![tag];
            bytes.extend(rest);
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn a_tick_with_a_mix_round_trips() {
        let pulled = Pulled {
            dense: Some(PulledDense {
                g: vec![1.0, 2.0],
                big_g: vec![0.5; 4],
                state_w: vec![0.0, -1.0],
                pop_w: 0.25,
                co_w: -0.5,
                pop_latest_tau: 12.5,
            }),
            items: vec![PulledItem {
                key: 9,
                bias: 0.1,
                embedding: vec![0.3, 0.4].into(),
                pop_log: f64::NEG_INFINITY,
            }],
            engagements: vec![(7, RecentItems::from_newest_first(&[3, 2, 1]))],
        };
        let mut out = Vec::new();
        tick(&mut out, 5, Some(&pulled));
        let Record::Tick { now_ms, mix } = decode(&out).unwrap() else {
            panic!("not a tick");
        };
        assert_eq!((now_ms, mix), (5, Some(pulled)));
    }
}
