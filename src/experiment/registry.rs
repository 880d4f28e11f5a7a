//! The engine's experiments: the definitions, which of them run, the audit trail of every
//! change (each a version of the whole registry, any of which can be restored), and the
//! snapshot the decision path reads. Writers (create, update, stop, promote, restore) take a
//! mutex and publish a new `Arc<Running>`; a decision reads the current one under a read lock
//! held for one `Arc` clone, and skips even that while nothing runs (`any_running`).
//!
//! **It assigns and judges; it counts nothing.** Counters live in the shards
//! (`experiment::tally`); `results` turns their merged copy into lifts, intervals and a status.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Problem};
use crate::experiment::assign::{Assignment, Layer, Split};
use crate::experiment::spec::{ArmPolicy, ExperimentSpec, Metric, Tuning};
use crate::experiment::srm::SampleRatio;
use crate::experiment::stats::{Effect, Sequential};
use crate::experiment::tally::{ArmTag, ArmTally};
use crate::rules::expr::Cond;

/// One experiment as the registry holds it: one version of its definition. An update
/// replaces it with another `Live` of the same id sharing the same `Judge`.
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
    /// The targeting condition, compiled.
    target: Option<Cond>,
    /// What outlives a version of the definition: the tests and the promoted arm.
    judge: Arc<Judge>,
}

/// The state of an experiment that every version of its definition shares.
#[derive(Debug)]
struct Judge {
    /// Per metric (`Metric::index`), one sequential test per arm against the first (index 0
    /// unused; empty until the metric is first read), kept across reads so that the p-value
    /// is the running minimum (the interval is the latest look's).
    tests: Mutex<[Vec<Sequential>; Metric::ALL.len()]>,
    /// The promoted arm's index (`NOT_PROMOTED`: none): every user the experiment takes gets
    /// it. Written under the registry's book lock, read by decisions without one.
    promoted: AtomicU32,
}

const NOT_PROMOTED: u32 = u32::MAX;

impl Live {
    /// Checks `spec` and compiles it as experiment `id`, judged by `judge` (`None`: a new one).
    fn new(id: u32, spec: ExperimentSpec, judge: Option<Arc<Judge>>) -> Result<Live, Error> {
        let target = spec.compile_target()?;
        Ok(Live {
            id,
            arm_names: (spec.arms.iter())
                .map(|a| Arc::from(a.name.as_str()))
                .collect(),
            name: Arc::from(spec.name.as_str()),
            target,
            judge: judge.unwrap_or_else(|| {
                Arc::new(Judge {
                    tests: Mutex::new(Default::default()),
                    promoted: AtomicU32::new(NOT_PROMOTED),
                })
            }),
            spec,
        })
    }

    /// The promoted arm, if one was.
    pub fn promoted(&self) -> Option<u16> {
        match self.judge.promoted.load(Ordering::Acquire) {
            NOT_PROMOTED => None,
            arm => Some(arm as u16),
        }
    }

    fn set_promoted(&self, arm: Option<u16>) {
        let arm = arm.map_or(NOT_PROMOTED, u32::from);
        self.judge.promoted.store(arm, Ordering::Release);
    }

    /// The compiled targeting condition, if the definition has one.
    pub fn target(&self) -> Option<&Cond> {
        self.target.as_ref()
    }
}

/// The experiment and arm a decision falls in.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The experiment.
    pub experiment: Arc<Live>,
    /// The arm's index.
    pub arm: u16,
    /// Whether targeting was already applied (a decision replayed from the log carries the
    /// arm it was made under, targeting included).
    pub targeted: bool,
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
                targeted: false,
            });
        }
        None
    }
}

/// What a change to the experiments did (`AuditEntry::action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// An experiment was created and started.
    Created,
    /// An experiment's definition was updated (holdout, targeting, guardrails).
    Updated,
    /// An arm was promoted.
    Promoted,
    /// An experiment was stopped.
    Stopped,
    /// The whole registry went back to an earlier version (`AuditEntry::restored`).
    Restored,
}

impl AuditAction {
    /// The action as the wire spells it.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::Created => "created",
            AuditAction::Updated => "updated",
            AuditAction::Promoted => "promoted",
            AuditAction::Stopped => "stopped",
            AuditAction::Restored => "restored",
        }
    }
}

