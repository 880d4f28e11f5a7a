//! The JSON shapes of Segment's HTTP Tracking API (`track`, `page`, `screen`, `identify`,
//! `batch`), read into plain `SegmentCall`s, and ISO-8601 times. What the calls *mean* for
//! nudge (the mapping table, dedup, skew correction, auth) is the server's business.

use simd_json::prelude::*;
use simd_json::tape::Value as Json;
use simd_json::ValueType;

use super::parse::{number, scalar};
use super::{Parser, Rejected, ReqId, WireError};

/// The kind of a Segment call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallType {
    /// `track`: a named event with properties.
    Track,
    /// `page`: a web page view.
    Page,
    /// `screen`: a mobile screen view.
    Screen,
    /// `identify`: traits of a user (nudge keeps none).
    Identify,
    /// `group`, `alias` and anything else: accepted and ignored.
    Other,
}

impl CallType {
    fn parse(name: &str) -> CallType {
        match name {
            "track" => CallType::Track,
            "page" => CallType::Page,
            "screen" => CallType::Screen,
            "identify" => CallType::Identify,
            _ => CallType::Other,
        }
    }
}

/// A property value that nudge can use.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The value as text (numbers in shortest form).
    pub fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Num(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
    /// The value as a number, if it is one (or a string holding one).
    pub fn number(&self) -> Option<f64> {
        match self {
            Scalar::Num(n) => Some(*n),
            Scalar::Str(s) => s.trim().parse().ok(),
            Scalar::Bool(_) => None,
        }
    }
}

/// One Segment call, as sent.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentCall {
    /// Its kind.
    pub call: CallType,
    /// `messageId`, for deduplication.
    pub message_id: Option<String>,
    /// `userId`, else `anonymousId`.
    pub user: Option<String>,
    /// `event` of a track call, `name` of a page or screen call.
    pub name: Option<String>,
    /// The top-level scalar `properties`.
    pub properties: Vec<(String, Scalar)>,
    /// The scalar leaves of `context`, keyed by dotted path (`device.type`).
    pub context: Vec<(String, String)>,
    /// `timestamp` (Unix ms).
    pub timestamp_ms: Option<i64>,
    /// `originalTimestamp` (Unix ms).
    pub original_timestamp_ms: Option<i64>,
    /// `sentAt` (Unix ms), from the call or else its batch.
    pub sent_at_ms: Option<i64>,
    /// Size of the call's JSON (minified), for the per-call limit.
    pub bytes: usize,
}

impl SegmentCall {
    /// A property by name.
    pub fn property(&self, name: &str) -> Option<&Scalar> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Deepest `context` nesting read; deeper leaves are ignored.
const MAX_CONTEXT_DEPTH: usize = 4;
/// Most `context` leaves read per call.
const MAX_CONTEXT_LEAVES: usize = 64;

impl Parser {
    /// Parses a Segment request body: one call of kind `call`, or (with `None`) a
    /// `{"batch":[…],"sentAt":…}` whose elements carry their own `type`.
    pub fn parse_segment(
        &mut self,
        input: &mut [u8],
        call: Option<CallType>,
    ) -> Result<Vec<SegmentCall>, WireError> {
        let size = input.len();
        self.with_value(input, |v| {
            let reject = |error| Rejected {
                id: ReqId::None,
                error,
            };
            let obj = v.as_object().ok_or(reject(WireError::NotObject))?;
            match call {
                Some(kind) => Ok(vec![
                    segment_call(v, Some(kind), None, size).map_err(reject)?
                ]),
                None => {
                    let sent_at = obj.get("sentAt").map(|t| time(t, "sentAt")).transpose();
                    let sent_at = sent_at.map_err(reject)?.flatten();
                    let batch = obj.get("batch").and_then(|b| b.as_array()).ok_or(reject(
                        WireError::BadRequest("`batch` must be an array of calls".into()),
                    ))?;
                    let mut out = Vec::with_capacity(batch.len());
                    for m in batch.iter() {
                        let bytes = m.encode().len();
                        out.push(segment_call(m, None, sent_at, bytes).map_err(reject)?);
                    }
                    Ok(out)
                }
            }
        })
        .map_err(|r| r.error)
    }
}

fn segment_call(
    v: Json<'_, '_>,
    call: Option<CallType>,
    batch_sent_at: Option<i64>,
    bytes: usize,
) -> Result<SegmentCall, WireError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("each call must be an object"))?;
    let text = |k: &str| obj.get(k).and_then(scalar);
    let call = match call {
        Some(c) => c,
        None => CallType::parse(&text("type").ok_or_else(|| bad("a batched call needs `type`"))?),
    };
    let name = match call {
        CallType::Track => text("event"),
        _ => text("name"),
    };
    let mut properties = Vec::new();
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props.iter() {
            let value = match v.value_type() {
                ValueType::String => v.into_string().map(|s| Scalar::Str(s.to_string())),
                ValueType::Bool => v.as_bool().map(Scalar::Bool),
                _ => number(v).map(Scalar::Num),
            };
            if let Some(value) = value {
                properties.push((k.to_string(), value));
            }
        }
    }
    let mut context = Vec::new();
    if let Some(c) = obj.get("context") {
        flatten(c, &mut String::new(), 0, &mut context);
    }
    let opt_time = |k: &'static str| obj.get(k).map(|t| time(t, k)).transpose();
    Ok(SegmentCall {
        call,
        message_id: text("messageId"),
        user: text("userId").or_else(|| text("anonymousId")),
        name,
        properties,
        context,
        timestamp_ms: opt_time("timestamp")?.flatten(),
        original_timestamp_ms: opt_time("originalTimestamp")?.flatten(),
        sent_at_ms: opt_time("sentAt")?.flatten().or(batch_sent_at),
        bytes,
    })
}

