//! Threshold triggers (issue 14, item 3): named conditions over a user's live features,
//! checked after every event of that user, edge-triggered with a per-user cooldown
//! (`docs/triggers.md`).
//!
//! `TriggerSet` is a compiled, immutable, versioned list (the conditions are the rules'
//! language, `crate::rules`, restricted to `user.*`); `marks` holds the small per-user state
//! that makes a trigger fire once per crossing and respect its cooldown; `hub` is where a
//! shard hands the firings it decided on (subscribers by trigger name, and sinks such as the
//! server's webhook).
//!
//! **This module reads no clock**: the shard passes the event's time, and the cooldown is
//! counted in event time, so a replay of the write-ahead log fires the same triggers at the
//! same events. **It never delivers during recovery**: a replaying shard has no hub.

pub mod hub;
pub mod marks;

use std::fmt;
use std::sync::Arc;

use crate::actor::features::FeatureView;
use crate::config::TriggerConfig;
use crate::rules::expr::{Cond, Env, Features};
use crate::rules::syntax::{self, Ast, Node, Scope, SyntaxError};

pub use hub::{DeliveryCounters, TriggerHub};
pub use marks::TriggerMarks;

/// Most triggers in one set (each is checked after every event of every user).
pub const MAX_TRIGGERS: usize = 100;

