//! The engine's definitions made durable: at start the rule set, the trigger set, every
//! template version and the segment names come back from the data directory's definitions
//! log (`persist::definitions`), weighed against the config file; afterwards every change over
//! the API is checked, then appended (and fsynced), then put in force, all under the engine's
//! definitions lock, so the log's order is the order the changes took effect.
//!
//! **Precedence** (`docs/rules.md`, "Persistence"): the config file's sets are the baseline at
//! the first start, logged as installed from the file. At a later start, the last set logged
//! wins when it was given over the API; when it came from the file, the file's set is used,
//! as a new version if it changed. A file that changed after a set was given over the API
//! does not override it: the start says so in a warning. Templates follow the same rule per
//! name. Nothing here holds a lock on the request path: a decision reads the set in force
//! through its own `Arc`.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use tracing::{info, warn};

use crate::config::{Config, RuleConfig, TemplateConfig, TriggerConfig};
use crate::error::{Error, StartError};
use crate::model::segments::SegmentMaster;
use crate::model::FeatureSpace;
use crate::persist::definitions::{Definition, DefinitionLog, Source};
use crate::persist::{DataDir, PersistError};
use crate::rules::RuleSet;
use crate::template::{Registry, TemplateSpec};
use crate::triggers::TriggerSet;

/// A replaceable, versioned set of definitions: the rules or the triggers.
trait VersionedSet: Sized {
    /// One definition as given.
    type Spec: Clone + PartialEq;
    /// What the startup lines call it.
    const KIND: &'static str;
    /// The set's version.
    fn version(&self) -> u64;
    /// `specs` compiled as version `version`, with no set before it.
    fn compile(cfg: &Config, specs: &[Self::Spec], version: u64) -> Result<Self, String>;
    /// The logged definitions, each at its logged version.
    fn restored(cfg: &Config, specs: &[(Self::Spec, u64)], version: u64) -> Result<Self, String>;
    /// The next version: `specs` replace this set whole.
    fn replaced_by(&self, cfg: &Config, specs: &[Self::Spec]) -> Result<Self, String>;
    /// The config file's set.
    fn configured(cfg: &Config) -> &[Self::Spec];
    /// The record that says this set replaced the one before.
    fn record(&self, source: Source) -> Definition;
}

impl VersionedSet for RuleSet {
    type Spec = RuleConfig;
    const KIND: &'static str = "rules";
    fn version(&self) -> u64 {
        RuleSet::version(self)
    }
    fn compile(_: &Config, specs: &[RuleConfig], version: u64) -> Result<Self, String> {
        RuleSet::compile(specs, version).map_err(|e| e.to_string())
    }
    fn restored(_: &Config, specs: &[(RuleConfig, u64)], version: u64) -> Result<Self, String> {
        RuleSet::restored(specs, version).map_err(|e| e.to_string())
    }
    fn replaced_by(&self, _: &Config, specs: &[RuleConfig]) -> Result<Self, String> {
        RuleSet::replaced_by(self, specs).map_err(|e| e.to_string())
    }
    fn configured(cfg: &Config) -> &[RuleConfig] {
        &cfg.rules
    }
    fn record(&self, source: Source) -> Definition {
        Definition::Rules {
            version: self.version(),
            rules: (self.specs().iter()).map(|(s, v)| (s.into(), *v)).collect(),
            source,
        }
    }
}

impl VersionedSet for TriggerSet {
    type Spec = TriggerConfig;
    const KIND: &'static str = "triggers";
    fn version(&self) -> u64 {
        TriggerSet::version(self)
    }
    fn compile(cfg: &Config, specs: &[TriggerConfig], version: u64) -> Result<Self, String> {
        TriggerSet::compile(specs, version, &cfg.webhook.url).map_err(|e| e.to_string())
    }
    fn restored(
        cfg: &Config,
        specs: &[(TriggerConfig, u64)],
        version: u64,
    ) -> Result<Self, String> {
        TriggerSet::restored(specs, version, &cfg.webhook.url).map_err(|e| e.to_string())
    }
    fn replaced_by(&self, cfg: &Config, specs: &[TriggerConfig]) -> Result<Self, String> {
        TriggerSet::replaced_by(self, specs, &cfg.webhook.url).map_err(|e| e.to_string())
    }
    fn configured(cfg: &Config) -> &[TriggerConfig] {
        &cfg.triggers
    }
    fn record(&self, source: Source) -> Definition {
        Definition::Triggers {
            version: self.version(),
            triggers: (self.specs().iter()).map(|(s, v)| (s.into(), *v)).collect(),
            source,
        }
    }
}

