//! The harness's side of nudge's JSON protocol (DESIGN §4): encodes workload ops as one JSON
//! object each (a TCP line, a WebSocket frame, or an HTTP request) and parses the replies into
//! `Reply`. It knows the shapes on the wire, not sockets or timing.

use std::borrow::Cow;
use std::io::Write;

use nudge::wire::OpKind;
use serde::Deserialize;

use crate::workload::{Op, Shown, Workload, DEVICES};

/// What a request got back.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Accepted (an event, reward or item).
    Ack,
    /// A decision.
    Decision(Shown),
    /// Refused, with the error code.
    Error(String),
    /// A batch's results: how many events were accepted, and the codes of the others.
    Batch {
        /// Accepted events.
        acked: u32,
        /// Error codes of the refused ones.
        errors: Vec<String>,
    },
}

/// Writes `op` as one JSON object (no newline). Ids never need escaping: the workload makes
/// them (`u12`, `i34`, `c5`).
pub fn encode(op: &Op, id: u64, w: &Workload, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = encode_inner(op, Some(id), true, w, out);
}

/// Writes `op`'s HTTP body: the same object without `op` and `id` (the path names the op);
/// a batch is a JSON array of events.
pub fn encode_body(op: &Op, w: &Workload, out: &mut Vec<u8>) {
    if let Op::Batch(events) = op {
        out.push(b'[');
        for (k, e) in events.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let _ = encode_inner(&Op::Event(e.clone()), None, false, w, out);
        }
        out.push(b']');
        return;
    }
    let _ = encode_inner(op, None, false, w, out);
}

fn encode_inner(
    op: &Op,
    id: Option<u64>,
    with_op: bool,
    w: &Workload,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    // The op's wire name, from nudge's one table of ops.
    let name = match op {
        Op::Item(_) => OpKind::Item,
        Op::Event(_) => OpKind::Event,
        Op::Decide(_) => OpKind::Decide,
        Op::Reward(_) => OpKind::Reward,
        Op::Batch(_) => OpKind::Batch,
    }
    .name();
    out.push(b'{');
    if with_op {
        write!(out, "\"op\":\"{name}\",")?;
    }
    if let Some(id) = id {
        write!(out, "\"id\":{id},")?;
    }
    match op {
        Op::Item(i) => {
            write!(
                out,
                "\"item\":\"i{i}\",\"attrs\":{{\"category\":\"c{}\"}},\"vector\":[",
                w.category(*i)
            )?;
            for (k, x) in w.vector(*i).iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write!(out, "{x}")?;
            }
            out.push(b']');
        }
        Op::Batch(events) => {
            out.extend_from_slice(b"\"ops\":[");
            for (k, e) in events.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                encode_inner(&Op::Event(e.clone()), None, true, w, out)?;
            }
            out.push(b']');
        }
        Op::Event(e) => {
            write!(
                out,
                "\"user\":\"u{}\",\"type\":\"{}\"",
                e.user,
                e.kind.name()
            )?;
            if let Some(item) = e.item {
                write!(out, ",\"item\":\"i{item}\"")?;
            }
            if let Some(v) = e.value {
                write!(out, ",\"value\":{v}")?;
            }
            if let Some(d) = e.decision {
                write!(out, ",\"decision\":\"{d:016x}\"")?;
            }
            write!(
                out,
                ",\"context\":{{\"device\":\"{}\"}}",
                DEVICES[w.device(e.user)]
            )?;
        }
        Op::Decide(d) => {
            write!(out, "\"user\":\"u{}\",\"candidates\":[", d.user)?;
            for (k, c) in d.candidates.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                write!(out, "\"i{c}\"")?;
            }
            write!(
                out,
                "],\"n\":{},\"context\":{{\"device\":\"{}\"}}",
                d.n,
                DEVICES[w.device(d.user)]
            )?;
        }
        Op::Reward(r) => {
            write!(
                out,
                "\"decision\":\"{:016x}\",\"item\":\"i{}\",\"value\":{}",
                r.decision, r.item, r.value
            )?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// The HTTP method and path of `op` (`PUT /v1/items/{id}`, `POST /v1/events`, …).
pub fn http_route(op: &Op) -> (&'static str, Cow<'static, str>) {
    match op {
        Op::Item(i) => ("PUT", Cow::Owned(format!("/v1/items/i{i}"))),
        Op::Event(_) => ("POST", Cow::Borrowed("/v1/events")),
        Op::Decide(_) => ("POST", Cow::Borrowed("/v1/decide")),
        Op::Reward(_) => ("POST", Cow::Borrowed("/v1/reward")),
        Op::Batch(_) => ("POST", Cow::Borrowed("/v1/events")),
    }
}

#[derive(Deserialize)]
struct WireReply<'a> {
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    items: Option<Vec<WireItem<'a>>>,
    #[serde(borrow, default)]
    error: Option<WireError<'a>>,
    #[serde(borrow, default)]
    results: Option<Vec<WireReply<'a>>>,
    /// HTTP `/v1/events` answers `{"accepted":n,"rejected":m,"errors":[…]}`.
    #[serde(default)]
    accepted: Option<u32>,
    #[serde(borrow, default)]
    errors: Option<Vec<WireReply<'a>>>,
}

