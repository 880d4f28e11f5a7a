//! A small Mustache parser and renderer (issue 15): variables `{{name}}` (HTML-escaped),
//! `{{{name}}}` and `{{& name}}` (raw), sections `{{#name}}…{{/name}}` and inverted sections
//! `{{^name}}…{{/name}}` (rendered when the value is truthy, or falsy), comments `{{! … }}`.
//!
//! It owns the syntax and the byte offsets of every tag, so that a template is refused at
//! registration with the line, column and byte of the fault. It does not know what a name
//! means: `template::compile` resolves names, and rendering asks a lookup for each value.
//! Partials (`{{> x}}`) and delimiter changes (`{{=<% %>=}}`) are refused: a template is one
//! self-contained text. Sections do not iterate lists: every value is a string.
//!
//! Hand-written rather than a crate: the Mustache crates we looked at (`ramhorns`, `mustache`)
//! report an unclosed tag or section without its position and do not list a template's names
//! with their positions, which is what registration must check; `handlebars` gives line and
//! column but is a larger language (helpers, paths, partials) with a parser generator behind
//! it. What is needed here is about two hundred lines.

use std::fmt;

/// One piece of a parsed template; `N` is what a tag names (its text and byte offset when
/// parsed, a resolved name once compiled).
#[derive(Clone, Debug, PartialEq)]
pub enum Node<N> {
    /// Literal text.
    Text(String),
    /// A value: escaped (`{{x}}`) or raw (`{{{x}}}`, `{{& x}}`).
    Var {
        /// What it names.
        name: N,
        /// Whether HTML special characters are escaped.
        escape: bool,
    },
    /// A section: its children rendered when the value is truthy (or, `inverted`, falsy).
    Section {
        /// What it names.
        name: N,
        /// `{{^x}}` rather than `{{#x}}`.
        inverted: bool,
        /// What it encloses.
        children: Vec<Node<N>>,
    },
}

/// A tag's name as written and the byte offset of its `{{`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    /// The name, trimmed.
    pub name: String,
    /// Byte offset of the tag's `{{` in the source.
    pub at: usize,
}

/// A position in a source text: byte offset, and 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Byte offset.
    pub byte: usize,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `at` of `source`.
    pub fn of(source: &str, at: usize) -> Position {
        let at = at.min(source.len());
        let before = source.get(..at).unwrap_or(source);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            byte: at,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (byte {})", self.line, self.column, self.byte)
    }
}

/// A syntax error: what is wrong, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    /// Where.
    pub at: Position,
    /// What.
    pub what: String,
}

/// Parses `source` into nodes whose names carry their positions.
pub fn parse(source: &str) -> Result<Vec<Node<Tag>>, SyntaxError> {
    let err = |at: usize, what: String| SyntaxError {
        at: Position::of(source, at),
        what,
    };
    // The open sections: their tag, inversion, and the nodes before them.
    let mut stack: Vec<(Tag, bool, Vec<Node<Tag>>)> = Vec::new();
    let mut nodes: Vec<Node<Tag>> = Vec::new();
    let mut rest = 0;
    while let Some(found) = source[rest..].find("{{") {
        let at = rest + found;
        if at > rest {
            nodes.push(Node::Text(source[rest..at].to_string()));
        }
        let triple = source[at..].starts_with("{{{");
        let (inner_from, close) = if triple {
            (at + 3, "}}}")
        } else {
            (at + 2, "}}")
        };
        let Some(len) = source[inner_from..].find(close) else {
            let tag = if triple { "`{{{`" } else { "`{{`" };
            return Err(err(at, format!("unclosed tag: {tag} has no `{close}`")));
        };
        rest = inner_from + len + close.len();
        let inner = &source[inner_from..inner_from + len];
        let (sigil, body) = match inner.chars().next() {
            Some(c @ ('#' | '^' | '/' | '&' | '!' | '>' | '=')) if !triple => {
                (Some(c), &inner[1..])
            }
            _ => (None, inner),
        };
        if sigil == Some('!') {
            continue;
        }
        if let Some(c @ ('>' | '=')) = sigil {
            let what = if c == '>' {
                "partials"
            } else {
                "delimiter changes"
            };
            return Err(err(at, format!("{what} (`{{{{{c}`) are not supported")));
        }
        let name = body.trim();
        if name.is_empty() {
            return Err(err(at, "a tag with no name".to_string()));
        }
        if let Some(bad) = name.chars().find(|c| !valid_name_char(*c)) {
            return Err(err(
                at,
                format!(
                    "`{name}` is not a name (`{bad}`: names are letters, digits, `_`, `-` and `.`)"
                ),
            ));
        }
        let tag = Tag {
            name: name.to_string(),
            at,
        };
        match sigil {
            Some('#') | Some('^') => {
                stack.push((tag, sigil == Some('^'), std::mem::take(&mut nodes)));
            }
            Some('/') => {
                let Some((open, inverted, before)) = stack.pop() else {
                    return Err(err(at, format!("`{{{{/{name}}}}}` closes no open section")));
                };
                if open.name != tag.name {
                    return Err(err(
                        at,
                        format!(
                            "`{{{{/{name}}}}}` closes `{}`, opened at {}",
                            open.name,
                            Position::of(source, open.at)
                        ),
                    ));
                }
                let children = std::mem::replace(&mut nodes, before);
                nodes.push(Node::Section {
                    name: open,
                    inverted,
                    children,
                });
            }
            _ => nodes.push(Node::Var {
                name: tag,
                escape: !triple && sigil != Some('&'),
            }),
        }
    }
    if let Some((open, _, _)) = stack.pop() {
        return Err(err(
            open.at,
            format!(
                "unclosed section: `{}` has no `{{{{/{}}}}}`",
                open.name, open.name
            ),
        ));
    }
    if rest < source.len() {
        nodes.push(Node::Text(source[rest..].to_string()));
    }
    Ok(nodes)
}

