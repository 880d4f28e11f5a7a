//! Durability beside the request path: the data directory, its lock, each shard's
//! write-ahead log and the binary record format.
//!
//! State is "the log replayed from a position": every input that changes a shard's state is
//! appended to the shard's log (one write per drain) before its change is acknowledged under
//! `fsync = always`, and replayed through the same handlers on start. The directory:
//!
//! ```text
//! DIR/LOCK                         flock held by the serving process; holds its pid
//! DIR/nudge.meta                   format version, shard count and model width, checked on start
//! DIR/wal/shard-007/<pos>.wal      shard 7's log segments, named by their first position
//! DIR/store.redb                   checkpoints: users, open decisions, each shard's state and log position
//! DIR/experiments.log              every change to the experiments (`experiments`)
//! DIR/definitions.log              rules, triggers, templates and segment names as changed (`definitions`)
//! ```
//!
//! This module owns the on-disk format and file handling. It does not decide what is logged or
//! when (`shard` does; `engine` for the two logs of rare changes). Log records are encoded by
//! hand (`codec`: a stable, documented format another log can carry); checkpoint values are
//! the core types' serde form (`store`); the logs of rare changes share one framing
//! (`framed`).

pub mod codec;
pub mod definitions;
pub mod experiments;
pub mod framed;
pub mod lock;
pub mod log;
pub mod store;

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::Config;
pub use lock::DirLock;
pub use log::{
    Batch, DeferredSync, LogCounters, Position, ReplayReport, SegmentLog, SegmentOptions, ShardLog,
    FSYNC_BUCKETS_US,
};
pub use store::{
    Checkpointer, Committed, Deferred, DeferredRows, Job, Store, StoreCounters, UserWrite,
};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Another process holds the directory's lock.
    #[error("data directory {} is in use by process {pid}", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid written by the holder (as text; empty if it wrote none).
        pid: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file's contents are not what this build wrote.
    #[error("{} is corrupt at offset {offset}: {what}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Where in it.
        offset: u64,
        /// What was found.
        what: String,
    },
    /// The directory was written with settings this engine cannot continue from.
    #[error("data directory {}: {what}", dir.display())]
    Mismatch {
        /// The directory.
        dir: PathBuf,
        /// What differs.
        what: String,
    },
}

impl PersistError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        PersistError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Held for the engine's life: dropping it lets another process open the directory.
    _lock: DirLock,
}

impl DataDir {
    /// Creates (if needed), locks and checks `path` for an engine with `cfg`.
    pub fn open(path: &Path, cfg: &Config) -> Result<DataDir, PersistError> {
        fs::create_dir_all(path).map_err(|e| PersistError::io(path, e))?;
        let lock = DirLock::acquire(path)?;
        let meta_path = path.join("nudge.meta");
        let meta = format!(
            "format {}\nshards {}\ndim {}\n",
            log::FORMAT_VERSION,
            cfg.shard_count(),
            cfg.model.dim
        );
        match fs::read_to_string(&meta_path) {
            Ok(found) if found == meta => {}
            Ok(found) => {
                return Err(PersistError::Mismatch {
                    dir: path.to_path_buf(),
                    what: format!(
                        "it was written as `{}`, this engine is `{}` (users are placed by \
                         `hash mod shards`, so the shard count and width must not change)",
                        found.trim().replace('\n', ", "),
                        meta.trim().replace('\n', ", ")
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::write(&meta_path, &meta).map_err(|e| PersistError::io(&meta_path, e))?;
                log::sync_dir(path);
            }
            Err(e) => return Err(PersistError::io(&meta_path, e)),
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the checkpoint store; with `repair`, a damaged one is repaired or moved aside
    /// (`Store::open_repairing`), with a warning saying which.
    pub fn store(&self, repair: bool) -> Result<Store, PersistError> {
        let (store, repaired) = Store::open_repairing(&self.path, repair)?;
        if let Some(what) = repaired {
            tracing::warn!("repair: {what}");
        }
        Ok(store)
    }

    /// Opens shard `shard`'s log (read at its `replay`).
    pub fn shard_log(
        &self,
        shard: u16,
        opts: SegmentOptions,
    ) -> Result<Box<dyn ShardLog>, PersistError> {
        let dir = self.path.join("wal").join(format!("shard-{shard:03}"));
        Ok(Box::new(SegmentLog::open(&dir, opts)?))
    }
}
