//! The engine's templates: every version of every template, and which version is current.
//!
//! A decision takes the current version with one `Arc` clone under a read lock, so it sees
//! the old version or the new one, never a mix; registering and rolling back take the write
//! lock. Versions are never deleted (a rollback can go to any of them), and a version number
//! is never reused: after a rollback from 3 to 1, the next registration is 4.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Template, TemplateError, TemplateSpec};
use crate::model::FeatureSpace;

/// Every version of one template.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateVersions {
    /// The versions, oldest first (version `i + 1` at index `i`).
    pub all: Vec<Arc<Template>>,
    /// The version in force.
    pub current: u64,
}

impl TemplateVersions {
    /// The version in force.
    pub fn current(&self) -> &Arc<Template> {
        &self.all[(self.current - 1) as usize]
    }
}

/// The templates, by name.
#[derive(Default)]
pub struct Registry {
    by_name: RwLock<HashMap<String, TemplateVersions>>,
}

impl Registry {
    /// Checks `spec` and makes it the current version of its template; returns the version.
    /// A refused template changes nothing.
    pub fn register(&self, spec: TemplateSpec, space: &FeatureSpace) -> Result<u64, TemplateError> {
        // Compiled under the write lock: registrations are rare, and the version is then sure.
        let mut map = self.by_name.write();
        let version = next_version(&map, &spec.name);
        let template = Arc::new(Template::compile(spec, version, space)?);
        install(&mut map, template);
        Ok(version)
    }

    /// Compiles `spec` as the next version of its template without installing it, for a
    /// caller that stores it first; `install` then makes it current. The caller keeps other
    /// registrations out between the two (the engine's definitions lock).
    pub fn prepare(
        &self,
        spec: TemplateSpec,
        space: &FeatureSpace,
    ) -> Result<Arc<Template>, TemplateError> {
        let version = next_version(&self.by_name.read(), &spec.name);
        Ok(Arc::new(Template::compile(spec, version, space)?))
    }

    /// Makes a template from `prepare` the current version of its name.
    pub fn install(&self, template: Arc<Template>) {
        install(&mut self.by_name.write(), template);
    }

    /// The current version of `name`.
    pub fn current(&self, name: &str) -> Option<Arc<Template>> {
        self.by_name.read().get(name).map(|v| v.current().clone())
    }

    /// Makes `version` of `name` current again; the next decision uses it.
    pub fn rollback(&self, name: &str, version: u64) -> Result<(), RollbackError> {
        let mut map = self.by_name.write();
        let versions = map.get_mut(name).ok_or(RollbackError::NoTemplate)?;
        check_rollback(versions, version)?;
        versions.current = version;
        Ok(())
    }

    /// Whether `rollback(name, version)` would be taken, changing nothing.
    pub fn check_rollback(&self, name: &str, version: u64) -> Result<(), RollbackError> {
        let map = self.by_name.read();
        check_rollback(map.get(name).ok_or(RollbackError::NoTemplate)?, version)
    }

    /// Every version of `name`.
    pub fn versions(&self, name: &str) -> Option<TemplateVersions> {
        self.by_name.read().get(name).cloned()
    }

    /// Every template's current version, by name.
    pub fn list(&self) -> Vec<Arc<Template>> {
        let map = self.by_name.read();
        let mut all: Vec<_> = map.values().map(|v| v.current().clone()).collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }
}

/// The version the next registration of `name` gets.
fn next_version(map: &HashMap<String, TemplateVersions>, name: &str) -> u64 {
    map.get(name).map_or(1, |v| v.all.len() as u64 + 1)
}

/// Appends `template` to its name's versions and makes it current.
fn install(map: &mut HashMap<String, TemplateVersions>, template: Arc<Template>) {
    let entry = (map.entry(template.name().to_string())).or_insert_with(|| TemplateVersions {
        all: Vec::new(),
        current: 0,
    });
    assert_eq!(
        template.version(),
        entry.all.len() as u64 + 1,
        "a template is installed as the version it was compiled as"
    );
    entry.current = template.version();
    entry.all.push(template);
}

fn check_rollback(versions: &TemplateVersions, version: u64) -> Result<(), RollbackError> {
    if version == 0 || version > versions.all.len() as u64 {
        return Err(RollbackError::NoVersion {
            latest: versions.all.len() as u64,
        });
    }
    Ok(())
}

/// Why a rollback was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackError {
    /// No template has the name.
    NoTemplate,
    /// The template has no such version.
    NoVersion {
        /// Its latest version.
        latest: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_and_a_rollback_never_reuses_a_number() {
        let space = FeatureSpace {
            dim: 8,
            item_embedding_init: 0.01,
        };
        let r = Registry::default();
        let spec = |body: &str| TemplateSpec::new("t", body).slot("s", [("a", "A")]);
        assert_eq!(r.register(spec("1 {{s}}"), &space), Ok(1));
        assert_eq!(r.register(spec("2 {{s}}"), &space), Ok(2));
        assert!(r.register(spec("{{bad}}"), &space).is_err());
        assert_eq!(r.current("t").unwrap().version(), 2);
        r.rollback("t", 1).unwrap();
        assert_eq!(r.current("t").unwrap().spec().body, "1 {{s}}");
        assert_eq!(r.register(spec("3 {{s}}"), &space), Ok(3));
        assert_eq!(
            r.rollback("t", 4),
            Err(RollbackError::NoVersion { latest: 3 })
        );
        assert_eq!(r.rollback("u", 1), Err(RollbackError::NoTemplate));
    }
}
