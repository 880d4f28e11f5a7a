//! The experiment ops' JSON: the `experiment` object of `create_experiment` (read into the
//! same `ExperimentConfig` the config file's `[[experiments]]` fills, so both refuse the same
//! input alike) and the replies of `create_experiment`, `stop_experiment`,
//! `experiment_results` and `experiments`.
//!
//! Unlike a request's top level, an experiment object refuses unknown keys: a misspelt
//! `holdout` must not silently start an experiment without one.

use simd_json::prelude::*;
use simd_json::tape::Value as Json;
use simd_json::ValueType;

use super::json::{key, objects, write_bool, write_f64, write_str, write_u64};
use super::parse::{number, string};
use super::WireError;
use crate::config::{ArmConfig, ExperimentConfig};
use crate::error::{Error, Problem};
use crate::experiment::{AuditEntry, ExperimentResults, ExperimentSpec, MetricResult};

fn bad(field: &'static str, problem: Problem) -> WireError {
    WireError::Engine(Error::invalid(field, problem))
}

fn num(v: Json<'_, '_>, field: &'static str) -> Result<f64, WireError> {
    number(v).ok_or_else(|| bad(field, Problem::Malformed("a number")))
}

/// Reads an `experiment` object.
pub(super) fn experiment(v: Option<Json<'_, '_>>) -> Result<ExperimentConfig, WireError> {
    let v = v.ok_or_else(|| bad("experiment", Problem::Missing))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("experiment", Problem::Malformed("an object")))?;
    let mut e = ExperimentConfig::default();
    for (k, val) in obj.iter() {
        match k {
            "name" => e.name = string(Some(val), "name")?.unwrap_or_default().to_string(),
            "salt" => e.salt = string(Some(val), "salt")?.map(str::to_string),
            "layer" => e.layer = string(Some(val), "layer")?.unwrap_or_default().to_string(),
            "metric" => e.metric = string(Some(val), "metric")?.map(str::to_string),
            "target" => e.target = string(Some(val), "target")?.map(str::to_string),
            "holdout" => e.holdout = num(val, "holdout")?,
            "tau" => e.tau = Some(num(val, "tau")?),
            "alpha" => e.alpha = Some(num(val, "alpha")?),
            "buckets" => {
                let pair = val.as_array().filter(|a| a.len() == 2);
                let pair =
                    pair.ok_or_else(|| bad("buckets", Problem::Malformed("[start, end]")))?;
                let mut ends = [0u32; 2];
                for (slot, b) in ends.iter_mut().zip(pair.iter()) {
                    let b = num(b, "buckets")?;
                    if !(0.0..=f64::from(u32::MAX)).contains(&b) {
                        return Err(bad("buckets", Problem::Malformed("[start, end]")));
                    }
                    *slot = b as u32;
                }
                e.buckets = Some(ends);
            }
            "segments" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| bad("segments", Problem::Malformed("an array of segments")))?;
                for g in list.iter() {
                    let g = string(Some(g), "segments")?.unwrap_or_default();
                    e.segments.push(g.to_string());
                }
            }
            "guardrails" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| bad("guardrails", Problem::Malformed("an array of names")))?;
                for g in list.iter() {
                    let g = string(Some(g), "guardrails")?.unwrap_or_default();
                    e.guardrails.push(g.to_string());
                }
            }
            "arms" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| bad("arms", Problem::Malformed("an array of arms")))?;
                for a in list.iter() {
                    e.arms.push(arm(a)?);
                }
            }
            _ => {
                return Err(bad(
                    "experiment",
                    Problem::Rejected(format!("unknown key `{k}`")),
                ))
            }
        }
    }
    Ok(e)
}

fn arm(v: Json<'_, '_>) -> Result<ArmConfig, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("arms", Problem::Malformed("an object")))?;
    let mut a = ArmConfig::default();
    for (k, val) in obj.iter() {
        match k {
            "name" => {
                a.name = string(Some(val), "arms.name")?
                    .unwrap_or_default()
                    .to_string()
            }
            "policy" => {
                a.policy = string(Some(val), "arms.policy")?
                    .unwrap_or_default()
                    .to_string()
            }
            "weight" => a.weight = Some(num(val, "arms.weight")?),
            "epsilon" if val.value_type() != ValueType::Null => {
                a.epsilon = Some(num(val, "arms.epsilon")?)
            }
            "learning_rate" if val.value_type() != ValueType::Null => {
                a.learning_rate = Some(num(val, "arms.learning_rate")?)
            }
            "state_half_life_s" if val.value_type() != ValueType::Null => {
                a.state_half_life_s = Some(num(val, "arms.state_half_life_s")?)
            }
            "epsilon" | "learning_rate" | "state_half_life_s" => {}
            _ => return Err(bad("arms", Problem::Rejected(format!("unknown key `{k}`")))),
        }
    }
    Ok(a)
}

fn interval(out: &mut Vec<u8>, (low, high): (f64, f64)) {
    if low.is_finite() && high.is_finite() {
        out.push(b'[');
        write_f64(out, low);
        out.push(b',');
        write_f64(out, high);
        out.push(b']');
    } else {
        out.extend_from_slice(b"null");
    }
}

