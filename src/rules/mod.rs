//! Rules (issue 14): named, prioritised, versioned conditions over a user's live features,
//! the decision's context and the candidates' attributes, with actions applied in the
//! decision path (boost, bury, exclude, pin, cap, force, trigger). `docs/rules.md` has the
//! language, the actions and how exploration's propensities stay correct.
//!
//! The language is a subset of CEL compiled by hand: `syntax` (lexer and parser, byte
//! offsets on every node), `check` (types; errors point at the node at fault), `expr` (the
//! typed tree and its evaluation), `apply` (one decision's rules and the placement that
//! honours them). A `RuleSet` is immutable once compiled; the engine swaps a whole set at
//! once (`Engine::set_rules`), so a decision sees the old set or the new one, never a mix.
//!
//! **This module reads no clock and keeps no state**: a decision's shard passes the user's
//! features at the decision's time, and counts what fired and what failed.

pub mod apply;
pub mod check;
pub mod expr;
pub mod syntax;

use std::fmt;
use std::sync::Arc;

use crate::config::RuleConfig;
use expr::Cond;

pub use apply::{in_segment, Applied, Candidates, DecisionView, ItemMatches};

/// Most rules in one set.
pub const MAX_RULES: usize = 1000;

/// What a rule does when its `when` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    /// Adds `by` to the logit of each matching item, before the policy samples.
    Boost,
    /// Takes `by` (default 1000) from the logit of each matching item.
    Bury,
    /// Removes each matching item from the candidates.
    Exclude,
    /// Places each matching item first, outside exploration (propensity 1).
    Pin,
    /// At most `max` placements per value of attribute `attr`.
    Cap,
    /// Places the item `item` first (a variant or tone), outside exploration.
    Force,
    /// Names a trigger in the decision's reply.
    Trigger,
}

impl ActionKind {
    /// Every action.
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Boost,
        ActionKind::Bury,
        ActionKind::Exclude,
        ActionKind::Pin,
        ActionKind::Cap,
        ActionKind::Force,
        ActionKind::Trigger,
    ];

    /// The action's name in the config file and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Boost => "boost",
            ActionKind::Bury => "bury",
            ActionKind::Exclude => "exclude",
            ActionKind::Pin => "pin",
            ActionKind::Cap => "cap",
            ActionKind::Force => "force",
            ActionKind::Trigger => "trigger",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether it acts on the items an `items` condition chooses.
    fn takes_items(self) -> bool {
        matches!(
            self,
            ActionKind::Boost | ActionKind::Bury | ActionKind::Exclude | ActionKind::Pin
        )
    }
}

/// A compiled action.
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Boost(f32),
    Exclude,
    Pin,
    Cap { attr: Box<str>, max: u32 },
    Force(Box<str>),
    Trigger(Arc<str>),
}

/// One compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    name: Arc<str>,
    kind: ActionKind,
    /// The set version at which this rule's definition last changed.
    version: u64,
    when: Option<Cond>,
    items: Option<Cond>,
    action: Action,
    /// Only for this `experiment/arm`.
    arm: Option<Box<str>>,
    /// Only for users in this segment (its name, or its id in decimal).
    segment: Option<Box<str>>,
    /// The rule's bit in `ItemMatches`, when its `items` depends on the item alone.
    remembered: Option<u32>,
}

