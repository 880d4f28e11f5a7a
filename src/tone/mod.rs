//! Tone decisions (issue 15, item 2): a chatbot sends each message's sentiment (its own
//! model's score in −1..1, or text for the built-in `lexicon` scorer) and asks which of the
//! configured tones to answer in. The message enters the user's state as a `sentiment` event;
//! the tones are then ranked like items (`tone:<name>`, with attribute `tone`), so rewards on
//! the decision teach the model which tone works for whom and in which mood (the user's
//! decayed sentiment is part of every decision's context), and each tone's configured prior,
//! `sentiment_weight × mood + trend_weight × sentiment_trend`, is added to its logit before
//! the policy samples, so a new deployment answers a sour user empathetically before it has
//! learned anything. The mood is the message's own sentiment (the latest message says most
//! about how to answer it), or the user's decayed sentiment for a message without one; the
//! trend is the live feature (the last five minutes against the long mean). The prior shows
//! in `explain`.
//!
//! This module owns the configuration and the prior; the engine runs the two steps
//! (`engine/tone.rs`) and the shard adds the prior (`Shard::on_decide`).

pub mod lexicon;

use serde::{Deserialize, Serialize};

/// The most tones a configuration may have.
pub const MAX_TONES: usize = 16;

/// The tones a `tone` decision chooses among (`[tone]`; `docs/tone.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToneConfig {
    /// The tones, in the order decisions consider them.
    pub tones: Vec<ToneSpec>,
}

/// One tone and its prior.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToneSpec {
    /// The tone's name (`concise`, `empathetic`…).
    pub name: String,
    /// Logit added per unit of the mood (−1..1): the message's sentiment, else the user's
    /// decayed one.
    pub sentiment_weight: f32,
    /// Logit added per unit of the user's sentiment trend (negative when the mood turns
    /// down).
    pub trend_weight: f32,
}

impl Default for ToneConfig {
    /// Concise for a content user, empathetic for a sour or souring one, neutral between.
    fn default() -> Self {
        let tone = |name: &str, sentiment_weight, trend_weight| ToneSpec {
            name: name.into(),
            sentiment_weight,
            trend_weight,
        };
        ToneConfig {
            tones: vec![
                tone("concise", 1.0, 0.5),
                tone("neutral", 0.0, 0.0),
                tone("empathetic", -1.5, -1.0),
            ],
        }
    }
}

impl ToneConfig {
    /// Checks the tones, naming the first field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.tones.is_empty() || self.tones.len() > MAX_TONES {
            return Err(format!("`tone.tones` must hold 1 to {MAX_TONES} tones"));
        }
        for (i, t) in self.tones.iter().enumerate() {
            crate::ids::ItemId::new(&item_id(&t.name))
                .ok()
                .filter(|_| !t.name.is_empty())
                .ok_or_else(|| format!("`tone.tones[{i}].name` must be a valid, non-empty id"))?;
            if self.tones[..i].iter().any(|u| u.name == t.name) {
                return Err(format!("`tone.tones[{i}].name` repeats `{}`", t.name));
            }
            if !(t.sentiment_weight.is_finite() && t.trend_weight.is_finite()) {
                return Err(format!("`tone.tones[{i}]`'s weights must be finite"));
            }
        }
        Ok(())
    }
}

/// The item id a tone is ranked (and rewarded) as.
pub fn item_id(name: &str) -> String {
    format!("tone:{name}")
}

/// A tone's prior logit for a user in mood `mood` (−1..1) whose sentiment trend is `trend`.
pub fn prior(tone: &ToneSpec, mood: f64, trend: f64) -> f32 {
    tone.sentiment_weight * mood as f32 + tone.trend_weight * trend as f32
}

/// The `mood` context value a tone decision carries for a message's sentiment: five bands
/// (`very_negative` ≤ −0.5 < `negative` ≤ −0.15 < `neutral` < 0.15 ≤ `positive` < 0.5 ≤
/// `very_positive`).
pub fn mood_bucket(sentiment: f64) -> &'static str {
    match sentiment {
        s if s <= -0.5 => "very_negative",
        s if s <= -0.15 => "negative",
        s if s < 0.15 => "neutral",
        s if s < 0.5 => "positive",
        _ => "very_positive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prior_turns_from_concise_to_empathetic_as_the_mood_sours() {
        let cfg = ToneConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        let best = |s, t| {
            let p: Vec<f32> = cfg.tones.iter().map(|x| prior(x, s, t)).collect();
            let i = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            cfg.tones[i].name.clone()
        };
        assert_eq!(best(0.6, 0.0), "concise");
        assert_eq!(best(-0.5, -0.2), "empathetic");
        // Still positive on the long mean but turning down fast: no longer concise.
        assert_ne!(best(0.1, -0.5), "concise");
    }

    #[test]
    fn validate_refuses_empty_repeated_and_non_finite_tones() {
        let mut cfg = ToneConfig::default();
        cfg.tones[2].name = "concise".into();
        assert!(cfg.validate().unwrap_err().contains("repeats"));
        cfg.tones[2].name = String::new();
        assert!(cfg.validate().unwrap_err().contains("tones[2].name"));
        cfg.tones[2].name = "warm".into();
        cfg.tones[1].trend_weight = f32::INFINITY;
        assert!(cfg.validate().unwrap_err().contains("finite"));
        assert!(ToneConfig { tones: vec![] }.validate().is_err());
    }
}