/// One change to the experiments, as the audit trail keeps it: each is a version of the
/// whole registry.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// The registry's version after the change (1 for the first).
    pub version: u64,
    /// When (engine time, Unix ms).
    pub ts_ms: u64,
    /// The experiment (empty for `restored`, which concerns them all).
    pub experiment: String,
    /// What was done.
    pub action: AuditAction,
    /// The arm promoted, for `promoted`.
    pub arm: Option<String>,
    /// The version restored, for `restored`.
    pub restored: Option<u64>,
    /// The definition from then on, for `created` and `updated`.
    pub spec: Option<Arc<ExperimentSpec>>,
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
    /// Whether a running experiment has a targeting condition (decisions then keep their
    /// context for it).
    any_target: AtomicBool,
    /// Whether a running experiment has a tuned arm (`ArmPolicy::NudgeTuned`): learning
    /// asks `tuning` only then.
    any_tuned: AtomicBool,
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

    /// Whether a running experiment targets by a condition (which may read the context).
    #[inline]
    pub fn any_target(&self) -> bool {
        self.any_target.load(Ordering::Acquire)
    }

    /// How `user` learns, given the experiment they were last exposed to (`exposed_to`: its
    /// id + 1; 0 for none): their arm's `Tuning` while that experiment runs and assigns them
    /// there (the promoted arm's once one is), the engine's configuration otherwise.
    #[inline]
    pub fn tuning(&self, user: &str, exposed_to: u32) -> Tuning {
        if exposed_to == 0 || !self.any_tuned.load(Ordering::Acquire) {
            return Tuning::default();
        }
        let running = self.snapshot.read().clone();
        (running.assign(user))
            .filter(|c| c.experiment.id + 1 == exposed_to)
            .map_or_else(Tuning::default, |c| c.policy().tuning())
    }

    /// Experiment `id`'s arm `arm`, as a decision made under it is replayed: targeting was
    /// applied then. `None` if there is no such experiment or arm.
    pub fn replayed(&self, id: u32, arm: u16) -> Option<Chosen> {
        let book = self.book.lock();
        let (live, _) = book.all.get(id as usize)?;
        (usize::from(arm) < live.spec.arms.len()).then(|| Chosen {
            experiment: live.clone(),
            arm,
            targeted: true,
        })
    }

    /// Adds and starts an experiment; refused (nothing changed) if the definition is invalid,
    /// the name is taken, or its buckets overlap a running experiment's in its layer.
    pub fn create(&self, spec: ExperimentSpec, ts_ms: u64, reason: &str) -> Result<(), Error> {
        let split = spec.check()?;
        let mut book = self.book.lock();
        if book.all.iter().any(|(l, _)| l.spec.name == spec.name) {
            return Err(Error::ExperimentExists(spec.name));
        }
        let live = Arc::new(Live::new(book.all.len() as u32, spec, None)?);
        let mut candidate: Vec<Arc<Live>> = running(&book);
        candidate.push(live.clone());
        let snapshot = build(&candidate, Some((&live.name, split)))?;
        book.all.push((live.clone(), true));
        let entry = Entry::of(&live.spec.name, AuditAction::Created, reason);
        record(&mut book, ts_ms, entry.spec(&live.spec));
        self.publish(snapshot);
        Ok(())
    }

    /// Replaces an experiment's definition. Only what leaves the arms' comparison intact may
    /// change: `holdout`, `segments`, `target` and `guardrails`; a change to anything else is
    /// refused naming the field (stop the experiment and create another instead). Returns
    /// whether anything changed.
    pub fn update(&self, spec: ExperimentSpec, ts_ms: u64, reason: &str) -> Result<bool, Error> {
        let split = spec.check()?;
        let mut book = self.book.lock();
        let Some(at) = book.all.iter().position(|(l, _)| l.spec.name == spec.name) else {
            return Err(Error::UnknownExperiment(spec.name));
        };
        let (old, on) = book.all[at].clone();
        if let Some(field) = fixed_field(&old.spec, &spec) {
            let why = "cannot change while the experiment exists: stop it and create another";
            return Err(Error::invalid(field, Problem::Rejected(why.into())));
        }
        if old.spec == spec {
            return Ok(false);
        }
        let live = Arc::new(Live::new(old.id, spec, Some(old.judge.clone()))?);
        let mut all = book.all.clone();
        all[at] = (live.clone(), on);
        let snapshot = build(&running_of(&all), Some((&live.name, split)))?;
        book.all = all;
        let entry = Entry::of(&live.spec.name, AuditAction::Updated, reason);
        record(&mut book, ts_ms, entry.spec(&live.spec));
        self.publish(snapshot);
        Ok(true)
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
        record(
            &mut book,
            ts_ms,
            Entry::of(name, AuditAction::Stopped, reason),
        );
        self.publish(snapshot);
        Ok(true)
    }

    /// Promotes an arm of a running experiment: from now on every user the experiment takes
    /// (all but the holdout) gets it. Counting goes on; the status becomes `promoted`.
    pub fn promote(&self, name: &str, arm: &str, ts_ms: u64, reason: &str) -> Result<(), Error> {
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
        live.set_promoted(Some(index as u16));
        let mut entry = Entry::of(name, AuditAction::Promoted, reason);
        entry.arm = Some(arm.to_string());
        record(&mut book, ts_ms, entry);
        Ok(())
    }

    /// Brings every experiment back to how it was at audit version `version`: the
    /// definitions, which ran and which arm was promoted then; experiments created later are
    /// stopped (names are never reused). Counters are not touched. The restore is itself a
    /// new version. Returns whether anything changed.
    pub fn restore(&self, version: u64, ts_ms: u64, reason: &str) -> Result<bool, Error> {
        let mut book = self.book.lock();
        let latest = book.audit.len() as u64;
        if version == 0 || version > latest {
            let max = latest as f64;
            return Err(Error::invalid(
                "version",
                Problem::OutOfRange { min: 1.0, max },
            ));
        }
        let then = state_at(&book.audit, version);
        let mut all = Vec::with_capacity(book.all.len());
        let mut promotions = Vec::new();
        for (live, _) in &book.all {
            let Some(was) = then.iter().find(|w| w.spec.name == *live.name) else {
                all.push((live.clone(), false));
                promotions.push(None);
                continue;
            };
            let live = match live.spec == *was.spec {
                true => live.clone(),
                false => {
                    let spec = (*was.spec).clone();
                    Arc::new(Live::new(live.id, spec, Some(live.judge.clone()))?)
                }
            };
            let arm = (was.promoted.as_deref())
                .and_then(|a| live.spec.arms.iter().position(|x| x.name == a))
                .map(|i| i as u16);
            promotions.push(arm);
            all.push((live, was.running));
        }
        let unchanged =
            all.iter()
                .zip(&book.all)
                .zip(&promotions)
                .all(|(((new, on), (old, was_on)), arm)| {
                    Arc::ptr_eq(new, old) && on == was_on && old.promoted() == *arm
                });
        if unchanged {
            return Ok(false);
        }
        let snapshot = build(&running_of(&all), None)?;
        for ((live, _), arm) in all.iter().zip(&promotions) {
            live.set_promoted(*arm);
        }
        book.all = all;
        let mut entry = Entry::of("", AuditAction::Restored, reason);
        entry.restored = Some(version);
        record(&mut book, ts_ms, entry);
        self.publish(snapshot);
        Ok(true)
    }

    fn publish(&self, snapshot: Running) {
        let any = !snapshot.live.is_empty();
        let target = snapshot.live.iter().any(|l| l.target.is_some());
        let tuned = (snapshot.live.iter())
            .any(|l| l.spec.arms.iter().any(|a| !a.policy.tuning().is_default()));
        *self.snapshot.write() = Arc::new(snapshot);
        self.any_target.store(target, Ordering::Release);
        self.any_tuned.store(tuned, Ordering::Release);
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

/// The first field that differs between `old` and `new` and may not change in place.
fn fixed_field(old: &ExperimentSpec, new: &ExperimentSpec) -> Option<&'static str> {
    let arms = |s: &ExperimentSpec| {
        (s.arms.iter())
            .map(|a| (a.name.clone(), a.weight.to_bits(), a.policy))
            .collect::<Vec<_>>()
    };
    [
        ("salt", old.salt != new.salt),
        ("layer", old.layer != new.layer),
        ("buckets", old.buckets != new.buckets),
        ("arms", arms(old) != arms(new)),
        ("metric", old.metric != new.metric),
        ("tau", old.tau.to_bits() != new.tau.to_bits()),
        ("alpha", old.alpha.to_bits() != new.alpha.to_bits()),
    ]
    .into_iter()
    .find_map(|(field, differs)| differs.then_some(field))
}

