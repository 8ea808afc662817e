//! A policy group's expression: which members must accept for the group to.
//!
//! The language is what Kubewarden's controller accepts (a subset of CEL):
//! members as zero-argument calls (`signed()`), `true`, `false`, `!`, `==`,
//! `!=`, `&&`, `||` and parentheses, with CEL's precedence (`!` binds
//! tightest, then `==`/`!=`, then `&&`, then `||`). Evaluation is lazy and
//! short-circuits, so a member runs only when the result depends on it, and
//! at most once per request.

use std::collections::HashMap;
use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// `name()`: the verdict of a member (accepted = true).
    Member(String),
    /// `true` or `false`.
    Literal(bool),
    /// `!e`.
    Not(Box<Expression>),
    /// `a && b`.
    And(Box<Expression>, Box<Expression>),
    /// `a || b`.
    Or(Box<Expression>, Box<Expression>),
    /// `a == b`.
    Equal(Box<Expression>, Box<Expression>),
    /// `a != b`.
    NotEqual(Box<Expression>, Box<Expression>),
}

/// Why an expression is not usable, and where (1-based column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expression `{expression}`, column {column}: {message}")]
pub struct ExpressionError {
    /// The expression as written.
    pub expression: String,
    /// The column (in characters, from 1) the problem starts at.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Words CEL reserves, which cannot name a member.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "false",
    "for",
    "function",
    "if",
    "import",
    "in",
    "let",
    "loop",
    "package",
    "namespace",
    "null",
    "return",
    "true",
    "var",
    "void",
    "while",
];

/// Whether `name` may name a group member: `[_a-zA-Z][_a-zA-Z0-9]*`, not a
/// reserved word.
pub fn is_member_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !RESERVED.contains(&name)
}

impl Expression {
    /// Parses `text`; every member it calls must be in `members`.
    pub fn parse<'a>(
        text: &str,
        members: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<Self, ExpressionError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            text,
            tokens: &tokens,
            at: 0,
        };
        let expression = parser.or()?;
        if let Some(token) = tokens.get(parser.at) {
            return Err(error(
                text,
                token.column,
                format!("unexpected {}", token.kind),
            ));
        }
        for (name, column) in parser_members(&tokens) {
            if !members.clone().into_iter().any(|m| m == name) {
                let known: Vec<&str> = members.clone().into_iter().collect();
                return Err(error(
                    text,
                    column,
                    format!(
                        "`{name}` is not a member of the group (members: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(expression)
    }

    /// Evaluates the expression, asking `member` for each member's verdict
    /// when (and only if) the result depends on it, once per member.
    pub async fn evaluate<F>(&self, member: &mut F) -> bool
    where
        F: AsyncFnMut(&str) -> bool,
    {
        let mut known = HashMap::new();
        loop {
            match self.next(&known) {
                Step::Decided(value) => return value,
                Step::Run(name) => {
                    let value = member(name).await;
                    known.insert(name.to_owned(), value);
                }
            }
        }
    }

    /// One step of a lazy evaluation: with the verdicts in `known`, either
    /// the result, or the member to run next (the first one, left to right,
    /// that the result still depends on).
    ///
    /// Calling it again with that member's verdict added continues where it
    /// stopped; a caller that loops this way runs exactly the members a
    /// short-circuiting evaluation would, once each, and holds no borrow
    /// across the runs (so its future can cross threads).
    pub fn next<'e>(&'e self, known: &HashMap<String, bool>) -> Step<'e> {
        match self {
            Expression::Literal(value) => Step::Decided(*value),
            Expression::Member(name) => match known.get(name) {
                Some(&value) => Step::Decided(value),
                None => Step::Run(name),
            },
            Expression::Not(inner) => inner.next(known).map(|value| !value),
            Expression::And(left, right) => match left.next(known) {
                Step::Decided(false) => Step::Decided(false),
                Step::Decided(true) => right.next(known),
                run => run,
            },
            Expression::Or(left, right) => match left.next(known) {
                Step::Decided(true) => Step::Decided(true),
                Step::Decided(false) => right.next(known),
                run => run,
            },
            Expression::Equal(left, right) => Self::both(left, right, known, |l, r| l == r),
            Expression::NotEqual(left, right) => Self::both(left, right, known, |l, r| l != r),
        }
    }

    /// Both sides are needed: the left one first.
    fn both<'e>(
        left: &'e Expression,
        right: &'e Expression,
        known: &HashMap<String, bool>,
        combine: fn(bool, bool) -> bool,
    ) -> Step<'e> {
        match (left.next(known), right.next(known)) {
            (Step::Decided(l), Step::Decided(r)) => Step::Decided(combine(l, r)),
            (Step::Run(name), _) | (Step::Decided(_), Step::Run(name)) => Step::Run(name),
        }
    }

    /// Every member the expression names, each once, in order of appearance.
    pub fn members(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_members(&mut names);
        names
    }

    fn collect_members<'e>(&'e self, names: &mut Vec<&'e str>) {
        match self {
            Expression::Member(name) => {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
            Expression::Literal(_) => {}
            Expression::Not(inner) => inner.collect_members(names),
            Expression::And(l, r)
            | Expression::Or(l, r)
            | Expression::Equal(l, r)
            | Expression::NotEqual(l, r) => {
                l.collect_members(names);
                r.collect_members(names);
            }
        }
    }
}

