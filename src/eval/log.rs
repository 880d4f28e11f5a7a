//! The decision log's file format (JSONL, one record per line; see `docs/decision-log.md`):
//! [`JsonlLog`], a `DecisionLog` that hands records to a background writer thread through a
//! bounded queue, and [`read`], which parses a log back into `LogRecord`s for `replay`.
//!
//! **Invariant:** `record` never blocks a shard: when the queue is full (or the log is closed)
//! the record is dropped and counted. Only the writer thread touches the file. This module owns
//! the JSON shape of the log and nothing else.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::api::{DecisionLog, EventKind, LogRecord, LoggedPlacement, OutcomeSource};
use crate::ids::DecisionId;

/// Records the queue holds by default before new ones are dropped.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// How long the writer waits for a record before flushing what it wrote.
const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// Counters of a log, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records accepted into the queue.
    pub queued: u64,
    /// Records written to the file.
    pub written: u64,
    /// Records dropped because the queue was full or the log closed.
    pub dropped: u64,
    /// Records lost to write errors.
    pub write_errors: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
}

/// A JSONL decision log written by a background thread.
pub struct JsonlLog {
    /// The bounded queue to the writer; `try_send` only, so shards never wait.
    tx: Sender<LogRecord>,
    counters: Arc<Counters>,
    /// Set by `close`: the writer drains the queue and exits.
    closed: Arc<AtomicBool>,
    /// The writer thread, joined once by `close`.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl JsonlLog {
    /// Appends to the file at `path` (created if missing), queueing at most `capacity` records.
    pub fn create(path: &Path, capacity: usize) -> std::io::Result<Arc<JsonlLog>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Self::to_writer(BufWriter::new(file), capacity)
    }

    /// Writes to any `Write` (a file, a buffer in tests), queueing at most `capacity` records.
    pub fn to_writer(
        out: impl Write + Send + 'static,
        capacity: usize,
    ) -> std::io::Result<Arc<JsonlLog>> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let closed = Arc::new(AtomicBool::new(false));
        let (c, stop) = (counters.clone(), closed.clone());
        let writer = std::thread::Builder::new()
            .name("nudge-decision-log".into())
            .spawn(move || write_loop(out, rx, &c, &stop))?;
        Ok(Arc::new(JsonlLog {
            tx,
            counters,
            closed,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// The counters so far.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            queued: c.queued.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting records, writes everything queued, flushes and joins the writer.
    /// Idempotent; records arriving later are dropped and counted.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }
}

impl DecisionLog for JsonlLog {
    fn record(&self, record: LogRecord) {
        if self.closed.load(Ordering::Acquire) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(record) {
            Ok(()) => self.counters.queued.fetch_add(1, Ordering::Relaxed),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl Drop for JsonlLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(mut out: impl Write, rx: Receiver<LogRecord>, c: &Counters, closed: &AtomicBool) {
    let mut line = Vec::with_capacity(512);
    let mut write = |out: &mut dyn Write, record: &LogRecord| {
        line.clear();
        // Serializing a `Value` to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut line, &to_json(record));
        line.push(b'\n');
        match out.write_all(&line) {
            Ok(()) => c.written.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.write_errors.fetch_add(1, Ordering::Relaxed),
        };
    };
    loop {
        match rx.recv_timeout(FLUSH_AFTER) {
            Ok(record) => write(&mut out, &record),
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                if closed.load(Ordering::Acquire) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    while let Ok(record) = rx.try_recv() {
        write(&mut out, &record);
    }
    let _ = out.flush();
}

fn source_name(source: OutcomeSource) -> &'static str {
    match source {
        OutcomeSource::Event(kind) => kind.name(),
        OutcomeSource::Reward => "reward",
    }
}

/// One record as its JSON object (the line without the newline).
pub fn to_json(record: &LogRecord) -> Value {
    match record {
        LogRecord::Decision {
            ts_ms,
            decision,
            user,
            context,
            candidates,
            placements,
            config_version,
            experiment,
        } => {
            let mut line = json!({
                "type": "decision",
                "ts": ts_ms,
                "decision": decision.to_string(),
                "user": user,
                "context": context.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                "candidates": candidates,
                "placements": placements.iter().map(|p| json!({
                    "item": p.item, "score": p.score, "propensity": p.propensity
                })).collect::<Vec<_>>(),
                "config_version": format!("{config_version:016x}"),
            });
            if let Some(arm) = experiment {
                line["experiment"] = json!({"name": &*arm.experiment, "arm": &*arm.arm});
            }
            line
        }
        LogRecord::Outcome {
            ts_ms,
            decision,
            item,
            reward,
            total,
            source,
        } => json!({
            "type": "outcome",
            "ts": ts_ms,
            "decision": decision.to_string(),
            "item": item,
            "reward": reward,
            "total": total,
            "source": source_name(*source),
        }),
        LogRecord::Expired {
            ts_ms,
            decision,
            unrewarded,
        } => json!({
            "type": "expired",
            "ts": ts_ms,
            "decision": decision.to_string(),
            "unrewarded": unrewarded,
        }),
    }
}

/// A line that is not a log record.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ReadError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    v.get(name)
        .ok_or_else(|| format!("field `{name}` is missing"))
}

fn string(v: &Value, name: &str) -> Result<String, String> {
    field(v, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("field `{name}` is not a string"))
}

fn number(v: &Value, name: &str) -> Result<f64, String> {
    field(v, name)?
        .as_f64()
        .ok_or_else(|| format!("field `{name}` is not a number"))
}

fn strings(v: &Value, name: &str) -> Result<Vec<String>, String> {
    let items = field(v, name)?
        .as_array()
        .ok_or_else(|| format!("field `{name}` is not an array"))?;
    items
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{name}` holds a non-string"))
        })
        .collect()
}

/// Parses one line of the log.
pub fn parse_line(line: &str) -> Result<LogRecord, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let ts_ms = field(&v, "ts")?
        .as_u64()
        .ok_or("field `ts` is not a non-negative integer")?;
    let decision: DecisionId = string(&v, "decision")?
        .parse()
        .map_err(|e: crate::Error| e.to_string())?;
    match string(&v, "type")?.as_str() {
        "decision" => {
            let context = field(&v, "context")?
                .as_array()
                .ok_or("field `context` is not an array")?
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
                    _ => Err("`context` holds something other than [key, value] pairs".to_string()),
                })
                .collect::<Result<_, _>>()?;
            let placements = field(&v, "placements")?
                .as_array()
                .ok_or("field `placements` is not an array")?
                .iter()
                .map(|p| {
                    Ok(LoggedPlacement {
                        item: string(p, "item")?,
                        score: number(p, "score")? as f32,
                        propensity: number(p, "propensity")? as f32,
                    })
                })
                .collect::<Result<_, String>>()?;
            let version = string(&v, "config_version")?;
            Ok(LogRecord::Decision {
                ts_ms,
                decision,
                user: string(&v, "user")?,
                context,
                candidates: strings(&v, "candidates")?,
                placements,
                config_version: u64::from_str_radix(&version, 16).map_err(|e| e.to_string())?,
                experiment: v.get("experiment").and_then(|e| {
                    Some(crate::api::ExperimentArm {
                        experiment: e.get("name")?.as_str()?.into(),
                        arm: e.get("arm")?.as_str()?.into(),
                    })
                }),
            })
        }
        "outcome" => {
            let source = match string(&v, "source")?.as_str() {
                "reward" => OutcomeSource::Reward,
                name => OutcomeSource::Event(
                    EventKind::parse_builtin(name)
                        .ok_or_else(|| format!("unknown source `{name}`"))?,
                ),
            };
            Ok(LogRecord::Outcome {
                ts_ms,
                decision,
                item: string(&v, "item")?,
                reward: number(&v, "reward")? as f32,
                total: number(&v, "total")? as f32,
                source,
            })
        }
        "expired" => Ok(LogRecord::Expired {
            ts_ms,
            decision,
            unrewarded: strings(&v, "unrewarded")?,
        }),
        other => Err(format!("unknown record type `{other}`")),
    }
}

/// Reads a whole log; blank lines are skipped, any other bad line is an error naming it.
pub fn read(input: impl BufRead) -> Result<Vec<LogRecord>, ReadError> {
    let mut out = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| ReadError {
            line: n + 1,
            problem: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(&line).map_err(|problem| ReadError {
            line: n + 1,
            problem,
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> LogRecord {
        LogRecord::Decision {
            ts_ms: 5,
            decision: DecisionId(0x0001_0000_0000_0007),
            user: "u1".into(),
            context: vec![("device".into(), "mobile".into())],
            candidates: vec!["a".into(), "b".into()],
            placements: vec![LoggedPlacement {
                item: "b".into(),
                score: 0.5,
                propensity: 0.25,
            }],
            config_version: 0xabc,
            experiment: None,
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let records = vec![
            decision(),
            LogRecord::Outcome {
                ts_ms: 6,
                decision: DecisionId(7),
                item: "b".into(),
                reward: 1.0,
                total: 1.0,
                source: OutcomeSource::Event(EventKind::Click),
            },
            LogRecord::Expired {
                ts_ms: 9,
                decision: DecisionId(7),
                unrewarded: vec!["a".into()],
            },
        ];
        for r in records {
            let line = to_json(&r).to_string();
            assert_eq!(parse_line(&line).unwrap(), r, "{line}");
        }
        assert!(parse_line("{\"type\":\"decision\"}")
            .unwrap_err()
            .contains("ts"));
    }

    /// A writer that blocks until released: the queue fills and records are dropped, counted.
    struct Gate(
        Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
        Vec<u8>,
    );
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock();
            while !*open {
                cv.wait(&mut open);
            }
            self.1.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let gate = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let log = JsonlLog::to_writer(Gate(gate.clone(), Vec::new()), 4).unwrap();
        for _ in 0..100 {
            log.record(decision());
        }
        let s = log.stats();
        assert_eq!(s.queued + s.dropped, 100);
        assert!(s.dropped >= 100 - 5, "{s:?}");
        *gate.0.lock() = true;
        gate.1.notify_all();
        log.close();
        let s = log.stats();
        assert_eq!(s.written, s.queued);
        log.record(decision());
        assert_eq!(log.stats().dropped, s.dropped + 1);
    }
}
