//! Request parsing: simd-json onto a reused tape, then a hand-written conversion into owned
//! `nudge::api` values. Strings are read borrowed from the input and copied once, into the
//! owned request.
//!
//! Unknown keys are ignored (so clients may add fields); a known key with the wrong type is a
//! `bad_request` naming the field.

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value as Json};
use simd_json::{Buffers, ValueType};

use super::{EventRequest, EventType, Op, OpKind, Rejected, ReqId, Request, WireError};
use crate::api::{Candidate, Context, DecideRequest, EventKind, ItemSpec};
use crate::error::{Error, Problem};
use crate::ids::DecisionId;

/// A reusable parser: simd-json's scratch buffers and tape live across calls, so parsing a
/// request allocates only the owned request itself.
pub struct Parser {
    buffers: Buffers,
    /// The tape's allocation, kept empty between calls.
    tape: Option<Tape<'static>>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser with empty buffers (they grow to the largest request seen).
    pub fn new() -> Self {
        Parser {
            buffers: Buffers::new(512),
            tape: Some(Tape::null().reset()),
        }
    }

    /// Parses one request. `input` is used as scratch space and left clobbered. `default_op` is
    /// the op of an HTTP route: a body without `op` gets it, a body naming another op is refused.
    pub fn parse(
        &mut self,
        input: &mut [u8],
        default_op: Option<OpKind>,
    ) -> Result<Request, Rejected> {
        self.with_value(input, |v| request(v, default_op, false))
    }

    /// Parses the body of `POST /v1/events`: one event object, an array of them, or NDJSON
    /// (one per line). Each element stands alone; `op` may be omitted.
    pub fn parse_events(&mut self, body: &[u8]) -> Vec<Result<Request, Rejected>> {
        let mut whole = body.to_vec();
        let parsed = self.with_value(&mut whole, |v| {
            if let Some(list) = v.as_array() {
                Ok(list
                    .iter()
                    .map(|e| request(e, Some(OpKind::Event), true))
                    .collect())
            } else {
                Ok(vec![request(v, Some(OpKind::Event), true)])
            }
        });
        if let Ok(all) = parsed {
            return all;
        }
        let mut line = Vec::new();
        let mut out = Vec::new();
        for raw in body.split(|&b| b == b'\n') {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            line.clear();
            line.extend_from_slice(raw);
            out.push(self.parse(&mut line, Some(OpKind::Event)));
        }
        out
    }

    /// Parses the body of `PUT /v1/items/{id}`: `{"attrs":{…},"vector":[…]}` (both optional;
    /// an empty body is an item with neither).
    pub fn parse_item(&mut self, input: &mut [u8], id: &str) -> Result<ItemSpec, Rejected> {
        if input.iter().all(u8::is_ascii_whitespace) {
            return Ok(ItemSpec::new(id));
        }
        self.with_value(input, |v| {
            let reject = |error| Rejected {
                id: ReqId::None,
                error,
            };
            let f = fields(v).ok_or(reject(WireError::NotObject))?;
            // The URL names the item; a body naming another is a mistake, not a rename.
            if string(f.item, "item")
                .map_err(reject)?
                .is_some_and(|body| body != id)
            {
                let problem = Problem::Malformed("the item id of the URL, or no `item`");
                return Err(reject(invalid("item", problem)));
            }
            item(id, f.attrs, f.vector).map_err(reject)
        })
    }

    /// Parses `input` as JSON and runs `f` on the value; a parse error becomes a `Rejected`
    /// with the id recovered from the raw bytes when possible.
    pub(crate) fn with_value<T>(
        &mut self,
        input: &mut [u8],
        f: impl for<'t, 'i> FnOnce(Json<'t, 'i>) -> Result<T, Rejected>,
    ) -> Result<T, Rejected> {
        let mut tape: Tape<'_> = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = match simd_json::fill_tape(input, &mut self.buffers, &mut tape) {
            Ok(()) => Ok(f(tape.as_value())),
            Err(e) => Err(e),
        };
        self.tape = Some(tape.reset());
        match result {
            Ok(r) => r,
            // simd-json only rewrites string contents in place (unescaping), so a key `"id"`
            // and a number or plain string after it survive for recovery.
            // Structure survives too, so the syntax error is described from `input`.
            Err(e) => Err(Rejected {
                id: recover_id(input),
                error: WireError::NotJson(super::syntax::describe(&e, input)),
            }),
        }
    }
}

