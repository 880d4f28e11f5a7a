//! The report: turns a run's histograms and counters into a percentile table per op (corrected
//! latency from the intended send time, and the uncorrected service time), target and achieved
//! rates, errors by code, late sends and validity, and the JSON summary. It owns the report's
//! shape and the threshold checks; it does not measure anything itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::driver::{Load, ReaderResult, RunSpec};
use crate::stall::StallReport;
use crate::workload::GeneratorStats;

/// The kinds of request that get their own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum OpKind {
    /// Events.
    Event = 0,
    /// Decisions.
    Decide = 1,
    /// Explicit rewards.
    Reward = 2,
    /// Batches of events (`--batch`).
    Batch = 3,
}

impl OpKind {
    /// Every kind, in `repr` order (histograms and counters index by it).
    pub const ALL: [OpKind; 4] = [OpKind::Event, OpKind::Decide, OpKind::Reward, OpKind::Batch];

    /// The protocol op it is (nudge's one table of op names).
    pub fn op(self) -> nudge::wire::OpKind {
        match self {
            OpKind::Event => nudge::wire::OpKind::Event,
            OpKind::Decide => nudge::wire::OpKind::Decide,
            OpKind::Reward => nudge::wire::OpKind::Reward,
            OpKind::Batch => nudge::wire::OpKind::Batch,
        }
    }

    /// Its name in the report: the op's wire name.
    pub fn name(self) -> &'static str {
        self.op().name()
    }
}

/// A send this far behind schedule in this share of sends marks the run invalid.
pub const MAX_LATE_FRACTION: f64 = 0.01;

/// The raw outcome of a run.
pub struct RunResult {
    /// What was run.
    pub spec: RunSpec,
    pub(crate) reader: ReaderResult,
    /// Requests sent in the measured window.
    pub sent_measured: u64,
    /// Of those, sent later than the late threshold (open loop).
    pub late: u64,
    /// How far behind schedule sends left (open loop), ns.
    pub send_lag: Histogram<u64>,
    /// The workload generators' counters.
    pub generator: GeneratorStats,
    /// Connections that failed.
    pub writer_errors: Vec<String>,
    /// The stall, if one was made.
    pub stall: Option<StallReport>,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th.
    pub p99_us: f64,
    /// 99.9th.
    pub p999_us: f64,
    /// 99.99th.
    pub p9999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        }
    }
}

/// One op kind's results in the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct OpSummary {
    /// Successful replies, whole run.
    pub ok_total: u64,
    /// Completed per second in the measured window.
    pub per_s: f64,
    /// From the intended send time (what a user waits, coordinated omission corrected).
    pub corrected: Percentiles,
    /// From the actual send time (the service time).
    pub uncorrected: Percentiles,
}

/// The JSON summary (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The target.
    pub target: String,
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Connections.
    pub connections: u32,
    /// Requests in flight per connection (closed loop).
    pub pipeline: Option<u32>,
    /// The scheduled rate (open loop), requests/s.
    pub target_rate: Option<f64>,
    /// Completed requests per second, measured window.
    pub achieved_rate: f64,
    /// Acknowledged events per second, measured window.
    pub events_per_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds (excluded).
    pub warmup_s: f64,
    /// The workload seed.
    pub seed: u64,
    /// Users, items, candidates, top, event share.
    pub workload: BTreeMap<&'static str, f64>,
    /// Per op kind.
    pub ops: BTreeMap<&'static str, OpSummary>,
    /// Errors by code, whole run (`timeout`: no reply before the drain deadline).
    pub errors: BTreeMap<String, u64>,
    /// Events acknowledged over the whole run (warm-up included).
    pub acked_events_total: u64,
    /// Requests sent in the measured window.
    pub sends: u64,
    /// Of those, sent more than the late threshold behind schedule.
    pub late_sends: u64,
    /// The late threshold, µs.
    pub late_threshold_us: f64,
    /// How far behind schedule requests left (open loop).
    pub send_lag: Percentiles,
    /// False when the generator fell behind its schedule or a connection failed.
    pub valid: bool,
    /// Why the run is invalid.
    pub invalid_reasons: Vec<String>,
    /// The workload generators' counters.
    pub generator: GeneratorStats,
    /// The stall, if one was made.
    pub stall: Option<StallReport>,
    /// The loopback floor (`floor`), when measured: an echo server's round trip with the same
    /// bytes and pinning.
    pub floor: Option<Percentiles>,
}

