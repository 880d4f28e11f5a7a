//! Validation at the engine's boundary: every caller input becomes a validated, hashed message
//! here or is refused with an `Error::Invalid` that names the field. Nothing invalid reaches a
//! shard, so no input can disturb another user's state.

use std::sync::Arc;

use crate::actor::features::EventFacts;
use crate::api::{Candidate, DecideRequest, Event, EventKind, ItemSpec};
use crate::config::Config;
use crate::error::{Error, Problem};
use crate::ids::{stable_hash, validate_id, DecisionId, ItemId, MAX_ID_BYTES};
use crate::model::{FeatureSpace, ItemFeatures, SparseVec};
use crate::shard::msg::{ValidCandidate, ValidDecide, ValidEvent, ValidReward};

/// Longest dense item vector accepted.
pub const MAX_VECTOR_LEN: usize = 4096;

/// Most attributes one item may carry.
pub const MAX_ATTRS: usize = 256;

fn finite(field: &'static str, v: f64) -> Result<f64, Error> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::invalid(field, Problem::NotFinite))
    }
}

fn in_range(field: &'static str, v: f64, min: f64, max: f64) -> Result<f64, Error> {
    let v = finite(field, v)?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid(field, Problem::OutOfRange { min, max }))
    }
}

/// The event time: the given one if not too far in the future, else now.
pub fn timestamp(cfg: &Config, ts_ms: Option<u64>, now_ms: u64) -> Result<u64, Error> {
    match ts_ms {
        None => Ok(now_ms),
        Some(ts) if ts > now_ms.saturating_add(cfg.max_future_skew_ms) => Err(Error::invalid(
            "ts",
            Problem::InFuture {
                max_skew_ms: cfg.max_future_skew_ms,
            },
        )),
        Some(ts) => Ok(ts),
    }
}

/// Checks and hashes context pairs (unscaled).
pub fn context(
    cfg: &Config,
    space: &FeatureSpace,
    pairs: &[(String, String)],
) -> Result<SparseVec, Error> {
    if pairs.len() > cfg.max_context_pairs {
        return Err(Error::invalid(
            "context",
            Problem::TooMany {
                max: cfg.max_context_pairs,
            },
        ));
    }
    let mut entries = Vec::with_capacity(2 * pairs.len());
    for (k, v) in pairs {
        if k.is_empty() {
            return Err(Error::invalid(
                "context",
                Problem::Malformed("non-empty keys"),
            ));
        }
        if k.len() > MAX_ID_BYTES || v.len() > MAX_ID_BYTES {
            return Err(Error::invalid(
                "context",
                Problem::TooLong { max: MAX_ID_BYTES },
            ));
        }
        entries.extend(space.buckets(k, v));
    }
    Ok(SparseVec { entries })
}

/// The value of an event, checked against its kind's range; kinds without a value get 1.
fn event_value(cfg: &Config, kind: EventKind, value: Option<f64>) -> Result<f64, Error> {
    let h = &cfg.hygiene;
    let required = |v: Option<f64>| v.ok_or(Error::invalid("value", Problem::Missing));
    match kind {
        EventKind::Impression | EventKind::Click | EventKind::Skip => {
            value.map_or(Ok(1.0), |v| finite("value", v))
        }
        EventKind::Dwell => in_range("value", required(value)?, 0.0, h.max_dwell_s),
        EventKind::Scroll => in_range("value", required(value)?, 0.0, 1.0),
        EventKind::Conversion => value.map_or(Ok(1.0), |v| {
            in_range("value", v, 0.0, h.max_conversion_value)
        }),
        EventKind::Rating => in_range("value", required(value)?, 1.0, 5.0),
        EventKind::Sentiment => in_range("value", required(value)?, -1.0, 1.0),
    }
}

/// Validates an event.
pub fn event(
    cfg: &Config,
    space: &FeatureSpace,
    ev: Event,
    now_ms: u64,
) -> Result<ValidEvent, Error> {
    let user = cfg.consent.user_id(ev.user)?;
    let value = event_value(cfg, ev.kind, ev.value)?;
    let item = match ev.item {
        Some(item) => {
            let id = ItemId::new(&item)?;
            Some((id.key(), item))
        }
        None if ev.kind.needs_item() => return Err(Error::invalid("item", Problem::Missing)),
        None => None,
    };
    let event_id = match &ev.event_id {
        Some(id) => {
            validate_id("event_id", id)?;
            Some(stable_hash(id.as_bytes()))
        }
        None => None,
    };
    Ok(ValidEvent {
        event_id,
        user,
        kind: ev.kind,
        item,
        value,
        ts_ms: timestamp(cfg, ev.ts_ms, now_ms)?,
        context: context(cfg, space, &ev.context)?,
        facts: EventFacts::of(&ev.context),
        decision: ev.decision,
    })
}