#[derive(Deserialize)]
struct WireItem<'a> {
    #[serde(borrow)]
    item: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
}

/// Parses a workload item id (`i123`).
pub fn item_index(id: &str) -> Option<u32> {
    id.strip_prefix('i')?.parse().ok()
}

/// Parses one reply object. Anything that is not JSON is the error `bad_reply`.
pub fn parse_reply(bytes: &[u8]) -> Reply {
    let Ok(r) = serde_json::from_slice::<WireReply>(bytes) else {
        return Reply::Error("bad_reply".into());
    };
    if let Some(e) = r.error {
        return Reply::Error(e.code.into_owned());
    }
    if let Some(acked) = r.accepted {
        let errors = r.errors.unwrap_or_default().into_iter();
        let errors = errors
            .filter_map(|e| e.error.map(|e| e.code.into_owned()))
            .collect();
        return Reply::Batch { acked, errors };
    }
    if let Some(results) = r.results {
        let mut acked = 0;
        let mut errors = Vec::new();
        for r in results {
            match r.error {
                Some(e) => errors.push(e.code.into_owned()),
                None => acked += 1,
            }
        }
        return Reply::Batch { acked, errors };
    }
    match (r.decision, r.items) {
        (Some(d), Some(items)) => match u64::from_str_radix(&d, 16) {
            Ok(decision) => Reply::Decision(Shown {
                decision,
                items: items.iter().filter_map(|i| item_index(&i.item)).collect(),
            }),
            Err(_) => Reply::Error("bad_reply".into()),
        },
        _ => Reply::Ack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let d = parse_reply(br#"{"id":2,"decision":"00010000000000ff","items":[{"item":"i2","score":0.7,"propensity":0.9}]}"#);
        assert_eq!(
            d,
            Reply::Decision(Shown {
                decision: 0x1_0000_0000_00ff,
                items: vec![2]
            })
        );
        let e = parse_reply(br#"{"id":7,"error":{"code":"bad_request","message":"x"}}"#);
        assert_eq!(e, Reply::Error("bad_request".into()));
        assert_eq!(parse_reply(br#"{"id":1}"#), Reply::Ack);
        let b = parse_reply(
            br#"{"id":3,"results":[{"id":null,"ok":true},{"id":null,"error":{"code":"busy","message":"m"}}]}"#,
        );
        assert_eq!(
            b,
            Reply::Batch {
                acked: 1,
                errors: vec!["busy".into()]
            }
        );
        let h = parse_reply(
            br#"{"accepted":2,"rejected":1,"errors":[{"index":1,"id":null,"error":{"code":"bad_request","message":"m"}}]}"#,
        );
        assert_eq!(
            h,
            Reply::Batch {
                acked: 2,
                errors: vec!["bad_request".into()]
            }
        );
        assert_eq!(parse_reply(b"nope"), Reply::Error("bad_reply".into()));
    }
}
