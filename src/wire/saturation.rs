//! The JSON of saturation control (issue 15): a decision's own `saturation` object (the same
//! shape as the config file's `[saturation]`, unknown keys refused; `false` turns every
//! control off for the decision) and the `saturation` effects of an explained decision.

use simd_json::prelude::*;
use simd_json::tape::Value as Json;
use simd_json::ValueType;

use super::json::{key, objects, write_f32, write_str, write_u64};
use super::parse::{number, string};
use super::WireError;
use crate::api::SaturationEffect;
use crate::error::{Error, Problem};
use crate::saturation::{Diversity, Fatigue, FrequencyCap, SaturationConfig};

fn bad(field: &'static str, problem: Problem) -> WireError {
    WireError::Engine(Error::invalid(field, problem))
}

fn unknown(k: &str) -> WireError {
    bad(
        "saturation",
        Problem::Rejected(format!("unknown key `{k}`")),
    )
}

fn whole(v: Json<'_, '_>, field: &'static str, max: f64) -> Result<f64, WireError> {
    let n = number(v).ok_or_else(|| bad(field, Problem::Malformed("a number")))?;
    if n.fract() != 0.0 || !(0.0..=max).contains(&n) {
        return Err(bad(field, Problem::Malformed("a non-negative integer")));
    }
    Ok(n)
}

/// Reads a decision's `saturation` (`None`: absent or `null`, the engine's controls apply).
pub(super) fn read(v: Option<Json<'_, '_>>) -> Result<Option<SaturationConfig>, WireError> {
    let Some(v) = v.filter(|v| v.value_type() != ValueType::Null) else {
        return Ok(None);
    };
    if v.as_bool() == Some(false) {
        return Ok(Some(SaturationConfig::default()));
    }
    let obj = v.as_object().ok_or_else(|| {
        bad(
            "saturation",
            Problem::Malformed("an object, or false for none"),
        )
    })?;
    let mut s = SaturationConfig::default();
    for (k, val) in obj.iter() {
        if val.value_type() == ValueType::Null {
            continue;
        }
        match k {
            "caps" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| bad("saturation.caps", Problem::Malformed("an array")))?;
                s.caps = list.iter().map(cap).collect::<Result<_, _>>()?;
            }
            "fatigue" => s.fatigue = Some(fatigue(val)?),
            "diversity" => s.diversity = Some(diversity(val)?),
            "max_tracked" => {
                s.max_tracked = whole(val, "saturation.max_tracked", f64::from(u32::MAX))? as u32
            }
            _ => return Err(unknown(k)),
        }
    }
    Ok(Some(s))
}

fn cap(v: Json<'_, '_>) -> Result<FrequencyCap, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("saturation.caps", Problem::Malformed("objects")))?;
    let mut c = FrequencyCap::default();
    for (k, val) in obj.iter() {
        match k {
            "attribute" => {
                c.attribute = string(Some(val), "saturation.caps.attribute")?.map(str::to_string)
            }
            "max" => c.max = whole(val, "saturation.caps.max", f64::from(u32::MAX))? as u32,
            "window_s" => c.window_s = whole(val, "saturation.caps.window_s", 1e15)? as u64,
            _ => return Err(unknown(k)),
        }
    }
    Ok(c)
}

fn fatigue(v: Json<'_, '_>) -> Result<Fatigue, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("saturation.fatigue", Problem::Malformed("an object")))?;
    let mut f = Fatigue::default();
    for (k, val) in obj.iter() {
        match k {
            "after" => {
                f.after = whole(val, "saturation.fatigue.after", f64::from(u32::MAX))? as u32
            }
            "penalty" => {
                let p = number(val).ok_or_else(|| {
                    bad("saturation.fatigue.penalty", Problem::Malformed("a number"))
                })?;
                f.penalty = p as f32;
            }
            _ => return Err(unknown(k)),
        }
    }
    Ok(f)
}

fn diversity(v: Json<'_, '_>) -> Result<Diversity, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("saturation.diversity", Problem::Malformed("an object")))?;
    let mut d = Diversity::default();
    for (k, val) in obj.iter() {
        match k {
            "attribute" => {
                d.attribute = string(Some(val), "saturation.diversity.attribute")?
                    .unwrap_or_default()
                    .to_string()
            }
            "max_per_value" => {
                let max = f64::from(u32::MAX);
                d.max_per_value = whole(val, "saturation.diversity.max_per_value", max)? as u32
            }
            _ => return Err(unknown(k)),
        }
    }
    Ok(d)
}

/// `,"saturation":[…]` of an explained decision, only when not empty.
pub(super) fn effects(out: &mut Vec<u8>, effects: &[SaturationEffect]) {
    if effects.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"saturation\":");
    objects(out, effects, |out, e| {
        key(out, "kind");
        write_str(out, e.kind.name());
        if let Some(item) = &e.item {
            out.extend_from_slice(b",\"item\":");
            write_str(out, item);
        }
        if let Some(value) = &e.value {
            out.extend_from_slice(b",\"value\":");
            write_str(out, value);
        }
        out.extend_from_slice(b",\"shown\":");
        write_u64(out, u64::from(e.shown));
        if e.delta != 0.0 {
            out.extend_from_slice(b",\"delta\":");
            write_f32(out, e.delta);
        }
    });
}