fn flatten(v: Json<'_, '_>, prefix: &mut String, depth: usize, out: &mut Vec<(String, String)>) {
    let Some(obj) = v.as_object() else { return };
    for (k, v) in obj.iter() {
        if out.len() >= MAX_CONTEXT_LEAVES {
            return;
        }
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(k);
        if let Some(s) = scalar(v) {
            out.push((prefix.clone(), s));
        } else if depth + 1 < MAX_CONTEXT_DEPTH {
            flatten(v, prefix, depth + 1, out);
        }
        prefix.truncate(len);
    }
}

/// A Segment time: an ISO-8601 string, or a number of Unix milliseconds; `null` is absent.
fn time(v: Json<'_, '_>, field: &'static str) -> Result<Option<i64>, WireError> {
    if v.value_type() == ValueType::Null {
        return Ok(None);
    }
    let ms = match v.into_string() {
        Some(s) => parse_time_ms(s),
        None => number(v).filter(|n| n.abs() < 1e17).map(|n| n as i64),
    };
    ms.map(Some)
        .ok_or_else(|| bad(&format!("`{field}` must be an ISO-8601 time")))
}

fn bad(what: &str) -> WireError {
    WireError::BadRequest(what.to_string())
}

/// Parses an ISO-8601 / RFC 3339 time (`2024-05-01T12:00:00.123Z`, `…+02:00`, or a bare
/// date) into Unix milliseconds, negative before 1970 (a valid time: a device whose clock
/// was reset sends one, and the skew correction still places its events); `None` if
/// malformed.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64)
        })
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.get(13) != Some(&b':') {
            return None;
        }
        let (h, m) = (digits(11..13)?, digits(14..16)?);
        let mut i = 16;
        let mut sec = 0;
        if b.get(16) == Some(&b':') {
            sec = digits(17..19)?;
            i = 19;
        }
        if h > 23 || m > 59 || sec > 60 {
            return None;
        }
        ms += (h * 3600 + m * 60 + sec) * 1000;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let frac = &s[start..end.min(start + 3)];
            let scale = 10i64.pow(3 - frac.len() as u32);
            ms += frac.parse::<i64>().ok()? * scale;
            i = end;
        }
        match b.get(i) {
            None => {}
            Some(b'Z' | b'z') if i + 1 == b.len() => {}
            Some(sign @ (b'+' | b'-')) => {
                let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
                if b.get(i + 3) != Some(&b':') || b.len() != i + 6 {
                    return None;
                }
                let offset = (oh * 60 + om) * 60_000;
                ms += if *sign == b'+' { -offset } else { offset };
            }
            _ => return None,
        }
    }
    Some(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time_ms("2024-11-21T14:40:00.123Z"),
            Some(1_732_200_000_123)
        );
        assert_eq!(
            parse_time_ms("2024-11-21T15:40:00.1+01:00"),
            Some(1_732_200_000_100)
        );
        assert_eq!(parse_time_ms("2024-11-21"), Some(1_732_147_200_000));
        assert_eq!(parse_time_ms("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_time_ms("yesterday"), None);
        assert_eq!(parse_time_ms("1969-12-31T23:59:59Z"), Some(-1000));
    }

    #[test]
    fn batch_calls() {
        let mut p = Parser::new();
        let mut body = br#"{"batch":[{"type":"track","userId":"u1","event":"Product Clicked",
            "properties":{"product_id":"p1","price":9.5,"tags":["x"]},
            "context":{"device":{"type":"mobile"},"locale":"en-US"},"messageId":"m1",
            "timestamp":"2024-11-21T14:40:00Z"},{"type":"identify","anonymousId":"a1"}],
            "sentAt":"2024-11-21T14:40:05Z"}"#
            .to_vec();
        let calls = p.parse_segment(&mut body, None).unwrap();
        assert_eq!(calls.len(), 2);
        let c = &calls[0];
        assert_eq!(c.call, CallType::Track);
        assert_eq!(c.name.as_deref(), Some("Product Clicked"));
        assert_eq!(c.property("product_id"), Some(&Scalar::Str("p1".into())));
        assert_eq!(c.property("tags"), None);
        assert!(c.context.contains(&("device.type".into(), "mobile".into())));
        assert_eq!(c.sent_at_ms, Some(1_732_200_005_000));
        assert_eq!(calls[1].user.as_deref(), Some("a1"));
        assert!(c.bytes > 100);
    }
}
