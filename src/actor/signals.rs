//! Per-user signal hygiene: decayed mean and variance of each numeric signal with a z-score
//! outlier filter, and decayed counters (engagement velocity, clicks per hour, sentiment trend)
//! that are exported and fed to the model as context features.
//!
//! Time arrives as event milliseconds; this module never reads the clock.

use crate::api::{EventKind, SignalSummary};
use crate::config::HygieneConfig;
use crate::model::math::decay_factor;

/// An exponentially decayed mean and variance (West's weighted incremental algorithm).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecayedStat {
    weight: f32,
    mean: f32,
    m2: f32,
    samples: u32,
}

impl DecayedStat {
    fn decay(&mut self, f: f32) {
        self.weight *= f;
        self.m2 *= f;
    }

    /// The decayed mean.
    pub fn mean(&self) -> f32 {
        self.mean
    }

    /// The decayed standard deviation.
    pub fn std(&self) -> f32 {
        if self.weight > 0.0 {
            (self.m2 / self.weight).max(0.0).sqrt()
        } else {
            0.0
        }
    }

    /// The z-score of `x`, with a floor on the spread so that a run of identical values does
    /// not make every other value infinitely surprising.
    pub fn z(&self, x: f32) -> f32 {
        let floor = 0.1 * self.mean.abs() + 1e-3;
        (x - self.mean).abs() / self.std().max(floor)
    }

    /// Adds a sample.
    pub fn push(&mut self, x: f32) {
        self.weight += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.weight;
        self.m2 += delta * (x - self.mean);
        self.samples = self.samples.saturating_add(1);
    }
}

/// A user's decayed signal statistics and counters.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Signals {
    dwell: DecayedStat,
    conversion: DecayedStat,
    engagement: f32,
    clicks: f32,
    sentiment_sum: f32,
    sentiment_weight: f32,
    last_ms: u64,
    engagement_at_push: f32,
    /// Events kept out of training as outliers.
    pub outliers: u32,
}

impl Signals {
    /// Decays everything to `ts_ms` (a no-op for earlier times).
    pub fn advance(&mut self, ts_ms: u64, cfg: &HygieneConfig) {
        if ts_ms <= self.last_ms {
            return;
        }
        if self.last_ms != 0 {
            let f = decay_factor(
                (ts_ms - self.last_ms) as f64 / 1000.0,
                cfg.stats_half_life_s,
            );
            self.dwell.decay(f);
            self.conversion.decay(f);
            self.engagement *= f;
            self.clicks *= f;
            self.sentiment_sum *= f;
            self.sentiment_weight *= f;
        }
        self.last_ms = ts_ms;
    }

    /// Records one event's signal. Returns `true` when the value is an outlier for this user:
    /// it is counted, its effect on the statistics is clamped, and the caller keeps it out of
    /// training.
    pub fn observe(&mut self, kind: EventKind, value: f64, cfg: &HygieneConfig) -> bool {
        self.engagement += 1.0;
        let v = value as f32;
        let stat = match kind {
            EventKind::Click => {
                self.clicks += 1.0;
                return false;
            }
            EventKind::Sentiment => {
                self.sentiment_sum += v;
                self.sentiment_weight += 1.0;
                return false;
            }
            EventKind::Dwell => &mut self.dwell,
            EventKind::Conversion => &mut self.conversion,
            _ => return false,
        };
        let outlier = stat.samples >= cfg.min_samples && stat.z(v) > cfg.z_threshold;
        if outlier {
            self.outliers = self.outliers.saturating_add(1);
            // Winsorize: a lasting shift still moves the statistics, one absurd value does not.
            let bound = stat.std().max(0.1 * stat.mean.abs() + 1e-3) * cfg.z_threshold;
            stat.push(v.clamp(stat.mean - bound, stat.mean + bound));
        } else {
            stat.push(v);
        }
        outlier
    }

    /// Decayed events per hour.
    pub fn engagement_per_hour(&self, cfg: &HygieneConfig) -> f64 {
        self.engagement as f64 * std::f64::consts::LN_2 / cfg.stats_half_life_s * 3600.0
    }

