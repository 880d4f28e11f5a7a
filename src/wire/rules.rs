//! The JSON of rules and live features (issue 14): the `rules` array of the `rules` op (read
//! into the same `RuleConfig` the config file's `[[rules]]` fills, unknown keys refused), the
//! `rules` reply, a user's `features` object, and a decision's `triggers` and `rules`.

use simd_json::prelude::*;
use simd_json::tape::Value as Json;
use simd_json::ValueType;

use super::json::{key, objects, write_f32, write_f64, write_str, write_strs, write_u64};
use super::parse::{number, string};
use super::WireError;
use crate::actor::features::FeatureValue;
use crate::actor::Feature;
use crate::api::RuleEffect;
use crate::config::RuleConfig;
use crate::error::{Error, Problem};
use crate::rules::RuleSet;

fn bad(field: &'static str, problem: Problem) -> WireError {
    WireError::Engine(Error::invalid(field, problem))
}

fn text(v: Json<'_, '_>, field: &'static str) -> Result<String, WireError> {
    Ok(string(Some(v), field)?.unwrap_or_default().to_string())
}

/// Reads a `rules` array (`None`: the field was absent, a read of the set in force).
pub(super) fn rules(v: Option<Json<'_, '_>>) -> Result<Option<Vec<RuleConfig>>, WireError> {
    let Some(v) = v else { return Ok(None) };
    let list = v
        .as_array()
        .ok_or_else(|| bad("rules", Problem::Malformed("an array of rules")))?;
    list.iter().map(rule).collect::<Result<_, _>>().map(Some)
}

fn rule(v: Json<'_, '_>) -> Result<RuleConfig, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("rules", Problem::Malformed("an object")))?;
    let mut r = RuleConfig::default();
    for (k, val) in obj.iter() {
        if val.value_type() == ValueType::Null {
            continue;
        }
        let num = |field| number(val).ok_or_else(|| bad(field, Problem::Malformed("a number")));
        match k {
            "name" => r.name = text(val, "name")?,
            "action" => r.action = text(val, "action")?,
            "when" => r.when = Some(text(val, "when")?),
            "items" => r.items = Some(text(val, "items")?),
            "attr" => r.attr = Some(text(val, "attr")?),
            "item" => r.item = Some(text(val, "item")?),
            "trigger" => r.trigger = Some(text(val, "trigger")?),
            "arm" => r.arm = Some(text(val, "arm")?),
            "segment" => r.segment = Some(text(val, "segment")?),
            "by" => r.by = Some(num("by")?),
            "priority" => {
                let p = num("priority")?;
                if p.fract() != 0.0 || p.abs() > f64::from(i32::MAX) {
                    return Err(bad("priority", Problem::Malformed("an integer")));
                }
                r.priority = p as i32;
            }
            "max" => {
                let m = num("max")?;
                if m.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&m) {
                    return Err(bad("max", Problem::Malformed("a non-negative integer")));
                }
                r.max = Some(m as u32);
            }
            _ => {
                return Err(bad(
                    "rules",
                    Problem::Rejected(format!("unknown key `{k}`")),
                ))
            }
        }
    }
    Ok(r)
}

fn optional_str(out: &mut Vec<u8>, name: &str, v: Option<&str>) {
    if let Some(v) = v {
        out.push(b',');
        key(out, name);
        write_str(out, v);
    }
}

/// `"version":…,"rules":[…]`: the set in force, each rule as given with its version.
pub(super) fn set(out: &mut Vec<u8>, set: &RuleSet) {
    key(out, "version");
    write_u64(out, set.version());
    out.extend_from_slice(b",\"rules\":");
    objects(out, set.specs(), |out, (r, version)| {
        key(out, "name");
        write_str(out, &r.name);
        out.extend_from_slice(b",\"version\":");
        write_u64(out, *version);
        out.extend_from_slice(b",\"priority\":");
        write_f64(out, f64::from(r.priority));
        out.extend_from_slice(b",\"action\":");
        write_str(out, &r.action);
        optional_str(out, "when", r.when.as_deref());
        optional_str(out, "items", r.items.as_deref());
        optional_str(out, "attr", r.attr.as_deref());
        optional_str(out, "item", r.item.as_deref());
        optional_str(out, "trigger", r.trigger.as_deref());
        optional_str(out, "arm", r.arm.as_deref());
        optional_str(out, "segment", r.segment.as_deref());
        for (name, v) in [("by", r.by), ("max", r.max.map(f64::from))] {
            if let Some(v) = v {
                out.push(b',');
                key(out, name);
                write_f64(out, v);
            }
        }
    });
}

/// `{"clicks_1h":…,…}`: features by name (`null` for a missing value).
pub(super) fn features(out: &mut Vec<u8>, all: &[(Feature, FeatureValue)]) {
    out.push(b'{');
    for (i, (f, v)) in all.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, f.name());
        match v {
            FeatureValue::Num(x) => write_f64(out, *x),
            FeatureValue::Str(s) => write_str(out, s),
            FeatureValue::Missing => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// `,"triggers":[…]` and `,"rules":[…]` of a decision, each only when not empty.
pub(super) fn decision(out: &mut Vec<u8>, triggers: &[std::sync::Arc<str>], rules: &[RuleEffect]) {
    if !triggers.is_empty() {
        out.extend_from_slice(b",\"triggers\":");
        write_strs(out, triggers.iter().map(|t| &**t));
    }
    if rules.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"rules\":");
    objects(out, rules, |out, e| {
        key(out, "rule");
        write_str(out, &e.rule);
        out.extend_from_slice(b",\"version\":");
        write_u64(out, e.version);
        out.extend_from_slice(b",\"action\":");
        write_str(out, e.action.name());
        out.extend_from_slice(b",\"items\":");
        write_strs(out, e.items.iter().map(String::as_str));
        if let Some(by) = e.by {
            out.extend_from_slice(b",\"by\":");
            write_f32(out, by);
        }
        optional_str(out, "trigger", e.trigger.as_deref());
        optional_str(out, "error", e.error);
    });
}
