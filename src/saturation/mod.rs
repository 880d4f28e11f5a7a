//! Saturation control (issue 15): what keeps a user from seeing the same thing too often.
//!
//! Three controls, configured globally (`[saturation]`) and replaceable per decision:
//! - **frequency caps**: at most `max` impressions per `window_s` of one item, or of one value
//!   of an attribute (`category = shoes`), per user; a capped candidate is not placed;
//! - **fatigue**: an item shown `after` times without engagement is demoted (its logit lowered
//!   by `penalty` for each impression from the `after`-th on) until the user engages with it;
//! - **diversity**: at most `max_per_value` placements per value of an attribute in one
//!   decision.
//!
//! Each maps onto a placement the rules already keep exact (`rules::Applied`): a capped item
//! leaves the sampled set, fatigue moves logits before the policy samples, and diversity is a
//! per-slot constraint, so every propensity stays the policy's probability of that choice.
//!
//! This module owns the configuration (`SaturationConfig`), the per-user memory of what was
//! shown (`Exposures`, kept by the actor only while a cap or fatigue is configured) and the
//! judgement of one decision's candidates (`judge`). It reads no clock (times come with the
//! messages) and changes no learned state.

mod exposure;
mod judge;

pub use exposure::Exposures;
pub use judge::{diversity_effects, judge, Judged};

use serde::{Deserialize, Serialize};

/// The most impressions a frequency cap may allow per window (each counted impression keeps
/// its time, so this bounds the memory of one item or value).
pub const MAX_CAP: u32 = 64;
/// The longest window a frequency cap may have: 30 days.
pub const MAX_WINDOW_S: u64 = 30 * 86_400;

/// Saturation control (`[saturation]`; `docs/saturation.md`). The default is off: no caps, no
/// fatigue, no diversity, and no per-user memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaturationConfig {
    /// Frequency caps, each on items or on one attribute's values.
    pub caps: Vec<FrequencyCap>,
    /// Demotion of items shown repeatedly without engagement.
    pub fatigue: Option<Fatigue>,
    /// At most so many placements per attribute value in one decision.
    pub diversity: Option<Diversity>,
    /// The most items and attribute values a user's exposure memory keeps (the least recently
    /// shown is forgotten first).
    pub max_tracked: u32,
}

/// At most `max` impressions per `window_s` seconds, per user, of one item (no `attribute`)
/// or of one value of `attribute`. An impression exactly `window_s` ago has left the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrequencyCap {
    /// The attribute whose values are capped; `None` caps each item.
    pub attribute: Option<String>,
    /// Impressions allowed per window, 1..=`MAX_CAP`.
    pub max: u32,
    /// The window, seconds, 1..=`MAX_WINDOW_S`.
    pub window_s: u64,
}

/// An item shown `after` times since the user last engaged with it (a click, dwell,
/// conversion, rating or positive reward) has its logit lowered by `penalty × (shown − after
/// + 1)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fatigue {
    /// Impressions without engagement before the demotion starts, at least 1.
    pub after: u32,
    /// Logit units taken per impression from the `after`-th on, positive and finite.
    pub penalty: f32,
}

impl Default for Fatigue {
    fn default() -> Self {
        Fatigue {
            after: 3,
            penalty: 1.0,
        }
    }
}

/// At most `max_per_value` placements per value of `attribute` in one decision's top n
/// (candidates without the attribute are not limited).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Diversity {
    /// The attribute, e.g. `category`.
    pub attribute: String,
    /// Placements allowed per value, at least 1.
    pub max_per_value: u32,
}

/// The default `max_tracked`.
const DEFAULT_MAX_TRACKED: u32 = 256;

impl SaturationConfig {
    /// Whether anything is configured.
    pub fn is_off(&self) -> bool {
        self.caps.is_empty() && self.fatigue.is_none() && self.diversity.is_none()
    }

    /// Whether a user's impressions need remembering (a cap or fatigue is configured).
    pub fn remembers(&self) -> bool {
        !self.caps.is_empty() || self.fatigue.is_some()
    }

    /// `max_tracked`, with 0 read as the default.
    pub fn tracked(&self) -> usize {
        match self.max_tracked {
            0 => DEFAULT_MAX_TRACKED as usize,
            n => n as usize,
        }
    }