/// Where a lazy evaluation stands (see [`Expression::next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'e> {
    /// The expression's value.
    Decided(bool),
    /// The member whose verdict is needed next.
    Run(&'e str),
}

impl Step<'_> {
    fn map(self, f: impl FnOnce(bool) -> bool) -> Self {
        match self {
            Step::Decided(value) => Step::Decided(f(value)),
            run => run,
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expression::Member(name) => write!(f, "{name}()"),
            Expression::Literal(value) => write!(f, "{value}"),
            Expression::Not(inner) => write!(f, "!{inner}"),
            Expression::And(l, r) => write!(f, "({l} && {r})"),
            Expression::Or(l, r) => write!(f, "({l} || {r})"),
            Expression::Equal(l, r) => write!(f, "({l} == {r})"),
            Expression::NotEqual(l, r) => write!(f, "({l} != {r})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Name(String),
    Open,
    Close,
    Not,
    And,
    Or,
    Equal,
    NotEqual,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Name(name) => write!(f, "`{name}`"),
            Kind::Open => f.write_str("`(`"),
            Kind::Close => f.write_str("`)`"),
            Kind::Not => f.write_str("`!`"),
            Kind::And => f.write_str("`&&`"),
            Kind::Or => f.write_str("`||`"),
            Kind::Equal => f.write_str("`==`"),
            Kind::NotEqual => f.write_str("`!=`"),
        }
    }
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    column: usize,
}

fn error(text: &str, column: usize, message: String) -> ExpressionError {
    ExpressionError {
        expression: text.to_owned(),
        column,
        message,
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ExpressionError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        let two = |second: char| chars.get(i + 1) == Some(&second);
        let (kind, width) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Kind::Open, 1),
            ')' => (Kind::Close, 1),
            '!' if two('=') => (Kind::NotEqual, 2),
            '!' => (Kind::Not, 1),
            '&' if two('&') => (Kind::And, 2),
            '|' if two('|') => (Kind::Or, 2),
            '=' if two('=') => (Kind::Equal, 2),
            c if c == '_' || c.is_ascii_alphabetic() => {
                let end = (i..chars.len())
                    .find(|&j| !(chars[j] == '_' || chars[j].is_ascii_alphanumeric()))
                    .unwrap_or(chars.len());
                (Kind::Name(chars[i..end].iter().collect()), end - i)
            }
            '&' | '|' | '=' => {
                return Err(error(
                    text,
                    column,
                    format!("`{c}` alone is not an operator (did you mean `{c}{c}`?)"),
                ));
            }
            c => {
                return Err(error(
                    text,
                    column,
                    format!(
                        "unexpected `{c}`: only member calls, true, false, !, ==, !=, &&, || \
                         and parentheses are allowed"
                    ),
                ));
            }
        };
        tokens.push(Token { kind, column });
        i += width;
    }
    Ok(tokens)
}

/// Every member call in `tokens` (a name followed by `(`), with its column.
fn parser_members(tokens: &[Token]) -> impl Iterator<Item = (&str, usize)> {
    tokens
        .windows(2)
        .filter_map(|pair| match (&pair[0].kind, &pair[1].kind) {
            (Kind::Name(name), Kind::Open) => Some((name.as_str(), pair[0].column)),
            _ => None,
        })
}

