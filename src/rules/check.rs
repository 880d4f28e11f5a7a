//! The type checker: an untyped tree (`syntax`) becomes a typed one (`expr`), or an error at
//! the byte offset of the node at fault (`item.category > 3` points at `>`).
//!
//! Types: numbers, strings and booleans. `user.<feature>` has its feature's type (an unknown
//! feature is an error); `item.<attr>` and `item.id` are strings; `ctx.<key>` is a string that
//! compares as a number when the other side is a number (context values travel as text).
//! Only `items` conditions may read `item.*`.

use crate::actor::features::{Feature, FeatureType};
use crate::rules::expr::{Cond, Num, Str};
use crate::rules::syntax::{Ast, BinOp, Node, Scope, SyntaxError};

/// An expression during checking: its type decided, except a context value's.
enum Typed {
    Num(Num),
    Str(Str),
    Bool(Cond),
    /// `ctx.<key>`: a string, or a number if compared with one.
    Ctx(Box<str>),
    NumList(Vec<f64>),
    StrList(Vec<Box<str>>),
}

impl Typed {
    fn describe(&self) -> &'static str {
        match self {
            Typed::Num(_) => "a number",
            Typed::Str(_) => "a string",
            Typed::Bool(_) => "a condition",
            Typed::Ctx(_) => "a context value",
            Typed::NumList(_) | Typed::StrList(_) => "a list",
        }
    }
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        offset,
        message: message.into(),
    })
}

/// Checks a condition; `items` says whether it may read `item.*`. The result is
/// specialized (`Cond::specialize`), ready to evaluate.
pub fn condition(node: &Node, items: bool) -> Result<Cond, SyntaxError> {
    match typed(node, items)? {
        Typed::Bool(c) => Ok(c.specialize()),
        t => err(
            node.offset,
            format!(
                "a rule's condition must be true or false, not {}",
                t.describe()
            ),
        ),
    }
}

fn typed(node: &Node, items: bool) -> Result<Typed, SyntaxError> {
    let at = node.offset;
    Ok(match &node.ast {
        Ast::Num(x) => Typed::Num(Num::Lit(*x)),
        Ast::Str(s) => Typed::Str(Str::Lit(s.as_str().into())),
        Ast::Bool(b) => Typed::Bool(Cond::Lit(*b)),
        Ast::List(elements) => list(elements)?,
        Ast::Var(Scope::User, name) => match Feature::from_name(name) {
            Some(f) if f.kind() == FeatureType::Num => Typed::Num(Num::User(f)),
            Some(f) => Typed::Str(Str::User(f)),
            None => {
                return err(
                    at,
                    format!("unknown feature `user.{name}` (docs/features.md)"),
                )
            }
        },
        Ast::Var(Scope::Ctx, key) => Typed::Ctx(key.as_str().into()),
        Ast::Var(Scope::Item, _) if !items => {
            return err(
                at,
                "`item.*` is only available in a rule's `items` condition",
            )
        }
        Ast::Var(Scope::Item, name) if name == "id" => Typed::Str(Str::ItemId),
        Ast::Var(Scope::Item, name) => Typed::Str(Str::Item(name.as_str().into())),
        Ast::Not(inner) => match typed(inner, items)? {
            Typed::Bool(c) => Typed::Bool(Cond::Not(Box::new(c))),
            t => return err(at, format!("`!` needs a condition, not {}", t.describe())),
        },
        Ast::Neg(inner) => match number(typed(inner, items)?) {
            Ok(Num::Lit(x)) => Typed::Num(Num::Lit(-x)),
            Ok(n) => Typed::Num(Num::Neg(Box::new(n))),
            Err(t) => return err(at, format!("`-` needs a number, not {}", t.describe())),
        },
        Ast::Binary(op, a, b) => binary(at, *op, typed(a, items)?, typed(b, items)?)?,
    })
}

/// A list of literals of one type.
fn list(elements: &[Node]) -> Result<Typed, SyntaxError> {
    let mut nums = Vec::new();
    let mut strs = Vec::new();
    for e in elements {
        match typed(e, false) {
            Ok(Typed::Num(Num::Lit(x))) if strs.is_empty() => nums.push(x),
            Ok(Typed::Str(Str::Lit(s))) if nums.is_empty() => strs.push(s),
            _ => {
                return err(
                    e.offset,
                    "a list holds literals of one type (numbers or strings)",
                )
            }
        }
    }
    Ok(if strs.is_empty() {
        Typed::NumList(nums)
    } else {
        Typed::StrList(strs)
    })
}

fn number(t: Typed) -> Result<Num, Typed> {
    match t {
        Typed::Num(n) => Ok(n),
        Typed::Ctx(key) => Ok(Num::Ctx(key)),
        t => Err(t),
    }
}

fn string(t: Typed) -> Result<Str, Typed> {
    match t {
        Typed::Str(s) => Ok(s),
        Typed::Ctx(key) => Ok(Str::Ctx(key)),
        t => Err(t),
    }
}

