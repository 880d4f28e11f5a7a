//! The JSON of templates (issue 15, `docs/templates.md`): the `template` op's definition
//! object (unknown keys refused, like a rule's), a `decide` with a `template`, and the
//! replies: a template's versions and a template decision.

use simd_json::prelude::*;
use simd_json::tape::Value as Json;
use simd_json::ValueType;

use super::json::{key, objects, write_f32, write_f64, write_str, write_strs, write_u64};
use super::parse::{context, number, optional_bool, optional_ts, required, scalar, string};
use super::WireError;
use crate::error::{Error, Problem};
use crate::template::{
    SlotSpec, TemplateDecision, TemplateRequest, TemplateSpec, TemplateVersions, VariantSpec,
};

/// What a `template` op asks.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplateOp {
    /// Register a new version (`"template":{…}`).
    Register(Box<TemplateSpec>),
    /// Read every version of one (`"name":…`).
    Read(String),
    /// Make an earlier version current (`"name":…,"version":…`).
    Rollback(String, u64),
}

fn bad(field: &'static str, problem: Problem) -> WireError {
    WireError::Engine(Error::invalid(field, problem))
}

fn unknown_key(k: &str) -> WireError {
    bad("template", Problem::Rejected(format!("unknown key `{k}`")))
}

fn text(v: Json<'_, '_>, field: &'static str) -> Result<String, WireError> {
    Ok(string(Some(v), field)?.unwrap_or_default().to_string())
}

fn array<'t, 'i>(v: Json<'t, 'i>, field: &'static str) -> Result<Vec<Json<'t, 'i>>, WireError> {
    let list = v
        .as_array()
        .ok_or_else(|| bad(field, Problem::Malformed("an array")))?;
    Ok(list.iter().collect())
}

/// The `template` op: register (`template` is an object), roll back (`name` and `version`),
/// or read (`name`).
pub(super) fn op(
    template: Option<Json<'_, '_>>,
    name: Option<Json<'_, '_>>,
    version: Option<Json<'_, '_>>,
) -> Result<TemplateOp, WireError> {
    if let Some(t) = template.filter(|v| v.value_type() != ValueType::Null) {
        return Ok(TemplateOp::Register(Box::new(spec(t)?)));
    }
    let name = required(name, "name")?.to_string();
    let Some(v) = version.filter(|v| v.value_type() != ValueType::Null) else {
        return Ok(TemplateOp::Read(name));
    };
    let v = number(v).filter(|v| v.fract() == 0.0 && *v >= 1.0 && *v <= u32::MAX as f64);
    let v = v.ok_or_else(|| bad("version", Problem::Malformed("a positive integer")))?;
    Ok(TemplateOp::Rollback(name, v as u64))
}

fn spec(v: Json<'_, '_>) -> Result<TemplateSpec, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("template", Problem::Malformed("an object")))?;
    let mut spec = TemplateSpec::default();
    for (k, val) in obj.iter() {
        match k {
            "name" => spec.name = text(val, "name")?,
            "body" => spec.body = text(val, "body")?,
            "values" => {
                for x in array(val, "values")? {
                    spec.values.push(text(x, "values")?);
                }
            }
            "slots" => {
                for s in array(val, "slots")? {
                    spec.slots.push(slot(s)?);
                }
            }
            _ => return Err(unknown_key(k)),
        }
    }
    Ok(spec)
}

fn slot(v: Json<'_, '_>) -> Result<SlotSpec, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("slots", Problem::Malformed("objects")))?;
    let mut slot = SlotSpec::default();
    for (k, val) in obj.iter() {
        match k {
            "name" => slot.name = text(val, "slots")?,
            "variants" => {
                for x in array(val, "variants")? {
                    slot.variants.push(variant(x)?);
                }
            }
            _ => return Err(unknown_key(k)),
        }
    }
    Ok(slot)
}

fn variant(v: Json<'_, '_>) -> Result<VariantSpec, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("variants", Problem::Malformed("objects")))?;
    let mut variant = VariantSpec::default();
    for (k, val) in obj.iter() {
        match k {
            "id" => variant.id = text(val, "variants")?,
            "text" => variant.text = text(val, "variants")?,
            "attrs" => {
                let attrs = val
                    .as_object()
                    .ok_or_else(|| bad("attrs", Problem::Malformed("an object")))?;
                for (a, x) in attrs.iter() {
                    let x = scalar(x).ok_or_else(|| bad("attrs", Problem::Malformed("scalars")))?;
                    variant.attrs.push((a.to_string(), x));
                }
            }
            _ => return Err(unknown_key(k)),
        }
    }
    Ok(variant)
}