/// One experiment as it stood at some version.
struct Was {
    spec: Arc<ExperimentSpec>,
    running: bool,
    promoted: Option<String>,
}

/// Every experiment as it stood after audit version `version`, in creation order.
fn state_at(audit: &[AuditEntry], version: u64) -> Vec<Was> {
    let mut out: Vec<Was> = Vec::new();
    for e in &audit[..version as usize] {
        let was = out.iter().position(|w| w.spec.name == e.experiment);
        match (e.action, was) {
            (AuditAction::Created, _) => out.push(Was {
                spec: e.spec.clone().expect("a creation records its definition"),
                running: true,
                promoted: None,
            }),
            (AuditAction::Updated, Some(i)) => {
                out[i].spec = e.spec.clone().expect("an update records its definition")
            }
            (AuditAction::Stopped, Some(i)) => out[i].running = false,
            (AuditAction::Promoted, Some(i)) => out[i].promoted = e.arm.clone(),
            (AuditAction::Restored, _) => {
                // Earlier than `e` itself, so the recursion ends.
                out = state_at(audit, e.restored.expect("a restore records its version"));
            }
            _ => {}
        }
    }
    out
}

/// An audit entry being written (the version and time are filled in by `record`).
struct Entry(AuditEntry);

impl Entry {
    fn of(experiment: &str, action: AuditAction, reason: &str) -> Entry {
        Entry(AuditEntry {
            version: 0,
            ts_ms: 0,
            experiment: experiment.to_string(),
            action,
            arm: None,
            restored: None,
            spec: None,
            reason: reason.to_string(),
        })
    }