impl RunResult {
    /// Summarizes the run.
    pub fn summary(&self) -> Summary {
        let spec = &self.spec;
        let secs = spec.duration.as_secs_f64();
        let r = &self.reader;
        let mut ops = BTreeMap::new();
        for kind in OpKind::ALL {
            let k = kind as usize;
            let corrected = Percentiles::of(&r.corrected[k]);
            ops.insert(
                kind.name(),
                OpSummary {
                    ok_total: r.ok[k],
                    per_s: corrected.count as f64 / secs,
                    corrected,
                    uncorrected: Percentiles::of(&r.uncorrected[k]),
                },
            );
        }
        let mut invalid_reasons = Vec::new();
        if self.sent_measured > 0
            && self.late as f64 > MAX_LATE_FRACTION * self.sent_measured as f64
        {
            invalid_reasons.push(format!(
                "{} of {} sends left more than {:?} behind schedule: the generator (or its core) \
                 fell behind, or the target stopped reading",
                self.late, self.sent_measured, spec.late_threshold
            ));
        }
        invalid_reasons.extend(self.writer_errors.iter().cloned());
        let (mode, pipeline, target_rate) = match spec.load {
            Load::Open { rate } => ("open", None, Some(rate)),
            Load::Closed { pipeline } => ("closed", Some(pipeline), None),
        };
        let w = &spec.workload;
        let workload = BTreeMap::from([
            ("users", w.users as f64),
            ("items", w.items as f64),
            ("candidates", w.candidates as f64),
            ("top", w.top as f64),
            ("event_share", w.event_share),
        ]);
        Summary {
            target: format!("{:?}", spec.target),
            mode,
            connections: spec.connections,
            pipeline,
            target_rate,
            achieved_rate: r.completed_measured as f64 / secs,
            events_per_s: r.acked_events_measured as f64 / secs,
            duration_s: secs,
            warmup_s: spec.warmup.as_secs_f64(),
            seed: w.seed,
            workload,
            ops,
            errors: r.errors.clone(),
            acked_events_total: r.acked_events_total,
            sends: self.sent_measured,
            late_sends: self.late,
            late_threshold_us: spec.late_threshold.as_secs_f64() * 1e6,
            send_lag: Percentiles::of(&self.send_lag),
            valid: invalid_reasons.is_empty(),
            invalid_reasons,
            generator: self.generator.clone(),
            stall: self.stall.clone(),
            floor: None,
        }
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0}µs")
    } else {
        format!("{us:.1}µs")
    }
}

impl Summary {
    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rate = match self.target_rate {
            Some(r) => format!("open loop, target {r:.0} req/s"),
            None => format!("closed loop, pipeline {}", self.pipeline.unwrap_or(1)),
        };
        let _ = writeln!(
            s,
            "target {}  {rate}  connections {}  {:.1} s measured (+{:.1} s warm-up)  seed {}",
            self.target, self.connections, self.duration_s, self.warmup_s, self.seed
        );
        let _ = writeln!(
            s,
            "achieved {:.0} req/s, {:.0} events/s acknowledged",
            self.achieved_rate, self.events_per_s
        );
        let _ = writeln!(
            s,
            "{:<8} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "latency", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, op) in &self.ops {
            for (label, p) in [("corrected", &op.corrected), ("service", &op.uncorrected)] {
                if p.count == 0 {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "{:<8} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    label,
                    p.count,
                    fmt_us(p.p50_us),
                    fmt_us(p.p90_us),
                    fmt_us(p.p99_us),
                    fmt_us(p.p999_us),
                    fmt_us(p.p9999_us),
                    fmt_us(p.max_us)
                );
            }
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        let _ = writeln!(
            s,
            "errors: {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(" ")
            }
        );
        if self.target_rate.is_some() {
            let _ = writeln!(
                s,
                "late sends (> {:.0} µs behind schedule): {} of {}; send lag p99 {}, max {}",
                self.late_threshold_us,
                self.late_sends,
                self.sends,
                fmt_us(self.send_lag.p99_us),
                fmt_us(self.send_lag.max_us)
            );
        }
        let g = &self.generator;
        let _ = writeln!(
            s,
            "sessions {} (resolved {}, unresolved {}), browsing events {}, follow-ups dropped {}, stale {}",
            g.sessions, g.resolved, g.unresolved, g.browsing, g.dropped_followups, g.stale_followups
        );
        if let Some(st) = &self.stall {
            let _ = writeln!(
                s,
                "stall: pid {} stopped for {:.0} ms",
                st.pid, st.paused_ms
            );
        }
        if self.valid {
            let _ = writeln!(s, "run VALID");
        } else {
            let _ = writeln!(s, "run INVALID: {}", self.invalid_reasons.join("; "));
        }
        s
    }

    /// Threshold violations: `max_p99_us` applies to every op's corrected p99.
    pub fn violations(&self, max_p99_us: Option<f64>, min_rate: Option<f64>) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(limit) = max_p99_us {
            for (name, op) in &self.ops {
                if op.corrected.count > 0 && op.corrected.p99_us > limit {
                    v.push(format!(
                        "{name} p99 {:.1} µs > {limit} µs",
                        op.corrected.p99_us
                    ));
                }
            }
        }
        if let Some(min) = min_rate {
            if self.achieved_rate < min {
                v.push(format!(
                    "achieved {:.0} req/s < {min} req/s",
                    self.achieved_rate
                ));
            }
        }
        if !self.valid {
            v.push("the run is invalid".into());
        }
        v
    }
}
