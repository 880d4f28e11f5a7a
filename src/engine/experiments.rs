//! The engine's experiments made durable (issue 13): at start the registry is rebuilt from
//! the data directory's experiment log (`persist::experiments`), then the config file's
//! experiments not already there are created; afterwards every change is applied, then
//! appended (and fsynced) under one lock, so the log's order is the registry's.

use parking_lot::Mutex;

use crate::config::Config;
use crate::error::{Error, StartError};
use crate::experiment::{ExperimentSpec, Registry};
use crate::persist::experiments::{Change, ExperimentLog};
use crate::persist::DataDir;

/// Rebuilds `registry` from the data directory's log (if any) and the configuration's
/// experiments; returns the log to append to.
pub(super) fn restore(
    registry: &Registry,
    data: Option<&DataDir>,
    cfg: &Config,
    now_ms: u64,
) -> Result<Option<Mutex<ExperimentLog>>, StartError> {
    let mut log = match data {
        Some(d) => {
            let (log, changes) = ExperimentLog::open(d.path())?;
            for change in changes {
                // A change that was applied once applies again; one that failed was never
                // logged.
                let _ = apply(registry, change);
            }
            Some(log)
        }
        None => None,
    };
    for e in &cfg.experiments {
        let spec = e.to_spec().map_err(|e| StartError::Config(e.to_string()))?;
        if registry.get(&spec.name).is_some() {
            // Restored from the log as it was (stopped, promoted): the log wins.
            continue;
        }
        let change = Change::Created {
            spec,
            ts_ms: now_ms,
            reason: "config".into(),
        };
        apply(registry, change.clone())
            .map_err(|e| StartError::Config(format!("experiments: {e}")))?;
        if let Some(log) = &mut log {
            log.append(&change)?;
        }
    }
    Ok(log.map(Mutex::new))
}

/// Applies one change to the registry.
pub(super) fn apply(registry: &Registry, change: Change) -> Result<bool, Error> {
    match change {
        Change::CreatedV1 {
            spec,
            ts_ms,
            reason,
        } => registry.create(spec.into(), ts_ms, &reason).map(|()| true),
        Change::Created {
            spec,
            ts_ms,
            reason,
        } => registry.create(spec, ts_ms, &reason).map(|()| true),
        Change::Stopped {
            name,
            ts_ms,
            reason,
        } => registry.stop(&name, ts_ms, &reason),
        Change::Promoted {
            name,
            arm,
            ts_ms,
            reason,
        } => registry.promote(&name, &arm, ts_ms, &reason).map(|()| true),
        Change::Updated {
            spec,
            ts_ms,
            reason,
        } => registry.update(spec, ts_ms, &reason),
        Change::Restored {
            version,
            ts_ms,
            reason,
        } => registry.restore(version, ts_ms, &reason),
    }
}

/// Applies `change` and, when it changed something, appends it to `log` (under its lock, so
/// that the log keeps the order of the changes). A change that cannot be written is undone
/// by no one: it stays in memory and the caller gets `unavailable`.
pub(super) fn change(
    registry: &Registry,
    log: Option<&Mutex<ExperimentLog>>,
    change: Change,
) -> Result<bool, Error> {
    let Some(log) = log else {
        return apply(registry, change);
    };
    let mut log = log.lock();
    let changed = apply(registry, change.clone())?;
    if changed {
        log.append(&change).map_err(|e| {
            Error::Unavailable(format!(
                "the experiment change was applied but not stored: {e}"
            ))
        })?;
    }
    Ok(changed)
}

impl super::Engine {
    /// Replaces an experiment's definition. Only `holdout`, `segments`, `target` and
    /// `guardrails` may change in place (a change to any other field is refused naming it:
    /// users would move between arms and the comparison would mix two experiments). Returns
    /// whether anything changed; the change is a new audit version.
    pub fn update_experiment(&self, spec: ExperimentSpec, reason: &str) -> Result<bool, Error> {
        let ts_ms = self.inner.clock.now_ms();
        let reason = reason.to_string();
        self.change_experiments(Change::Updated {
            spec,
            ts_ms,
            reason,
        })
    }

    /// Brings every experiment back to how it stood at audit version `version`
    /// (`experiment_audit`): definitions, which ran, which arm was promoted; experiments
    /// created later are stopped. Counters are kept. Returns whether anything changed; the
    /// restore is a new audit version. Refused (`version`) outside `1..=latest`.
    pub fn restore_experiments(&self, version: u64, reason: &str) -> Result<bool, Error> {
        let ts_ms = self.inner.clock.now_ms();
        let reason = reason.to_string();
        self.change_experiments(Change::Restored {
            version,
            ts_ms,
            reason,
        })
    }
}