    /// The factor that decays the counters from their time to `ts_ms` (1 for earlier times).
    fn factor_at(&self, ts_ms: u64, cfg: &HygieneConfig) -> f64 {
        let elapsed_s = ts_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        decay_factor(elapsed_s, cfg.stats_half_life_s) as f64
    }

    /// Decayed events per hour as of `ts_ms`, without moving the counters.
    pub fn engagement_per_hour_at(&self, ts_ms: u64, cfg: &HygieneConfig) -> f64 {
        self.engagement_per_hour(cfg) * self.factor_at(ts_ms, cfg)
    }

    /// Decayed clicks per hour as of `ts_ms`, without moving the counters.
    pub fn clicks_per_hour_at(&self, ts_ms: u64, cfg: &HygieneConfig) -> f64 {
        let per_hour = std::f64::consts::LN_2 / cfg.stats_half_life_s * 3600.0;
        self.clicks as f64 * per_hour * self.factor_at(ts_ms, cfg)
    }

    /// Decayed mean sentiment, 0 when none was seen.
    pub fn sentiment(&self) -> f32 {
        if self.sentiment_weight > 1e-6 {
            self.sentiment_sum / self.sentiment_weight
        } else {
            0.0
        }
    }

    /// The exported summary.
    pub fn summary(&self, cfg: &HygieneConfig) -> SignalSummary {
        let per_hour = std::f64::consts::LN_2 / cfg.stats_half_life_s * 3600.0;
        SignalSummary {
            engagement_per_hour: self.engagement as f64 * per_hour,
            clicks_per_hour: self.clicks as f64 * per_hour,
            dwell_mean_s: self.dwell.mean() as f64,
            dwell_std_s: self.dwell.std() as f64,
            sentiment_trend: self.sentiment() as f64,
            outliers_filtered: self.outliers as u64,
        }
    }

    /// Whether engagement halved since the last call that returned (and recorded) a push.
    pub fn engagement_dropped_since_push(&mut self) -> bool {
        let dropped = self.engagement < 0.5 * self.engagement_at_push;
        self.engagement_at_push = self.engagement;
        dropped
    }

    /// The user-derived context features: sentiment bucket and engagement bucket.
    pub fn context_buckets(&self, cfg: &HygieneConfig) -> [(&'static str, &'static str); 2] {
        let s = self.sentiment();
        let sentiment = if s < -0.2 {
            "negative"
        } else if s > 0.2 {
            "positive"
        } else {
            "neutral"
        };
        let e = self.engagement_per_hour(cfg);
        let engagement = if e < 6.0 {
            "low"
        } else if e < 60.0 {
            "medium"
        } else {
            "high"
        };
        [("_sentiment", sentiment), ("_engagement", engagement)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_dwell_is_an_outlier_after_warmup() {
        let cfg = HygieneConfig::default();
        let mut s = Signals::default();
        for i in 0..20 {
            s.advance(1_000 + i * 1000, &cfg);
            assert!(!s.observe(EventKind::Dwell, 10.0 + (i % 3) as f64, &cfg));
        }
        assert!(s.observe(EventKind::Dwell, 50_000.0, &cfg));
        assert_eq!(s.outliers, 1);
        assert!(!s.observe(EventKind::Dwell, 11.0, &cfg));
        // The absurd value did not drag the mean far.
        assert!(s.summary(&cfg).dwell_mean_s < 20.0);
    }

    #[test]
    fn counters_decay_with_time() {
        let cfg = HygieneConfig::default();
        let mut s = Signals::default();
        s.advance(1, &cfg);
        s.observe(EventKind::Click, 1.0, &cfg);
        let before = s.summary(&cfg).clicks_per_hour;
        s.advance(1 + (cfg.stats_half_life_s * 1000.0) as u64, &cfg);
        let after = s.summary(&cfg).clicks_per_hour;
        assert!((after - before / 2.0).abs() < 1e-3 * before);
    }
}
