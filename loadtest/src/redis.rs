//! The Redis baseline: the same per-event work as nudge (decay a 32-float state vector, add the
//! event's signal, one Adam step over 32 personal weights) as Lua scripts run with `EVALSHA`,
//! which is what teams do when they keep such state in Redis. It owns the scripts and the
//! RESP encoding of workload ops; the connection plumbing lives in `client`.
//!
//! Layout in Redis: item `iN` is a string of 32 little-endian `f32`s; user `uN`'s state is the
//! string `s:uN` packing `last_ms, t` (two doubles) and `s, w, m, v` (4 × 32 floats).
//! RESP is spoken directly (it is a few lines), so no client crate is needed.

use std::io::Write;

use nudge::EventKind;

use crate::workload::{Op, Workload};

/// The per-event script. KEYS: user state, item (or ""). ARGV: now (ms), signal ρ, reward r
/// (negative: no training step).
pub const EVENT_SCRIPT: &str = r#"
local D = 32
local FMT = '<dd' .. string.rep('f', 4 * D)
local HALF_LIFE_MS, LR, B1, B2, EPS, L2 = 3600000, 0.05, 0.9, 0.999, 1e-8, 1e-4
local x = {}
local xs = KEYS[2] ~= '' and redis.call('GET', KEYS[2])
if xs then x = {struct.unpack('<' .. string.rep('f', D), xs)} else for i = 1, D do x[i] = 0 end end
local now, rho, r = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local st = redis.call('GET', KEYS[1])
local a
if st then a = {struct.unpack(FMT, st)} else a = {now, 0}; for i = 3, 2 + 4 * D do a[i] = 0 end end
local decay = 2 ^ (-math.max(now - a[1], 0) / HALF_LIFE_MS)
for i = 1, D do a[2 + i] = a[2 + i] * decay + rho * x[i] end
if r >= 0 and xs then
  local z = 0
  for i = 1, D do z = z + a[2 + D + i] * x[i] end
  local e = 1 / (1 + math.exp(-z)) - r
  local t = a[2] + 1
  local c1, c2 = 1 - B1 ^ t, 1 - B2 ^ t
  for i = 1, D do
    local w = a[2 + D + i]
    local g = e * x[i] + L2 * w
    local m = B1 * a[2 + 2 * D + i] + (1 - B1) * g
    local v = B2 * a[2 + 3 * D + i] + (1 - B2) * g * g
    a[2 + 2 * D + i], a[2 + 3 * D + i] = m, v
    a[2 + D + i] = w - LR * (m / c1) / (math.sqrt(v / c2) + EPS)
  end
  a[2] = t
end
a[1] = math.max(now, a[1])
redis.call('SET', KEYS[1], struct.pack(FMT, unpack(a, 1, 2 + 4 * D)))
return 1
"#;

/// The decision script: scores each candidate by `⟨w + ŝ, x⟩` and returns the decision number
/// and the top `n` item numbers. KEYS: user state, candidates. ARGV: n.
pub const DECIDE_SCRIPT: &str = r#"
local D = 32
local FMT = '<dd' .. string.rep('f', 4 * D)
local VFMT = '<' .. string.rep('f', D)
local q = {}
for i = 1, D do q[i] = 0 end
local st = redis.call('GET', KEYS[1])
if st then
  local a = {struct.unpack(FMT, st)}
  local norm = 0
  for i = 1, D do norm = norm + a[2 + i] * a[2 + i] end
  norm = math.sqrt(norm)
  for i = 1, D do q[i] = a[2 + D + i] + (norm > 0 and a[2 + i] / norm or 0) end
