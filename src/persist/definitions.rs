//! The definitions log: every change to the engine's definitions (the rule set and the
//! trigger set replaced, a template version registered or rolled back to, a segment named) as
//! one framed record (`persist::framed`) in `DIR/definitions.log`, appended and fsynced before
//! the change is in force (changes are rare), and read back at start so that the engine
//! comes back with the definitions it had, versions included.
//!
//! The records carry their own copies of the definitions (`RuleRecord`, `TriggerRecord`,
//! `TemplateRecord`), frozen as written: the config types may grow, these do not. Postcard
//! encodes an enum variant by its index and a struct as its fields in order, so variants are
//! only ever appended and a layout never changes (a new layout is a new variant, the old one
//! kept to read old logs). What the records mean at start (which set wins over the config
//! file's) is `engine::definitions`'s.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::framed::FramedLog;
use super::PersistError;
use crate::config::{RuleConfig, TriggerConfig};
use crate::template::{SlotSpec, TemplateSpec, VariantSpec};

/// The log's file name in the data directory.
pub const FILE: &str = "definitions.log";

/// The log's format byte.
const FORMAT: u8 = 1;

/// Where a definition came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// Installed from the config file at a start.
    Config,
    /// Given over the API (embedded call or the wire).
    Api,
}

/// One change to the definitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Definition {
    /// The rule set was replaced.
    Rules {
        /// The new set's version.
        version: u64,
        /// Its rules as given, each with its version.
        rules: Vec<(RuleRecord, u64)>,
        /// Where it came from.
        source: Source,
    },
    /// The trigger set was replaced.
    Triggers {
        /// The new set's version.
        version: u64,
        /// Its triggers as given, each with its version.
        triggers: Vec<(TriggerRecord, u64)>,
        /// Where it came from.
        source: Source,
    },
    /// A template version was registered (and made current).
    TemplateRegistered {
        /// The version it got.
        version: u64,
        /// The template.
        spec: TemplateRecord,
        /// Where it came from.
        source: Source,
    },
    /// A template went back to an earlier version.
    TemplateRolledBack {
        /// The template.
        name: String,
        /// The version made current.
        version: u64,
    },
    /// A segment was named.
    SegmentNamed {
        /// The segment's id.
        id: u32,
        /// Its name.
        name: String,
    },
}

/// A rule as logged (`RuleConfig`'s fields when this format was written).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    name: String,
    priority: i32,
    when: Option<String>,
    action: String,
    items: Option<String>,
    by: Option<f64>,
    attr: Option<String>,
    max: Option<u32>,
    item: Option<String>,
    trigger: Option<String>,
    arm: Option<String>,
    segment: Option<String>,
}

impl From<&RuleConfig> for RuleRecord {
    fn from(r: &RuleConfig) -> RuleRecord {
        let r = r.clone();
        RuleRecord {
            name: r.name,
            priority: r.priority,
            when: r.when,
            action: r.action,
            items: r.items,
            by: r.by,
            attr: r.attr,
            max: r.max,
            item: r.item,
            trigger: r.trigger,
            arm: r.arm,
            segment: r.segment,
        }
    }
}

impl From<RuleRecord> for RuleConfig {
    fn from(r: RuleRecord) -> RuleConfig {
        RuleConfig {
            name: r.name,
            priority: r.priority,
            when: r.when,
            action: r.action,
            items: r.items,
            by: r.by,
            attr: r.attr,
            max: r.max,
            item: r.item,
            trigger: r.trigger,
            arm: r.arm,
            segment: r.segment,
        }
    }
}

/// A trigger as logged (`TriggerConfig`'s fields when this format was written).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    name: String,
    when: String,
    cooldown_s: u64,
    webhook: Option<bool>,
    webhook_url: Option<String>,
}

impl From<&TriggerConfig> for TriggerRecord {
    fn from(t: &TriggerConfig) -> TriggerRecord {
        let t = t.clone();
        TriggerRecord {
            name: t.name,
            when: t.when,
            cooldown_s: t.cooldown_s,
            webhook: t.webhook,
            webhook_url: t.webhook_url,
        }
    }
}

impl From<TriggerRecord> for TriggerConfig {
    fn from(t: TriggerRecord) -> TriggerConfig {
        TriggerConfig {
            name: t.name,
            when: t.when,
            cooldown_s: t.cooldown_s,
            webhook: t.webhook,
            webhook_url: t.webhook_url,
        }
    }
}

/// A template as logged (`TemplateSpec` when this format was written).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    name: String,
    body: String,
    slots: Vec<SlotRecord>,
    values: Vec<String>,
}

/// A template's slot as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotRecord {
    name: String,
    variants: Vec<VariantRecord>,
}