struct Parser<'a> {
    text: &'a str,
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Kind> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn column(&self) -> usize {
        match self.tokens.get(self.at) {
            Some(token) => token.column,
            None => self.text.chars().count() + 1,
        }
    }

    fn fail(&self, message: impl Into<String>) -> ExpressionError {
        error(self.text, self.column(), message.into())
    }

    fn or(&mut self) -> Result<Expression, ExpressionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Kind::Or) {
            self.at += 1;
            left = Expression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expression, ExpressionError> {
        let mut left = self.equality()?;
        while self.peek() == Some(&Kind::And) {
            self.at += 1;
            left = Expression::And(Box::new(left), Box::new(self.equality()?));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expression, ExpressionError> {
        let mut left = self.unary()?;
        loop {
            let equal = match self.peek() {
                Some(Kind::Equal) => true,
                Some(Kind::NotEqual) => false,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = Box::new(self.unary()?);
            left = if equal {
                Expression::Equal(Box::new(left), right)
            } else {
                Expression::NotEqual(Box::new(left), right)
            };
        }
    }

    fn unary(&mut self) -> Result<Expression, ExpressionError> {
        if self.peek() == Some(&Kind::Not) {
            self.at += 1;
            return Ok(Expression::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expression, ExpressionError> {
        match self.peek().cloned() {
            Some(Kind::Open) => {
                self.at += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Kind::Close) {
                    return Err(self.fail("expected `)`"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Kind::Name(name)) if name == "true" || name == "false" => {
                self.at += 1;
                Ok(Expression::Literal(name == "true"))
            }
            Some(Kind::Name(name)) => {
                if self.tokens.get(self.at + 1).map(|t| &t.kind) != Some(&Kind::Open) {
                    return Err(self.fail(format!(
                        "`{name}` must be called: members are written `{name}()`"
                    )));
                }
                if self.tokens.get(self.at + 2).map(|t| &t.kind) != Some(&Kind::Close) {
                    self.at += 2;
                    return Err(self.fail("members take no arguments: expected `)`"));
                }
                self.at += 3;
                Ok(Expression::Member(name))
            }
            Some(other) => Err(self.fail(format!("unexpected {other}"))),
            None => Err(self.fail("the expression ends too early")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBERS: [&str; 3] = ["a", "b", "c"];

    fn parse(text: &str) -> Result<Expression, ExpressionError> {
        Expression::parse(text, MEMBERS)
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Evaluates `text` with these member verdicts; returns the result and
    /// the members that were asked, in order.
    fn run(text: &str, verdicts: &[(&str, bool)]) -> (bool, Vec<String>) {
        let expression = parse(text).unwrap();
        let mut asked = Vec::new();
        let result = block_on(expression.evaluate(&mut async |name: &str| {
            asked.push(name.to_owned());
            verdicts.iter().find(|(n, _)| *n == name).unwrap().1
        }));
        (result, asked)
    }

    #[test]
    fn precedence_is_cel_s() {
        assert_eq!(
            parse("a() || b() && !c()").unwrap().to_string(),
            "(a() || (b() && !c()))"
        );
        assert_eq!(
            parse("!a() == b() && c() != true").unwrap().to_string(),
            "((!a() == b()) && (c() != true))"
        );
        assert_eq!(
            parse(" ( a() || b() ) && c() ").unwrap().to_string(),
            "((a() || b()) && c())"
        );
    }

    #[test]
    fn truth_tables_of_and_or_not() {
        for a in [false, true] {
            for b in [false, true] {
                let v = [("a", a), ("b", b)];
                assert_eq!(run("a() && b()", &v).0, a && b);
                assert_eq!(run("a() || b()", &v).0, a || b);
                assert_eq!(run("!a() || b()", &v).0, !a || b);
                assert_eq!(run("a() == b()", &v).0, a == b);
                assert_eq!(run("a() != b()", &v).0, a != b);
            }
        }
    }

    #[test]
    fn members_run_only_when_needed_and_once() {
        let (result, asked) = run("a() || b()", &[("a", true), ("b", false)]);
        assert!(result);
        assert_eq!(asked, ["a"], "b is never run once a accepted");
        let (result, asked) = run("a() && b()", &[("a", false), ("b", true)]);
        assert!(!result);
        assert_eq!(asked, ["a"]);
        let (_, asked) = run(
            "(a() && b()) || (a() && c())",
            &[("a", true), ("b", false), ("c", true)],
        );
        assert_eq!(asked, ["a", "b", "c"], "a runs once");
    }

    #[test]
    fn errors_point_at_the_place() {
        let column = |text: &str| parse(text).unwrap_err().column;
        assert_eq!(column("a() && d()"), 8);
        assert!(
            parse("a() && d()")
                .unwrap_err()
                .message
                .contains("`d` is not a member")
        );
        assert_eq!(column("a() & b()"), 5);
        assert_eq!(column("a() &&"), 7);
        assert_eq!(column("(a() || b()"), 12);
        assert_eq!(column("a"), 1);
        assert_eq!(column("a(b())"), 3);
        assert_eq!(column("a() b()"), 5);
        assert_eq!(column("a() + b()"), 5);
        assert_eq!(
            parse("a() && d()").unwrap_err().to_string(),
            "expression `a() && d()`, column 8: `d` is not a member of the group (members: a, b, c)"
        );
    }

    #[test]
    fn member_names_follow_cel_identifiers() {
        assert!(is_member_name("signed_by_us"));
        assert!(is_member_name("_x1"));
        assert!(!is_member_name("1x"));
        assert!(!is_member_name("with-dash"));
        assert!(!is_member_name("true"));
        assert!(!is_member_name("in"));
        assert!(!is_member_name(""));
    }
}
