//! The compiled form of a condition: a typed tree (numbers, strings and conditions are
//! separate enums, so evaluation never boxes a value or checks a type) and its evaluation
//! against one decision (`Env`).
//!
//! Runtime errors are cheap values: a division by zero, a feature or context key with no
//! value, a context value that is not a number. An item without the attribute a condition
//! reads is not an error: the item does not match.

use std::cell::Cell;

use crate::actor::features::{Feature, FeatureView, Value};
use crate::rules::syntax::BinOp;

/// A number-valued expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Num {
    /// A literal.
    Lit(f64),
    /// A numeric live feature.
    User(Feature),
    /// A context value read as a number.
    Ctx(Box<str>),
    /// `-a`.
    Neg(Box<Num>),
    /// `a + b`, `a - b`, `a * b`, `a / b`.
    Arith(BinOp, Box<Num>, Box<Num>),
}

/// A string-valued expression (strings only come from literals and variables).
#[derive(Clone, Debug, PartialEq)]
pub enum Str {
    /// A literal.
    Lit(Box<str>),
    /// A string live feature.
    User(Feature),
    /// A context value.
    Ctx(Box<str>),
    /// The candidate's id.
    ItemId,
    /// A candidate's attribute (all its values, when the key repeats).
    Item(Box<str>),
}

/// A condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// `true` or `false`.
    Lit(bool),
    /// `!a`.
    Not(Box<Cond>),
    /// `a && b` (short-circuit: `false && error` is false).
    And(Box<Cond>, Box<Cond>),
    /// `a || b` (short-circuit).
    Or(Box<Cond>, Box<Cond>),
    /// A comparison of numbers.
    Num(BinOp, Num, Num),
    /// A comparison of strings.
    Str(BinOp, Str, Str),
    /// `==` or `!=` of conditions.
    Bool(BinOp, Box<Cond>, Box<Cond>),
    /// `s in ["a", "b"]`.
    InStr(Str, Box<[Box<str>]>),
    /// `x in [1, 2]`.
    InNum(Num, Box<[f64]>),
    /// `user.f <op> literal`, either way round (the operator turned to match): the commonest
    /// leaf, compared without descending into `Num` (made by `specialize`).
    FeatureVsLit(BinOp, Feature, f64),
    /// `ctx.key == "literal"` (`true`) or `!=` (`false`), either way round (`specialize`).
    CtxIs(bool, Box<str>, Box<str>),
    /// `a && b && …`, a chain of `And`s flattened (`specialize`): evaluated left to right in
    /// a loop, stopping at the first false (or error), as the nested form does.
    All(Box<[Cond]>),
    /// `a || b || …`, a chain of `Or`s flattened (`specialize`), stopping at the first true.
    Any(Box<[Cond]>),
}

/// Why evaluating a rule failed for one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// A division by zero.
    DivisionByZero,
    /// A live feature with no value yet (e.g. `last_device` before any device was seen).
    MissingFeature(Feature),
    /// A context key the decision did not give.
    MissingContext,
    /// A context value compared with a number is not a number.
    NotANumber,
    /// The candidate lacks the attribute (never counted: the item does not match).
    MissingAttr,
}

impl EvalError {
    /// A short description, as `explain` shows it.
    pub fn describe(self) -> &'static str {
        match self {
            EvalError::DivisionByZero => "division by zero",
            EvalError::MissingFeature(_) => "a feature with no value",
            EvalError::MissingContext => "a context key not given",
            EvalError::NotANumber => "a context value that is not a number",
            EvalError::MissingAttr => "an item attribute not given",
        }
    }
}

/// A candidate as a condition sees it.
#[derive(Clone, Copy, Debug)]
pub struct ItemView<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its attributes (a key may repeat).
    pub attrs: &'a [(String, String)],
}

/// What a condition reads: the user's features, the context and, for item-level conditions,
/// one candidate.
pub struct Env<'a, 'f> {
    /// The user's live features at the decision's time, each read once per decision.
    pub user: &'a Features<'f>,
    /// The decision's context, as given.
    pub ctx: &'a [(String, String)],
    /// The candidate, for item-level conditions.
    pub item: Option<ItemView<'a>>,
}

type R<T> = Result<T, EvalError>;

/// A user's features for one decision: each is read from the actor the first time a rule
/// asks for it and remembered (indexed by `Feature`, declared in `Feature::ALL`'s order), so
/// fifty rules reading one feature compute it once.
pub struct Features<'a> {
    view: FeatureView<'a>,
    memo: [Cell<Option<Value<'a>>>; Feature::ALL.len()],
}

impl<'a> Features<'a> {
    /// Nothing read yet.
    pub fn new(view: FeatureView<'a>) -> Self {
        Features {
            view,
            memo: Default::default(),
        }
    }