fn binary(at: usize, op: BinOp, a: Typed, b: Typed) -> Result<Typed, SyntaxError> {
    let sym = op.symbol();
    let mismatch = |a: &Typed, b: &Typed| {
        err(
            at,
            format!(
                "`{sym}` cannot compare {} with {}",
                a.describe(),
                b.describe()
            ),
        )
    };
    Ok(match op {
        BinOp::And | BinOp::Or => match (a, b) {
            (Typed::Bool(a), Typed::Bool(b)) => {
                let (a, b) = (Box::new(a), Box::new(b));
                Typed::Bool(if op == BinOp::And {
                    Cond::And(a, b)
                } else {
                    Cond::Or(a, b)
                })
            }
            (a, b) => {
                let bad = if matches!(a, Typed::Bool(_)) { b } else { a };
                return err(
                    at,
                    format!("`{sym}` needs conditions, not {}", bad.describe()),
                );
            }
        },
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => match (number(a), number(b)) {
            (Ok(a), Ok(b)) => Typed::Num(Num::Arith(op, Box::new(a), Box::new(b))),
            (Err(t), _) | (_, Err(t)) => {
                return err(at, format!("`{sym}` needs numbers, not {}", t.describe()))
            }
        },
        BinOp::In => match (a, b) {
            (a, Typed::NumList(list)) => match number(a) {
                Ok(n) => Typed::Bool(Cond::InNum(n, list.into())),
                Err(t) => return mismatch(&t, &Typed::NumList(list)),
            },
            (a, Typed::StrList(list)) => match string(a) {
                Ok(s) => Typed::Bool(Cond::InStr(s, list.into())),
                Err(t) => return mismatch(&t, &Typed::StrList(list)),
            },
            (_, b) => return err(at, format!("`in` needs a list, not {}", b.describe())),
        },
        _ => compare(op, a, b, mismatch)?,
    })
}

/// `== != < <= > >=`: both numbers, both strings (a context value takes the other side's
/// type), or, for `==` and `!=`, both conditions.
fn compare(
    op: BinOp,
    a: Typed,
    b: Typed,
    mismatch: impl Fn(&Typed, &Typed) -> Result<Typed, SyntaxError>,
) -> Result<Typed, SyntaxError> {
    let numeric = matches!(a, Typed::Num(_)) || matches!(b, Typed::Num(_));
    Ok(match (a, b) {
        (Typed::Bool(a), Typed::Bool(b)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
            Typed::Bool(Cond::Bool(op, Box::new(a), Box::new(b)))
        }
        (a, b) if numeric => match (number(a), number(b)) {
            (Ok(a), Ok(b)) => Typed::Bool(Cond::Num(op, a, b)),
            (Err(a), Ok(b)) => return mismatch(&a, &Typed::Num(b)),
            (Ok(a), Err(b)) => return mismatch(&Typed::Num(a), &b),
            (Err(a), Err(b)) => return mismatch(&a, &b),
        },
        (a, b) => match (string(a), string(b)) {
            (Ok(a), Ok(b)) => Typed::Bool(Cond::Str(op, a, b)),
            (Err(a), Ok(b)) => return mismatch(&a, &Typed::Str(b)),
            (Ok(a), Err(b)) => return mismatch(&Typed::Str(a), &b),
            (Err(a), Err(b)) => return mismatch(&a, &b),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::syntax::parse;

    fn check(src: &str, items: bool) -> Result<Cond, SyntaxError> {
        condition(&parse(src)?, items)
    }

    #[test]
    fn type_errors_point_at_the_operator() {
        let e = check("item.category > 3", true).unwrap_err();
        assert_eq!(e.offset, 14, "{e:?}");
        assert!(e.message.contains("a string with a number"), "{e:?}");
        let e = check("user.clicks_1h + 1", false).unwrap_err();
        assert_eq!(
            e.offset, 15,
            "a number, not a condition, at its operator: {e:?}"
        );
        let e = check("user.last_device == 2 || true", false).unwrap_err();
        assert_eq!(e.offset, 17, "{e:?}");
        let e = check("user.nope > 1", false).unwrap_err();
        assert!(e.message.contains("unknown feature"), "{e:?}");
        let e = check("item.category == 'x'", false).unwrap_err();
        assert!(e.message.contains("only available"), "{e:?}");
        let e = check("1 in ['a']", false).unwrap_err();
        assert_eq!(e.offset, 2, "{e:?}");
    }

    #[test]
    fn context_values_take_the_other_sides_type() {
        assert!(matches!(
            check("ctx.hour >= 20", false).unwrap(),
            Cond::Num(BinOp::Ge, Num::Ctx(_), Num::Lit(_))
        ));
        assert!(matches!(
            check("'home' != ctx.page", false).unwrap(),
            Cond::CtxIs(false, k, v) if &*k == "page" && &*v == "home"
        ));
        assert!(matches!(
            check("ctx.page < 'home'", false).unwrap(),
            Cond::Str(BinOp::Lt, Str::Ctx(_), Str::Lit(_))
        ));
        assert!(matches!(
            check("ctx.tier in ['gold', 'silver']", false).unwrap(),
            Cond::InStr(Str::Ctx(_), _)
        ));
    }
}