/// The fields of a `decide` that names a `template`.
pub(super) struct DecideFields<'t, 'i> {
    pub template: Json<'t, 'i>,
    pub user: Option<Json<'t, 'i>>,
    pub context: Option<Json<'t, 'i>>,
    pub values: Option<Json<'t, 'i>>,
    pub ts: Option<Json<'t, 'i>>,
    pub explain: Option<Json<'t, 'i>>,
    pub track: Option<Json<'t, 'i>>,
}

/// A `decide` over a template.
pub(super) fn decide(f: DecideFields<'_, '_>) -> Result<TemplateRequest, WireError> {
    let mut req = TemplateRequest::new(
        required(f.user, "user")?,
        required(Some(f.template), "template")?,
    );
    req.context = context(f.context)?;
    if let Some(v) = f.values.filter(|v| v.value_type() != ValueType::Null) {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("values", Problem::Malformed("an object")))?;
        for (k, x) in obj.iter() {
            let x = scalar(x).ok_or_else(|| bad("values", Problem::Malformed("scalars")))?;
            req.values.push((k.to_string(), x));
        }
    }
    req.ts_ms = optional_ts(f.ts)?;
    req.explain = optional_bool(f.explain, "explain")?.unwrap_or(false);
    req.track = optional_bool(f.track, "track")?.unwrap_or(true);
    Ok(req)
}

/// `"template":…,"current":…,"versions":[…]`.
pub(super) fn versions(out: &mut Vec<u8>, v: &TemplateVersions) {
    key(out, "template");
    write_str(out, v.current().name());
    out.extend_from_slice(b",\"current\":");
    write_u64(out, v.current);
    out.extend_from_slice(b",\"versions\":");
    objects(out, &v.all, |out, t| {
        let spec = t.spec();
        key(out, "version");
        write_u64(out, t.version());
        out.extend_from_slice(b",\"body\":");
        write_str(out, &spec.body);
        out.extend_from_slice(b",\"values\":");
        write_strs(out, spec.values.iter().map(String::as_str));
        out.extend_from_slice(b",\"slots\":");
        objects(out, &spec.slots, |out, s| {
            key(out, "name");
            write_str(out, &s.name);
            out.extend_from_slice(b",\"variants\":");
            objects(out, &s.variants, |out, v| {
                key(out, "id");
                write_str(out, &v.id);
                out.extend_from_slice(b",\"text\":");
                write_str(out, &v.text);
                if !v.attrs.is_empty() {
                    out.extend_from_slice(b",\"attrs\":{");
                    for (i, (k, x)) in v.attrs.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        key(out, k);
                        write_str(out, x);
                    }
                    out.push(b'}');
                }
            });
        });
    });
}

/// `"decision":…,"template":…,"version":…,"slots":[…],"propensity":…,"rendered":…`.
pub(super) fn decision(out: &mut Vec<u8>, d: &TemplateDecision) {
    key(out, "decision");
    write_str(out, &d.id.to_string());
    out.extend_from_slice(b",\"template\":");
    write_str(out, &d.template);
    out.extend_from_slice(b",\"version\":");
    write_u64(out, d.version);
    out.extend_from_slice(b",\"slots\":");
    objects(out, &d.slots, |out, s| {
        key(out, "slot");
        write_str(out, &s.slot);
        out.extend_from_slice(b",\"variant\":");
        write_str(out, &s.variant);
        out.extend_from_slice(b",\"item\":");
        write_str(out, &s.item);
        out.extend_from_slice(b",\"score\":");
        write_f32(out, s.score);
        out.extend_from_slice(b",\"propensity\":");
        write_f32(out, s.propensity);
        if let Some(e) = &s.explain {
            super::reply::explain(out, e);
        }
    });
    out.extend_from_slice(b",\"propensity\":");
    write_f64(out, d.propensity);
    out.extend_from_slice(b",\"rendered\":");
    write_str(out, &d.rendered);
    super::reply::experiment_arm(out, d.experiment.as_ref());
}