    #[inline]
    fn get(&self, f: Feature) -> Value<'a> {
        let slot = &self.memo[f as usize];
        match slot.get() {
            Some(v) => v,
            None => {
                let v = self.view.get(f);
                slot.set(Some(v));
                v
            }
        }
    }
}

impl<'a, 'f> Env<'a, 'f> {
    /// The same decision, reading candidate `item`.
    pub fn with_item<'b>(&self, item: ItemView<'b>) -> Env<'b, 'f>
    where
        'a: 'b,
    {
        Env {
            user: self.user,
            ctx: self.ctx,
            item: Some(item),
        }
    }

    #[inline]
    fn ctx(&self, key: &str) -> R<&str> {
        self.ctx
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or(EvalError::MissingContext)
    }

    fn item(&self) -> R<ItemView<'_>> {
        self.item.ok_or(EvalError::MissingAttr)
    }
}

impl Num {
    fn eval(&self, env: &Env<'_, '_>) -> R<f64> {
        Ok(match self {
            Num::Lit(x) => *x,
            Num::User(f) => match env.user.get(*f) {
                Value::Num(x) => x,
                _ => return Err(EvalError::MissingFeature(*f)),
            },
            Num::Ctx(key) => {
                let v = env.ctx(key)?.trim().parse::<f64>();
                v.ok()
                    .filter(|x| x.is_finite())
                    .ok_or(EvalError::NotANumber)?
            }
            Num::Neg(a) => -a.eval(env)?,
            Num::Arith(op, a, b) => {
                let (a, b) = (a.eval(env)?, b.eval(env)?);
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    _ if b == 0.0 => return Err(EvalError::DivisionByZero),
                    _ => a / b,
                }
            }
        })
    }
}

impl Str {
    fn is_item(&self) -> bool {
        matches!(self, Str::ItemId | Str::Item(_))
    }

    /// The value (an attribute's first value).
    fn eval<'e>(&'e self, env: &'e Env<'_, '_>) -> R<&'e str> {
        match self {
            Str::Lit(s) => Ok(s),
            Str::User(f) => match env.user.get(*f) {
                Value::Str(s) => Ok(s),
                _ => Err(EvalError::MissingFeature(*f)),
            },
            Str::Ctx(key) => env.ctx(key),
            Str::ItemId => Ok(env.item()?.id),
            Str::Item(key) => attr_values(env.item()?, key)
                .next()
                .ok_or(EvalError::MissingAttr),
        }
    }

    /// Whether any value satisfies `test` (an attribute may have several values).
    fn any(&self, env: &Env<'_, '_>, test: impl Fn(&str) -> bool) -> R<bool> {
        match self {
            Str::Item(key) => {
                let mut values = attr_values(env.item()?, key).peekable();
                if values.peek().is_none() {
                    return Err(EvalError::MissingAttr);
                }
                Ok(values.any(test))
            }
            s => Ok(test(s.eval(env)?)),
        }
    }
}

fn attr_values<'a>(item: ItemView<'a>, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    item.attrs
        .iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[inline]
fn order<T: PartialOrd>(op: BinOp, a: T, b: T) -> bool {
    match op {
        BinOp::Eq => a == b,
        BinOp::Ne => a != b,
        BinOp::Lt => a < b,
        BinOp::Le => a <= b,
        BinOp::Gt => a > b,
        _ => a >= b,
    }
}

impl Cond {
    /// Evaluates the condition.
    pub fn eval(&self, env: &Env<'_, '_>) -> R<bool> {
        Ok(match self {
            Cond::Lit(b) => *b,
            Cond::Not(a) => !a.eval(env)?,
            Cond::And(a, b) => a.eval(env)? && b.eval(env)?,
            Cond::Or(a, b) => a.eval(env)? || b.eval(env)?,
            Cond::Num(op, a, b) => order(*op, a.eval(env)?, b.eval(env)?),
            Cond::Str(op @ (BinOp::Eq | BinOp::Ne), a, b) if a.is_item() || b.is_item() => {
                // An attribute with several values equals a string when one of them does.
                let (item, other) = if a.is_item() { (a, b) } else { (b, a) };
                let want = other.eval(env)?;
                item.any(env, |v| v == want)? == (*op == BinOp::Eq)
            }
            Cond::Str(op, a, b) => order(*op, a.eval(env)?, b.eval(env)?),
            Cond::Bool(op, a, b) => (a.eval(env)? == b.eval(env)?) == (*op == BinOp::Eq),
            Cond::InStr(s, list) => s.any(env, |v| list.iter().any(|x| **x == *v))?,
            Cond::InNum(x, list) => {
                let x = x.eval(env)?;
                list.contains(&x)
            }
            Cond::FeatureVsLit(op, f, x) => match env.user.get(*f) {
                Value::Num(v) => order(*op, v, *x),
                _ => return Err(EvalError::MissingFeature(*f)),
            },
            Cond::CtxIs(eq, key, want) => (env.ctx(key)? == &**want) == *eq,
            Cond::All(all) => {
                for c in all.iter() {
                    if !c.leaf(env)? {
                        return Ok(false);
                    }
                }
                true
            }
            Cond::Any(any) => {
                for c in any.iter() {
                    if c.leaf(env)? {
                        return Ok(true);
                    }
                }
                false
            }
        })
    }

