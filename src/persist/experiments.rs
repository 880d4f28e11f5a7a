//! The experiments' own log (issue 13): every change to the registry (an experiment created
//! or updated with its definition, stopped, an arm promoted, an earlier version restored) as
//! one framed record, appended and
//! fsynced as it happens (changes are rare), and read back at start to rebuild the registry
//! in the same order, so that experiment numbers, which the shards' checkpointed tallies use,
//! stay the same and a stopped or promoted experiment comes back as it was.
//!
//! A record is `len:u32 crc32c:u32 postcard(Change)`, after a format byte at the file's
//! start (`persist::framed`). A torn last record (a crash mid-append) is cut off; a damaged
//! one before it refuses the start, naming the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::framed::FramedLog;
use super::PersistError;
use crate::experiment::ExperimentSpec;

/// The log's format byte.
const FORMAT: u8 = 1;

/// One change to the experiments. Records are postcard, which encodes a variant by its
/// index: variants are only ever appended, and a variant's layout never changes (a new
/// layout is a new variant, the old one kept to read old logs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// An experiment was created (and started), as builds before targeting conditions wrote
    /// it; read, never written.
    CreatedV1 {
        /// Its definition.
        spec: SpecV1,
        /// When (engine time, Unix ms).
        ts_ms: u64,
        /// Why.
        reason: String,
    },
    /// An experiment was stopped.
    Stopped {
        /// The experiment.
        name: String,
        /// When.
        ts_ms: u64,
        /// Why.
        reason: String,
    },
    /// An arm was promoted.
    Promoted {
        /// The experiment.
        name: String,
        /// The arm.
        arm: String,
        /// When.
        ts_ms: u64,
        /// Why.
        reason: String,
    },
    /// An experiment was created (and started).
    Created {
        /// Its definition.
        spec: ExperimentSpec,
        /// When (engine time, Unix ms).
        ts_ms: u64,
        /// Why.
        reason: String,
    },
    /// An experiment's definition was updated.
    Updated {
        /// The new definition.
        spec: ExperimentSpec,
        /// When.
        ts_ms: u64,
        /// Why.
        reason: String,
    },
    /// The registry went back to an earlier version.
    Restored {
        /// The version restored.
        version: u64,
        /// When.
        ts_ms: u64,
        /// Why.
        reason: String,
    },
}

/// `ExperimentSpec` as builds before targeting conditions logged it (frozen: this layout is
/// in logs written then).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecV1 {
    name: String,
    salt: String,
    holdout: f64,
    layer: String,
    buckets: std::ops::Range<u32>,
    arms: Vec<crate::experiment::ArmSpec>,
    metric: crate::experiment::Metric,
    guardrails: Vec<crate::experiment::Metric>,
    tau: f64,
    alpha: f64,
    segments: Vec<String>,
}

impl From<SpecV1> for ExperimentSpec {
    fn from(v: SpecV1) -> ExperimentSpec {
        ExperimentSpec {
            name: v.name,
            salt: v.salt,
            holdout: v.holdout,
            layer: v.layer,
            buckets: v.buckets,
            arms: v.arms,
            metric: v.metric,
            guardrails: v.guardrails,
            tau: v.tau,
            alpha: v.alpha,
            segments: v.segments,
            target: None,
        }
    }
}

/// The open log, for appending.
#[derive(Debug)]
pub struct ExperimentLog(FramedLog);

impl ExperimentLog {
    /// Opens (or creates) `dir/experiments.log` and reads every change it holds, in order.
    pub fn open(dir: &Path) -> Result<(ExperimentLog, Vec<Change>), PersistError> {
        let path = dir.join("experiments.log");
        let (log, changes) = FramedLog::open(&path, FORMAT, "experiment log")?;
        Ok((ExperimentLog(log), changes))
    }

    /// Appends one change and fsyncs it.
    pub fn append(&mut self, change: &Change) -> Result<(), PersistError> {
        self.0.append(change)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    fn stopped(name: &str) -> Change {
        Change::Stopped {
            name: name.into(),
            ts_ms: 7,
            reason: "r".into(),
        }
    }

    #[test]
    fn changes_come_back_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, none) = ExperimentLog::open(dir.path()).unwrap();
        assert!(none.is_empty());
        log.append(&stopped("a")).unwrap();
        log.append(&stopped("b")).unwrap();
        drop(log);
        let path = dir.path().join("experiments.log");
        // A crash in the middle of a third append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut log, back) = ExperimentLog::open(dir.path()).unwrap();
        assert_eq!(back, vec![stopped("a"), stopped("b")]);
        log.append(&stopped("c")).unwrap();
        drop(log);
        let (_, back) = ExperimentLog::open(dir.path()).unwrap();
        assert_eq!(back.len(), 3);
    }

    /// The bytes on disk are those earlier builds wrote and read: a format byte 1, then
    /// `len crc32c postcard` with the variant's index first.
    #[test]
    fn the_file_is_byte_for_byte_the_format_earlier_builds_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = ExperimentLog::open(dir.path()).unwrap();
        log.append(&stopped("a")).unwrap();
        drop(log);
        let body = [1, 1, b'a', 7, 1, b'r'];
        let mut expected = vec![1, 6, 0, 0, 0];
        expected.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        expected.extend_from_slice(&body);
        let path = dir.path().join("experiments.log");
        assert_eq!(std::fs::read(path).unwrap(), expected);
    }
}
