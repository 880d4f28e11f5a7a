//! Live segments judged on the simulator's planted taste groups (issue 14, item 4): nudge
//! runs through its embedded API (`EnginePolicy`: one shard, a `ManualClock` following the
//! stream, ticks every minute of stream time) and, at points along the stream, every user
//! seen so far is exported; its segment is compared with its planted group by the adjusted
//! Rand index.
//!
//! This module owns the measurement; `benches/quality.rs segments` prints it and
//! `tests/segments.rs` holds a small world to a floor.

use crate::config::Config;
use crate::error::StartError;
use crate::eval::sim::{run_range, Trace, World, START_MS};
use crate::eval::EnginePolicy;
use crate::model::segments::adjusted_rand_index;

/// The segments at one point of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentPoint {
    /// Decisions of the stream run so far.
    pub steps: usize,
    /// Mean decisions per user seen so far.
    pub decisions_per_user: f64,
    /// Users seen so far.
    pub users: usize,
    /// Share of them with a segment.
    pub assigned: f64,
    /// ARI of segments against planted groups, every user seen (those without a segment
    /// count as one more segment).
    pub ari: f64,
    /// ARI among the users with a segment.
    pub ari_assigned: f64,
    /// Whether the point is after the drift.
    pub after_drift: bool,
    /// Users in each segment, largest first.
    pub sizes: Vec<usize>,
    /// The segment most users of the drifting group (group 0) are in, and their share in it:
    /// whether the group stays together, and under which id, as its taste moves.
    pub drifting_group: (Option<u32>, f64),
    /// ARI of batch k-means on the users' normalized personal weights (a reference).
    pub ari_batch_weights: f64,
}

/// Runs nudge configured by `config` over `world` (which must have planted groups) and
/// measures its segments at `points` evenly spaced points of the stream.
pub fn measure(
    world: &World,
    config: Config,
    points: usize,
) -> Result<Vec<SegmentPoint>, StartError> {
    assert!(world.group(0).is_some(), "the world has planted groups");
    let mut policy = EnginePolicy::new("nudge", config, world.item_specs(), START_MS)?;
    let mut trace = Trace {
        name: "nudge".into(),
        expected: Vec::new(),
        clicked: Vec::new(),
    };
    let n = world.steps.len();
    let mut decisions = vec![0usize; world.cfg.users];
    let mut out = Vec::with_capacity(points);
    for p in 1..=points {
        let range = (p - 1) * n / points..p * n / points;
        for step in &world.steps[range.clone()] {
            decisions[step.user as usize] += 1;
        }
        let after_drift = world.steps[range.end - 1].ts_ms >= world.drift_ms;
        run_range(world, &mut policy, range.clone(), &mut trace);
        out.push(point(world, &policy, &decisions, range.end, after_drift));
    }
    Ok(out)
}

/// The most common value (ties: the smallest) and its share.
fn most_common(of: &[Option<u32>]) -> (Option<u32>, f64) {
    let mut counts: Vec<(Option<u32>, usize)> = Vec::new();
    for v in of {
        match counts.iter_mut().find(|(x, _)| x == v) {
            Some(c) => c.1 += 1,
            None => counts.push((*v, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
        .first()
        .map_or((None, 0.0), |&(v, n)| (v, n as f64 / of.len() as f64))
}

fn point(
    world: &World,
    policy: &EnginePolicy,
    decisions: &[usize],
    steps: usize,
    after_drift: bool,
) -> SegmentPoint {
    let (mut truth, mut found) = (Vec::new(), Vec::new());
    let (mut truth_assigned, mut found_assigned) = (Vec::new(), Vec::new());
    let mut ids: Vec<u32> = Vec::new();
    let mut weights: Vec<Vec<f32>> = Vec::new();
    let mut weight_truth = Vec::new();
    let mut label = |id: Option<u32>| {
        // 0 is "no segment"; segment ids are renumbered densely from 1.
        id.map_or(0, |id| match ids.iter().position(|&x| x == id) {
            Some(i) => i + 1,
            None => {
                ids.push(id);
                ids.len()
            }
        })
    };
    let mut drifting: Vec<Option<u32>> = Vec::new();
    for (u, &d) in decisions.iter().enumerate() {
        if d == 0 {
            continue;
        }
        let group = world.group(u).expect("checked by `measure`");
        let export = policy.engine().user(world.user_id(u)).ok().flatten();
        if group == 0 {
            drifting.push(
                export
                    .as_ref()
                    .and_then(|e| e.segment.as_ref())
                    .map(|s| s.id),
            );
        }
        if let Some(e) = &export {
            let mut w = e.personal_weights.clone();
            let n = crate::model::math::norm(&w);
            if n > 0.0 {
                w.iter_mut().for_each(|x| *x /= n);
                weights.push(w);
                weight_truth.push(group);
            }
        }
        let segment = label(export.and_then(|e| e.segment).map(|s| s.id));
        truth.push(group);
        found.push(segment);
        if segment > 0 {
            truth_assigned.push(group);
            found_assigned.push(segment);
        }
    }
    let users = truth.len();
    let mut sizes = vec![0usize; ids.len() + 1];
    found.iter().for_each(|&s| sizes[s] += 1);
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let refs: Vec<&[f32]> = weights.iter().map(|w| &w[..]).collect();
    let k = world.cfg.groups;
    let batch = crate::model::segments::batch_kmeans(&refs, k, 1, 20);
    let ari_of = |a: &[usize], b: &[usize]| {
        if a.is_empty() {
            0.0
        } else {
            adjusted_rand_index(a, b)
        }
    };
    SegmentPoint {
        steps,
        decisions_per_user: decisions.iter().sum::<usize>() as f64 / users.max(1) as f64,
        users,
        assigned: truth_assigned.len() as f64 / users.max(1) as f64,
        ari: ari_of(&truth, &found),
        ari_assigned: ari_of(&truth_assigned, &found_assigned),
        after_drift,
        sizes,
        ari_batch_weights: ari_of(&weight_truth, &batch),
        drifting_group: most_common(&drifting),
    }
}