/// Validates an item and computes its features.
pub fn item(cfg: &Config, space: &FeatureSpace, spec: ItemSpec) -> Result<ItemFeatures, Error> {
    let _ = cfg;
    let id = ItemId::new(&spec.id)?;
    if spec.attrs.len() > MAX_ATTRS {
        return Err(Error::invalid("attrs", Problem::TooMany { max: MAX_ATTRS }));
    }
    for (k, v) in &spec.attrs {
        if k.is_empty() {
            return Err(Error::invalid(
                "attrs",
                Problem::Malformed("non-empty keys"),
            ));
        }
        if k.len() > MAX_ID_BYTES || v.len() > MAX_ID_BYTES {
            return Err(Error::invalid(
                "attrs",
                Problem::TooLong { max: MAX_ID_BYTES },
            ));
        }
    }
    if let Some(v) = &spec.vector {
        if v.is_empty() || v.len() > MAX_VECTOR_LEN {
            return Err(Error::invalid(
                "vector",
                Problem::WrongDimension { got: v.len() },
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("vector", Problem::NotFinite));
        }
    }
    Ok(space.item(id, spec.attrs, spec.vector))
}

/// Validates a decision request.
pub fn decide(
    cfg: &Config,
    space: &FeatureSpace,
    req: DecideRequest,
    now_ms: u64,
    keep_raw_context: bool,
) -> Result<ValidDecide, Error> {
    let user = cfg.consent.user_id(req.user.clone())?;
    if req.candidates.is_empty() {
        return Err(Error::invalid("candidates", Problem::Empty));
    }
    if req.candidates.len() > cfg.max_candidates {
        return Err(Error::invalid(
            "candidates",
            Problem::TooMany {
                max: cfg.max_candidates,
            },
        ));
    }
    if req.n == 0 || req.n > cfg.max_candidates {
        return Err(Error::invalid(
            "n",
            Problem::OutOfRange {
                min: 1.0,
                max: cfg.max_candidates as f64,
            },
        ));
    }
    let saturation = match req.saturation {
        Some(s) => {
            s.validate()
                .map_err(|e| Error::invalid("saturation", Problem::Rejected(e)))?;
            Some(Arc::new(s))
        }
        None => None,
    };
    let mut candidates = Vec::with_capacity(req.candidates.len());
    let mut seen = SeenKeys::default();
    for c in req.candidates {
        let c = match c {
            Candidate::Id(id) => {
                validate_id("candidates", &id)?;
                ValidCandidate {
                    key: stable_hash(id.as_bytes()),
                    id,
                    inline: None,
                }
            }
            Candidate::Inline(spec) => {
                let f = item(cfg, space, spec)?;
                ValidCandidate {
                    key: f.id.key(),
                    id: f.id.as_str().to_string(),
                    inline: Some(Arc::new(f)),
                }
            }
        };
        // A candidate named twice is placed once: the first occurrence wins.
        if seen.insert(c.key, &candidates) {
            candidates.push(c);
        }
    }
    Ok(ValidDecide {
        arm: None,
        user,
        n: req.n.min(candidates.len()),
        candidates,
        context: context(cfg, space, &req.context)?,
        ts_ms: timestamp(cfg, req.ts_ms, now_ms)?,
        explain: req.explain,
        track: req.track,
        raw_context: keep_raw_context.then_some(req.context),
        rules: None,
        saturation,
        tone: None,
    })
}

/// Which candidate keys a decision already holds, without allocating: a 1024-bit filter, and
/// a scan of the candidates so far only when the filter says "maybe".
#[derive(Default)]
struct SeenKeys([u64; 16]);

impl SeenKeys {
    /// Records `key`; false if a candidate in `so_far` already has it.
    fn insert(&mut self, key: u64, so_far: &[ValidCandidate]) -> bool {
        let bit = (key % 1024) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.0[word] & mask != 0 && so_far.iter().any(|c| c.key == key) {
            return false;
        }
        self.0[word] |= mask;
        true
    }
}

/// Validates an explicit reward (value in 0..=1) at its validated time `ts_ms`.
pub fn reward(
    decision: DecisionId,
    item: &str,
    value: f64,
    ts_ms: u64,
) -> Result<ValidReward, Error> {
    let id = ItemId::new(item)?;
    let value = in_range("value", value, 0.0, 1.0)? as f32;
    Ok(ValidReward {
        decision,
        item_key: id.key(),
        item: item.to_string(),
        value,
        ts_ms,
    })
}
