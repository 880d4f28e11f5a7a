//! Server metrics: request counters by transport, op and outcome, latency histograms in
//! seconds, connection gauges, and the engine's counters, rendered as Prometheus text.
//!
//! Counters are relaxed atomics in fixed arrays (no locks, no allocation on the hot path);
//! labels are a closed set (transport, op, outcome, shard), never a user or item id.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::api::Stats;
use crate::error::ErrorCode;
use crate::wire::{OpKind, Reply};

/// Where a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP line-JSON.
    Tcp,
    /// WebSocket frames.
    Ws,
    /// HTTP routes.
    Http,
    /// Segment-compatible HTTP routes.
    Segment,
}

impl Transport {
    /// Every transport, in a fixed order (metrics index by it).
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Ws,
        Transport::Http,
        Transport::Segment,
    ];

    /// The label `transport="…"`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
            Transport::Http => "http",
            Transport::Segment => "segment",
        }
    }
}

/// A metrics op: a protocol op (named by `OpKind`, the protocol's one table of ops) or a
/// Segment call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricOp {
    /// A protocol op.
    Op(OpKind),
    /// Segment `track`.
    Track,
    /// Segment `page`.
    Page,
    /// Segment `screen`.
    Screen,
    /// Segment `identify` (and the other calls nudge ignores).
    Identify,
    /// Segment `batch`.
    SegmentBatch,
}

impl MetricOp {
    /// The Segment calls, in index order after the protocol's ops.
    const SEGMENT: [MetricOp; 5] = [
        MetricOp::Track,
        MetricOp::Page,
        MetricOp::Screen,
        MetricOp::Identify,
        MetricOp::SegmentBatch,
    ];

    /// How many there are.
    const COUNT: usize = OpKind::ALL.len() + MetricOp::SEGMENT.len();

    /// Every metrics op, in index order.
    pub fn all() -> impl Iterator<Item = MetricOp> {
        OpKind::ALL
            .into_iter()
            .map(MetricOp::Op)
            .chain(MetricOp::SEGMENT)
    }

    /// The label `op="…"`: a protocol op's wire name, or the Segment call's.
    pub fn name(self) -> &'static str {
        match self {
            MetricOp::Op(kind) => kind.name(),
            MetricOp::Track => "track",
            MetricOp::Page => "page",
            MetricOp::Screen => "screen",
            MetricOp::Identify => "identify",
            MetricOp::SegmentBatch => "segment_batch",
        }
    }

    fn index(self) -> usize {
        match self {
            MetricOp::Op(kind) => kind.index(),
            segment => {
                let at = MetricOp::SEGMENT.iter().position(|s| *s == segment);
                // Every variant but `Op` is in `SEGMENT`.
                OpKind::ALL.len() + at.unwrap_or(0)
            }
        }
    }
}

impl From<OpKind> for MetricOp {
    fn from(kind: OpKind) -> Self {
        MetricOp::Op(kind)
    }
}

/// Outcomes: `ok`, then every error code (`ErrorCode::ALL`, which owns the labels).
const OUTCOMES: usize = 1 + ErrorCode::ALL.len();

fn outcome_index(code: Option<ErrorCode>) -> usize {
    code.map_or(0, |c| 1 + c.index())
}

/// The label `outcome="…"`: `ok`, or the error's code.
pub fn outcome_label(code: Option<ErrorCode>) -> &'static str {
    code.map_or("ok", ErrorCode::as_str)
}

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 20] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// Requests and latency summed over every series, at one moment (`Metrics::totals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Requests answered.
    pub requests: u64,
    /// Latency counts per bucket (not cumulative; the last is `+Inf`).
    pub latency: [u64; BUCKETS.len() + 1],
}

impl Totals {
    /// The upper bound (seconds) of the bucket holding quantile `q` of the requests answered
    /// since `before`; `None` when none were (or the quantile is past the last bound).
    pub fn quantile_since(&self, before: &Totals, q: f64) -> Option<f64> {
        let counts: Vec<u64> = (self.latency.iter().zip(&before.latency))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let n: u64 = counts.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return BUCKETS.get(i).copied();
            }
        }
        None
    }
}

