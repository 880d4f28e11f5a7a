//! One decision's candidates judged against the saturation controls: which are capped, which
//! are demoted for fatigue and by how much, and the diversity constraint's groups. The
//! placement itself is the rules' (`rules::Applied::saturate`), which keeps propensities exact.

use super::{value_key, Exposures, SaturationConfig};
use crate::api::{SaturationEffect, SaturationKind};
use crate::rules::Candidates;

/// What saturation control does to one decision.
#[derive(Debug, Default)]
pub struct Judged {
    /// Candidates at a frequency cap: they are not placed.
    pub capped: Vec<usize>,
    /// Candidates demoted for fatigue, with the logit units taken.
    pub demoted: Vec<(usize, f32)>,
    /// The diversity limit and each candidate's group (0: no value, not limited).
    pub diversity: Option<(u32, Vec<u64>)>,
    /// What each control did, per candidate (only with `explain`).
    pub effects: Vec<SaturationEffect>,
}

/// Judges `candidates` for a user who was shown `seen` (`None`: nothing remembered), at
/// `now_ms`.
pub fn judge(
    cfg: &SaturationConfig,
    seen: Option<&Exposures>,
    candidates: &dyn Candidates,
    now_ms: u64,
    explain: bool,
) -> Judged {
    let mut out = Judged::default();
    if let Some(seen) = seen.filter(|s| !s.is_empty()) {
        for i in 0..candidates.len() {
            judge_one(cfg, seen, candidates, i, now_ms, explain, &mut out);
        }
    }
    if let Some(d) = &cfg.diversity {
        let groups = (0..candidates.len())
            .map(|i| {
                let item = candidates.item(i);
                let value = item.attrs.iter().find(|(k, _)| *k == d.attribute);
                value.map_or(0, |(_, v)| value_key(&d.attribute, v) | 1)
            })
            .collect();
        out.diversity = Some((d.max_per_value, groups));
    }
    out
}

fn judge_one(
    cfg: &SaturationConfig,
    seen: &Exposures,
    candidates: &dyn Candidates,
    i: usize,
    now_ms: u64,
    explain: bool,
    out: &mut Judged,
) {
    let item = candidates.item(i);
    let key = candidates.item_key(i);
    for cap in &cfg.caps {
        let window_ms = cap.window_s * 1000;
        let hit = match &cap.attribute {
            None => {
                let shown = seen.in_window(key, now_ms, window_ms);
                (shown >= cap.max).then_some((shown, SaturationKind::ItemCap, None))
            }
            Some(attr) => (item.attrs.iter())
                .filter(|(k, _)| k == attr)
                .find_map(|(k, v)| {
                    let shown = seen.in_window(value_key(k, v), now_ms, window_ms);
                    (shown >= cap.max).then_some((shown, SaturationKind::ValueCap, Some((k, v))))
                }),
        };
        if let Some((shown, kind, value)) = hit {
            out.capped.push(i);
            if explain {
                out.effects.push(SaturationEffect {
                    item: Some(item.id.to_string()),
                    kind,
                    shown,
                    delta: 0.0,
                    value: value.map(|(k, v)| format!("{k}={v}")),
                });
            }
            return;
        }
    }
    if let Some(f) = &cfg.fatigue {
        let shown = seen.unengaged(key);
        if shown >= f.after {
            let delta = f.penalty * (shown - f.after + 1) as f32;
            out.demoted.push((i, delta));
            if explain {
                out.effects.push(SaturationEffect {
                    item: Some(item.id.to_string()),
                    kind: SaturationKind::Fatigue,
                    shown,
                    delta: -delta,
                    value: None,
                });
            }
        }
    }
}

/// The diversity effects of a placement (only with `explain`): each value that filled its
/// quota, so that further candidates with it were passed over.
pub fn diversity_effects(
    cfg: &SaturationConfig,
    candidates: &dyn Candidates,
    placed: impl Iterator<Item = usize>,
) -> Vec<SaturationEffect> {
    let Some(d) = &cfg.diversity else {
        return Vec::new();
    };
    let mut counts: Vec<(&str, u32)> = Vec::new();
    let values: Vec<_> = placed
        .filter_map(|i| {
            let item = candidates.item(i);
            item.attrs
                .iter()
                .find(|(k, _)| *k == d.attribute)
                .map(|(_, v)| v.clone())
        })
        .collect();
    for v in &values {
        match counts.iter_mut().find(|(c, _)| *c == v.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n >= d.max_per_value)
        .map(|(v, n)| SaturationEffect {
            item: None,
            kind: SaturationKind::Diversity,
            shown: n,
            delta: 0.0,
            value: Some(format!("{}={v}", d.attribute)),
        })
        .collect()
}