    fn spec(mut self, spec: &ExperimentSpec) -> Entry {
        self.0.spec = Some(Arc::new(spec.clone()));
        self
    }
}

impl std::ops::Deref for Entry {
    type Target = AuditEntry;
    fn deref(&self) -> &AuditEntry {
        &self.0
    }
}

impl std::ops::DerefMut for Entry {
    fn deref_mut(&mut self) -> &mut AuditEntry {
        &mut self.0
    }
}

fn running(book: &Book) -> Vec<Arc<Live>> {
    running_of(&book.all)
}

fn running_of(all: &[(Arc<Live>, bool)]) -> Vec<Arc<Live>> {
    all.iter()
        .filter(|(_, on)| *on)
        .map(|(l, _)| l.clone())
        .collect()
}

fn record(book: &mut Book, ts_ms: u64, entry: Entry) {
    let mut entry = entry.0;
    entry.version = book.audit.len() as u64 + 1;
    entry.ts_ms = ts_ms;
    book.audit.push(entry);
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
    /// An arm is significantly worse than the baseline on a guardrail metric.
    GuardrailAlarm,
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
            Status::GuardrailAlarm => "guardrail_alarm",
            Status::SrmAlarm => "srm_alarm",
            Status::Promoted => "promoted",
        }
    }
}

/// One metric of one arm, judged against the baseline arm.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricResult {
    /// The metric.
    pub metric: Metric,
    /// Its observations (closed decisions).
    pub count: u64,
    /// Its mean, once a decision closed.
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
    /// Significant and negative: the arm does worse than the baseline (every metric here is
    /// better higher). For a guardrail, an alarm.
    pub worse: bool,
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
    /// The primary metric.
    pub primary: MetricResult,
    /// The guardrail metrics, in the definition's order.
    pub guardrails: Vec<MetricResult>,
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
    /// Collecting, significant, guardrail or SRM alarm, promoted.
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
    /// test on the primary metric and on each guardrail, and the sample-ratio check of
    /// exposed users.
    pub fn results(&self, running: bool, tallies: &[ArmTally]) -> ExperimentResults {
        let spec = &self.spec;
        let mut tally = tallies.to_vec();
        tally.resize(spec.arms.len(), ArmTally::default());
        let mut tests = self.judge.tests.lock();
        let mut judge = |metric: Metric, i: usize| {
            let tests = &mut tests[metric.index()];
            if tests.is_empty() {
                let test = Sequential::new(Effect::Relative, spec.tau, spec.alpha);
                *tests = vec![test; spec.arms.len()];
            }
            let (base, arm) = (tally[0].metric(metric), tally[i].metric(metric));
            let lift = (i > 0).then(|| tests[i].observe(base, arm)).flatten();
            let test = &tests[i];
            let significant = i > 0 && test.significant();
            MetricResult {
                metric,
                count: arm.count,
                mean: arm.mean(),
                lift: lift.map(|e| e.value),
                interval: test.interval(),
                p_value: test.p_value(),
                significant,
                worse: significant && test.interval().1 < 0.0,
            }
        };
        let arms: Vec<ArmResult> = (spec.arms.iter().enumerate())
            .map(|(i, arm)| ArmResult {
                name: arm.name.clone(),
                policy: arm.policy.name(),
                tally: tally[i],
                primary: judge(spec.metric, i),
                guardrails: (spec.guardrails.iter()).map(|&g| judge(g, i)).collect(),
            })
            .collect();
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
        } else if arms.iter().any(|a| a.guardrails.iter().any(|g| g.worse)) {
            Status::GuardrailAlarm
        } else if arms.iter().any(|a| a.primary.significant) {
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