/// Every counter the server keeps. One per server, shared by all front ends.
pub struct Metrics {
    requests: Vec<AtomicU64>,
    latency: Vec<Histogram>,
    /// Open TCP connections.
    pub tcp_connections: AtomicI64,
    /// Open WebSockets.
    pub ws_connections: AtomicI64,
    /// TCP connections refused at the limit.
    pub tcp_refused_total: AtomicU64,
    /// The TCP connection cap in force (`max_connections`, fitted to the open-file limit).
    pub tcp_max_connections: AtomicI64,
    /// Failed accepts (typically out of file descriptors); the loop backs off.
    pub accept_errors_total: AtomicU64,
    /// TCP lines longer than the limit (answered with an error and skipped).
    pub lines_too_long_total: AtomicU64,
    /// Connections closed because a request (TCP line, HTTP body) or a reply write did not
    /// complete within `request_timeout_ms`.
    pub slow_connections_closed_total: AtomicU64,
    /// Pushes delivered to WebSockets.
    pub ws_pushes_total: AtomicU64,
    /// Pushes dropped because a WebSocket fell behind.
    pub ws_push_dropped_total: AtomicU64,
    /// Segment calls dropped as repeated `messageId`s.
    pub segment_deduplicated_total: AtomicU64,
    /// Segment calls accepted but mapped to no nudge event.
    pub segment_ignored_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let n = Transport::ALL.len() * MetricOp::COUNT;
        Metrics {
            requests: (0..n * OUTCOMES).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..n).map(|_| Histogram::default()).collect(),
            tcp_connections: AtomicI64::new(0),
            ws_connections: AtomicI64::new(0),
            tcp_refused_total: AtomicU64::new(0),
            tcp_max_connections: AtomicI64::new(0),
            accept_errors_total: AtomicU64::new(0),
            lines_too_long_total: AtomicU64::new(0),
            slow_connections_closed_total: AtomicU64::new(0),
            ws_pushes_total: AtomicU64::new(0),
            ws_push_dropped_total: AtomicU64::new(0),
            segment_deduplicated_total: AtomicU64::new(0),
            segment_ignored_total: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records `count` requests of one op that ended with `code` (`None`: success), all
    /// started at `started`.
    pub fn record(
        &self,
        transport: Transport,
        op: MetricOp,
        code: Option<ErrorCode>,
        started: Instant,
        count: u64,
    ) {
        let series = transport as usize * MetricOp::COUNT + op.index();
        let outcome = outcome_index(code);
        self.requests[series * OUTCOMES + outcome].fetch_add(count, Relaxed);
        let ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let secs = ns as f64 * 1e-9;
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let h = &self.latency[series];
        h.counts[bucket].fetch_add(count, Relaxed);
        h.sum_ns.fetch_add(ns.saturating_mul(count), Relaxed);
    }