/// A rule refused: which one, which field, where in it, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleError {
    /// The rule's position in the list.
    pub index: usize,
    /// The rule's name (may be empty: that is one of the errors).
    pub rule: String,
    /// The field at fault (`when`, `items`, `action`, `by`, …).
    pub field: &'static str,
    /// For an expression: the byte offset of the error and its line and column (from 1).
    pub position: Option<(usize, usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} `{}`: `{}`", self.index, self.rule, self.field)?;
        if let Some((offset, line, col)) = self.position {
            write!(f, " at {line}:{col} (byte {offset})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RuleError {}

/// An immutable, compiled set of rules, highest priority first.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    version: u64,
    rules: Vec<Rule>,
    /// The definitions as given, in the given order, with each rule's version.
    specs: Vec<(RuleConfig, u64)>,
    /// How many rules have a bit in `ItemMatches`.
    remembered: u32,
}

/// Two sets are equal when their versions and definitions are: the compiled rules follow.
impl PartialEq for RuleSet {
    fn eq(&self, other: &RuleSet) -> bool {
        self.version == other.version && self.specs == other.specs
    }
}

impl RuleSet {
    /// Compiles `specs` as version `version` of the set; the first bad rule refuses all.
    pub fn compile(specs: &[RuleConfig], version: u64) -> Result<RuleSet, RuleError> {
        RuleSet::compile_after(None, specs, version)
    }

    /// The next version of this set: `specs` replace it whole. A rule whose definition is
    /// unchanged keeps its version; a new or changed one takes the set's new version.
    pub fn replaced_by(&self, specs: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        RuleSet::compile_after(Some(self), specs, self.version + 1)
    }

    /// The same definitions as version `version`, each rule at its logged version (a set read
    /// back from the definitions log).
    pub fn restored(specs: &[(RuleConfig, u64)], version: u64) -> Result<RuleSet, RuleError> {
        let plain: Vec<RuleConfig> = specs.iter().map(|(s, _)| s.clone()).collect();
        // As a replacement of a set holding every rule at its version: each is "unchanged".
        let previous = RuleSet {
            specs: specs.to_vec(),
            ..RuleSet::default()
        };
        RuleSet::compile_after(Some(&previous), &plain, version)
    }

    fn compile_after(
        previous: Option<&RuleSet>,
        specs: &[RuleConfig],
        version: u64,
    ) -> Result<RuleSet, RuleError> {
        if specs.len() > MAX_RULES {
            return Err(RuleError {
                index: MAX_RULES,
                rule: specs[MAX_RULES].name.clone(),
                field: "rules",
                position: None,
                message: format!("more than {MAX_RULES} rules"),
            });
        }
        let mut rules = Vec::with_capacity(specs.len());
        let mut kept = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if specs[..index].iter().any(|s| s.name == spec.name) {
                return Err(refuse(index, spec, "name", "is used by an earlier rule"));
            }
            let unchanged = previous
                .and_then(|p| p.specs.iter().find(|(s, _)| s == spec))
                .map(|(_, v)| *v);
            let rule_version = unchanged.unwrap_or(version);
            rules.push((spec.priority, compile_rule(index, spec, rule_version)?));
            kept.push((spec.clone(), rule_version));
        }
        // Stable: equal priorities keep the list's order.
        rules.sort_by_key(|(priority, _)| std::cmp::Reverse(*priority));
        let mut rules: Vec<Rule> = rules.into_iter().map(|(_, r)| r).collect();
        let mut remembered = 0;
        for rule in &mut rules {
            if rule.items.as_ref().is_some_and(Cond::item_only) {
                rule.remembered = Some(remembered);
                remembered += 1;
            }
        }
        Ok(RuleSet {
            version,
            rules,
            specs: kept,
            remembered,
        })
    }

    /// The set's version (0: the empty set the engine starts with and no file gave).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The definitions as given, each with its version.
    pub fn specs(&self) -> &[(RuleConfig, u64)] {
        &self.specs
    }
}

fn refuse(index: usize, spec: &RuleConfig, field: &'static str, message: &str) -> RuleError {
    RuleError {
        index,
        rule: spec.name.clone(),
        field,
        position: None,
        message: message.to_string(),
    }
}

/// Compiles a decision-level condition, as a rule's `when` is (`user.*` and `ctx.*`; no
/// `item.*`): the language experiments' targeting shares. The error carries its offset.
pub fn decision_condition(src: &str) -> Result<Cond, syntax::SyntaxError> {
    syntax::parse(src).and_then(|node| check::condition(&node, false))
}

/// Parses and checks one condition field.
fn condition(
    index: usize,
    spec: &RuleConfig,
    field: &'static str,
    src: &str,
    items: bool,
) -> Result<Cond, RuleError> {
    let parsed = syntax::parse(src).and_then(|node| check::condition(&node, items));
    parsed.map_err(|e| {
        let (line, col) = syntax::line_col(src, e.offset);
        RuleError {
            index,
            rule: spec.name.clone(),
            field,
            position: Some((e.offset, line, col)),
            message: e.message,
        }
    })
}