/// Best-effort recovery of a top-level `"id"` from bytes that may not parse: the first
/// `"id"` key followed by a number or a plain string.
pub fn recover_id(bytes: &[u8]) -> ReqId {
    let mut from = 0;
    while let Some(pos) = find(&bytes[from..], b"\"id\"") {
        let mut i = from + pos + 4;
        from = i;
        i += skip_ws(&bytes[i..]);
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        i += skip_ws(&bytes[i..]);
        let rest = &bytes[i..];
        match rest.first() {
            Some(b'"') => {
                let end = rest[1..].iter().position(|&b| b == b'"' || b == b'\\');
                if let Some(end) = end.filter(|&e| rest[1 + e] == b'"') {
                    if let Ok(s) = std::str::from_utf8(&rest[1..1 + end]) {
                        return ReqId::Str(s.into());
                    }
                }
                return ReqId::None;
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let len = rest
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || b"-+.eE".contains(b)))
                    .unwrap_or(rest.len());
                let text = std::str::from_utf8(&rest[..len]).unwrap_or("");
                return number_id(text);
            }
            _ => return ReqId::None,
        }
    }
    ReqId::None
}

fn number_id(text: &str) -> ReqId {
    if let Ok(i) = text.parse::<i64>() {
        ReqId::Int(i)
    } else if let Ok(u) = text.parse::<u64>() {
        ReqId::Uint(u)
    } else if let Ok(f) = text.parse::<f64>() {
        ReqId::Float(f)
    } else {
        ReqId::None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn skip_ws(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

/// The known keys of a request object, found in one pass.
#[derive(Default)]
struct Fields<'t, 'i> {
    id: Option<Json<'t, 'i>>,
    op: Option<Json<'t, 'i>>,
    user: Option<Json<'t, 'i>>,
    kind: Option<Json<'t, 'i>>,
    item: Option<Json<'t, 'i>>,
    value: Option<Json<'t, 'i>>,
    ts: Option<Json<'t, 'i>>,
    context: Option<Json<'t, 'i>>,
    decision: Option<Json<'t, 'i>>,
    event_id: Option<Json<'t, 'i>>,
    candidates: Option<Json<'t, 'i>>,
    n: Option<Json<'t, 'i>>,
    explain: Option<Json<'t, 'i>>,
    track: Option<Json<'t, 'i>>,
    attrs: Option<Json<'t, 'i>>,
    vector: Option<Json<'t, 'i>>,
    ops: Option<Json<'t, 'i>>,
    experiment: Option<Json<'t, 'i>>,
    name: Option<Json<'t, 'i>>,
    reason: Option<Json<'t, 'i>>,
    arm: Option<Json<'t, 'i>>,
    rules: Option<Json<'t, 'i>>,
    saturation: Option<Json<'t, 'i>>,
    text: Option<Json<'t, 'i>>,
    sentiment: Option<Json<'t, 'i>>,
    personalization: Option<Json<'t, 'i>>,
    storage: Option<Json<'t, 'i>>,
    template: Option<Json<'t, 'i>>,
    values: Option<Json<'t, 'i>>,
    version: Option<Json<'t, 'i>>,
    triggers: Option<Json<'t, 'i>>,
    trigger: Option<Json<'t, 'i>>,
    segment: Option<Json<'t, 'i>>,
}

fn fields<'t, 'i>(v: Json<'t, 'i>) -> Option<Fields<'t, 'i>> {
    let obj = v.as_object()?;
    let mut f = Fields::default();
    for (k, val) in obj.iter() {
        let slot = match k {
            "id" => &mut f.id,
            "op" => &mut f.op,
            "user" => &mut f.user,
            "type" => &mut f.kind,
            "item" => &mut f.item,
            "value" => &mut f.value,
            "ts" => &mut f.ts,
            "context" => &mut f.context,
            "decision" => &mut f.decision,
            "event_id" => &mut f.event_id,
            "candidates" => &mut f.candidates,
            "n" => &mut f.n,
            "explain" => &mut f.explain,
            "track" => &mut f.track,
            "attrs" => &mut f.attrs,
            "vector" => &mut f.vector,
            "ops" => &mut f.ops,
            "experiment" => &mut f.experiment,
            "name" => &mut f.name,
            "reason" => &mut f.reason,
            "arm" => &mut f.arm,
            "rules" => &mut f.rules,
            "saturation" => &mut f.saturation,
            "text" => &mut f.text,
            "sentiment" => &mut f.sentiment,
            "personalization" => &mut f.personalization,
            "storage" => &mut f.storage,
            "template" => &mut f.template,
            "values" => &mut f.values,
            "version" => &mut f.version,
            "triggers" => &mut f.triggers,
            "trigger" => &mut f.trigger,
            "segment" => &mut f.segment,
            _ => continue,
        };
        *slot = Some(val);
    }
    Some(f)
}

fn request(v: Json<'_, '_>, default_op: Option<OpKind>, nested: bool) -> Result<Request, Rejected> {
    let Some(f) = fields(v) else {
        return Err(Rejected {
            id: ReqId::None,
            error: WireError::NotObject,
        });
    };
    let id = match f.id.map(req_id).transpose() {
        Ok(id) => id.unwrap_or_default(),
        Err(error) => {
            return Err(Rejected {
                id: ReqId::None,
                error,
            })
        }
    };
    match op(&f, default_op, nested) {
        Ok(op) => Ok(Request { id, op }),
        Err(error) => Err(Rejected { id, error }),
    }
}

/// A request's `id`: a number, a string, or `null`; anything else is refused (it could not
/// be echoed faithfully).
fn req_id(v: Json<'_, '_>) -> Result<ReqId, WireError> {
    Ok(match v.value_type() {
        ValueType::I64 => v.as_i64().map_or(ReqId::None, ReqId::Int),
        ValueType::U64 => match v.as_u64() {
            Some(u) => i64::try_from(u).map_or(ReqId::Uint(u), ReqId::Int),
            None => ReqId::None,
        },
        ValueType::F64 => v.as_f64().map_or(ReqId::None, ReqId::Float),
        ValueType::String => v.as_str().map_or(ReqId::None, |s| ReqId::Str(s.into())),
        ValueType::Null => ReqId::None,
        _ => return Err(malformed("id", "a number, a string or null")),
    })
}

fn op(f: &Fields<'_, '_>, default_op: Option<OpKind>, nested: bool) -> Result<Op, WireError> {
    let kind = match (string(f.op, "op")?, default_op) {
        (Some(name), Some(route)) if name != route.name() => {
            return Err(invalid("op", Problem::Malformed("the route's op or none")))
        }
        (Some(name), _) => OpKind::parse(name).ok_or_else(|| WireError::UnknownOp(name.into()))?,
        (None, Some(route)) => route,
        (None, None) => return Err(invalid("op", Problem::Missing)),
    };
    Ok(match kind {
        OpKind::Event => Op::Event(event(f)?),
        OpKind::Decide => match f.template {
            Some(template) => Op::DecideTemplate(Box::new(template_decide(f, template)?)),
            None => Op::Decide(decide(f)?),
        },
        OpKind::Reward if f.item.is_none() => Op::RewardDecision {
            decision: required(f.decision, "decision")?.parse::<DecisionId>()?,
            value: optional_number(f.value, "value")?.unwrap_or(1.0),
            ts_ms: optional_ts(f.ts)?,
        },
        OpKind::Reward => Op::Reward {
            decision: required(f.decision, "decision")?.parse::<DecisionId>()?,
            item: required(f.item, "item")?.to_string(),
            value: optional_number(f.value, "value")?.unwrap_or(1.0),
            ts_ms: optional_ts(f.ts)?,
        },
        OpKind::Item => Op::Item(item(required(f.item, "item")?, f.attrs, f.vector)?),
        OpKind::RemoveItem => Op::RemoveItem(required(f.item, "item")?.to_string()),
        OpKind::User => Op::User(required(f.user, "user")?.to_string()),
        OpKind::Forget => Op::Forget(required(f.user, "user")?.to_string()),
        OpKind::Subscribe | OpKind::Unsubscribe => subscription(f, kind)?,
        OpKind::Ping => Op::Ping,
        OpKind::Stats => Op::Stats,
        OpKind::CreateExperiment => Op::CreateExperiment {
            experiment: Box::new(super::experiment::experiment(f.experiment)?),
            reason: string(f.reason, "reason")?.unwrap_or_default().to_string(),
        },
        OpKind::StopExperiment => Op::StopExperiment {
            name: required(f.name, "name")?.to_string(),
            reason: string(f.reason, "reason")?.unwrap_or_default().to_string(),
        },
        OpKind::PromoteExperiment => Op::PromoteExperiment {
            name: required(f.name, "name")?.to_string(),
            arm: required(f.arm, "arm")?.to_string(),
            reason: string(f.reason, "reason")?.unwrap_or_default().to_string(),
        },
        OpKind::UpdateExperiment => Op::UpdateExperiment {
            experiment: Box::new(super::experiment::experiment(f.experiment)?),
            reason: string(f.reason, "reason")?.unwrap_or_default().to_string(),
        },
        OpKind::RestoreExperiments => Op::RestoreExperiments {
            version: match optional_number(f.version, "version")? {
                Some(v) if v >= 1.0 && v.fract() == 0.0 && v <= u64::MAX as f64 => v as u64,
                Some(_) => return Err(malformed("version", "an audit version, from 1")),
                None => return Err(invalid("version", Problem::Missing)),
            },
            reason: string(f.reason, "reason")?.unwrap_or_default().to_string(),
        },
        OpKind::ExperimentResults => Op::ExperimentResults(required(f.name, "name")?.to_string()),
        OpKind::Experiments => Op::Experiments,
        OpKind::Rules => Op::Rules(super::rules::rules(f.rules)?),
        OpKind::Features => Op::Features(required(f.user, "user")?.to_string()),
        OpKind::Consent => Op::Consent(
            required(f.user, "user")?.to_string(),
            crate::consent::ConsentUpdate {
                personalization: optional_bool(f.personalization, "personalization")?,
                storage: optional_bool(f.storage, "storage")?,
            },
        ),
        OpKind::Tone => Op::Tone(crate::api::ToneRequest {
            user: required(f.user, "user")?.to_string(),
            text: string(f.text, "text")?.map(str::to_string),
            sentiment: optional_number(f.sentiment, "sentiment")?,
            context: context(f.context)?,
            ts_ms: optional_ts(f.ts)?,
            explain: optional_bool(f.explain, "explain")?.unwrap_or(false),
        }),
        OpKind::Template => Op::Template(super::template::op(f.template, f.name, f.version)?),
        OpKind::Triggers => Op::Triggers(super::triggers::triggers(f.triggers)?),
        OpKind::Segments => Op::Segments {
            segment: string(f.segment, "segment")?.map(str::to_string),
            name: string(f.name, "name")?.map(str::to_string),
        },
        OpKind::Batch if nested => return Err(WireError::NestedBatch),
        OpKind::Batch => {
            let ops = f.ops.ok_or_else(|| invalid("ops", Problem::Missing))?;
            let ops = ops.as_array().ok_or_else(|| malformed("ops", "an array"))?;
            Op::Batch(ops.iter().map(|v| request(v, None, true)).collect())
        }
    })
}

/// Parses the fields of an event (`user`, `type`, `item`, `value`, `ts`, `context`,
/// `decision`). A `type` that is not built in stays a name: only the engine knows aliases.
/// `subscribe`/`unsubscribe` to a user (`user`) or to a trigger's name (`trigger`).
fn subscription(f: &Fields<'_, '_>, kind: OpKind) -> Result<Op, WireError> {
    let subscribe = kind == OpKind::Subscribe;
    match (string(f.trigger, "trigger")?, f.user) {
        (Some(_), Some(_)) => Err(malformed("trigger", "absent when `user` is given")),
        (Some(t), None) if subscribe => Ok(Op::SubscribeTrigger(t.to_string())),
        (Some(t), None) => Ok(Op::UnsubscribeTrigger(t.to_string())),
        (None, _) if subscribe => Ok(Op::Subscribe(required(f.user, "user")?.to_string())),
        (None, _) => Ok(Op::Unsubscribe(required(f.user, "user")?.to_string())),
    }
}

fn event(f: &Fields<'_, '_>) -> Result<EventRequest, WireError> {
    let name = required(f.kind, "type")?;
    let kind = match EventKind::parse_builtin(name) {
        Some(kind) => EventType::Builtin(kind),
        None => EventType::Named(name.into()),
    };
    Ok(EventRequest {
        user: required(f.user, "user")?.to_string(),
        kind,
        item: string(f.item, "item")?.map(str::to_string),
        value: optional_number(f.value, "value")?,
        ts_ms: optional_ts(f.ts)?,
        context: context(f.context)?,
        decision: string(f.decision, "decision")?
            .map(str::parse)
            .transpose()?,
        event_id: string(f.event_id, "event_id")?.map(str::to_string),
    })
}

fn decide(f: &Fields<'_, '_>) -> Result<DecideRequest, WireError> {
    let list = f
        .candidates
        .ok_or_else(|| invalid("candidates", Problem::Missing))?;
    let list = list
        .as_array()
        .ok_or_else(|| malformed("candidates", "an array"))?;
    let mut candidates = Vec::with_capacity(list.len());
    for c in list.iter() {
        candidates.push(candidate(c)?);
    }
    let n = match f.n {
        None => candidates.len(),
        Some(v) => match v.value_type() {
            ValueType::U64 | ValueType::I64 => v
                .as_u64()
                .ok_or_else(|| malformed("n", "a non-negative integer"))?
                as usize,
            ValueType::Null => candidates.len(),
            _ => return Err(malformed("n", "a non-negative integer")),
        },
    };
    Ok(DecideRequest {
        user: required(f.user, "user")?.to_string(),
        candidates,
        n,
        context: context(f.context)?,
        ts_ms: optional_ts(f.ts)?,
        explain: optional_bool(f.explain, "explain")?.unwrap_or(false),
        track: optional_bool(f.track, "track")?.unwrap_or(true),
        saturation: super::saturation::read(f.saturation)?,
    })
}

/// A `decide` naming a `template` (`candidates` and `n` belong to item decisions).
fn template_decide(
    f: &Fields<'_, '_>,
    template: Json<'_, '_>,
) -> Result<crate::template::TemplateRequest, WireError> {
    for (v, field) in [(f.candidates, "candidates"), (f.n, "n")] {
        if v.is_some() {
            let why = "not with `template`: a template's slots are its candidates";
            return Err(invalid(field, Problem::Rejected(why.into())));
        }
    }
    super::template::decide(super::template::DecideFields {
        template,
        user: f.user,
        context: f.context,
        values: f.values,
        ts: f.ts,
        explain: f.explain,
        track: f.track,
    })
}

/// A boolean field; absent or `null` is `None`.
pub(super) fn optional_bool(
    v: Option<Json<'_, '_>>,
    field: &'static str,
) -> Result<Option<bool>, WireError> {
    match v {
        None => Ok(None),
        Some(v) if v.value_type() == ValueType::Null => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| malformed(field, "a boolean")),
    }
}

fn candidate(v: Json<'_, '_>) -> Result<Candidate, WireError> {
    if let Some(id) = v.as_str() {
        return Ok(Candidate::Id(id.to_string()));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("candidates", "strings or objects"))?;
    let id = obj.get("id").and_then(|v| v.into_string());
    let id = id.ok_or_else(|| malformed("candidates", "objects with a string `id`"))?;
    Ok(Candidate::Inline(item(
        id,
        obj.get("attrs"),
        obj.get("vector"),
    )?))
}

fn item(
    id: &str,
    attrs: Option<Json<'_, '_>>,
    vector: Option<Json<'_, '_>>,
) -> Result<ItemSpec, WireError> {
    let mut spec = ItemSpec::new(id);
    if let Some(a) = attrs.filter(|v| v.value_type() != ValueType::Null) {
        let obj = a
            .as_object()
            .ok_or_else(|| malformed("attrs", "an object"))?;
        for (k, v) in obj.iter() {
            if let Some(list) = v.as_array() {
                for x in list.iter() {
                    let x = scalar(x).ok_or_else(|| malformed("attrs", ATTR_VALUES))?;
                    spec.attrs.push((k.to_string(), x));
                }
            } else {
                let x = scalar(v).ok_or_else(|| malformed("attrs", ATTR_VALUES))?;
                spec.attrs.push((k.to_string(), x));
            }
        }
    }
    if let Some(v) = vector.filter(|v| v.value_type() != ValueType::Null) {
        let list = v
            .as_array()
            .ok_or_else(|| malformed("vector", "an array of numbers"))?;
        let mut out = Vec::with_capacity(list.len());
        for x in list.iter() {
            out.push(number(x).ok_or_else(|| malformed("vector", "an array of numbers"))? as f32);
        }
        spec.vector = Some(out);
    }
    Ok(spec)
}

const ATTR_VALUES: &str = "strings, numbers, booleans or arrays of those";

pub(super) fn context(v: Option<Json<'_, '_>>) -> Result<Context, WireError> {
    let Some(v) = v.filter(|v| v.value_type() != ValueType::Null) else {
        return Ok(Vec::new());
    };
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("context", "an object"))?;
    let mut out = Vec::with_capacity(obj.len());
    for (k, v) in obj.iter() {
        if v.value_type() == ValueType::Null {
            continue;
        }
        let text = scalar(v).ok_or_else(|| malformed("context", "strings, numbers or booleans"))?;
        out.push((k.to_string(), text));
    }
    Ok(out)
}

/// A string, number or boolean as text (numbers in their shortest form).
pub(crate) fn scalar(v: Json<'_, '_>) -> Option<String> {
    match v.value_type() {
        ValueType::String => v.as_str().map(str::to_string),
        ValueType::I64 => v.as_i64().map(|i| i.to_string()),
        ValueType::U64 => v.as_u64().map(|u| u.to_string()),
        ValueType::F64 => v.as_f64().map(|f| f.to_string()),
        ValueType::Bool => v.as_bool().map(|b| b.to_string()),
        _ => None,
    }
}

/// Any JSON number as `f64`.
pub(crate) fn number(v: Json<'_, '_>) -> Option<f64> {
    match v.value_type() {
        ValueType::F64 => v.as_f64(),
        ValueType::I64 => v.as_i64().map(|i| i as f64),
        ValueType::U64 => v.as_u64().map(|u| u as f64),
        _ => None,
    }
}

fn optional_number(v: Option<Json<'_, '_>>, field: &'static str) -> Result<Option<f64>, WireError> {
    match v {
        None => Ok(None),
        Some(v) if v.value_type() == ValueType::Null => Ok(None),
        Some(v) => number(v)
            .map(Some)
            .ok_or_else(|| malformed(field, "a number")),
    }
}

pub(super) fn optional_ts(v: Option<Json<'_, '_>>) -> Result<Option<u64>, WireError> {
    let Some(ms) = optional_number(v, "ts")? else {
        return Ok(None);
    };
    if (0.0..MIN_TS_MS as f64).contains(&ms) {
        return Err(invalid("ts", Problem::TooEarly { min_ms: MIN_TS_MS }));
    }
    if !(0.0..=u64::MAX as f64).contains(&ms) {
        return Err(invalid(
            "ts",
            Problem::OutOfRange {
                min: 0.0,
                max: u64::MAX as f64,
            },
        ));
    }
    Ok(Some(ms as u64))
}

/// The earliest `ts` the protocol accepts: 2000-01-01T00:00:00Z in Unix milliseconds. Zero (a
/// default left in) and seconds given for milliseconds both fall before it.
pub const MIN_TS_MS: u64 = 946_684_800_000;

pub(super) fn string<'i>(
    v: Option<Json<'_, 'i>>,
    field: &'static str,
) -> Result<Option<&'i str>, WireError> {
    match v {
        None => Ok(None),
        Some(v) if v.value_type() == ValueType::Null => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .ok_or_else(|| malformed(field, "a string")),
    }
}