/// A trigger refused: which one, which field, where in it, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerError {
    /// The trigger's position in the list.
    pub index: usize,
    /// The trigger's name (may be empty: that is one of the errors).
    pub trigger: String,
    /// The field at fault (`name`, `when`, `webhook_url`).
    pub field: &'static str,
    /// For `when`: the byte offset of the error and its line and column (from 1).
    pub position: Option<(usize, usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TriggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trigger {} `{}`: `{}`",
            self.index, self.trigger, self.field
        )?;
        if let Some((offset, line, col)) = self.position {
            write!(f, " at {line}:{col} (byte {offset})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for TriggerError {}

/// One compiled trigger.
#[derive(Clone, Debug)]
pub struct Trigger {
    /// Its name.
    pub name: Arc<str>,
    /// The stable hash of its name: what a user's marks remember it by, across sets.
    pub key: u64,
    when: Cond,
    /// Event time (ms) after a firing during which it does not fire again for that user.
    pub cooldown_ms: u64,
    /// Where its firings are posted (`None`: nowhere).
    pub webhook: Option<Arc<str>>,
}

/// An immutable, compiled set of triggers, in the given order.
#[derive(Clone, Debug, Default)]
pub struct TriggerSet {
    version: u64,
    triggers: Vec<Trigger>,
    /// The definitions as given, in the given order, with each trigger's version.
    specs: Vec<(TriggerConfig, u64)>,
}

/// Two sets are equal when their versions and definitions are: the compiled triggers follow.
impl PartialEq for TriggerSet {
    fn eq(&self, other: &TriggerSet) -> bool {
        self.version == other.version && self.specs == other.specs
    }
}

impl TriggerSet {
    /// Compiles `specs` as version `version`; the first bad trigger refuses all.
    /// `webhook_url` is the configured default webhook (empty: none).
    pub fn compile(
        specs: &[TriggerConfig],
        version: u64,
        webhook_url: &str,
    ) -> Result<TriggerSet, TriggerError> {
        TriggerSet::compile_after(None, specs, version, webhook_url)
    }

    /// The next version of this set: `specs` replace it whole. A trigger whose definition
    /// is unchanged keeps its version; a new or changed one takes the set's new version.
    pub fn replaced_by(
        &self,
        specs: &[TriggerConfig],
        webhook_url: &str,
    ) -> Result<TriggerSet, TriggerError> {
        TriggerSet::compile_after(Some(self), specs, self.version + 1, webhook_url)
    }

    /// The same definitions as version `version` (a set read back from the log).
    pub fn restored(
        specs: &[(TriggerConfig, u64)],
        version: u64,
        webhook_url: &str,
    ) -> Result<TriggerSet, TriggerError> {
        let plain: Vec<TriggerConfig> = specs.iter().map(|(s, _)| s.clone()).collect();
        let mut set = TriggerSet::compile(&plain, version, webhook_url)?;
        set.specs = specs.to_vec();
        Ok(set)
    }

    fn compile_after(
        previous: Option<&TriggerSet>,
        specs: &[TriggerConfig],
        version: u64,
        webhook_url: &str,
    ) -> Result<TriggerSet, TriggerError> {
        if specs.len() > MAX_TRIGGERS {
            let spec = &specs[MAX_TRIGGERS];
            let message = format!("more than {MAX_TRIGGERS} triggers");
            return Err(refuse(MAX_TRIGGERS, spec, "triggers", &message));
        }
        let mut triggers = Vec::with_capacity(specs.len());
        let mut kept = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if specs[..index].iter().any(|s| s.name == spec.name) {
                return Err(refuse(index, spec, "name", "is used by an earlier trigger"));
            }
            triggers.push(compile_one(index, spec, webhook_url)?);
            let unchanged = previous
                .and_then(|p| p.specs.iter().find(|(s, _)| s == spec))
                .map(|(_, v)| *v);
            kept.push((spec.clone(), unchanged.unwrap_or(version)));
        }
        Ok(TriggerSet {
            version,
            triggers,
            specs: kept,
        })
    }

    /// The set's version (0: the empty set the engine starts with when no file gave one).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the set has no triggers.
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// The definitions as given, each with its version.
    pub fn specs(&self) -> &[(TriggerConfig, u64)] {
        &self.specs
    }

    /// The compiled triggers, in the given order.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// Checks every trigger against the user's features as of `now_ms` (the time of the
    /// event just applied, or the user's latest if that is later) and updates the user's
    /// `marks`; returns the indices of the triggers that fire now, in the set's order.
    /// A condition that cannot be evaluated (a feature with no value yet, a division by
    /// zero) does not hold.
    pub fn check(
        &self,
        marks: &mut TriggerMarks,
        view: FeatureView<'_>,
        now_ms: u64,
    ) -> Vec<usize> {
        let features = Features::new(view);
        let env = Env {
            user: &features,
            ctx: &[],
            item: None,
        };
        let mut fired = Vec::new();
        for (i, t) in self.triggers.iter().enumerate() {
            let holds = t.when.eval(&env).unwrap_or(false);
            if marks.step(t.key, holds, now_ms, t.cooldown_ms) {
                fired.push(i);
            }
        }
        marks.retain_known(|key| self.triggers.iter().any(|t| t.key == key));
        fired
    }
}

fn refuse(index: usize, spec: &TriggerConfig, field: &'static str, message: &str) -> TriggerError {
    TriggerError {
        index,
        trigger: spec.name.clone(),
        field,
        position: None,
        message: message.to_string(),
    }
}

fn compile_one(
    index: usize,
    spec: &TriggerConfig,
    default_webhook: &str,
) -> Result<Trigger, TriggerError> {
    if spec.name.is_empty() || spec.name.len() > crate::ids::MAX_ID_BYTES {
        return Err(refuse(index, spec, "name", "must be 1 to 256 bytes"));
    }
    if spec.name.chars().any(char::is_control) {
        return Err(refuse(
            index,
            spec,
            "name",
            "must not hold control characters",
        ));
    }
    let when = condition(&spec.when).map_err(|e| {
        let (line, col) = syntax::line_col(&spec.when, e.offset);
        TriggerError {
            position: Some((e.offset, line, col)),
            ..refuse(index, spec, "when", &e.message)
        }
    })?;
    // A cooldown of more than ten years is a mistake (and would overflow in ms).
    if spec.cooldown_s > 315_360_000 {
        return Err(refuse(
            index,
            spec,
            "cooldown_s",
            "must be at most 315360000 (ten years)",
        ));
    }
    let url = spec.webhook_url.as_deref().unwrap_or(default_webhook);
    if let Some(own) = &spec.webhook_url {
        if let Err(why) = check_url(own) {
            return Err(refuse(index, spec, "webhook_url", &why));
        }
    }
    let webhook = match spec.webhook {
        Some(false) => None,
        _ if url.is_empty() => None,
        _ => Some(url.into()),
    };
    Ok(Trigger {
        name: spec.name.as_str().into(),
        key: crate::ids::stable_hash(spec.name.as_bytes()),
        when,
        cooldown_ms: spec.cooldown_s * 1000,
        webhook,
    })
}

/// Parses and checks a trigger's condition: the rules' language over `user.*` only.
fn condition(src: &str) -> Result<Cond, SyntaxError> {
    let node = syntax::parse(src)?;
    only_user(&node)?;
    crate::rules::check::condition(&node, false)
}

/// Refuses `ctx.*` and `item.*`: a trigger runs after an event, with no decision context or
/// candidate; the error points at the variable.
fn only_user(node: &Node) -> Result<(), SyntaxError> {
    match &node.ast {
        Ast::Var(Scope::User, _) | Ast::Num(_) | Ast::Str(_) | Ast::Bool(_) => Ok(()),
        Ast::Var(scope, name) => {
            let scope = if *scope == Scope::Ctx { "ctx" } else { "item" };
            Err(SyntaxError {
                offset: node.offset,
                message: format!("a trigger reads only `user.*` features, not `{scope}.{name}`"),
            })
        }
        Ast::List(elements) => elements.iter().try_for_each(only_user),
        Ast::Not(a) | Ast::Neg(a) => only_user(a),
        Ast::Binary(_, a, b) => only_user(a).and_then(|()| only_user(b)),
    }
}

/// A webhook URL this build can post to: `http://host[:port][/path]`.
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("must start with `http://` (plain HTTP/1.1; put a TLS proxy in front)".into());
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be `http://host[:port][/path]`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(name: &str, when: &str) -> TriggerConfig {
        TriggerConfig {
            name: name.into(),
            when: when.into(),
            ..TriggerConfig::default()
        }
    }

    #[test]
    fn errors_name_the_trigger_field_and_position() {
        let e = TriggerSet::compile(
            &[trigger("ok", "true"), trigger("t", "user.sentiment <")],
            1,
            "",
        )
        .unwrap_err();
        assert_eq!((e.index, e.field), (1, "when"));
        assert!(e.position.is_some(), "{e}");
        let e = TriggerSet::compile(&[trigger("t", "user.last_device > 3")], 1, "").unwrap_err();
        assert_eq!(e.position, Some((17, 1, 18)), "{e}");
        let e = TriggerSet::compile(&[trigger("t", "true && ctx.page == 'x'")], 1, "").unwrap_err();
        assert_eq!(e.position, Some((8, 1, 9)), "{e}");
        assert!(e.message.contains("only `user.*`"), "{e}");
        let e =
            TriggerSet::compile(&[trigger("a", "true"), trigger("a", "true")], 1, "").unwrap_err();
        assert_eq!((e.index, e.field), (1, "name"));
        let mut bad_url = trigger("w", "true");
        bad_url.webhook_url = Some("https://x".into());
        let e = TriggerSet::compile(&[bad_url], 1, "").unwrap_err();
        assert_eq!(e.field, "webhook_url");
    }

    #[test]
    fn webhooks_resolve_per_trigger() {
        let mut own = trigger("own", "true");
        own.webhook_url = Some("http://b/x".into());
        let mut off = trigger("off", "true");
        off.webhook = Some(false);
        let set =
            TriggerSet::compile(&[trigger("plain", "true"), own, off], 1, "http://a/").unwrap();
        let urls: Vec<_> = set
            .triggers()
            .iter()
            .map(|t| t.webhook.as_deref())
            .collect();
        assert_eq!(urls, [Some("http://a/"), Some("http://b/x"), None]);
        let none = TriggerSet::compile(&[trigger("plain", "true")], 1, "").unwrap();
        assert_eq!(none.triggers()[0].webhook, None);
    }

    #[test]
    fn an_unchanged_trigger_keeps_its_version() {
        let v1 = TriggerSet::compile(&[trigger("a", "true"), trigger("b", "true")], 1, "").unwrap();
        let v2 = v1
            .replaced_by(&[trigger("a", "true"), trigger("b", "false")], "")
            .unwrap();
        let versions: Vec<u64> = v2.specs().iter().map(|(_, v)| *v).collect();
        assert_eq!((v2.version(), versions), (2, vec![1, 2]));
    }
}
