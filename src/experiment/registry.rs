//! The engine's experiments: the definitions, which of them run, the audit trail of every
//! change, and the snapshot the decision path reads. Writers (create, stop) take a mutex and
//! publish a new `Arc<Running>`; a decision reads the current one under a read lock held for
//! one `Arc` clone, and skips even that while nothing runs (`any_running`).
//!
//! **It assigns and judges; it counts nothing.** Counters live in the shards
//! (`experiment::tally`); `results` turns their merged copy into lifts, intervals and a status.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::Error;
use crate::experiment::assign::{Assignment, Layer, Split};
use crate::experiment::spec::{ArmPolicy, ExperimentSpec};
use crate::experiment::srm::SampleRatio;
use crate::experiment::stats::{Effect, Sequential};
use crate::experiment::tally::{ArmTag, ArmTally};

/// One experiment as the registry holds it.
#[derive(Debug)]
pub struct Live {
    /// Its number, as shards' tallies know it.
    pub id: u32,
    /// The checked definition.
    pub spec: ExperimentSpec,
    /// The arms' names, shared with every decision's reply.
    pub arm_names: Vec<Arc<str>>,
    /// The experiment's name, shared likewise.
    pub name: Arc<str>,
    /// One sequential test per arm against the first (index 0 unused), kept across reads so
    /// the p-value is the running minimum and the interval the running intersection.
    tests: Mutex<Vec<Sequential>>,
    /// The promoted arm's index (`NOT_PROMOTED`: none): every user the experiment takes gets
    /// it. Written under the registry's book lock, read by decisions without one.
    promoted: AtomicU32,
}

const NOT_PROMOTED: u32 = u32::MAX;

impl Live {
    /// The promoted arm, if one was.
    pub fn promoted(&self) -> Option<u16> {
        match self.promoted.load(Ordering::Acquire) {
            NOT_PROMOTED => None,
            arm => Some(arm as u16),
        }
    }
}

/// The experiment and arm a decision falls in.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The experiment.
    pub experiment: Arc<Live>,
    /// The arm's index.
    pub arm: u16,
}

impl Chosen {
    /// The arm's policy.
    pub fn policy(&self) -> ArmPolicy {
        self.experiment.spec.arms[usize::from(self.arm)].policy
    }

    /// The experiment and arm as a decision's reply names them.
    pub fn reply(&self) -> crate::api::ExperimentArm {
        crate::api::ExperimentArm {
            experiment: self.experiment.name.clone(),
            arm: self.experiment.arm_names[usize::from(self.arm)].clone(),
        }
    }

    /// The tag a decision's open record carries.
    pub fn tag(&self) -> ArmTag {
        ArmTag {
            experiment: self.experiment.id,
            arm: self.arm,
            metric: self.experiment.spec.metric,
        }
    }
}

/// The running experiments, by layer, as one immutable snapshot.
#[derive(Debug, Default)]
pub struct Running {
    /// Layers in the order their first experiment was created; each experiment's index into
    /// `live` is kept beside its split by name.
    layers: Vec<(String, Layer)>,
    live: Vec<Arc<Live>>,
}

impl Running {
    /// The experiment and arm of `user`: the first layer (in creation order) whose experiment
    /// takes the user and does not hold them out. A user in several layers is counted in the
    /// first one only, so every decision applies one policy.
    pub fn assign(&self, user: &str) -> Option<Chosen> {
        for (_, layer) in &self.layers {
            let Some((split, Assignment::Arm(arm))) = layer.assign(user) else {
                continue;
            };
            let live = self.live.iter().find(|l| *l.name == *split.name())?;
            return Some(Chosen {
                arm: live.promoted().unwrap_or(arm as u16),
                experiment: live.clone(),
            });
        }
        None
    }
}

/// One change to the experiments, as the audit trail keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// The registry's version after the change (1 for the first).
    pub version: u64,
    /// When (engine time, Unix ms).
    pub ts_ms: u64,
    /// The experiment.
    pub experiment: String,
    /// `created`, `promoted` or `stopped`.
    pub action: &'static str,
    /// The arm promoted, for `promoted`.
    pub arm: Option<String>,
    /// The caller's reason (may be empty).
    pub reason: String,
}

/// What the registry's writers share.
#[derive(Debug, Default)]
struct Book {
    all: Vec<(Arc<Live>, bool)>,
    audit: Vec<AuditEntry>,
}

/// The engine's experiments.
#[derive(Debug, Default)]
pub struct Registry {
    book: Mutex<Book>,
    /// The snapshot decisions read; replaced whole by writers.
    snapshot: RwLock<Arc<Running>>,
    /// Whether any experiment runs: a decision without one takes no lock at all.
    any_running: AtomicBool,
}