fn compile_rule(index: usize, spec: &RuleConfig, version: u64) -> Result<Rule, RuleError> {
    let bad = |field, message: &str| Err(refuse(index, spec, field, message));
    if spec.name.is_empty() || spec.name.len() > crate::ids::MAX_ID_BYTES {
        return bad("name", "must be 1 to 256 bytes");
    }
    let Some(kind) = ActionKind::parse(&spec.action) else {
        return bad(
            "action",
            "must be boost, bury, exclude, pin, cap, force or trigger",
        );
    };
    // A field the action does not use is refused: it is a mistake, not a no-op.
    let unused = [
        ("items", spec.items.is_some() && !kind.takes_items()),
        (
            "by",
            spec.by.is_some() && !matches!(kind, ActionKind::Boost | ActionKind::Bury),
        ),
        ("attr", spec.attr.is_some() && kind != ActionKind::Cap),
        ("max", spec.max.is_some() && kind != ActionKind::Cap),
        ("item", spec.item.is_some() && kind != ActionKind::Force),
        (
            "trigger",
            spec.trigger.is_some() && kind != ActionKind::Trigger,
        ),
    ];
    if let Some((field, _)) = unused.into_iter().find(|(_, u)| *u) {
        return bad(field, &format!("is not used by `{}`", kind.name()));
    }
    let by = spec.by.unwrap_or(if kind == ActionKind::Bury {
        1000.0
    } else {
        1.0
    });
    if !by.is_finite() || by.abs() > 1e6 {
        return bad("by", "must be a finite number within ±1e6");
    }
    let action = match kind {
        ActionKind::Boost => Action::Boost(by as f32),
        ActionKind::Bury => Action::Boost(-by as f32),
        ActionKind::Exclude => Action::Exclude,
        ActionKind::Pin => Action::Pin,
        ActionKind::Cap => match (&spec.attr, spec.max) {
            (Some(attr), Some(max)) if !attr.is_empty() && max >= 1 => Action::Cap {
                attr: attr.as_str().into(),
                max,
            },
            (None, _) => return bad("attr", "is required by `cap`"),
            _ => return bad("max", "must be at least 1"),
        },
        ActionKind::Force => match &spec.item {
            Some(id) if crate::ids::validate_id("item", id).is_ok() => {
                Action::Force(id.as_str().into())
            }
            _ => return bad("item", "is required by `force` (an item id)"),
        },
        ActionKind::Trigger => match &spec.trigger {
            Some(t) if !t.is_empty() && t.len() <= crate::ids::MAX_ID_BYTES => {
                Action::Trigger(t.as_str().into())
            }
            _ => return bad("trigger", "is required by `trigger` (1 to 256 bytes)"),
        },
    };
    if let Some(arm) = &spec.arm {
        if arm.split('/').filter(|p| !p.is_empty()).count() != 2 {
            return bad("arm", "must be `experiment/arm`");
        }
    }
    if spec.segment.as_ref().is_some_and(|s| s.is_empty()) {
        return bad("segment", "must name a segment (its name or id)");
    }
    let when = spec
        .when
        .as_deref()
        .map(|src| condition(index, spec, "when", src, false))
        .transpose()?;
    let items = spec
        .items
        .as_deref()
        .map(|src| condition(index, spec, "items", src, true))
        .transpose()?;
    Ok(Rule {
        name: spec.name.as_str().into(),
        kind,
        version,
        when,
        items,
        action,
        arm: spec.arm.as_deref().map(Into::into),
        segment: spec.segment.as_deref().map(Into::into),
        remembered: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, action: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            action: action.into(),
            ..RuleConfig::default()
        }
    }

    #[test]
    fn errors_name_the_rule_field_and_position() {
        let mut bad = rule("winter", "boost");
        bad.items = Some("item.category > 3".into());
        let e = RuleSet::compile(&[rule("ok", "exclude"), bad], 1).unwrap_err();
        assert_eq!((e.index, e.field), (1, "items"));
        assert_eq!(e.position, Some((14, 1, 15)));
        assert!(e.to_string().contains("`items` at 1:15 (byte 14)"), "{e}");
        let mut syntax = rule("s", "pin");
        syntax.when = Some("user.clicks_1h >\n  && true".into());
        let e = RuleSet::compile(&[syntax], 1).unwrap_err();
        assert_eq!(e.position, Some((19, 2, 3)), "{e}");
    }

    #[test]
    fn unused_and_missing_fields_are_refused() {
        let mut r = rule("c", "cap");
        r.attr = Some("brand".into());
        assert_eq!(RuleSet::compile(&[r.clone()], 1).unwrap_err().field, "max");
        r.max = Some(2);
        r.by = Some(1.0);
        assert_eq!(RuleSet::compile(&[r], 1).unwrap_err().field, "by");
        let e = RuleSet::compile(&[rule("a", "boost"), rule("a", "bury")], 1).unwrap_err();
        assert_eq!((e.index, e.field), (1, "name"));
        assert_eq!(
            RuleSet::compile(&[rule("x", "explode")], 1)
                .unwrap_err()
                .field,
            "action"
        );
    }

    #[test]
    fn an_unchanged_rule_keeps_its_version() {
        let v1 = RuleSet::compile(&[rule("a", "exclude"), rule("b", "pin")], 1).unwrap();
        let mut b = rule("b", "pin");
        b.when = Some("true".into());
        let v2 = v1.replaced_by(&[rule("a", "exclude"), b]).unwrap();
        let versions: Vec<u64> = v2.specs().iter().map(|(_, v)| *v).collect();
        assert_eq!((v2.version(), versions), (2, vec![1, 2]));
    }
}
