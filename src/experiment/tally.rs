//! Per-arm counters as a shard keeps them: the shard that owns a user is the only writer of
//! its tallies (no atomics, no locks); a reader asks every shard for its copy and adds them
//! (`ArmTally::merge`), as `Moments` merge by adding.
//!
//! **Counts what the shard saw, nothing more**: exposures when a decision is made, clicks and
//! conversions when they are attributed, every metric when a decision closes. It does not know
//! experiments' names or definitions, only their numeric ids.

use std::collections::HashMap;

use crate::experiment::spec::Metric;
use crate::experiment::stats::Moments;

/// The experiment and arm a decision was made under, carried by its open record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArmTag {
    /// The experiment's id (`Registry` numbers them).
    pub experiment: u32,
    /// The arm's index.
    pub arm: u16,
}

/// What the placements of one decision earned while it was open.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Earned {
    /// Clicks attributed.
    pub clicks: u32,
    /// Conversions attributed.
    pub conversions: u32,
    /// Seconds of dwell attributed.
    pub dwell_s: f64,
}

impl Earned {
    /// The decision's value of `metric`; `reward` is the placements' summed reward.
    pub fn value(&self, metric: Metric, reward: f64) -> f64 {
        match metric {
            Metric::ClickThrough => f64::from(u8::from(self.clicks > 0)),
            Metric::Conversion => f64::from(u8::from(self.conversions > 0)),
            Metric::MeanReward => reward,
            Metric::MeanDwell => self.dwell_s,
        }
    }
}

/// One arm's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArmTally {
    /// Users exposed (counted at a user's first decision in the experiment while resident:
    /// a user evicted and seen again counts again).
    pub users: u64,
    /// Decisions made under the arm.
    pub decisions: u64,
    /// Clicks attributed to those decisions.
    pub clicks: u64,
    /// Conversions attributed to those decisions.
    pub conversions: u64,
    /// Every metric (indexed by `Metric::index`), one value per closed decision: the
    /// primary one and the guardrails are read from here.
    pub metrics: [Moments; Metric::ALL.len()],
}

impl ArmTally {
    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &ArmTally) {
        self.users += other.users;
        self.decisions += other.decisions;
        self.clicks += other.clicks;
        self.conversions += other.conversions;
        for (m, o) in self.metrics.iter_mut().zip(&other.metrics) {
            m.merge(o);
        }
    }

    /// The moments of `metric`.
    pub fn metric(&self, metric: Metric) -> &Moments {
        &self.metrics[metric.index()]
    }

    /// Counts one closed decision that earned `earned` and the summed reward `reward`.
    pub fn close(&mut self, earned: &Earned, reward: f64) {
        for m in Metric::ALL {
            self.metrics[m.index()].add(earned.value(m, reward));
        }
    }
}

/// A shard's tallies of every experiment it has seen.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Tallies {
    arms: HashMap<u32, Vec<ArmTally>>,
}

impl Tallies {
    /// The arm's counters, created on first use.
    #[inline]
    pub fn arm(&mut self, tag: ArmTag) -> &mut ArmTally {
        let arms = self.arms.entry(tag.experiment).or_default();
        let i = usize::from(tag.arm);
        if arms.len() <= i {
            arms.resize(i + 1, ArmTally::default());
        }
        &mut arms[i]
    }

    /// A copy of an experiment's counters (an arm never seen here is absent or zero).
    pub fn get(&self, experiment: u32) -> Vec<ArmTally> {
        self.arms.get(&experiment).cloned().unwrap_or_default()
    }
}
