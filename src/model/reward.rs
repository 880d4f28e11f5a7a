//! From an event's signal to numbers the model uses: the composite training reward `r ∈ [0,1]`
//! and the state-vector signal strength `ρ`. Pure functions of the event and `Config`.

use crate::api::EventKind;
use crate::config::{RewardConfig, StateSignalConfig};

/// The training reward of one outcome event, or `None` when the event is no outcome by itself
/// (an impression, a sentiment) and must not train.
pub fn training_reward(cfg: &RewardConfig, kind: EventKind, value: f64) -> Option<f32> {
    let v = value as f32;
    let r = match kind {
        EventKind::Click => cfg.click,
        EventKind::Dwell => cfg.dwell * (v.max(0.0).ln_1p() / cfg.dwell_saturation_s.ln_1p()),
        EventKind::Scroll => cfg.scroll * v,
        EventKind::Conversion => cfg.conversion,
        EventKind::Rating => cfg.rating * ((v - 1.0) / 4.0),
        EventKind::Skip => 0.0,
        EventKind::Impression | EventKind::Sentiment => return None,
    };
    Some(r.clamp(0.0, 1.0))
}

/// Whether an event without a decision is a clear enough outcome to train on by itself.
pub fn is_clear_outcome(cfg: &RewardConfig, kind: EventKind, value: f64) -> bool {
    match kind {
        EventKind::Click | EventKind::Conversion | EventKind::Rating | EventKind::Skip => true,
        EventKind::Dwell => value as f32 >= cfg.clear_dwell_s,
        _ => false,
    }
}

/// Whether the event counts toward the item's decayed popularity: an outcome that says the
/// user engaged with the item (a click, a conversion, a rating of any value, a clear dwell).
pub fn popularity_counts(cfg: &RewardConfig, kind: EventKind, value: f64) -> bool {
    match kind {
        EventKind::Click | EventKind::Conversion | EventKind::Rating => true,
        EventKind::Dwell => value as f32 >= cfg.clear_dwell_s,
        _ => false,
    }
}

/// The signal strength `ρ` the event adds to the state vector (negative for a skip).
pub fn state_signal(cfg: &StateSignalConfig, kind: EventKind, value: f64) -> f32 {
    let v = value as f32;
    match kind {
        EventKind::Impression => cfg.impression,
        EventKind::Click => cfg.click,
        EventKind::Dwell => cfg.dwell * v.max(0.0).ln_1p(),
        EventKind::Scroll => cfg.scroll * v,
        EventKind::Conversion => cfg.conversion * (1.0 + v.max(0.0).ln_1p()),
        EventKind::Rating => cfg.rating * (v - 3.0) / 2.0 + cfg.rated,
        EventKind::Skip => cfg.skip,
        EventKind::Sentiment => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_stay_in_unit_interval() {
        let cfg = RewardConfig::default();
        assert_eq!(training_reward(&cfg, EventKind::Click, 1.0), Some(1.0));
        assert_eq!(training_reward(&cfg, EventKind::Rating, 5.0), Some(1.0));
        assert_eq!(training_reward(&cfg, EventKind::Rating, 1.0), Some(0.0));
        assert_eq!(training_reward(&cfg, EventKind::Dwell, 1e6), Some(1.0));
        assert_eq!(training_reward(&cfg, EventKind::Impression, 1.0), None);
        let half = training_reward(&cfg, EventKind::Dwell, 5.0).unwrap();
        assert!(half > 0.3 && half < 0.6, "{half}");
    }

    #[test]
    fn state_signals_follow_their_configuration() {
        let cfg = StateSignalConfig::default();
        // By default a skip adds nothing (measured on MovieLens, docs/quality.md); it is
        // negative when configured so.
        assert_eq!(state_signal(&cfg, EventKind::Skip, 1.0), 0.0);
        let negative = StateSignalConfig {
            skip: -0.5,
            ..cfg.clone()
        };
        assert!(state_signal(&negative, EventKind::Skip, 1.0) < 0.0);
        assert!(
            state_signal(&cfg, EventKind::Conversion, 10.0)
                > state_signal(&cfg, EventKind::Click, 1.0)
        );
        // Any rating says the user engaged: a neutral 3 enters the state with `rated`, and
        // higher ratings count more.
        assert_eq!(state_signal(&cfg, EventKind::Rating, 3.0), cfg.rated);
        assert!(cfg.rated > 0.0);
        assert!(
            state_signal(&cfg, EventKind::Rating, 5.0) > state_signal(&cfg, EventKind::Rating, 3.0)
        );
    }
}