pub(super) fn required<'i>(
    v: Option<Json<'_, 'i>>,
    field: &'static str,
) -> Result<&'i str, WireError> {
    string(v, field)?.ok_or_else(|| invalid(field, Problem::Missing))
}

fn invalid(field: &'static str, problem: Problem) -> WireError {
    WireError::Engine(Error::invalid(field, problem))
}

fn malformed(field: &'static str, expected: &'static str) -> WireError {
    invalid(field, Problem::Malformed(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, Rejected> {
        Parser::new().parse(&mut text.as_bytes().to_vec(), None)
    }

    #[test]
    fn event_with_everything() {
        let r = parse(
            r#"{"op":"event","id":1,"user":"u1","type":"click","item":"i9","value":12.5,
               "ts":1732200000000,"context":{"device":"mobile","hour":21,"new":true},
               "decision":"0001000000000002"}"#,
        )
        .unwrap();
        assert_eq!(r.id, ReqId::Int(1));
        let Op::Event(e) = r.op else {
            panic!("not an event: {r:?}")
        };
        assert_eq!(e.kind, EventType::Builtin(EventKind::Click));
        assert_eq!(e.item.as_deref(), Some("i9"));
        assert_eq!(e.value, Some(12.5));
        assert_eq!(e.ts_ms, Some(1_732_200_000_000));
        assert_eq!(e.context[1], ("hour".to_string(), "21".to_string()));
        assert_eq!(e.context[2], ("new".to_string(), "true".to_string()));
        assert_eq!(e.decision, Some(DecisionId(0x0001_0000_0000_0002)));
    }

    #[test]
    fn decide_with_inline_candidates_and_repeated_attrs() {
        let r = parse(
            r#"{"op":"decide","id":"a","user":"u1","candidates":["i1",
               {"id":"i7","attrs":{"genre":["a","b"],"n":3},"vector":[1,0.5]}],"n":1,"explain":true}"#,
        )
        .unwrap();
        assert_eq!(r.id, ReqId::Str("a".into()));
        let Op::Decide(d) = r.op else { panic!() };
        assert_eq!(d.n, 1);
        assert!(d.explain);
        let Candidate::Inline(spec) = &d.candidates[1] else {
            panic!()
        };
        assert_eq!(spec.attrs.len(), 3);
        assert_eq!(spec.vector.as_deref(), Some(&[1.0f32, 0.5][..]));
        assert!(d.track, "tracked unless asked otherwise");
    }

    #[test]
    fn issue10_decide_takes_track_and_ts_and_reward_takes_ts() {
        let r = parse(
            r#"{"op":"decide","user":"u1","candidates":["i1"],"track":false,"ts":1732200000000}"#,
        )
        .unwrap();
        let Op::Decide(d) = r.op else { panic!() };
        assert!(!d.track);
        assert_eq!(d.ts_ms, Some(1_732_200_000_000));
        let r = parse(
            r#"{"op":"reward","decision":"0001000000000002","item":"i1","ts":1732200000000}"#,
        )
        .unwrap();
        let Op::Reward { ts_ms, value, .. } = r.op else {
            panic!()
        };
        assert_eq!((ts_ms, value), (Some(1_732_200_000_000), 1.0));
        let e = parse(r#"{"op":"decide","user":"u1","candidates":["i1"],"track":"no"}"#);
        assert!(e.is_err());
    }

    #[test]
    fn errors_echo_the_id_and_name_the_field() {
        let e = parse(r#"{"op":"event","id":7,"type":"click"}"#).unwrap_err();
        assert_eq!(e.id, ReqId::Int(7));
        assert_eq!(e.error.to_string(), "field `user` is missing");
        let e = parse(r#"{"op":"nope","id":8}"#).unwrap_err();
        assert_eq!(e.error, WireError::UnknownOp("nope".into()));
        let e = parse(r#"{"id": 9, "op":"event", broken"#).unwrap_err();
        assert_eq!(e.id, ReqId::Int(9));
        assert_eq!(e.error.code(), "bad_request");
        // An unknown type is a name until execution, where only the engine knows aliases.
        let r = parse(r#"{"op":"event","id":10,"user":"u","type":"warp"}"#).unwrap();
        let Op::Event(e) = r.op else { panic!() };
        assert_eq!(e.kind, EventType::Named("warp".into()));
        let refused = e.builtin().unwrap_err();
        assert!(refused.to_string().contains("warp"), "{refused}");
    }

    #[test]
    fn batch_elements_stand_alone() {
        let r = parse(r#"{"op":"batch","id":1,"ops":[{"op":"ping","id":2},{"op":"x","id":3},{"op":"batch","ops":[]}]}"#)
            .unwrap();
        let Op::Batch(ops) = r.op else { panic!() };
        assert!(ops[0].is_ok());
        assert_eq!(ops[1].as_ref().unwrap_err().id, ReqId::Int(3));
        assert_eq!(ops[2].as_ref().unwrap_err().error, WireError::NestedBatch);
    }

    #[test]
    fn recover_id_is_best_effort() {
        assert_eq!(
            recover_id(br#"{"id" : "x1", "op": "#),
            ReqId::Str("x1".into())
        );
        assert_eq!(recover_id(br#"{"user":"id","id":-3,"#), ReqId::Int(-3));
        assert_eq!(recover_id(b"garbage"), ReqId::None);
    }
}