impl Registry {
    /// The experiment and arm of `user` among the running experiments, if any.
    #[inline]
    pub fn assign(&self, user: &str) -> Option<Chosen> {
        if !self.any_running.load(Ordering::Acquire) {
            return None;
        }
        let running = self.snapshot.read().clone();
        running.assign(user)
    }

    /// Adds and starts an experiment; refused (nothing changed) if the definition is invalid,
    /// the name is taken, or its buckets overlap a running experiment's in its layer.
    pub fn create(&self, spec: ExperimentSpec, ts_ms: u64, reason: &str) -> Result<(), Error> {
        let split = spec.check()?;
        let mut book = self.book.lock();
        if book.all.iter().any(|(l, _)| l.spec.name == spec.name) {
            return Err(Error::ExperimentExists(spec.name));
        }
        let effect = Effect::Relative;
        let tests = vec![Sequential::new(effect, spec.tau, spec.alpha); spec.arms.len()];
        let live = Arc::new(Live {
            id: book.all.len() as u32,
            arm_names: spec
                .arms
                .iter()
                .map(|a| Arc::from(a.name.as_str()))
                .collect(),
            name: Arc::from(spec.name.as_str()),
            spec,
            tests: Mutex::new(tests),
            promoted: AtomicU32::new(NOT_PROMOTED),
        });
        let mut candidate: Vec<Arc<Live>> = running(&book);
        candidate.push(live.clone());
        let snapshot = build(&candidate, Some((&live.name, split)))?;
        book.all.push((live.clone(), true));
        record(&mut book, ts_ms, &live.spec.name, ("created", None), reason);
        self.publish(snapshot);
        Ok(())
    }

    /// Stops a running experiment: decisions no longer fall in it; its counters stay readable.
    pub fn stop(&self, name: &str, ts_ms: u64, reason: &str) -> Result<bool, Error> {
        let mut book = self.book.lock();
        let Some(entry) = book.all.iter_mut().find(|(l, _)| l.spec.name == name) else {
            return Err(Error::UnknownExperiment(name.to_string()));
        };
        if !std::mem::replace(&mut entry.1, false) {
            return Ok(false);
        }
        let snapshot = build(&running(&book), None)?;
        record(&mut book, ts_ms, name, ("stopped", None), reason);
        self.publish(snapshot);
        Ok(true)
    }

    /// Promotes an arm of a running experiment: from now on every user the experiment takes
    /// (all but the holdout) gets it. Counting goes on; the status becomes `promoted`.
    pub fn promote(&self, name: &str, arm: &str, ts_ms: u64, reason: &str) -> Result<(), Error> {
        use crate::error::Problem;
        let mut book = self.book.lock();
        let Some((live, running)) = book.all.iter().find(|(l, _)| l.spec.name == name) else {
            return Err(Error::UnknownExperiment(name.to_string()));
        };
        if !running {
            let why = "the experiment is stopped".to_string();
            return Err(Error::invalid("name", Problem::Rejected(why)));
        }
        let Some(index) = live.spec.arms.iter().position(|a| a.name == arm) else {
            let why = format!("`{arm}` is not an arm of `{name}`");
            return Err(Error::invalid("arm", Problem::Rejected(why)));
        };
        live.promoted.store(index as u32, Ordering::Release);
        let arm = Some(arm.to_string());
        record(&mut book, ts_ms, name, ("promoted", arm), reason);
        Ok(())
    }

    fn publish(&self, snapshot: Running) {
        let any = !snapshot.live.is_empty();
        *self.snapshot.write() = Arc::new(snapshot);
        self.any_running.store(any, Ordering::Release);
    }

    /// An experiment by name, and whether it runs.
    pub fn get(&self, name: &str) -> Option<(Arc<Live>, bool)> {
        let book = self.book.lock();
        book.all.iter().find(|(l, _)| l.spec.name == name).cloned()
    }

    /// Every experiment, in creation order, and whether it runs.
    pub fn list(&self) -> Vec<(Arc<Live>, bool)> {
        self.book.lock().all.clone()
    }

    /// The audit trail, oldest first.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.book.lock().audit.clone()
    }
}

fn running(book: &Book) -> Vec<Arc<Live>> {
    book.all
        .iter()
        .filter(|(_, on)| *on)
        .map(|(l, _)| l.clone())
        .collect()
}