/// One set as logged.
struct LoggedSet<S> {
    version: u64,
    /// The definitions, each with its version.
    specs: Vec<(S, u64)>,
    source: Source,
}

/// One kind of set as the log has it.
struct History<S> {
    /// The last set logged.
    last: Option<LoggedSet<S>>,
    /// The definitions of the last set installed from the config file (none: empty).
    from_config: Vec<S>,
}

impl<S> Default for History<S> {
    fn default() -> Self {
        History {
            last: None,
            from_config: Vec::new(),
        }
    }
}

impl<S: Clone> History<S> {
    fn add(&mut self, version: u64, specs: Vec<(S, u64)>, source: Source) {
        if source == Source::Config {
            self.from_config = specs.iter().map(|(s, _)| s.clone()).collect();
        }
        self.last = Some(LoggedSet {
            version,
            specs,
            source,
        });
    }
}

/// The definitions log read at start, before the engine has what it applies to.
pub(super) struct Logged {
    /// The log to append to (`None` in memory).
    log: Option<DefinitionLog>,
    rules: History<RuleConfig>,
    triggers: History<TriggerConfig>,
    /// Template registrations and rollbacks, in order.
    templates: Vec<Definition>,
    /// Segment names `(id, name)`, in order.
    names: Vec<(u32, String)>,
}

/// What a start installs.
pub(super) struct Restored {
    /// The rule set in force.
    pub rules: RuleSet,
    /// The trigger set in force.
    pub triggers: TriggerSet,
    /// Every template version, each name at its current one.
    pub templates: Registry,
    /// The log to append to (`None` in memory).
    pub log: Option<DefinitionLog>,
}

/// Opens the data directory's definitions log and sorts its records (nothing in memory).
pub(super) fn open(data: Option<&DataDir>) -> Result<Logged, StartError> {
    let (log, records) = match data {
        Some(d) => {
            let (log, records) = DefinitionLog::open(d.path())?;
            (Some(log), records)
        }
        None => (None, Vec::new()),
    };
    let mut logged = Logged {
        log,
        rules: History::default(),
        triggers: History::default(),
        templates: Vec::new(),
        names: Vec::new(),
    };
    for record in records {
        match record {
            Definition::Rules {
                version,
                rules,
                source,
            } => {
                let rules = rules.into_iter().map(|(r, v)| (r.into(), v)).collect();
                logged.rules.add(version, rules, source);
            }
            Definition::Triggers {
                version,
                triggers,
                source,
            } => {
                let triggers = triggers.into_iter().map(|(t, v)| (t.into(), v)).collect();
                logged.triggers.add(version, triggers, source);
            }
            Definition::SegmentNamed { id, name } => logged.names.push((id, name)),
            t => logged.templates.push(t),
        }
    }
    Ok(logged)
}

impl Logged {
    /// Gives the restored centroids the logged names (before the shards read them).
    pub(super) fn name_segments(&self, master: Option<&SegmentMaster>) {
        let Some(master) = master else {
            if !self.names.is_empty() {
                info!("segment names in the definitions log are kept for when segments.k > 0");
            }
            return;
        };
        for (id, name) in &self.names {
            master.restore_name(*id, name);
        }
    }