    /// Requests and their latency histogram summed over every transport, op and outcome
    /// (the dashboard differences two of these).
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            requests: self.requests.iter().map(|c| c.load(Relaxed)).sum(),
            latency: [0; BUCKETS.len() + 1],
        };
        for h in &self.latency {
            for (sum, c) in t.latency.iter_mut().zip(&h.counts) {
                *sum += c.load(Relaxed);
            }
        }
        t
    }

    /// Records one reply.
    pub fn record_reply(
        &self,
        transport: Transport,
        op: MetricOp,
        reply: &Reply,
        started: Instant,
    ) {
        self.record(transport, op, reply.error_code(), started, 1);
    }

    /// Renders everything, with the engine's `stats`, as Prometheus text (format 0.0.4).
    pub fn render(&self, stats: &Stats) -> String {
        let mut out = String::with_capacity(8192);
        self.render_requests(&mut out);
        self.render_latency(&mut out);
        render_engine(&mut out, stats);
        let gauges = [
            (
                "nudge_connections",
                "Open connections.",
                "gauge",
                "tcp",
                self.tcp_connections.load(Relaxed),
            ),
            (
                "nudge_connections",
                "",
                "",
                "ws",
                self.ws_connections.load(Relaxed),
            ),
            (
                "nudge_max_connections",
                "The connection cap in force (fitted to the open-file limit).",
                "gauge",
                "tcp",
                self.tcp_max_connections.load(Relaxed),
            ),
        ];
        for (name, help, kind, transport, v) in gauges {
            header(&mut out, name, help, kind);
            let _ = writeln!(out, "{name}{{transport=\"{transport}\"}} {v}");
        }
        let counters = [
            (
                "nudge_connections_refused_total",
                "TCP connections refused at the limit.",
                &self.tcp_refused_total,
            ),
            (
                "nudge_accept_errors_total",
                "Failed TCP accepts (out of file descriptors); accepting backs off.",
                &self.accept_errors_total,
            ),
            (
                "nudge_lines_too_long_total",
                "TCP lines over the length limit, skipped.",
                &self.lines_too_long_total,
            ),
            (
                "nudge_slow_connections_closed_total",
                "Connections closed because a request or reply missed request_timeout_ms.",
                &self.slow_connections_closed_total,
            ),
            (
                "nudge_ws_pushes_total",
                "User updates pushed to WebSockets.",
                &self.ws_pushes_total,
            ),
            (
                "nudge_ws_push_dropped_total",
                "User updates dropped because a WebSocket fell behind.",
                &self.ws_push_dropped_total,
            ),
            (
                "nudge_segment_deduplicated_total",
                "Segment calls dropped as repeated messageIds.",
                &self.segment_deduplicated_total,
            ),
            (
                "nudge_segment_ignored_total",
                "Segment calls accepted but mapped to no event.",
                &self.segment_ignored_total,
            ),
        ];
        for (name, help, v) in counters {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
        out
    }

    fn render_requests(&self, out: &mut String) {
        let name = "nudge_requests_total";
        header(
            out,
            name,
            "Requests handled, by transport, op and outcome.",
            "counter",
        );
        let codes = std::iter::once(None).chain(ErrorCode::ALL.map(Some));
        let outcomes: Vec<Option<ErrorCode>> = codes.collect();
        for (t, transport) in Transport::ALL.iter().enumerate() {
            for op in MetricOp::all() {
                let series = t * MetricOp::COUNT + op.index();
                for &code in &outcomes {
                    let k = outcome_index(code);
                    let v = self.requests[series * OUTCOMES + k].load(Relaxed);
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{transport=\"{}\",op=\"{}\",outcome=\"{}\"}} {v}",
                            transport.name(),
                            op.name(),
                            outcome_label(code),
                        );
                    }
                }
            }
        }
    }

    fn render_latency(&self, out: &mut String) {
        let name = "nudge_request_duration_seconds";
        header(
            out,
            name,
            "Time from parsed request to reply ready, in seconds.",
            "histogram",
        );
        for (t, transport) in Transport::ALL.iter().enumerate() {
            for op in MetricOp::all() {
                let h = &self.latency[t * MetricOp::COUNT + op.index()];
                let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
                let total: u64 = counts.iter().sum();
                if total == 0 {
                    continue;
                }
                let labels = format!("transport=\"{}\",op=\"{}\"", transport.name(), op.name());
                let mut cumulative = 0;
                for (i, bound) in BUCKETS.iter().enumerate() {
                    cumulative += counts[i];
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
                let sum = h.sum_ns.load(Relaxed) as f64 * 1e-9;
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
            }
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    if !help.is_empty() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    }
}

/// A per-shard gauge: name, help, and how to read it.
type ShardGauge = (
    &'static str,
    &'static str,
    fn(&crate::api::ShardStats) -> u64,
);

fn render_engine(out: &mut String, stats: &Stats) {
    let per_shard: [ShardGauge; 4] = [
        (
            "nudge_shard_inbox_depth",
            "Messages waiting in each shard's inbox.",
            |s| s.inbox_depth,
        ),
        (
            "nudge_resident_users",
            "Users resident in each shard's memory.",
            |s| s.resident_users,
        ),
        (
            "nudge_open_decisions",
            "Decisions open for attribution in each shard.",
            |s| s.open_decisions,
        ),
        (
            "nudge_parked_bytes",
            "Bytes of evicted users each shard holds until a checkpoint stores them.",
            |s| s.parked_bytes,
        ),
    ];
    for (name, help, get) in per_shard {
        header(out, name, help, "gauge");
        for (i, s) in stats.shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(s));
        }
    }
    let t = stats.total();
    let totals = [
        (
            "nudge_events_total",
            "Events accepted by the engine.",
            t.events_total,
        ),
        (
            "nudge_outliers_filtered_total",
            "Events kept out of training as outliers.",
            t.outliers_filtered_total,
        ),
        (
            "nudge_decisions_total",
            "Decisions made.",
            t.decisions_total,
        ),
        (
            "nudge_rewards_attributed_total",
            "Rewards and outcome events attributed to a decision.",
            t.rewards_attributed_total,
        ),
        (
            "nudge_decisions_expired_total",
            "Decisions whose attribution window closed.",
            t.decisions_expired_total,
        ),
        (
            "nudge_evictions_total",
            "Users evicted from memory.",
            t.evictions_total,
        ),
        (
            "nudge_busy_total",
            "Calls refused because a shard inbox was full.",
            t.busy_total,
        ),
        (
            "nudge_training_steps_total",
            "Gradient steps on personal models.",
            t.training_steps_total,
        ),
        (
            "nudge_duplicate_events_total",
            "Events not applied again because their event_id already was.",
            t.duplicates_total,
        ),
        (
            "nudge_rules_fired_total",
            "Rules that fired in decisions.",
            t.rules_fired_total,
        ),
        (
            "nudge_rule_errors_total",
            "Rules skipped in a decision by a runtime error (division by zero, a missing value).",
            t.rule_errors_total,
        ),
        (
            "nudge_panics_total",
            "Messages whose handling panicked (answered `internal`, the user's actor reset).",
            t.panics_total,
        ),
    ];
    for (name, help, v) in totals {
        header(out, name, help, "counter");
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        out,
        "nudge_shards_failed",
        "Shards where a panic escaped a shard-wide step (not ready).",
        "gauge",
    );
    let failed = stats.shards.iter().filter(|s| s.failed).count();
    let _ = writeln!(out, "nudge_shards_failed {failed}");
    header(out, "nudge_catalog_items", "Items in the catalog.", "gauge");
    let _ = writeln!(out, "nudge_catalog_items {}", stats.catalog_items);
    render_triggers(out, stats);
    render_durability(out, stats);
    render_segments(out, stats);
}