    /// Checks every field, naming the first one at fault (`saturation.caps[1].max must be…`).
    pub fn validate(&self) -> Result<(), String> {
        fn check(ok: bool, field: String, want: &str) -> Result<(), String> {
            if ok {
                Ok(())
            } else {
                Err(format!("`{field}` must be {want}"))
            }
        }
        for (i, cap) in self.caps.iter().enumerate() {
            let field = |name: &str| format!("saturation.caps[{i}].{name}");
            check(
                (1..=MAX_CAP).contains(&cap.max),
                field("max"),
                &format!("in 1..={MAX_CAP}"),
            )?;
            check(
                (1..=MAX_WINDOW_S).contains(&cap.window_s),
                field("window_s"),
                &format!("in 1..={MAX_WINDOW_S}"),
            )?;
            if let Some(a) = &cap.attribute {
                check(!a.is_empty(), field("attribute"), "a non-empty name")?;
            }
        }
        if let Some(f) = &self.fatigue {
            check(
                f.after >= 1,
                "saturation.fatigue.after".into(),
                "at least 1",
            )?;
            check(
                f.penalty.is_finite() && f.penalty > 0.0,
                "saturation.fatigue.penalty".into(),
                "positive and finite",
            )?;
        }
        if let Some(d) = &self.diversity {
            check(
                !d.attribute.is_empty(),
                "saturation.diversity.attribute".into(),
                "a non-empty name",
            )?;
            check(
                d.max_per_value >= 1,
                "saturation.diversity.max_per_value".into(),
                "at least 1",
            )?;
        }
        check(
            self.max_tracked <= 65_536,
            "saturation.max_tracked".into(),
            "at most 65536 (0: the default, 256)",
        )
    }

    /// The most impressions any cap keeps per item (`items`) or per attribute value.
    fn keep(&self, items: bool) -> usize {
        let caps = self.caps.iter().filter(|c| c.attribute.is_none() == items);
        caps.map(|c| c.max as usize).max().unwrap_or(0)
    }
}

/// Remembers one impression of item `key` with attributes `attrs` at `ts_ms`: the item's
/// (when an item cap or fatigue needs it) and each value of an attribute a cap names.
pub fn record(
    seen: &mut Exposures,
    cfg: &SaturationConfig,
    key: u64,
    attrs: &[(String, String)],
    ts_ms: u64,
) {
    let tracked = cfg.tracked();
    let keep = cfg.keep(true);
    if keep > 0 || cfg.fatigue.is_some() {
        seen.shown(key, ts_ms, keep, cfg.fatigue.is_some(), tracked);
    }
    let keep = cfg.keep(false);
    if keep == 0 {
        return;
    }
    for (k, v) in attrs {
        let capped = cfg.caps.iter().any(|c| c.attribute.as_deref() == Some(k));
        if capped {
            seen.shown(value_key(k, v), ts_ms, keep, false, tracked);
        }
    }
}

/// The key an attribute value's impressions are remembered under (beside item keys; the two
/// never meet in practice: both are 64-bit hashes).
pub fn value_key(attribute: &str, value: &str) -> u64 {
    let a = crate::ids::stable_hash(attribute.as_bytes());
    a.rotate_left(23) ^ crate::ids::stable_hash(value.as_bytes()) ^ 0x5a70_0000_0000_0001
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field_at_fault() {
        let mut c = SaturationConfig {
            caps: vec![
                FrequencyCap {
                    attribute: None,
                    max: 3,
                    window_s: 60,
                },
                FrequencyCap {
                    attribute: Some("category".into()),
                    max: 0,
                    window_s: 60,
                },
            ],
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.contains("saturation.caps[1].max"), "{e}");
        c.caps[1].max = 65;
        assert!(c.validate().unwrap_err().contains("in 1..=64"));
        c.caps[1].max = 5;
        c.caps[0].window_s = 0;
        assert!(c.validate().unwrap_err().contains("caps[0].window_s"));
        c.caps[0].window_s = 60;
        c.fatigue = Some(Fatigue {
            after: 2,
            penalty: f32::NAN,
        });
        assert!(c.validate().unwrap_err().contains("fatigue.penalty"));
        c.fatigue = Some(Fatigue::default());
        c.diversity = Some(Diversity {
            attribute: "category".into(),
            max_per_value: 0,
        });
        assert!(c.validate().unwrap_err().contains("max_per_value"));
        c.diversity.as_mut().unwrap().max_per_value = 2;
        assert_eq!(c.validate(), Ok(()));
        assert!(!c.is_off() && c.remembers());
        assert_eq!((c.keep(true), c.keep(false)), (3, 5));
    }
}