    /// Weighs the logged sets and templates against the config file's (see the module's
    /// comment), logs what the file contributed, and returns what to install.
    pub(super) fn restore(
        mut self,
        cfg: &Config,
        space: &FeatureSpace,
    ) -> Result<Restored, StartError> {
        let rules = choose(&self.rules, cfg, self.log.as_mut())?;
        let triggers = choose(&self.triggers, cfg, self.log.as_mut())?;
        let templates = Registry::default();
        replay_templates(
            &templates,
            &self.templates,
            &cfg.templates,
            space,
            self.log.as_mut(),
        )?;
        Ok(Restored {
            rules,
            triggers,
            templates,
            log: self.log,
        })
    }
}

/// The set of one kind a start installs, logging it when it comes from the file.
fn choose<S: VersionedSet>(
    history: &History<S::Spec>,
    cfg: &Config,
    log: Option<&mut DefinitionLog>,
) -> Result<S, StartError> {
    let kind = S::KIND;
    let file = S::configured(cfg);
    let refused = |e: String| StartError::Config(format!("{kind}: {e}"));
    let where_ = log.as_ref().map(|l| l.path().display().to_string());
    let Some(LoggedSet {
        version,
        specs,
        source,
    }) = &history.last
    else {
        // The first start with this directory (or in memory): the file's set, as version 1.
        let set = S::compile(cfg, file, u64::from(!file.is_empty())).map_err(refused)?;
        if let (Some(log), false) = (log, file.is_empty()) {
            log.append(&set.record(Source::Config))?;
            info!("{kind}: the config file's {} (version 1)", file.len());
        }
        return Ok(set);
    };
    let where_ = where_.unwrap_or_default();
    let plain: Vec<S::Spec> = specs.iter().map(|(s, _)| s.clone()).collect();
    let logged = match S::restored(cfg, specs, *version) {
        Ok(set) => set,
        Err(e) => {
            // A definition this build refuses (a feature since renamed): the file's set, as
            // the next version, rather than no start.
            warn!(
                "{kind}: version {version} in {where_} does not compile with this build ({e}); \
                 the config file's set is installed as version {}",
                version + 1
            );
            let set = S::compile(cfg, file, version + 1).map_err(refused)?;
            append(log, &set.record(Source::Config))?;
            return Ok(set);
        }
    };
    match source {
        Source::Config if plain == file => {
            info!(
                "{kind}: the config file's {} (version {version})",
                file.len()
            );
            Ok(logged)
        }
        Source::Config => {
            let set = logged.replaced_by(cfg, file).map_err(refused)?;
            append(log, &set.record(Source::Config))?;
            let v = set.version();
            info!("{kind}: the config file's set changed since the last start; installed as version {v}");
            Ok(set)
        }
        Source::Api => {
            if file != history.from_config && file != plain {
                warn!(
                    "{kind}: the config file's set changed since it was last installed, but a \
                     set given over the API replaced it since: the API's (version {version}, \
                     from {where_}) stays in force; give the file's set over the API to use it"
                );
            }
            info!("{kind}: version {version}, given over the API (from {where_})");
            Ok(logged)
        }
    }
}

fn append(log: Option<&mut DefinitionLog>, record: &Definition) -> Result<(), PersistError> {
    match log {
        Some(log) => log.append(record),
        None => Ok(()),
    }
}

/// What the log says of one template name.
#[derive(Default)]
struct TemplateHistory {
    /// The spec last registered from the config file.
    from_config: Option<TemplateSpec>,
    /// Whether a registration or a rollback over the API came after it.
    api_since: bool,
}

/// Registers every logged template version and rollback in order, then the config file's
/// templates the log does not already account for.
fn replay_templates(
    registry: &Registry,
    records: &[Definition],
    file: &[TemplateConfig],
    space: &FeatureSpace,
    log: Option<&mut DefinitionLog>,
) -> Result<(), StartError> {
    let path = log.as_ref().map(|l| l.path().to_path_buf());
    let mut seen = HashMap::new();
    if let Some(path) = &path {
        seen = replay_template_records(registry, records, space, path)?;
    }
    let from_file = add_file_templates(registry, &mut seen, file, space, log)?;
    if let (Some(path), true) = (path, from_file > 0 || !records.is_empty()) {
        info!(
            "templates: {from_file} version(s) from the config file, {} change(s) restored \
             from {}",
            records.len(),
            path.display()
        );
    }
    Ok(())
}