fn optional(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => write_f64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `"experiment":{…}`: the results of `experiment_results`.
pub(super) fn results(out: &mut Vec<u8>, r: &ExperimentResults) {
    key(out, "experiment");
    out.push(b'{');
    key(out, "name");
    write_str(out, &r.name);
    out.extend_from_slice(b",\"running\":");
    write_bool(out, r.running);
    out.extend_from_slice(b",\"metric\":");
    write_str(out, r.metric);
    out.extend_from_slice(b",\"status\":");
    write_str(out, r.status.name());
    out.extend_from_slice(b",\"promoted\":");
    match &r.promoted {
        Some(arm) => write_str(out, arm),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"srm_p_value\":");
    optional(out, r.srm_p_value);
    out.extend_from_slice(b",\"arms\":");
    objects(out, &r.arms, |out, a| {
        key(out, "name");
        write_str(out, &a.name);
        out.extend_from_slice(b",\"policy\":");
        write_str(out, a.policy);
        let t = &a.tally;
        for (name, v) in [
            ("users", t.users),
            ("decisions", t.decisions),
            ("clicks", t.clicks),
            ("conversions", t.conversions),
            ("observations", a.primary.count),
        ] {
            out.push(b',');
            key(out, name);
            write_u64(out, v);
        }
        out.push(b',');
        judged(out, &a.primary);
        out.extend_from_slice(b",\"guardrails\":");
        objects(out, &a.guardrails, |out, g| {
            key(out, "metric");
            write_str(out, g.metric.name());
            out.push(b',');
            judged(out, g);
            out.extend_from_slice(b",\"breached\":");
            write_bool(out, g.worse);
        });
    });
    out.push(b'}');
}

/// `,"name":["a","b"]`, or nothing for no names.
fn names<S: AsRef<str>>(out: &mut Vec<u8>, name: &str, list: &[S]) {
    if list.is_empty() {
        return;
    }
    out.push(b',');
    key(out, name);
    out.push(b'[');
    for (i, s) in list.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s.as_ref());
    }
    out.push(b']');
}

/// A metric's `"mean","lift","interval","p_value","significant"`.
fn judged(out: &mut Vec<u8>, m: &MetricResult) {
    key(out, "mean");
    optional(out, m.mean);
    out.extend_from_slice(b",\"lift\":");
    optional(out, m.lift);
    out.extend_from_slice(b",\"interval\":");
    interval(out, m.interval);
    out.extend_from_slice(b",\"p_value\":");
    write_f64(out, m.p_value);
    out.extend_from_slice(b",\"significant\":");
    write_bool(out, m.significant);
}

/// `"experiments":[…],"audit":[…]`: the reply of `experiments`.
pub(super) fn list(out: &mut Vec<u8>, all: &[(ExperimentSpec, bool)], audit: &[AuditEntry]) {
    key(out, "experiments");
    objects(out, all, |out, (spec, running)| {
        key(out, "name");
        write_str(out, &spec.name);
        out.extend_from_slice(b",\"running\":");
        write_bool(out, *running);
        out.extend_from_slice(b",\"layer\":");
        write_str(out, &spec.layer);
        out.extend_from_slice(b",\"holdout\":");
        write_f64(out, spec.holdout);
        out.extend_from_slice(b",\"metric\":");
        write_str(out, spec.metric.name());
        names(out, "segments", &spec.segments);
        let guardrails: Vec<&str> = spec
            .guardrails
            .as_slice()
            .iter()
            .map(|g| g.name())
            .collect();
        names(out, "guardrails", &guardrails);
        if let Some(target) = &spec.target {
            out.extend_from_slice(b",\"target\":");
            write_str(out, target);
        }
        out.extend_from_slice(b",\"arms\":");
        objects(out, &spec.arms, |out, arm| {
            key(out, "name");
            write_str(out, &arm.name);
            out.extend_from_slice(b",\"weight\":");
            write_f64(out, arm.weight);
            out.extend_from_slice(b",\"policy\":");
            write_str(out, arm.policy.name());
            if let Some(e) = arm.policy.epsilon() {
                out.extend_from_slice(b",\"epsilon\":");
                write_f64(out, f64::from(e));
            }
            let tuning = arm.policy.tuning();
            if let Some(lr) = tuning.learning_rate {
                out.extend_from_slice(b",\"learning_rate\":");
                write_f64(out, f64::from(lr));
            }
            if let Some(h) = tuning.state_half_life_s {
                out.extend_from_slice(b",\"state_half_life_s\":");
                write_f64(out, h);
            }
        });
    });
    out.extend_from_slice(b",\"audit\":");
    objects(out, audit, |out, a| {
        key(out, "version");
        write_u64(out, a.version);
        out.extend_from_slice(b",\"ts\":");
        write_u64(out, a.ts_ms);
        if !a.experiment.is_empty() {
            out.extend_from_slice(b",\"experiment\":");
            write_str(out, &a.experiment);
        }
        out.extend_from_slice(b",\"action\":");
        write_str(out, a.action.name());
        if let Some(arm) = &a.arm {
            out.extend_from_slice(b",\"arm\":");
            write_str(out, arm);
        }
        if let Some(version) = a.restored {
            out.extend_from_slice(b",\"restored\":");
            write_u64(out, version);
        }
        out.extend_from_slice(b",\"reason\":");
        write_str(out, &a.reason);
    });
}