/// Per segment (at most `segments.k`, so the labels are bounded): resident users, the
/// centroid's weight, and its name as an info metric.
fn render_segments(out: &mut String, stats: &Stats) {
    if stats.segments.is_empty() {
        return;
    }
    header(
        out,
        "nudge_segment_users",
        "Resident users whose last assignment was the segment.",
        "gauge",
    );
    for s in &stats.segments {
        let _ = writeln!(
            out,
            "nudge_segment_users{{segment=\"{}\"}} {}",
            s.id, s.size
        );
    }
    header(
        out,
        "nudge_segment_weight",
        "Points the segment's centroid stands for (capped at segments.memory).",
        "gauge",
    );
    for s in &stats.segments {
        let _ = writeln!(
            out,
            "nudge_segment_weight{{segment=\"{}\"}} {}",
            s.id, s.weight
        );
    }
    header(
        out,
        "nudge_segment_info",
        "A segment's operator name (1 per named segment).",
        "gauge",
    );
    for s in &stats.segments {
        if let Some(name) = &s.name {
            let escaped = name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                out,
                "nudge_segment_info{{segment=\"{}\",name=\"{escaped}\"}} 1",
                s.id
            );
        }
    }
}

/// Fired triggers by name (operator-defined, bounded by the trigger sets; no user labels)
/// and the webhook's counters.
fn render_triggers(out: &mut String, stats: &Stats) {
    let t = &stats.triggers;
    header(
        out,
        "nudge_triggers_fired_total",
        "Threshold triggers fired and delivered since start, by trigger.",
        "counter",
    );
    for (name, n) in &t.fired {
        let label = name
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(out, "nudge_triggers_fired_total{{trigger=\"{label}\"}} {n}");
    }
    let webhook = [
        (
            "nudge_webhook_delivered_total",
            "Fired triggers the webhook accepted (2xx).",
            t.webhook_delivered_total,
        ),
        (
            "nudge_webhook_retried_total",
            "Webhook attempts retried after a 5xx, a connection error or a timeout.",
            t.webhook_retried_total,
        ),
        (
            "nudge_webhook_failed_total",
            "Fired triggers the webhook gave up on (attempts exhausted, or a 4xx).",
            t.webhook_failed_total,
        ),
        (
            "nudge_webhook_dropped_total",
            "Fired triggers dropped because the webhook's queue was full.",
            t.webhook_dropped_total,
        ),
    ];
    for (name, help, v) in webhook {
        header(out, name, help, "counter");
        let _ = writeln!(out, "{name} {v}");
    }
}

