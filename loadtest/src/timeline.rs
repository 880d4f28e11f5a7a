//! The timeline (`--timeline FILE.csv`, for soak runs): one CSV row per interval of the
//! measured window with each op's corrected latency percentiles *of that interval alone*
//! (fresh HdrHistograms per interval, latency from the intended send time as in the report),
//! the achieved rate, errors, late sends, a process's resident memory (`VmRSS` from
//! `/proc/PID/status`), and the server's resident users and open decisions (`probe`), which
//! account for that memory. A reply counts in the interval it arrived in, so a stall shows where
//! it was felt. Rows are written and flushed as each interval closes, so a long run's file
//! can be read (and plotted) while it runs.
//!
//! It owns the interval bookkeeping, the CSV format and its parser; the readers record into
//! it, `plot` draws it. It does not decide what is measured: that stays the reader's.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;

use crate::driver::{histogram, Progress};
use crate::probe::Probe;
use crate::report::OpKind;

/// What to record and where.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineSpec {
    /// The CSV file to write.
    pub path: PathBuf,
    /// The length of one row's interval.
    pub interval: Duration,
    /// Whose resident memory to sample at the end of each interval (none: the column is empty).
    pub rss_pid: Option<u32>,
}

/// One interval's histograms, filled by one reader (a lock per reader, so readers never
/// contend with each other; the timeline task takes each lock once per interval).
struct Interval {
    corrected: Vec<Histogram<u64>>,
}

impl Interval {
    fn new() -> Self {
        Interval {
            corrected: OpKind::ALL.iter().map(|_| histogram()).collect(),
        }
    }
}

/// A reader's handle: records each measured reply's corrected latency in the open interval.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Interval>>);

impl Recorder {
    /// Records one successful reply of op kind `kind` that waited `ns` from its intended time.
    pub fn record(&self, kind: usize, ns: u64) {
        // A poisoned lock means the timeline task panicked; the run's summary is still good.
        if let Ok(mut i) = self.0.lock() {
            i.corrected[kind].saturating_record(ns.max(1));
        }
    }
}

/// One op kind in one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpRow {
    /// Successful replies that arrived in the interval.
    pub count: u64,
    /// Corrected latency percentiles, µs (meaningless when `count` is 0).
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

/// One row of the timeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// The interval's end, seconds after the start of the measured window.
    pub t_s: f64,
    /// Successful replies per second in the interval, all ops.
    pub rate_per_s: f64,
    /// Error replies that arrived in the interval.
    pub errors: u64,
    /// Measured sends that left more than the late threshold behind schedule.
    pub late_sends: u64,
    /// The sampled process's resident memory at the interval's end.
    pub rss_bytes: Option<u64>,
    /// The server's resident users at the interval's end (`None`: not asked, or no answer).
    pub resident_users: Option<u64>,
    /// The server's open decisions at the interval's end.
    pub open_decisions: Option<u64>,
    /// Per op kind, in `OpKind::ALL` order.
    pub ops: Vec<OpRow>,
}

const OP_COLUMNS: [&str; 5] = ["count", "p50_us", "p99_us", "p999_us", "max_us"];

/// The CSV header line (no newline).
pub fn header() -> String {
    let mut h =
        String::from("t_s,rate_per_s,errors,late_sends,rss_bytes,resident_users,open_decisions");
    for op in OpKind::ALL.map(OpKind::name) {
        for col in OP_COLUMNS {
            let _ = write!(h, ",{op}_{col}");
        }
    }
    h
}

impl Row {
    /// The row as a CSV line (no newline); an op with no replies has empty percentiles.
    pub fn csv(&self) -> String {
        let cell = |v: Option<u64>| v.map_or(String::new(), |b| b.to_string());
        let mut s = format!(
            "{:.3},{:.1},{},{},{},{},{}",
            self.t_s,
            self.rate_per_s,
            self.errors,
            self.late_sends,
            cell(self.rss_bytes),
            cell(self.resident_users),
            cell(self.open_decisions),
        );
        for op in &self.ops {
            if op.count == 0 {
                s.push_str(",0,,,,");
            } else {
                let _ = write!(
                    s,
                    ",{},{:.1},{:.1},{:.1},{:.1}",
                    op.count, op.p50_us, op.p99_us, op.p999_us, op.max_us
                );
            }
        }
        s
    }
}