end
local scored = {}
for k = 2, #KEYS do
  local xs = redis.call('GET', KEYS[k])
  local z = 0
  if xs then
    local x = {struct.unpack(VFMT, xs)}
    for i = 1, D do z = z + q[i] * x[i] end
  end
  scored[#scored + 1] = {z, tonumber(string.sub(KEYS[k], 2))}
end
table.sort(scored, function(l, r) return l[1] > r[1] end)
local out = {redis.call('INCR', 'decision_seq')}
for i = 1, math.min(tonumber(ARGV[1]), #scored) do out[#out + 1] = scored[i][2] end
return out
"#;

/// The state signal ρ and the training reward of an event (negative: none), mirroring
/// nudge's defaults closely enough for a cost comparison.
fn signal(kind: EventKind, value: Option<f32>) -> (f32, f32) {
    let v = value.unwrap_or(1.0);
    match kind {
        EventKind::Impression => (0.1, -1.0),
        EventKind::Click => (1.0, 1.0),
        EventKind::Dwell => (v.ln_1p() * 0.5, (v / 30.0).min(1.0)),
        EventKind::Scroll => (0.0, -1.0),
        EventKind::Conversion => (2.0, 1.0),
        EventKind::Rating => ((v - 3.0) / 2.0, (v - 1.0) / 4.0),
        EventKind::Sentiment => (0.0, -1.0),
        EventKind::Skip => (-0.5, 0.0),
    }
}

fn array_header(out: &mut Vec<u8>, n: usize) {
    let _ = write!(out, "*{n}\r\n");
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    let _ = write!(out, "${}\r\n", bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn bulk_fmt(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    bulk(out, text.as_bytes());
}

/// Encodes `SCRIPT LOAD script`.
pub fn script_load(script: &str, out: &mut Vec<u8>) {
    array_header(out, 3);
    bulk(out, b"SCRIPT");
    bulk(out, b"LOAD");
    bulk(out, script.as_bytes());
}

/// Encodes `op` as a RESP command: `SET` for items, `EVALSHA` otherwise.
pub fn encode(op: &Op, w: &Workload, shas: &Shas, now_ms: u64, out: &mut Vec<u8>) {
    match op {
        Op::Item(i) => {
            array_header(out, 3);
            bulk(out, b"SET");
            bulk_fmt(out, format_args!("i{i}"));
            let bytes: Vec<u8> = w.vector(*i).iter().flat_map(|x| x.to_le_bytes()).collect();
            bulk(out, &bytes);
        }
        Op::Event(e) => {
            let (rho, r) = signal(e.kind, e.value);
            event(out, &shas.event, e.user, e.item, now_ms, rho, r);
        }
        Op::Reward(r) => event(out, &shas.event, r.user, Some(r.item), now_ms, 0.0, r.value),
        // The driver refuses `--batch` for Redis (pipelining is its batching).
        Op::Batch(_) => {}
        Op::Decide(d) => {
            array_header(out, 5 + d.candidates.len());
            bulk(out, b"EVALSHA");
            bulk(out, shas.decide.as_bytes());
            bulk_fmt(out, format_args!("{}", 1 + d.candidates.len()));
            bulk_fmt(out, format_args!("s:u{}", d.user));
            for c in &d.candidates {
                bulk_fmt(out, format_args!("i{c}"));
            }
            bulk_fmt(out, format_args!("{}", d.n));
        }
    }
}

fn event(out: &mut Vec<u8>, sha: &str, user: u32, item: Option<u32>, now: u64, rho: f32, r: f32) {
    array_header(out, 8);
    bulk(out, b"EVALSHA");
    bulk(out, sha.as_bytes());
    bulk(out, b"2");
    bulk_fmt(out, format_args!("s:u{user}"));
    match item {
        Some(i) => bulk_fmt(out, format_args!("i{i}")),
        None => bulk(out, b""),
    }
    bulk_fmt(out, format_args!("{now}"));
    bulk_fmt(out, format_args!("{rho}"));
    bulk_fmt(out, format_args!("{r}"));
}

/// The SHA1s of the loaded scripts.
#[derive(Clone, Debug, Default)]
pub struct Shas {
    /// Of `EVENT_SCRIPT`.
    pub event: String,
    /// Of `DECIDE_SCRIPT`.
    pub decide: String,
}

/// One parsed RESP value (only what the scripts return).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+text`, or a bulk string.
    Text(String),
    /// `:n`.
    Int(i64),
    /// `-message`.
    Error(String),
    /// `*n`.
    Array(Vec<Value>),
    /// `$-1` or `*-1`.
    Nil,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{DecideOp, EventOp, WorkloadConfig};

    /// Each command's array header counts exactly the bulk strings that follow it.
    fn assert_well_formed(bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split("\r\n");
        let header = lines.next().unwrap();
        let n: usize = header.strip_prefix('*').unwrap().parse().unwrap();
        let bulks = lines.filter(|l| l.starts_with('$')).count();
        assert_eq!(n, bulks, "{text}");
    }

    #[test]
    fn commands_are_well_formed() {
        let cfg = WorkloadConfig {
            users: 100,
            items: 400,
            ..WorkloadConfig::default()
        };
        let w = Workload::new(cfg).unwrap();
        let shas = Shas {
            event: "e".repeat(40),
            decide: "d".repeat(40),
        };
        let decide = Op::Decide(DecideOp {
            session: 1,
            user: 3,
            candidates: (0..100).collect(),
            n: 10,
        });
        let scroll = Op::Event(EventOp {
            user: 3,
            kind: EventKind::Scroll,
            item: None,
            value: Some(0.5),
            decision: None,
        });
        for op in [decide, scroll] {
            let mut out = Vec::new();
            encode(&op, &w, &shas, 1, &mut out);
            assert_well_formed(&out);
        }
    }
}