/// The write-ahead logs' counters, when the engine keeps a data directory.
fn render_durability(out: &mut String, stats: &Stats) {
    let Some(d) = &stats.durability else {
        return;
    };
    let counters = [
        (
            "nudge_log_bytes_total",
            "Bytes appended to the write-ahead logs.",
            d.log_bytes_total as f64,
        ),
        (
            "nudge_log_records_total",
            "Records appended to the write-ahead logs.",
            d.log_records_total as f64,
        ),
        (
            "nudge_log_fsyncs_total",
            "Fsyncs of the write-ahead logs (records per fsync: records_total / fsyncs_total).",
            d.fsyncs_total as f64,
        ),
        (
            "nudge_log_fsync_seconds_total",
            "Time spent in fsyncs of the write-ahead logs.",
            d.fsync_us_total as f64 / 1e6,
        ),
        (
            "nudge_checkpoints_total",
            "Checkpoints committed to the store.",
            d.checkpoints_total as f64,
        ),
        (
            "nudge_checkpoint_failures_total",
            "Checkpoints that failed (their log is kept).",
            d.checkpoint_failures_total as f64,
        ),
        (
            "nudge_passivations_total",
            "Users moved out of memory by the resident cap or the idle timer.",
            d.passivations_total as f64,
        ),
        (
            "nudge_store_loads_total",
            "Users loaded from the store on first touch.",
            d.loads_total as f64,
        ),
    ];
    let gauges = [
        (
            "nudge_last_checkpoint_seconds",
            "Duration of the last checkpoint.",
            d.last_checkpoint_ms as f64 / 1e3,
        ),
        (
            "nudge_max_checkpoint_pause_seconds",
            "The longest a shard stopped serving to begin a checkpoint, in this run.",
            d.max_checkpoint_pause_us as f64 / 1e6,
        ),
        (
            "nudge_last_checkpoint_bytes",
            "Bytes written by the last checkpoint.",
            d.last_checkpoint_bytes as f64,
        ),
        (
            "nudge_last_checkpoint_timestamp_seconds",
            "When the last checkpoint committed (Unix time; 0: none in this run).",
            d.last_checkpoint_unix_ms as f64 / 1e3,
        ),
        (
            "nudge_stored_users",
            "Users in the store.",
            d.stored_users as f64,
        ),
    ];
    let series = (counters.iter().map(|&(n, h, v)| (n, h, "counter", v)))
        .chain(gauges.iter().map(|&(n, h, v)| (n, h, "gauge", v)));
    for (name, help, kind, v) in series {
        header(out, name, help, kind);
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "nudge_log_fsync_seconds";
    header(
        out,
        name,
        "Fsync latency of the write-ahead logs.",
        "histogram",
    );
    for (le_us, count) in &d.fsync_us_histogram {
        let le = *le_us as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", d.fsyncs_total);
    let _ = writeln!(out, "{name}_sum {}", d.fsync_us_total as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", d.fsyncs_total);
}
