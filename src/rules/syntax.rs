//! The rule language's syntax: a lexer and a precedence-climbing parser of a CEL subset into
//! an untyped tree whose every node keeps the byte offset it starts at (errors point there).
//!
//! Grammar, loosest first (CEL's precedence): `a || b`, `a && b`, relations
//! (`== != < <= > >= in`), `+ -`, `* /`, unary `! -`, then primaries: numbers, strings in
//! `"…"` or `'…'` (escapes `\"`, `\'`, `\\`, `\n`, `\t`), `true`, `false`, lists `[a, b]`,
//! parentheses, and variables `scope.name` (`user`, `ctx`, `item`). Nothing else: no
//! function calls, macros, maps or field chains.

/// A syntax error: what, and where (byte offset into the expression).
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    /// Byte offset of the error.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl BinOp {
    /// Binding strength: higher binds tighter.
    fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::In => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div => 5,
        }
    }

    /// How the operator is written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

/// The three variable scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `user.<feature>`: the live features.
    User,
    /// `ctx.<key>`: the decision's context.
    Ctx,
    /// `item.<attr>`: a candidate's attributes (and `item.id`).
    Item,
}

/// An untyped expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Ast {
    /// A number literal.
    Num(f64),
    /// A string literal.
    Str(String),
    /// `true` or `false`.
    Bool(bool),
    /// `[a, b, …]`.
    List(Vec<Node>),
    /// `scope.name`.
    Var(Scope, String),
    /// `!a`.
    Not(Box<Node>),
    /// `-a`.
    Neg(Box<Node>),
    /// `a op b`; the node's offset is the operator's.
    Binary(BinOp, Box<Node>, Box<Node>),
}

/// An expression and the byte offset it starts at (an operator's, for a binary one).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Byte offset into the source.
    pub offset: usize,
    /// The expression.
    pub ast: Ast,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Op(BinOp),
    Not,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    End,
}

/// Most bytes in one expression.
pub const MAX_EXPR_BYTES: usize = 4096;
/// Deepest nesting the parser follows (it recurses).
const MAX_DEPTH: usize = 64;

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        offset,
        message: message.into(),
    })
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let two = |s: &[u8; 2]| b.get(i..i + 2) == Some(&s[..]);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'0'..=b'9' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                    j += 1;
                }
                match src[i..j].parse::<f64>() {
                    Ok(x) => (Tok::Num(x), j - i),
                    Err(_) => return err(i, format!("`{}` is not a number", &src[i..j])),
                }
            }
            b'"' | b'\'' => {
                let (s, len) = string(src, i)?;
                (Tok::Str(s), len)
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                let word = &src[i..j];
                let tok = if word == "in" {
                    Tok::Op(BinOp::In)
                } else {
                    Tok::Ident(word.to_string())
                };
                (tok, j - i)
            }
            _ if two(b"==") => (Tok::Op(BinOp::Eq), 2),
            _ if two(b"!=") => (Tok::Op(BinOp::Ne), 2),
            _ if two(b"<=") => (Tok::Op(BinOp::Le), 2),
            _ if two(b">=") => (Tok::Op(BinOp::Ge), 2),
            _ if two(b"&&") => (Tok::Op(BinOp::And), 2),
            _ if two(b"||") => (Tok::Op(BinOp::Or), 2),
            b'<' => (Tok::Op(BinOp::Lt), 1),
            b'>' => (Tok::Op(BinOp::Gt), 1),
            b'+' => (Tok::Op(BinOp::Add), 1),
            b'-' => (Tok::Op(BinOp::Sub), 1),
            b'*' => (Tok::Op(BinOp::Mul), 1),
            b'/' => (Tok::Op(BinOp::Div), 1),
            b'!' => (Tok::Not, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => (Tok::Dot, 1),
            b'=' => return err(i, "`=` is not an operator; compare with `==`"),
            b'&' | b'|' => return err(i, format!("`{}` alone; use `&&` or `||`", c as char)),
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(i, format!("unexpected character `{ch}`"));
            }
        };
        out.push((start, tok));
        i += len;
    }
    out.push((b.len(), Tok::End));
    Ok(out)
}

/// A quoted string starting at `at`; returns its value and its length in bytes.
fn string(src: &str, at: usize) -> Result<(String, usize), SyntaxError> {
    let quote = src.as_bytes()[at] as char;
    let mut out = String::new();
    let mut chars = src[at + 1..].char_indices();
    while let Some((j, ch)) = chars.next() {
        match ch {
            c if c == quote => return Ok((out, j + 2)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('"' | '\'' | '\\'))) => out.push(c),
                Some((k, c)) => return err(at + 1 + k, format!("unknown escape `\\{c}`")),
                None => break,
            },
            c => out.push(c),
        }
    }
    err(at, "a string that is never closed")
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
}

/// Parses one expression.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    if src.len() > MAX_EXPR_BYTES {
        return err(
            MAX_EXPR_BYTES,
            format!("longer than {MAX_EXPR_BYTES} bytes"),
        );
    }
    let mut p = Parser {
        toks: lex(src)?,
        at: 0,
        depth: 0,
    };
    let node = p.expr(0)?;
    match p.peek() {
        (_, Tok::End) => Ok(node),
        (offset, tok) => err(
            offset,
            format!("unexpected {} after the expression", show(&tok)),
        ),
    }
}