/// Parses a timeline CSV (as written by `header` and `Row::csv`), columns found by name;
/// `resident_users` and `open_decisions` may be absent (files written before they existed).
pub fn parse(text: &str) -> anyhow::Result<Vec<Row>> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .with_context(|| format!("the timeline has no column `{name}`"))
    };
    let (t, rate, errors, late, rss) = (
        col("t_s")?,
        col("rate_per_s")?,
        col("errors")?,
        col("late_sends")?,
        col("rss_bytes")?,
    );
    let (users, decisions) = (col("resident_users").ok(), col("open_decisions").ok());
    let mut op_cols = Vec::new();
    for op in OpKind::ALL.map(OpKind::name) {
        let mut cols = [0; 5];
        for (c, name) in cols.iter_mut().zip(OP_COLUMNS) {
            *c = col(&format!("{op}_{name}"))?;
        }
        op_cols.push(cols);
    }
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != head.len() {
            bail!(
                "timeline line {}: {} cells, expected {}",
                n + 2,
                cells.len(),
                head.len()
            );
        }
        let num = |i: usize| -> anyhow::Result<f64> {
            match cells[i] {
                "" => Ok(0.0),
                c => c
                    .parse()
                    .with_context(|| format!("timeline line {}: `{c}` is not a number", n + 2)),
            }
        };
        let count = |c: Option<usize>| -> anyhow::Result<Option<u64>> {
            match c.filter(|&c| !cells[c].is_empty()) {
                Some(c) => Ok(Some(num(c)? as u64)),
                None => Ok(None),
            }
        };
        let ops = op_cols
            .iter()
            .map(|c| {
                Ok(OpRow {
                    count: num(c[0])? as u64,
                    p50_us: num(c[1])?,
                    p99_us: num(c[2])?,
                    p999_us: num(c[3])?,
                    max_us: num(c[4])?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.push(Row {
            t_s: num(t)?,
            rate_per_s: num(rate)?,
            errors: num(errors)? as u64,
            late_sends: num(late)? as u64,
            rss_bytes: count(Some(rss))?,
            resident_users: count(users)?,
            open_decisions: count(decisions)?,
            ops,
        });
    }
    Ok(rows)
}

/// The resident set size of process `pid` (`VmRSS`), or `None` when it cannot be read (the
/// process is gone, or this is not Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The running timeline: the readers' recorders, the server's probe and the file.
pub struct Timeline {
    spec: TimelineSpec,
    intervals: Vec<Arc<Mutex<Interval>>>,
    probe: Option<Probe>,
    out: std::io::BufWriter<std::fs::File>,
}

impl Timeline {
    /// Creates the file (so a bad path fails before the run) and writes the header; call
    /// `recorder` once per reader before `run`.
    pub fn create(spec: TimelineSpec) -> anyhow::Result<Self> {
        if spec.interval.is_zero() {
            bail!("the timeline's interval must be positive");
        }
        let path = &spec.path;
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the timeline {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{}", header())?;
        out.flush()?;
        Ok(Timeline {
            spec,
            intervals: Vec::new(),
            probe: None,
            out,
        })
    }

    /// Samples the server's counters through `probe` at each interval's end.
    pub fn set_probe(&mut self, probe: Option<Probe>) {
        self.probe = probe;
    }

    /// A new reader's recorder.
    pub fn recorder(&mut self) -> Recorder {
        let i = Arc::new(Mutex::new(Interval::new()));
        self.intervals.push(i.clone());
        Recorder(i)
    }

    /// Writes one row per interval from `from` to `end` (the measured window), the last one
    /// possibly shorter; returns the rows.
    pub(crate) async fn run(
        mut self,
        progress: Arc<Progress>,
        from: Instant,
        end: Instant,
    ) -> anyhow::Result<Vec<Row>> {
        tokio::time::sleep_until(from.into()).await;
        let (mut errors, mut late) = counters(&progress);
        let mut merged: Vec<Histogram<u64>> = OpKind::ALL.iter().map(|_| histogram()).collect();
        let mut rows = Vec::new();
        let mut last = from;
        while last < end {
            let close = (last + self.spec.interval).min(end);
            tokio::time::sleep_until(close.into()).await;
            for h in &mut merged {
                h.reset();
            }
            for i in &self.intervals {
                // Swap each reader's histograms out under its lock (a few pointer moves).
                let mut taken = OpKind::ALL.iter().map(|_| histogram()).collect();
                if let Ok(mut i) = i.lock() {
                    std::mem::swap(&mut i.corrected, &mut taken);
                }
                for (m, h) in merged.iter_mut().zip(&taken) {
                    m.add(h)?;
                }
            }
            let (e, l) = counters(&progress);
            let server = match &mut self.probe {
                Some(p) => p.sample().await,
                None => None,
            };
            let mut row = row(
                &merged,
                (close - from, close - last),
                e - errors,
                l - late,
                &self.spec,
            );
            row.resident_users = server.map(|s| s.resident_users);
            row.open_decisions = server.map(|s| s.open_decisions);
            (errors, late, last) = (e, l, close);
            writeln!(self.out, "{}", row.csv())?;
            self.out.flush()?;
            rows.push(row);
        }
        Ok(rows)
    }
}

fn counters(p: &Progress) -> (u64, u64) {
    (
        p.errors.load(Ordering::Relaxed),
        p.late.load(Ordering::Relaxed),
    )
}

/// The row for an interval of length `span.1` ending `span.0` into the measured window.
fn row(
    merged: &[Histogram<u64>],
    span: (Duration, Duration),
    errors: u64,
    late_sends: u64,
    spec: &TimelineSpec,
) -> Row {
    let us = |ns: u64| ns as f64 / 1000.0;
    let ops: Vec<OpRow> = merged
        .iter()
        .map(|h| OpRow {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
        .collect();
    let ok: u64 = ops.iter().map(|o| o.count).sum();
    Row {
        t_s: span.0.as_secs_f64(),
        rate_per_s: ok as f64 / span.1.as_secs_f64().max(1e-9),
        errors,
        late_sends,
        rss_bytes: spec.rss_pid.and_then(rss_bytes),
        resident_users: None,
        open_decisions: None,
        ops,
    }
}