fn record(
    book: &mut Book,
    ts_ms: u64,
    experiment: &str,
    (action, arm): (&'static str, Option<String>),
    reason: &str,
) {
    let version = book.audit.len() as u64 + 1;
    book.audit.push(AuditEntry {
        version,
        ts_ms,
        experiment: experiment.to_string(),
        action,
        arm,
        reason: reason.to_string(),
    });
}

/// The snapshot of `live` (all running), each in its layer; `fresh` is the split of the one
/// being added (the others' were checked when they were).
fn build(live: &[Arc<Live>], fresh: Option<(&Arc<str>, Split)>) -> Result<Running, Error> {
    let mut layers: Vec<(String, Layer)> = Vec::new();
    for l in live {
        let split = match &fresh {
            Some((name, split)) if ***name == *l.name => split.clone(),
            _ => l.spec.check()?,
        };
        let at = match layers.iter().position(|(name, _)| *name == l.spec.layer) {
            Some(at) => at,
            None => {
                let salt = format!("layer:{}", l.spec.layer);
                layers.push((l.spec.layer.clone(), Layer::new(&salt)));
                layers.len() - 1
            }
        };
        layers[at]
            .1
            .add(l.spec.buckets.clone(), split)
            .map_err(|e| {
                Error::invalid("buckets", crate::error::Problem::Rejected(e.to_string()))
            })?;
    }
    Ok(Running {
        layers,
        live: live.to_vec(),
    })
}

/// Where an experiment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No arm differs from the baseline yet.
    Collecting,
    /// At least one arm differs from the baseline at level α (better or worse: see its lift).
    Significant,
    /// The arms' exposures do not match their shares: the results are not to be trusted.
    SrmAlarm,
    /// An arm was promoted: it serves everyone the experiment takes, so the arms' shares no
    /// longer hold and the counts go on only for the record.
    Promoted,
}

impl Status {
    /// The status as the wire spells it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Collecting => "collecting",
            Status::Significant => "significant",
            Status::SrmAlarm => "srm_alarm",
            Status::Promoted => "promoted",
        }
    }
}

/// One arm's results.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmResult {
    /// The arm's name.
    pub name: String,
    /// Its policy's name.
    pub policy: &'static str,
    /// Its counters, summed over shards.
    pub tally: ArmTally,
    /// The metric's mean, once a decision closed.
    pub mean: Option<f64>,
    /// The relative lift over the baseline at the latest look (`None` for the baseline, or
    /// before each arm has enough observations).
    pub lift: Option<f64>,
    /// The always-valid confidence interval of the lift (unbounded before the first look).
    pub interval: (f64, f64),
    /// The always-valid p-value (1 before the first look).
    pub p_value: f64,
    /// Whether the lift is significant at α.
    pub significant: bool,
}

/// An experiment's results, read now.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentResults {
    /// The experiment.
    pub name: String,
    /// Whether it runs.
    pub running: bool,
    /// Its primary metric's name.
    pub metric: &'static str,
    /// Collecting, significant or SRM alarm.
    pub status: Status,
    /// The promoted arm, if one was.
    pub promoted: Option<String>,
    /// The sample-ratio check's p-value over exposed users (`None` while none).
    pub srm_p_value: Option<f64>,
    /// The arms, baseline first.
    pub arms: Vec<ArmResult>,
}

impl Live {
    /// Judges the merged counters `tallies` (one per arm): one look of each arm's sequential
    /// test, and the sample-ratio check of exposed users.
    pub fn results(&self, running: bool, tallies: &[ArmTally]) -> ExperimentResults {
        let spec = &self.spec;
        let mut tally = tallies.to_vec();
        tally.resize(spec.arms.len(), ArmTally::default());
        let mut tests = self.tests.lock();
        let mut arms = Vec::with_capacity(spec.arms.len());
        for (i, arm) in spec.arms.iter().enumerate() {
            let lift = (i > 0)
                .then(|| tests[i].observe(&tally[0].metric, &tally[i].metric))
                .flatten()
                .map(|e| e.value);
            let test = &tests[i];
            arms.push(ArmResult {
                name: arm.name.clone(),
                policy: arm.policy.name(),
                tally: tally[i],
                mean: tally[i].metric.mean(),
                lift,
                interval: test.interval(),
                p_value: test.p_value(),
                significant: i > 0 && test.significant(),
            });
        }
        let users: Vec<u64> = tally.iter().map(|t| t.users).collect();
        let total: f64 = spec.arms.iter().map(|a| a.weight).sum();
        let shares: Vec<f64> = spec.arms.iter().map(|a| a.weight / total).collect();
        let srm = SampleRatio::check(&users, &shares);
        let promoted = self
            .promoted()
            .map(|a| spec.arms[usize::from(a)].name.clone());
        let status = if promoted.is_some() {
            Status::Promoted
        } else if srm.as_ref().is_some_and(|s| s.alarm()) {
            Status::SrmAlarm
        } else if arms.iter().any(|a| a.significant) {
            Status::Significant
        } else {
            Status::Collecting
        };
        ExperimentResults {
            name: spec.name.clone(),
            running,
            metric: spec.metric.name(),
            status,
            promoted,
            srm_p_value: srm.map(|s| s.p_value),
            arms,
        }
    }
}