fn show(tok: &Tok) -> String {
    match tok {
        Tok::Num(x) => format!("number {x}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Op(op) => format!("`{}`", op.symbol()),
        Tok::Not => "`!`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Dot => "`.`".into(),
        Tok::End => "the end".into(),
    }
}

impl Parser {
    fn peek(&self) -> (usize, Tok) {
        self.toks[self.at].clone()
    }

    fn bump(&mut self) -> (usize, Tok) {
        let t = self.peek();
        if t.1 != Tok::End {
            self.at += 1;
        }
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<usize, SyntaxError> {
        match self.bump() {
            (offset, t) if t == want => Ok(offset),
            (offset, t) => err(offset, format!("expected {what}, found {}", show(&t))),
        }
    }

    /// Operators binding tighter than `min`, precedence climbing (left-associative).
    fn expr(&mut self, min: u8) -> Result<Node, SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.peek().0, format!("nested deeper than {MAX_DEPTH}"));
        }
        let mut left = self.unary()?;
        while let (offset, Tok::Op(op)) = self.peek() {
            if op.precedence() <= min {
                break;
            }
            self.bump();
            let right = self.expr(op.precedence())?;
            left = Node {
                offset,
                ast: Ast::Binary(op, Box::new(left), Box::new(right)),
            };
        }
        self.depth -= 1;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        match self.peek() {
            (offset, Tok::Not) => {
                self.bump();
                let inner = self.unary_nested()?;
                Ok(Node {
                    offset,
                    ast: Ast::Not(Box::new(inner)),
                })
            }
            (offset, Tok::Op(BinOp::Sub)) => {
                self.bump();
                let inner = self.unary_nested()?;
                Ok(Node {
                    offset,
                    ast: Ast::Neg(Box::new(inner)),
                })
            }
            _ => self.primary(),
        }
    }

    fn unary_nested(&mut self) -> Result<Node, SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.peek().0, format!("nested deeper than {MAX_DEPTH}"));
        }
        let node = self.unary();
        self.depth -= 1;
        node
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        let (offset, tok) = self.bump();
        let ast = match tok {
            Tok::Num(x) => Ast::Num(x),
            Tok::Str(s) => Ast::Str(s),
            Tok::LParen => {
                let inner = self.expr(0)?;
                self.expect(Tok::RParen, "`)`")?;
                return Ok(inner);
            }
            Tok::LBracket => Ast::List(self.list()?),
            Tok::Ident(word) => match word.as_str() {
                "true" => Ast::Bool(true),
                "false" => Ast::Bool(false),
                "user" | "ctx" | "item" => {
                    let scope = match word.as_str() {
                        "user" => Scope::User,
                        "ctx" => Scope::Ctx,
                        _ => Scope::Item,
                    };
                    self.expect(Tok::Dot, &format!("`.` after `{word}`"))?;
                    match self.bump() {
                        (_, Tok::Ident(name)) => Ast::Var(scope, name),
                        (at, t) => return err(at, format!("expected a name, found {}", show(&t))),
                    }
                }
                _ => {
                    return err(
                        offset,
                        format!("unknown name `{word}` (variables are user.*, ctx.*, item.*)"),
                    )
                }
            },
            t => return err(offset, format!("expected a value, found {}", show(&t))),
        };
        if let (at, Tok::Dot) = self.peek() {
            return err(at, "no fields beyond `scope.name`");
        }
        if let (at, Tok::LParen) = self.peek() {
            return err(at, "no function calls in rules");
        }
        Ok(Node { offset, ast })
    }

    fn list(&mut self) -> Result<Vec<Node>, SyntaxError> {
        let mut items = Vec::new();
        if let (_, Tok::RBracket) = self.peek() {
            self.bump();
            return Ok(items);
        }
        loop {
            items.push(self.expr(0)?);
            match self.bump() {
                (_, Tok::Comma) => continue,
                (_, Tok::RBracket) => return Ok(items),
                (at, t) => return err(at, format!("expected `,` or `]`, found {}", show(&t))),
            }
        }
    }
}

/// `(line, column)` of byte `offset` in `src`, both from 1 (columns count characters).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(src.len());
    while !src.is_char_boundary(at) {
        at -= 1;
    }
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_cels() {
        let n = parse("1 + 2 * 3 > 6 && !false || user.x in [1, 2]").unwrap();
        let Ast::Binary(BinOp::Or, left, _) = n.ast else {
            panic!("|| at the top: {n:?}")
        };
        let Ast::Binary(BinOp::And, cmp, _) = left.ast else {
            panic!("&& below ||")
        };
        let Ast::Binary(BinOp::Gt, sum, _) = cmp.ast else {
            panic!("> below &&")
        };
        assert!(matches!(sum.ast, Ast::Binary(BinOp::Add, _, _)));
    }

    #[test]
    fn errors_point_at_the_offending_byte() {
        let e = parse("user.clicks_1h > ").unwrap_err();
        assert_eq!(e.offset, 17, "{e:?}");
        let e = parse("ctx.page = 'home'").unwrap_err();
        assert_eq!(e.offset, 9, "{e:?}");
        let e = parse("(1 + 2").unwrap_err();
        assert_eq!(e.offset, 6, "{e:?}");
        let e = parse("'never closed").unwrap_err();
        assert_eq!(e.offset, 0, "{e:?}");
        assert_eq!(line_col("a\nbc d", 5), (2, 4));
    }

    #[test]
    fn strings_take_escapes_and_both_quotes() {
        let n = parse(r#"'it\'s' == "a\"b\\""#).unwrap();
        let Ast::Binary(_, l, r) = n.ast else {
            panic!()
        };
        assert_eq!(l.ast, Ast::Str("it's".into()));
        assert_eq!(r.ast, Ast::Str("a\"b\\".into()));
    }

    proptest::proptest! {
        /// Arbitrary text gives a tree or an error with an offset inside it, never a panic.
        #[test]
        fn parsing_never_panics(src in "\\PC{0,64}") {
            if let Err(e) = parse(&src) {
                proptest::prop_assert!(e.offset <= src.len());
                let _ = line_col(&src, e.offset);
            }
        }
    }
}
