//! Templates (issue 15): a Mustache text with named slots, each slot a set of variants, and a
//! decision that picks one variant per slot for a user and renders the text
//! (`docs/templates.md`).
//!
//! This module owns a template's definition (`TemplateSpec`, plain data), its compiled form
//! (`Template`: the parsed body and variants with every name resolved, and the `SlotPlan` a
//! shard decides over), the versioned `Registry`, and rendering. It does not choose: the
//! shard places each slot with the configured exploration policy
//! (`shard/templated.rs`), and the engine renders with what the shard read of the user.
//! **A template is checked once, at registration, and never changes afterwards**: a new
//! definition is a new version, and a decision holds one `Arc<Template>`.

pub mod mustache;
mod registry;
mod request;

use std::fmt;
use std::sync::Arc;

use crate::actor::features::FeatureValue;
use crate::actor::Feature;
use crate::api::Context;
use crate::ids::{ItemId, MAX_ID_BYTES};
use crate::model::FeatureSpace;
use crate::shard::msg::ValidCandidate;
use mustache::{Node, Piece, Position, Tag};

pub use registry::{Registry, RollbackError, TemplateVersions};
pub use request::{SlotChoice, TemplateDecision, TemplateRequest};

/// Most slots in one template.
pub const MAX_SLOTS: usize = 16;
/// Most variants in one slot.
pub const MAX_VARIANTS: usize = 256;
/// Longest template body or variant text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// A template as given (the config file's `[[templates]]`, the `template` op, or code).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateSpec {
    /// Its name (no `/`).
    pub name: String,
    /// The Mustache body; slots appear as `{{slot}}`.
    pub body: String,
    /// The slots, in the order they are decided.
    pub slots: Vec<SlotSpec>,
    /// Names a request may pass in its `values` (`{{first_name}}`).
    pub values: Vec<String>,
}

/// One slot: a name and its variants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotSpec {
    /// The slot's name, as the body names it.
    pub name: String,
    /// The variants (at least one).
    pub variants: Vec<VariantSpec>,
}

/// One variant of a slot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantSpec {
    /// Its id, unique in the slot.
    pub id: String,
    /// Its text: Mustache too, without slots.
    pub text: String,
    /// Optional attributes, hashed into the variant's features like an item's.
    pub attrs: Vec<(String, String)>,
}

impl TemplateSpec {
    /// A template with no slots yet.
    pub fn new(name: impl Into<String>, body: impl Into<String>) -> Self {
        TemplateSpec {
            name: name.into(),
            body: body.into(),
            ..TemplateSpec::default()
        }
    }

    /// Adds a slot whose variants are `(id, text)` pairs.
    pub fn slot<'a>(
        mut self,
        name: impl Into<String>,
        variants: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.slots.push(SlotSpec {
            name: name.into(),
            variants: variants
                .into_iter()
                .map(|(id, text)| VariantSpec {
                    id: id.into(),
                    text: text.into(),
                    attrs: Vec::new(),
                })
                .collect(),
        });
        self
    }

    /// Declares a request value the text may use.
    pub fn value(mut self, name: impl Into<String>) -> Self {
        self.values.push(name.into());
        self
    }
}