    /// `eval`, with a chain of `&&` and its fast leaves evaluated in place: a rule's `when`
    /// is mostly such a chain, and a call into the whole `eval` per node costs more than the
    /// leaves' work (its prologue and epilogue; measured with callgrind, `docs/rules.md`).
    #[inline(always)]
    pub fn eval_inline(&self, env: &Env<'_, '_>) -> R<bool> {
        match self {
            Cond::All(all) => {
                for c in all.iter() {
                    if !c.leaf(env)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            c => c.leaf(env),
        }
    }

    /// A fast leaf evaluated in place; any other condition through `eval`.
    #[inline(always)]
    fn leaf(&self, env: &Env<'_, '_>) -> R<bool> {
        match self {
            Cond::FeatureVsLit(op, f, x) => match env.user.get(*f) {
                Value::Num(v) => Ok(order(*op, v, *x)),
                _ => Err(EvalError::MissingFeature(*f)),
            },
            Cond::CtxIs(eq, key, want) => Ok((env.ctx(key)? == &**want) == *eq),
            c => c.eval(env),
        }
    }

    /// The same condition with its commonest leaves in their fast forms (`FeatureVsLit`,
    /// `CtxIs`), which evaluate to exactly what the general ones do, errors included: the
    /// typed tree costs a call and a `Result` per node, and fifty rules' leaves are most of
    /// a decision's rule time (`docs/rules.md`, Measured).
    pub fn specialize(self) -> Cond {
        let turned = |op| match op {
            BinOp::Lt => BinOp::Gt,
            BinOp::Le => BinOp::Ge,
            BinOp::Gt => BinOp::Lt,
            BinOp::Ge => BinOp::Le,
            op => op,
        };
        let boxed = |c: Box<Cond>| Box::new(c.specialize());
        match self {
            Cond::Not(a) => Cond::Not(boxed(a)),
            c @ Cond::And(..) => {
                let mut all = Vec::new();
                c.chain(true, &mut all);
                Cond::All(all.into_iter().map(Cond::specialize).collect())
            }
            c @ Cond::Or(..) => {
                let mut any = Vec::new();
                c.chain(false, &mut any);
                Cond::Any(any.into_iter().map(Cond::specialize).collect())
            }
            Cond::Bool(op, a, b) => Cond::Bool(op, boxed(a), boxed(b)),
            Cond::Num(op, Num::User(f), Num::Lit(x)) => Cond::FeatureVsLit(op, f, x),
            Cond::Num(op, Num::Lit(x), Num::User(f)) => Cond::FeatureVsLit(turned(op), f, x),
            Cond::Str(op @ (BinOp::Eq | BinOp::Ne), Str::Ctx(k), Str::Lit(v))
            | Cond::Str(op @ (BinOp::Eq | BinOp::Ne), Str::Lit(v), Str::Ctx(k)) => {
                Cond::CtxIs(op == BinOp::Eq, k, v)
            }
            c => c,
        }
    }

    /// The operands of a chain of `And`s (`and`) or `Or`s, left to right, into `out`.
    fn chain(self, and: bool, out: &mut Vec<Cond>) {
        match (self, and) {
            (Cond::And(a, b), true) | (Cond::Or(a, b), false) => {
                a.chain(and, out);
                b.chain(and, out);
            }
            (c, _) => out.push(c),
        }
    }

    /// Whether the condition reads nothing but the candidate and literals, and cannot fail
    /// but for a missing attribute (no division): its value is a function of the item alone,
    /// which a shard may remember per item (`apply::ItemMatches`).
    pub fn item_only(&self) -> bool {
        fn num(n: &Num) -> bool {
            match n {
                Num::Lit(_) => true,
                Num::User(_) | Num::Ctx(_) => false,
                Num::Neg(a) => num(a),
                Num::Arith(op, a, b) => *op != BinOp::Div && num(a) && num(b),
            }
        }
        let s = |x: &Str| !matches!(x, Str::User(_) | Str::Ctx(_));
        match self {
            Cond::Lit(_) => true,
            Cond::Not(a) => a.item_only(),
            Cond::And(a, b) | Cond::Or(a, b) | Cond::Bool(_, a, b) => {
                a.item_only() && b.item_only()
            }
            Cond::Num(_, a, b) => num(a) && num(b),
            Cond::Str(_, a, b) => s(a) && s(b),
            Cond::InStr(a, _) => s(a),
            Cond::InNum(a, _) => num(a),
            Cond::FeatureVsLit(..) | Cond::CtxIs(..) => false,
            Cond::All(cs) | Cond::Any(cs) => cs.iter().all(Cond::item_only),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::features::LiveFeatures;
    use crate::actor::Signals;
    use crate::api::EventKind;
    use crate::config::HygieneConfig;

    /// Every fast leaf `specialize` makes evaluates to what its general form does, value or
    /// error, for each operator, either way round, on a feature with a value and one
    /// without, and a context key given and not.
    #[test]
    fn specialized_leaves_evaluate_as_the_general_ones() {
        let mut live = LiveFeatures::default();
        live.observe(EventKind::Click, 1.0, 1_000_000, None, 1800);
        let (signals, hygiene) = (Signals::default(), HygieneConfig::default());
        let view = FeatureView {
            features: &live,
            signals: &signals,
            hygiene: &hygiene,
            session_idle_s: 1800,
            now_ms: 1_000_000,
            segment: None,
        };
        let features = Features::new(view);
        let with_page = [("page".to_string(), "home".to_string())];
        let ops = [
            BinOp::Eq,
            BinOp::Ne,
            BinOp::Lt,
            BinOp::Le,
            BinOp::Gt,
            BinOp::Ge,
        ];
        let mut general = Vec::new();
        for op in ops {
            for f in [Feature::Clicks1h, Feature::ScrollDepth] {
                for x in [0.0, 0.5, 1.0, 2.0] {
                    general.push(Cond::Num(op, Num::User(f), Num::Lit(x)));
                    general.push(Cond::Num(op, Num::Lit(x), Num::User(f)));
                }
            }
        }
        for op in [BinOp::Eq, BinOp::Ne] {
            for v in ["home", "cart"] {
                let (ctx, lit) = (Str::Ctx("page".into()), Str::Lit(v.into()));
                general.push(Cond::Str(op, ctx.clone(), lit.clone()));
                general.push(Cond::Str(op, lit, ctx));
            }
        }
        let mut fast = 0;
        for ctx in [&with_page[..], &[]] {
            let env = Env {
                user: &features,
                ctx,
                item: None,
            };
            for cond in &general {
                let special = cond.clone().specialize();
                fast += usize::from(matches!(special, Cond::FeatureVsLit(..) | Cond::CtxIs(..)));
                assert_eq!(special.eval(&env), cond.eval(&env), "{cond:?}");
                let wrapped = Cond::Not(Box::new(cond.clone()));
                assert_eq!(wrapped.clone().specialize().eval(&env), wrapped.eval(&env));
            }
        }
        assert_eq!(fast, 2 * general.len(), "every leaf here has a fast form");
        // Chains of `&&` and `||` flattened: the same value or error, short-circuits included
        // (`false && error` is false, `error && false` the error), over every ordered triple
        // of leaves that are true, false or failing, nested both ways and mixed.
        let leaves = [
            Cond::Lit(true),
            Cond::Lit(false),
            Cond::Num(BinOp::Gt, Num::User(Feature::ScrollDepth), Num::Lit(0.0)),
            Cond::Str(BinOp::Eq, Str::Ctx("page".into()), Str::Lit("home".into())),
        ];
        let and = |a: &Cond, b: &Cond| Cond::And(Box::new(a.clone()), Box::new(b.clone()));
        let or = |a: &Cond, b: &Cond| Cond::Or(Box::new(a.clone()), Box::new(b.clone()));
        let mut chains = 0;
        for ctx in [&with_page[..], &[]] {
            let env = Env {
                user: &features,
                ctx,
                item: None,
            };
            for a in &leaves {
                for b in &leaves {
                    for c in &leaves {
                        for cond in [
                            and(&and(a, b), c),
                            and(a, &and(b, c)),
                            or(&or(a, b), c),
                            or(a, &or(b, c)),
                            and(&or(a, b), c),
                            or(&and(a, b), c),
                        ] {
                            let special = cond.clone().specialize();
                            chains += usize::from(matches!(special, Cond::All(_) | Cond::Any(_)));
                            assert_eq!(special.eval(&env), cond.eval(&env), "{cond:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(chains, 2 * 6 * 64);
        let three = and(&and(&leaves[0], &leaves[1]), &leaves[2]).specialize();
        assert!(
            matches!(&three, Cond::All(cs) if cs.len() == 3),
            "{three:?}"
        );
    }
}