fn valid_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Maps every name of `nodes`, failing at the first `f` refuses.
pub fn resolve<A, B, E>(
    nodes: Vec<Node<A>>,
    f: &mut impl FnMut(A) -> Result<B, E>,
) -> Result<Vec<Node<B>>, E> {
    nodes
        .into_iter()
        .map(|node| {
            Ok(match node {
                Node::Text(t) => Node::Text(t),
                Node::Var { name, escape } => Node::Var {
                    name: f(name)?,
                    escape,
                },
                Node::Section {
                    name,
                    inverted,
                    children,
                } => Node::Section {
                    name: f(name)?,
                    inverted,
                    children: resolve(children, f)?,
                },
            })
        })
        .collect()
}

/// Every name of `nodes`, in order.
pub fn names<N>(nodes: &[Node<N>]) -> Vec<&N> {
    let mut out = Vec::new();
    fn walk<'a, N>(nodes: &'a [Node<N>], out: &mut Vec<&'a N>) {
        for node in nodes {
            match node {
                Node::Text(_) => {}
                Node::Var { name, .. } => out.push(name),
                Node::Section { name, children, .. } => {
                    out.push(name);
                    walk(children, out);
                }
            }
        }
    }
    walk(nodes, &mut out);
    out
}

/// What a name renders as.
pub enum Piece<'a> {
    /// A value: escaped or not as its tag says.
    Value(&'a str),
    /// Text that is already rendered (a slot's variant): never escaped again.
    Rendered(&'a str),
}

impl Piece<'_> {
    fn truthy(&self) -> bool {
        let s = match self {
            Piece::Value(s) | Piece::Rendered(s) => *s,
        };
        !(s.is_empty() || s == "false" || s == "0")
    }
}

/// Renders `nodes` into `out`, asking `lookup` for each name's value.
pub fn render<'a, N>(nodes: &[Node<N>], lookup: &impl Fn(&N) -> Piece<'a>, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Var { name, escape } => match lookup(name) {
                Piece::Value(v) if *escape => escape_html(v, out),
                Piece::Value(v) | Piece::Rendered(v) => out.push_str(v),
            },
            Node::Section {
                name,
                inverted,
                children,
            } => {
                if lookup(name).truthy() != *inverted {
                    render(children, lookup, out);
                }
            }
        }
    }
}

/// Appends `s` with `& < > " '` escaped as HTML entities (what Mustache escapes).
pub fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(source: &str, value: &str) -> String {
        let nodes = parse(source).unwrap();
        let mut out = String::new();
        render(&nodes, &|_: &Tag| Piece::Value(value), &mut out);
        out
    }

    #[test]
    fn variables_escape_and_raw_tags_do_not() {
        assert_eq!(
            show("a {{x}} b", "<i>&\"'"),
            "a &lt;i&gt;&amp;&quot;&#39; b"
        );
        assert_eq!(show("{{{x}}}|{{& x}}", "<i>"), "<i>|<i>");
    }

    #[test]
    fn sections_follow_truthiness_and_comments_vanish() {
        assert_eq!(show("{{#x}}yes{{/x}}{{^x}}no{{/x}}{{! hi }}", "1"), "yes");
        assert_eq!(show("{{#x}}yes{{/x}}{{^x}}no{{/x}}", ""), "no");
    }

    #[test]
    fn errors_carry_line_column_and_byte() {
        let e = parse("Hello\n  {{name").unwrap_err();
        assert_eq!((e.at.line, e.at.column, e.at.byte), (2, 3, 8));
        assert!(e.what.contains("unclosed tag"), "{}", e.what);
        let e = parse("ab{{#s}}x").unwrap_err();
        assert_eq!(e.at.byte, 2);
        assert!(e.what.contains("unclosed section"), "{}", e.what);
        let e = parse("{{#a}}{{/b}}").unwrap_err();
        assert_eq!(e.at.byte, 6);
        let e = parse("x {{> part}}").unwrap_err();
        assert_eq!(e.at.byte, 2);
        let e = parse("é{{a b}}").unwrap_err();
        assert_eq!((e.at.column, e.at.byte), (2, 2));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any text parses or is refused at a position inside it, and what parses renders.
        #[test]
        fn parsing_never_panics(source in "(\\{\\{|\\}\\}|[{}#^/&!>=a-z. \n\u{e9}]){0,40}") {
            match parse(&source) {
                Ok(nodes) => {
                    let mut out = String::new();
                    render(&nodes, &|_: &Tag| Piece::Value("<&>"), &mut out);
                }
                Err(e) => proptest::prop_assert!(e.at.byte <= source.len()),
            }
        }
    }

    #[test]
    fn names_keep_their_positions() {
        let nodes = parse("{{a}} {{#b}}{{{c}}}{{/b}}").unwrap();
        let at: Vec<(String, usize)> = names(&nodes)
            .into_iter()
            .map(|t| (t.name.clone(), t.at))
            .collect();
        assert_eq!(at, [("a".into(), 0), ("b".into(), 6), ("c".into(), 12)]);
    }
}