/// Registers the logged versions and takes the logged rollbacks; what each name's history
/// says of the config file.
fn replay_template_records(
    registry: &Registry,
    records: &[Definition],
    space: &FeatureSpace,
    path: &Path,
) -> Result<HashMap<String, TemplateHistory>, StartError> {
    let bad = |what: String| StartError::Storage(PersistError::io(path, io::Error::other(what)));
    let mut seen: HashMap<String, TemplateHistory> = HashMap::new();
    for record in records {
        match record {
            Definition::TemplateRegistered {
                version,
                spec,
                source,
            } => {
                let spec = TemplateSpec::from(spec.clone());
                let name = spec.name.clone();
                let t = registry.prepare(spec.clone(), space).map_err(|e| {
                    bad(format!(
                        "template `{name}` version {version} does not compile with this build: {e}"
                    ))
                })?;
                if t.version() != *version {
                    let got = t.version();
                    let why = format!("template `{name}` is logged as version {version}");
                    return Err(bad(format!("{why} but is version {got} in order")));
                }
                registry.install(t);
                let h = seen.entry(name).or_default();
                h.api_since = *source == Source::Api;
                if *source == Source::Config {
                    h.from_config = Some(spec);
                }
            }
            Definition::TemplateRolledBack { name, version } => {
                registry.rollback(name, *version).map_err(|e| {
                    let why = format!("template `{name}`: a rollback to version {version}");
                    bad(format!("{why} that cannot be taken ({e:?})"))
                })?;
                seen.entry(name.clone()).or_default().api_since = true;
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// Registers (and logs) each of the file's templates that is new, or changed with nothing
/// given over the API since; warns of one changed after the API's. Returns how many.
fn add_file_templates(
    registry: &Registry,
    seen: &mut HashMap<String, TemplateHistory>,
    file: &[TemplateConfig],
    space: &FeatureSpace,
    mut log: Option<&mut DefinitionLog>,
) -> Result<usize, StartError> {
    let mut from_file = 0;
    for t in file {
        let spec = TemplateSpec::from(t);
        let h = seen.entry(spec.name.clone()).or_default();
        let current = registry.current(&spec.name);
        let same = |s: &TemplateSpec| *s == spec;
        if h.from_config.as_ref().is_some_and(same)
            || current.as_ref().is_some_and(|c| same(c.spec()))
        {
            continue;
        }
        if let (true, Some(current)) = (h.api_since || h.from_config.is_none(), &current) {
            warn!(
                "template `{}`: the config file's differs from the current version, which was \
                 given over the API after the file's: version {} stays current; register the \
                 file's over the API to use it",
                spec.name,
                current.version()
            );
            continue;
        }
        let t = registry
            .prepare(spec.clone(), space)
            .map_err(|e| StartError::Config(format!("templates: {e}")))?;
        append(log.as_deref_mut(), &template_record(&t, Source::Config))?;
        registry.install(t);
        (h.from_config, h.api_since) = (Some(spec), false);
        from_file += 1;
    }
    Ok(from_file)
}

/// The record of a template version's registration.
pub(super) fn template_record(t: &crate::template::Template, source: Source) -> Definition {
    Definition::TemplateRegistered {
        version: t.version(),
        spec: t.spec().into(),
        source,
    }
}

/// Stores `record` (with a data directory) before its change is made: a change that cannot be
/// stored is refused (`unavailable`) and nothing changes.
pub(super) fn store(log: &mut Option<DefinitionLog>, record: &Definition) -> Result<(), Error> {
    match log {
        Some(log) => log.append(record).map_err(|e| {
            Error::Unavailable(format!(
                "the change could not be stored, so it was not made: {e}"
            ))
        }),
        None => Ok(()),
    }
}

/// The record of a set replaced over the API.
pub(super) fn rules_record(set: &RuleSet) -> Definition {
    set.record(Source::Api)
}

/// The record of a trigger set replaced over the API.
pub(super) fn triggers_record(set: &TriggerSet) -> Definition {
    set.record(Source::Api)
}