/// A slot's variant as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantRecord {
    id: String,
    text: String,
    attrs: Vec<(String, String)>,
}

impl From<&TemplateSpec> for TemplateRecord {
    fn from(t: &TemplateSpec) -> TemplateRecord {
        let variant = |v: &VariantSpec| VariantRecord {
            id: v.id.clone(),
            text: v.text.clone(),
            attrs: v.attrs.clone(),
        };
        TemplateRecord {
            name: t.name.clone(),
            body: t.body.clone(),
            slots: (t.slots.iter())
                .map(|s| SlotRecord {
                    name: s.name.clone(),
                    variants: s.variants.iter().map(variant).collect(),
                })
                .collect(),
            values: t.values.clone(),
        }
    }
}

impl From<TemplateRecord> for TemplateSpec {
    fn from(t: TemplateRecord) -> TemplateSpec {
        TemplateSpec {
            name: t.name,
            body: t.body,
            slots: (t.slots.into_iter())
                .map(|s| SlotSpec {
                    name: s.name,
                    variants: (s.variants.into_iter())
                        .map(|v| VariantSpec {
                            id: v.id,
                            text: v.text,
                            attrs: v.attrs,
                        })
                        .collect(),
                })
                .collect(),
            values: t.values,
        }
    }
}

/// The open log, for appending.
#[derive(Debug)]
pub struct DefinitionLog(FramedLog);

impl DefinitionLog {
    /// Opens (or creates) `dir/definitions.log` and reads every change it holds, in order.
    pub fn open(dir: &Path) -> Result<(DefinitionLog, Vec<Definition>), PersistError> {
        let (log, all) = FramedLog::open(&dir.join(FILE), FORMAT, "definitions log")?;
        Ok((DefinitionLog(log), all))
    }

    /// Appends one change and fsyncs it.
    pub fn append(&mut self, change: &Definition) -> Result<(), PersistError> {
        self.0.append(change)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Definition> {
        let rule = RuleConfig {
            name: "r".into(),
            action: "boost".into(),
            by: Some(2.0),
            ..RuleConfig::default()
        };
        let trigger = TriggerConfig {
            name: "t".into(),
            when: "user.scroll_depth > 0.7".into(),
            ..TriggerConfig::default()
        };
        let template = TemplateSpec::new("p", "{{s}}").slot("s", [("a", "A")]);
        vec![
            Definition::Rules {
                version: 3,
                rules: vec![((&rule).into(), 2)],
                source: Source::Api,
            },
            Definition::Triggers {
                version: 1,
                triggers: vec![((&trigger).into(), 1)],
                source: Source::Config,
            },
            Definition::TemplateRegistered {
                version: 1,
                spec: (&template).into(),
                source: Source::Api,
            },
            Definition::TemplateRolledBack {
                name: "p".into(),
                version: 1,
            },
            Definition::SegmentNamed {
                id: 4,
                name: "fans".into(),
            },
        ]
    }

    #[test]
    fn every_kind_of_change_comes_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, none) = DefinitionLog::open(dir.path()).unwrap();
        assert!(none.is_empty());
        for d in every_kind() {
            log.append(&d).unwrap();
        }
        drop(log);
        let (_, back) = DefinitionLog::open(dir.path()).unwrap();
        assert_eq!(back, every_kind());
        let Definition::TemplateRegistered { spec, .. } = &back[2] else {
            unreachable!()
        };
        let spec = TemplateSpec::from(spec.clone());
        assert_eq!(
            spec,
            TemplateSpec::new("p", "{{s}}").slot("s", [("a", "A")])
        );
    }

    /// The layout is the format: a change to any logged type shows here first (append a
    /// variant and a record type instead).
    #[test]
    fn the_layout_is_pinned() {
        let bodies: Vec<Vec<u8>> = every_kind()
            .iter()
            .map(|d| postcard::to_stdvec(d).unwrap())
            .collect();
        let named = vec![4, 4, 4, b'f', b'a', b'n', b's'];
        let rolled = vec![3, 1, b'p', 1];
        assert_eq!(bodies[4], named);
        assert_eq!(bodies[3], rolled);
        let rule: &[u8] = &[
            0, 3, 1, 1, b'r', 0, 0, 5, b'b', b'o', b'o', b's', b't', 0, 1, 0, 0, 0, 0, 0, 0, 0,
            0x40, 0, 0, 0, 0, 0, 0, 2, 1,
        ];
        assert_eq!(bodies[0], rule);
        let template: &[u8] = &[
            2, 1, 1, b'p', 5, b'{', b'{', b's', b'}', b'}', 1, 1, b's', 1, 1, b'a', 1, b'A', 0, 0,
            1,
        ];
        assert_eq!(bodies[2], template);
    }
}