impl From<&crate::config::TemplateConfig> for TemplateSpec {
    fn from(t: &crate::config::TemplateConfig) -> Self {
        TemplateSpec {
            name: t.name.clone(),
            body: t.body.clone(),
            values: t.values.clone(),
            slots: (t.slots.iter())
                .map(|s| SlotSpec {
                    name: s.name.clone(),
                    variants: (s.variants.iter())
                        .map(|v| VariantSpec {
                            id: v.id.clone(),
                            text: v.text.clone(),
                            attrs: v.attrs.clone().into_iter().collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Why a template was refused: the field at fault and, for a text, the position.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateError {
    /// The field: `name`, `body`, `values`, `slots[1].name`, `slots[0].variants[2].text`, …
    pub field: String,
    /// Where in the field's text, when the fault is in a text.
    pub at: Option<Position>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "`{}` at {}: {}", self.field, at, self.what),
            None => write!(f, "`{}`: {}", self.field, self.what),
        }
    }
}

impl std::error::Error for TemplateError {}

/// What a placeholder names, resolved at registration.
#[derive(Clone, Debug, PartialEq)]
pub enum Name {
    /// A slot (its index): the chosen variant's rendered text.
    Slot(usize),
    /// A live feature of the user (`user.<feature>`; its index in `Template::reads`).
    User(usize),
    /// A context value of the request (`ctx.<key>`).
    Ctx(String),
    /// A request value declared in `values` (its index).
    Value(usize),
    /// The category the user engaged with most among their recent items.
    TopCategory,
}

/// The slots a shard decides over: per slot, its variants as candidates (key = hash of
/// `template/slot/variant`, inline features from the variant's attributes).
#[derive(Clone, Debug)]
pub struct SlotPlan {
    /// The template's name.
    pub template: String,
    /// Its version.
    pub version: u64,
    /// The slots, in decision order.
    pub slots: Vec<PlannedSlot>,
}

/// One slot of a plan.
#[derive(Clone, Debug)]
pub struct PlannedSlot {
    /// The slot's name (it names the interaction features of later slots).
    pub name: String,
    /// Its variants, as candidates.
    pub variants: Vec<ValidCandidate>,
}

/// A compiled, immutable template version.
#[derive(Debug)]
pub struct Template {
    spec: TemplateSpec,
    version: u64,
    body: Vec<Node<Name>>,
    /// Per slot, per variant: the variant's parsed text.
    texts: Vec<Vec<Vec<Node<Name>>>>,
    plan: Arc<SlotPlan>,
    /// The live features the texts read, in `Name::User` order.
    reads: Arc<[Feature]>,
    top_category: bool,
}

/// Two versions are equal when their definitions and numbers are (the compiled form follows).
impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.spec == other.spec
    }
}

impl Template {
    /// Checks and compiles `spec` as version `version`.
    pub fn compile(
        spec: TemplateSpec,
        version: u64,
        space: &FeatureSpace,
    ) -> Result<Template, TemplateError> {
        check_shape(&spec)?;
        let mut reads: Vec<Feature> = Vec::new();
        let mut top_category = false;
        let mut compile_text = |field: String, text: &str, slots: bool| {
            let nodes = mustache::parse(text).map_err(|e| TemplateError {
                field: field.clone(),
                at: Some(e.at),
                what: e.what,
            })?;
            mustache::resolve(nodes, &mut |tag: Tag| {
                let name = resolve_name(&spec, &tag.name, slots, &mut reads);
                top_category |= name == Some(Name::TopCategory);
                name.ok_or_else(|| TemplateError {
                    field: field.clone(),
                    at: Some(Position::of(text, tag.at)),
                    what: unknown(&tag.name, slots),
                })
            })
        };
        let body = compile_text("body".into(), &spec.body, true)?;
        let mut texts = Vec::with_capacity(spec.slots.len());
        for (s, slot) in spec.slots.iter().enumerate() {
            let mut parsed = Vec::with_capacity(slot.variants.len());
            for (v, variant) in slot.variants.iter().enumerate() {
                let field = format!("slots[{s}].variants[{v}].text");
                parsed.push(compile_text(field, &variant.text, false)?);
            }
            texts.push(parsed);
        }
        let plan = Arc::new(plan(&spec, version, space)?);
        Ok(Template {
            spec,
            version,
            body,
            texts,
            plan,
            reads: reads.into(),
            top_category,
        })
    }

    /// The definition as given.
    pub fn spec(&self) -> &TemplateSpec {
        &self.spec
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// What a shard decides over.
    pub fn plan(&self) -> &Arc<SlotPlan> {
        &self.plan
    }

    /// The live features its texts read.
    pub fn reads(&self) -> &Arc<[Feature]> {
        &self.reads
    }

    /// Whether its texts read `top_category`.
    pub fn reads_top_category(&self) -> bool {
        self.top_category
    }

    /// The text with `chosen[s]` the variant of slot `s`, placeholders filled from `values`.
    pub fn render(&self, chosen: &[usize], values: &RenderValues<'_>) -> String {
        let variants: Vec<String> = chosen
            .iter()
            .enumerate()
            .map(|(s, &v)| {
                let mut out = String::new();
                mustache::render(&self.texts[s][v], &|n| values.piece(n, &[]), &mut out);
                out
            })
            .collect();
        let mut out = String::with_capacity(self.spec.body.len() + 64);
        mustache::render(&self.body, &|n| values.piece(n, &variants), &mut out);
        out
    }
}

/// What rendering reads: the user's features (in `Template::reads` order, read by the shard
/// at the decision's time), their top category, and the request.
pub struct RenderValues<'a> {
    /// The features the template reads, as the shard read them.
    pub features: &'a [String],
    /// The user's top category, if any.
    pub top_category: Option<&'a str>,
    /// The request's context.
    pub context: &'a Context,
    /// The request's values, by the template's `values` index (missing: empty).
    pub values: &'a [Option<String>],
}

impl<'a> RenderValues<'a> {
    fn piece(&self, name: &Name, slots: &'a [String]) -> Piece<'a> {
        let value = |s: Option<&'a str>| Piece::Value(s.unwrap_or(""));
        match name {
            Name::Slot(s) => Piece::Rendered(slots.get(*s).map_or("", |t| t.as_str())),
            Name::User(i) => value(self.features.get(*i).map(String::as_str)),
            Name::TopCategory => value(self.top_category),
            Name::Value(i) => value(self.values.get(*i).and_then(|v| v.as_deref())),
            Name::Ctx(key) => value(
                self.context
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str()),
            ),
        }
    }
}

/// A feature's value as text: a whole number without a fraction, nothing when missing.
pub fn feature_text(value: &FeatureValue) -> String {
    match value {
        FeatureValue::Num(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", *x as i64),
        FeatureValue::Num(x) => format!("{x}"),
        FeatureValue::Str(s) => s.clone(),
        FeatureValue::Missing => String::new(),
    }
}

fn unknown(name: &str, slots: bool) -> String {
    let slot = if slots { "a slot, " } else { "" };
    format!(
        "unknown placeholder `{name}`: not {slot}`user.<feature>` (docs/features.md), \
         `ctx.<key>`, `top_category` or a name declared in `values`"
    )
}

fn resolve_name(
    spec: &TemplateSpec,
    name: &str,
    slots: bool,
    reads: &mut Vec<Feature>,
) -> Option<Name> {
    if let Some(feature) = name.strip_prefix("user.") {
        let f = Feature::from_name(feature)?;
        let i = reads.iter().position(|r| *r == f).unwrap_or_else(|| {
            reads.push(f);
            reads.len() - 1
        });
        return Some(Name::User(i));
    }
    if let Some(key) = name.strip_prefix("ctx.") {
        return (!key.is_empty()).then(|| Name::Ctx(key.to_string()));
    }
    if name == "top_category" {
        return Some(Name::TopCategory);
    }
    if slots {
        if let Some(s) = spec.slots.iter().position(|s| s.name == name) {
            return Some(Name::Slot(s));
        }
    }
    spec.values.iter().position(|v| v == name).map(Name::Value)
}

fn refuse(field: impl Into<String>, what: impl Into<String>) -> TemplateError {
    TemplateError {
        field: field.into(),
        at: None,
        what: what.into(),
    }
}

/// A slot or value name: what a tag may name, and not a reserved one.
fn check_name(field: String, name: &str) -> Result<(), TemplateError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(refuse(
            field,
            format!("`{name}` is not a name (1 to 64 letters, digits, `_` or `-`)"),
        ));
    }
    if name == "top_category" {
        return Err(refuse(field, "`top_category` is a reserved name"));
    }
    Ok(())
}

fn check_shape(spec: &TemplateSpec) -> Result<(), TemplateError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 64
        && !spec.name.contains('/')
        && !spec.name.chars().any(char::is_control);
    if !name_ok {
        return Err(refuse(
            "name",
            "1 to 64 bytes, no `/` or control characters",
        ));
    }
    if spec.body.len() > MAX_TEXT_BYTES {
        return Err(refuse(
            "body",
            format!("longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if spec.slots.is_empty() || spec.slots.len() > MAX_SLOTS {
        return Err(refuse("slots", format!("1 to {MAX_SLOTS} slots")));
    }
    for (i, v) in spec.values.iter().enumerate() {
        check_name(format!("values[{i}]"), v)?;
        if spec.values[..i].contains(v) || spec.slots.iter().any(|s| s.name == *v) {
            return Err(refuse(
                format!("values[{i}]"),
                format!("`{v}` is named twice"),
            ));
        }
    }
    for (s, slot) in spec.slots.iter().enumerate() {
        check_name(format!("slots[{s}].name"), &slot.name)?;
        if spec.slots[..s].iter().any(|o| o.name == slot.name) {
            return Err(refuse(
                format!("slots[{s}].name"),
                format!("slot `{}` is named twice", slot.name),
            ));
        }
        if slot.variants.is_empty() {
            return Err(refuse(
                format!("slots[{s}].variants"),
                format!("slot `{}` has no variants", slot.name),
            ));
        }
        if slot.variants.len() > MAX_VARIANTS {
            return Err(refuse(
                format!("slots[{s}].variants"),
                format!("more than {MAX_VARIANTS} variants"),
            ));
        }
        for (v, variant) in slot.variants.iter().enumerate() {
            let field = format!("slots[{s}].variants[{v}]");
            if variant.id.is_empty() || variant.id.chars().any(char::is_control) {
                return Err(refuse(
                    format!("{field}.id"),
                    "an id of 1 or more bytes, no control characters",
                ));
            }
            if slot.variants[..v].iter().any(|o| o.id == variant.id) {
                return Err(refuse(
                    format!("{field}.id"),
                    format!(
                        "variant `{}` appears twice in slot `{}`",
                        variant.id, slot.name
                    ),
                ));
            }
            if variant.text.len() > MAX_TEXT_BYTES {
                return Err(refuse(
                    format!("{field}.text"),
                    format!("longer than {MAX_TEXT_BYTES} bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// The learned item id of a variant: `template/slot/variant`.
pub fn variant_item_id(template: &str, slot: &str, variant: &str) -> String {
    format!("{template}/{slot}/{variant}")
}

fn plan(
    spec: &TemplateSpec,
    version: u64,
    space: &FeatureSpace,
) -> Result<SlotPlan, TemplateError> {
    let mut slots = Vec::with_capacity(spec.slots.len());
    for (s, slot) in spec.slots.iter().enumerate() {
        let mut variants = Vec::with_capacity(slot.variants.len());
        for (v, variant) in slot.variants.iter().enumerate() {
            let id = variant_item_id(&spec.name, &slot.name, &variant.id);
            let item = ItemId::from_string(id.clone()).map_err(|_| {
                refuse(
                    format!("slots[{s}].variants[{v}].id"),
                    format!("`{id}` is longer than {MAX_ID_BYTES} bytes"),
                )
            })?;
            let features = space.item(item, variant.attrs.clone(), None);
            variants.push(ValidCandidate {
                key: features.id.key(),
                id,
                inline: Some(Arc::new(features)),
            });
        }
        slots.push(PlannedSlot {
            name: slot.name.clone(),
            variants,
        });
    }
    Ok(SlotPlan {
        template: spec.name.clone(),
        version,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> FeatureSpace {
        FeatureSpace {
            dim: 8,
            item_embedding_init: 0.01,
        }
    }

    fn promo(body: &str) -> TemplateSpec {
        TemplateSpec::new("promo", body)
            .slot("headline", [("h1", "Hi {{first_name}}"), ("h2", "Hello")])
            .slot("button", [("b1", "Buy"), ("b2", "Go")])
            .value("first_name")
    }

    #[test]
    fn an_unknown_placeholder_is_refused_with_its_position() {
        let e = Template::compile(promo("{{headline}}\n  {{nope}}"), 1, &space()).unwrap_err();
        assert_eq!(e.field, "body");
        let at = e.at.unwrap();
        assert_eq!((at.line, at.column, at.byte), (2, 3, 15));
        assert!(e.to_string().contains("unknown placeholder `nope`"), "{e}");
        let e = Template::compile(promo("{{user.not_a_feature}}"), 1, &space()).unwrap_err();
        assert_eq!(e.at.unwrap().byte, 0);
    }

    #[test]
    fn a_slot_with_no_variants_and_a_twice_named_variant_are_refused() {
        let mut spec = promo("{{headline}}");
        spec.slots[1].variants.clear();
        let e = Template::compile(spec, 1, &space()).unwrap_err();
        assert_eq!(e.field, "slots[1].variants");
        let mut spec = promo("{{headline}}");
        spec.slots[0].variants[1].id = "h1".into();
        let e = Template::compile(spec, 1, &space()).unwrap_err();
        assert_eq!(e.field, "slots[0].variants[1].id");
    }

    #[test]
    fn an_unclosed_tag_in_a_variant_names_the_variant() {
        let mut spec = promo("{{headline}}");
        spec.slots[1].variants[0].text = "Buy {{first_name".into();
        let e = Template::compile(spec, 1, &space()).unwrap_err();
        assert_eq!(e.field, "slots[1].variants[0].text");
        assert_eq!(e.at.unwrap().byte, 4);
    }

    #[test]
    fn renders_variants_and_escapes_values() {
        let t = Template::compile(promo("<h1>{{headline}}</h1>{{button}}"), 1, &space()).unwrap();
        let values = [Some("<Ann & Bo>".to_string())];
        let r = RenderValues {
            features: &[],
            top_category: None,
            context: &Vec::new(),
            values: &values,
        };
        assert_eq!(t.render(&[0, 1], &r), "<h1>Hi &lt;Ann &amp; Bo&gt;</h1>Go");
    }
}
