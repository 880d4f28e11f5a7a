//! The JSON of threshold triggers (issue 14, item 3): the `triggers` array of the `triggers`
//! op (read into the same `TriggerConfig` the config file's `[[triggers]]` fills, unknown
//! keys refused), the `triggers` reply, an event reply's `triggers`, and the push a
//! subscriber of a trigger's name receives.

use simd_json::prelude::*;
use simd_json::tape::Value as Json;
use simd_json::ValueType;

use super::json::{key, objects, write_bool, write_str, write_strs, write_u64};
use super::parse::{number, string};
use super::WireError;
use crate::api::TriggerFiring;
use crate::config::TriggerConfig;
use crate::error::{Error, Problem};
use crate::triggers::TriggerSet;

fn bad(field: &'static str, problem: Problem) -> WireError {
    WireError::Engine(Error::invalid(field, problem))
}

/// Reads a `triggers` array (`None`: the field was absent, a read of the set in force).
pub(super) fn triggers(v: Option<Json<'_, '_>>) -> Result<Option<Vec<TriggerConfig>>, WireError> {
    let Some(v) = v else { return Ok(None) };
    let list = v
        .as_array()
        .ok_or_else(|| bad("triggers", Problem::Malformed("an array of triggers")))?;
    list.iter().map(trigger).collect::<Result<_, _>>().map(Some)
}

fn trigger(v: Json<'_, '_>) -> Result<TriggerConfig, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("triggers", Problem::Malformed("an object")))?;
    let mut t = TriggerConfig::default();
    let text = |v, field| -> Result<String, WireError> {
        Ok(string(Some(v), field)?.unwrap_or_default().to_string())
    };
    for (k, val) in obj.iter() {
        if val.value_type() == ValueType::Null {
            continue;
        }
        match k {
            "name" => t.name = text(val, "name")?,
            "when" => t.when = text(val, "when")?,
            "webhook_url" => t.webhook_url = Some(text(val, "webhook_url")?),
            "webhook" => {
                let b = val.as_bool();
                t.webhook = Some(b.ok_or_else(|| bad("webhook", Problem::Malformed("a boolean")))?);
            }
            "cooldown_s" => {
                let c = number(val).unwrap_or(-1.0);
                if c.fract() != 0.0 || !(0.0..=315_360_000.0).contains(&c) {
                    let why = "a whole number of seconds, at most 315360000";
                    return Err(bad("cooldown_s", Problem::Malformed(why)));
                }
                t.cooldown_s = c as u64;
            }
            _ => {
                let why = format!("unknown key `{k}`");
                return Err(bad("triggers", Problem::Rejected(why)));
            }
        }
    }
    Ok(t)
}

/// `"version":…,"triggers":[…]`: the set in force, each trigger as given with its version.
pub(super) fn set(out: &mut Vec<u8>, set: &TriggerSet) {
    key(out, "version");
    write_u64(out, set.version());
    out.extend_from_slice(b",\"triggers\":");
    objects(out, set.specs(), |out, (t, version)| {
        key(out, "name");
        write_str(out, &t.name);
        out.extend_from_slice(b",\"version\":");
        write_u64(out, *version);
        out.extend_from_slice(b",\"when\":");
        write_str(out, &t.when);
        out.extend_from_slice(b",\"cooldown_s\":");
        write_u64(out, t.cooldown_s);
        if let Some(w) = t.webhook {
            out.extend_from_slice(b",\"webhook\":");
            write_bool(out, w);
        }
        if let Some(url) = &t.webhook_url {
            out.extend_from_slice(b",\"webhook_url\":");
            write_str(out, url);
        }
    });
}

/// `,"triggers":[…]` of an event's reply or a user's push, only when one fired.
pub(super) fn fired(out: &mut Vec<u8>, triggers: &[std::sync::Arc<str>]) {
    if !triggers.is_empty() {
        out.extend_from_slice(b",\"triggers\":");
        write_strs(out, triggers.iter().map(|t| &**t));
    }
}

/// A firing as a subscriber of its name receives it: `{"push":"trigger","trigger":…,
/// "user":…,"ts":…,"dropped":…}` (`dropped`: pushes this connection lost so far). The
/// webhook's body is the same object without `push` and `dropped` (`write_firing`).
pub fn write_trigger_push(out: &mut Vec<u8>, f: &TriggerFiring, dropped: u64) {
    out.extend_from_slice(b"{\"push\":\"trigger\",");
    firing_fields(out, f);
    out.extend_from_slice(b",\"dropped\":");
    write_u64(out, dropped);
    out.push(b'}');
}

/// A firing as the webhook posts it: `{"trigger":…,"user":…,"ts":…}`.
pub fn write_firing(out: &mut Vec<u8>, f: &TriggerFiring) {
    out.push(b'{');
    firing_fields(out, f);
    out.push(b'}');
}

fn firing_fields(out: &mut Vec<u8>, f: &TriggerFiring) {
    key(out, "trigger");
    write_str(out, &f.trigger);
    out.extend_from_slice(b",\"user\":");
    write_str(out, &f.user);
    out.extend_from_slice(b",\"ts\":");
    write_u64(out, f.ts_ms);
}
