//! The ECS cluster query language's syntax, used by `memberOf` placement
//! constraints and instance filters: the tokenizer, the parser into an
//! [`Expression`] tree, its canonical text form and serde. Evaluating an
//! expression against an instance is `scheduler::query`.
//!
//! It must do no I/O: no files, no network, no clock, no logging. Errors are
//! values ([`QueryError`]) and no input, however malformed, may make it panic.

use std::fmt;
use std::str::FromStr;

/// Longest expression accepted, in characters (the ECS limit).
pub const MAX_EXPRESSION_CHARS: usize = 2000;

/// Deepest nesting of parentheses and `not` accepted.
pub const MAX_NESTING: usize = 64;

/// A syntax error in a cluster query expression. Columns count characters
/// from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Nothing but whitespace was given.
    #[error("the expression is empty")]
    Empty,
    /// The expression is longer than [`MAX_EXPRESSION_CHARS`].
    #[error("the expression is {length} characters long, more than the limit of {limit}")]
    TooLong {
        /// Length of the input in characters.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A character that cannot start any token.
    #[error("unexpected character \"{ch}\" at column {column}")]
    UnexpectedCharacter {
        /// The offending character.
        ch: char,
        /// Where it is.
        column: usize,
    },
    /// A quote that is never closed.
    #[error("unterminated quoted value starting at column {column}")]
    UnterminatedQuote {
        /// Column of the opening quote.
        column: usize,
    },
    /// A word in subject position that is not a known subject.
    #[error(
        "unknown subject \"{subject}\" at column {column}; use attribute:NAME, ec2InstanceId, \
         runningTasksCount, task:group, registeredAt, agentVersion or agentConnected"
    )]
    UnknownSubject {
        /// The word found.
        subject: String,
        /// Where it starts.
        column: usize,
    },
    /// Parentheses or `not` nested deeper than [`MAX_NESTING`].
    #[error("expression nested more than {limit} levels deep at column {column}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        column: usize,
    },
    /// The parser needed one thing and found another (or the end).
    #[error("{}", expected_message(.expected, .after.as_deref(), .found.as_deref(), *.column))]
    Expected {
        /// What was needed, in words (e.g. `an operator`).
        expected: String,
        /// The token it should have followed, if any.
        after: Option<String>,
        /// The token found instead; `None` at the end of the expression.
        found: Option<String>,
        /// Where the needed thing should have been.
        column: usize,
    },
}

fn expected_message(
    expected: &str,
    after: Option<&str>,
    found: Option<&str>,
    column: usize,
) -> String {
    let mut s = format!("expected {expected}");
    if let Some(a) = after {
        s.push_str(&format!(" after \"{a}\""));
    }
    s.push_str(&format!(" at column {column}"));
    if let Some(f) = found {
        s.push_str(&format!(", found \"{f}\""));
    }
    s
}

impl QueryError {
    /// The column (from 1) the error points at, when there is one.
    pub fn column(&self) -> Option<usize> {
        match self {
            QueryError::Empty | QueryError::TooLong { .. } => None,
            QueryError::UnexpectedCharacter { column, .. }
            | QueryError::UnterminatedQuote { column }
            | QueryError::UnknownSubject { column, .. }
            | QueryError::TooDeep { column, .. }
            | QueryError::Expected { column, .. } => Some(*column),
        }
    }
}

/// What an expression tests on a container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:NAME`: a built-in (`ecs.cpu-architecture`, `ecs.os-type`,
    /// `ecs.instance-type`, ...) or custom attribute.
    Attribute(String),
    /// `ec2InstanceId` (in orc: the container instance id).
    InstanceId,
    /// `runningTasksCount`.
    RunningTasksCount,
    /// `task:group`: true when any task group on the instance satisfies the
    /// test (negated operators: when none does).
    TaskGroup,
    /// `registeredAt` (ISO-8601 text, compared as text).
    RegisteredAt,
    /// `agentVersion`.
    AgentVersion,
    /// `agentConnected` (`true` / `false`).
    AgentConnected,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::InstanceId => f.write_str("ec2InstanceId"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
            Subject::TaskGroup => f.write_str("task:group"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::AgentConnected => f.write_str("agentConnected"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `==` / `equals`.
    Equals,
    /// `!=` / `not_equals`.
    NotEquals,
    /// `>` / `greater_than`.
    GreaterThan,
    /// `>=` / `greater_than_equal`.
    GreaterThanEqual,
    /// `<` / `less_than`.
    LessThan,
    /// `<=` / `less_than_equal`.
    LessThanEqual,
    /// `exists`.
    Exists,
    /// `!exists` / `not_exists`.
    NotExists,
    /// `in [a, b]`.
    In,
    /// `!in` / `not_in [a, b]`.
    NotIn,
    /// `=~` / `~=` / `matches`: wildcard pattern, `*` is any run of characters.
    Matches,
    /// `!~` / `not_matches`.
    NotMatches,
}

impl Operator {
    fn from_token(s: &str) -> Option<Operator> {
        let op = match s {
            "==" => Operator::Equals,
            "!=" => Operator::NotEquals,
            ">" => Operator::GreaterThan,
            ">=" => Operator::GreaterThanEqual,
            "<" => Operator::LessThan,
            "<=" => Operator::LessThanEqual,
            "!exists" => Operator::NotExists,
            "!in" => Operator::NotIn,
            "=~" | "~=" => Operator::Matches,
            "!~" => Operator::NotMatches,
            _ => match s.to_ascii_lowercase().as_str() {
                "equals" => Operator::Equals,
                "not_equals" => Operator::NotEquals,
                "greater_than" => Operator::GreaterThan,
                "greater_than_equal" => Operator::GreaterThanEqual,
                "less_than" => Operator::LessThan,
                "less_than_equal" => Operator::LessThanEqual,
                "exists" => Operator::Exists,
                "not_exists" => Operator::NotExists,
                "in" => Operator::In,
                "not_in" => Operator::NotIn,
                "matches" => Operator::Matches,
                "not_matches" => Operator::NotMatches,
                _ => return None,
            },
        };
        Some(op)
    }

    /// The canonical spelling used when printing an expression.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "==",
            Operator::NotEquals => "!=",
            Operator::GreaterThan => ">",
            Operator::GreaterThanEqual => ">=",
            Operator::LessThan => "<",
            Operator::LessThanEqual => "<=",
            Operator::Exists => "exists",
            Operator::NotExists => "not_exists",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Matches => "=~",
            Operator::NotMatches => "!~",
        }
    }

    /// The positive form of a negated operator, or `None` if not negated.
    pub(crate) fn positive(self) -> Option<Operator> {
        match self {
            Operator::NotEquals => Some(Operator::Equals),
            Operator::NotExists => Some(Operator::Exists),
            Operator::NotIn => Some(Operator::In),
            Operator::NotMatches => Some(Operator::Matches),
            _ => None,
        }
    }
}

/// One literal value on the right of an operator; numbers are recognised
/// once at parse time.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The value as written (quotes removed).
    pub text: String,
    pub(crate) number: Option<f64>,
}

impl Value {
    /// Wraps a literal.
    pub fn new(text: impl Into<String>) -> Value {
        let text = text.into();
        let number = parse_number(&text);
        Value { text, number }
    }
}

pub(crate) fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    /// `exists` / `not_exists` take none.
    None,
    /// A single value.
    Single(Value),
    /// A list for `in` / `not_in`.
    List(Vec<Value>),
}

/// A parsed cluster query expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    /// `subject operator [argument]`.
    Compare {
        /// What is tested.
        subject: Subject,
        /// How.
        operator: Operator,
        /// Against what.
        argument: Argument,
    },
    /// `a and b` / `a && b`.
    And(Box<Expression>, Box<Expression>),
    /// `a or b` / `a || b`.
    Or(Box<Expression>, Box<Expression>),
    /// `not a` / `!a`.
    Not(Box<Expression>),
}

/// The facts about a container instance that expressions can test.
/// Parses a cluster query expression.
pub fn parse(expr: &str) -> Result<Expression, QueryError> {
    let length = expr.chars().count();
    if length > MAX_EXPRESSION_CHARS {
        return Err(QueryError::TooLong {
            length,
            limit: MAX_EXPRESSION_CHARS,
        });
    }
    let tokens = tokenize(expr)?;
    if tokens.is_empty() {
        return Err(QueryError::Empty);
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        end_column: length + 1,
        depth: 0,
    };
    let expression = parser.parse_or()?;
    if let Some(tok) = parser.peek() {
        return Err(QueryError::Expected {
            expected: "\"and\", \"or\" or the end of the expression".to_string(),
            after: parser.previous_text(),
            found: Some(tok.text.clone()),
            column: tok.column,
        });
    }
    Ok(expression)
}

impl FromStr for Expression {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}
// ---------------------------------------------------------------- display

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "not_in",
    "exists",
    "not_exists",
    "equals",
    "not_equals",
    "matches",
    "not_matches",
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
];

fn is_bare_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '*' | ':' | '+')
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = !self.text.is_empty()
            && self.text.chars().all(is_bare_char)
            && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(&self.text));
        if bare {
            return f.write_str(&self.text);
        }
        f.write_str("\"")?;
        for c in self.text.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Expression {
    /// Prints a canonical form that parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expression::Compare {
                subject,
                operator,
                argument,
            } => {
                write!(f, "{subject} {}", operator.as_str())?;
                match argument {
                    Argument::None => Ok(()),
                    Argument::Single(v) => write!(f, " {v}"),
                    Argument::List(vs) => {
                        f.write_str(" [")?;
                        for (i, v) in vs.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            write!(f, "{v}")?;
                        }
                        f.write_str("]")
                    }
                }
            }
            Expression::And(a, b) => {
                write_operand(f, a, matches!(**a, Expression::Or(..)))?;
                f.write_str(" and ")?;
                write_operand(
                    f,
                    b,
                    matches!(**b, Expression::Or(..) | Expression::And(..)),
                )
            }
            Expression::Or(a, b) => {
                write_operand(f, a, false)?;
                f.write_str(" or ")?;
                write_operand(f, b, matches!(**b, Expression::Or(..)))
            }
            Expression::Not(a) => {
                f.write_str("not ")?;
                write_operand(
                    f,
                    a,
                    matches!(**a, Expression::Or(..) | Expression::And(..)),
                )
            }
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expression, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

impl serde::Serialize for Expression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Expression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Quoted,
    Symbol,
    Open(char),
    Close(char),
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    column: usize,
}

fn tokenize(input: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        let mut push = |kind: Kind, text: String| tokens.push(Token { kind, text, column });
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '(' | '[') {
            push(Kind::Open(c), c.to_string());
            i += 1;
        } else if matches!(c, ')' | ']') {
            push(Kind::Close(c), c.to_string());
            i += 1;
        } else if c == ',' {
            push(Kind::Comma, ",".to_string());
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut text = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(QueryError::UnterminatedQuote { column }),
                    Some(&'\\') if matches!(chars.get(j + 1), Some(&q) if q == c || q == '\\') => {
                        text.push(chars[j + 1]);
                        j += 2;
                    }
                    Some(&q) if q == c => break,
                    Some(&other) => {
                        text.push(other);
                        j += 1;
                    }
                }
            }
            push(Kind::Quoted, text);
            i = j + 1;
        } else if c == '!' {
            // `!in` and `!exists` are single operators; `!=` and `!~` too.
            let word_end = |len: usize| chars.get(i + 1 + len).is_none_or(|&c| !is_bare_char(c));
            let rest_starts = |w: &str| {
                w.chars().enumerate().all(|(k, wc)| {
                    chars
                        .get(i + 1 + k)
                        .is_some_and(|c| c.eq_ignore_ascii_case(&wc))
                })
            };
            if matches!(next, Some('=') | Some('~')) {
                push(Kind::Symbol, format!("!{}", next.unwrap_or('=')));
                i += 2;
            } else if rest_starts("in") && word_end(2) {
                push(Kind::Symbol, "!in".to_string());
                i += 3;
            } else if rest_starts("exists") && word_end(6) {
                push(Kind::Symbol, "!exists".to_string());
                i += 7;
            } else {
                push(Kind::Symbol, "!".to_string());
                i += 1;
            }
        } else if let Some(sym) = two_char_symbol(c, next) {
            push(Kind::Symbol, sym.to_string());
            i += 2;
        } else if c == '>' || c == '<' {
            push(Kind::Symbol, c.to_string());
            i += 1;
        } else if is_bare_char(c) {
            let start = i;
            while i < chars.len() && is_bare_char(chars[i]) {
                i += 1;
            }
            push(Kind::Word, chars[start..i].iter().collect());
        } else {
            return Err(QueryError::UnexpectedCharacter { ch: c, column });
        }
    }
    Ok(tokens)
}

fn two_char_symbol(c: char, next: Option<char>) -> Option<&'static str> {
    Some(match (c, next?) {
        ('=', '=') => "==",
        ('=', '~') => "=~",
        ('~', '=') => "~=",
        ('>', '=') => ">=",
        ('<', '=') => "<=",
        ('&', '&') => "&&",
        ('|', '|') => "||",
        _ => return None,
    })
}

// ---------------------------------------------------------------- parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn previous_text(&self) -> Option<String> {
        self.pos
            .checked_sub(1)
            .and_then(|p| self.tokens.get(p))
            .map(|t| t.text.clone())
    }

    fn column_here(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn expected(&self, expected: &str) -> QueryError {
        QueryError::Expected {
            expected: expected.to_string(),
            after: self.previous_text(),
            found: self.peek().map(|t| t.text.clone()),
            column: self.column_here(),
        }
    }

    fn at_keyword(&self, word: &str, symbol: &str) -> bool {
        self.peek().is_some_and(|t| {
            (t.kind == Kind::Word && t.text.eq_ignore_ascii_case(word))
                || (t.kind == Kind::Symbol && t.text == symbol)
        })
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(QueryError::TooDeep {
                limit: MAX_NESTING,
                column: self.column_here(),
            });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expression, QueryError> {
        let mut lhs = self.parse_and()?;
        while self.at_keyword("or", "||") {
            self.pos += 1;
            let rhs = self.parse_and()?;
            lhs = Expression::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn parse_and(&mut self) -> Result<Expression, QueryError> {
        let mut lhs = self.parse_unary()?;
        while self.at_keyword("and", "&&") {
            self.pos += 1;
            let rhs = self.parse_unary()?;
            lhs = Expression::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self) -> Result<Expression, QueryError> {
        if self.at_keyword("not", "!") {
            self.pos += 1;
            self.enter()?;
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Expression::Not(Box::new(inner)));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expression, QueryError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.expected("a subject such as attribute:NAME"));
        };
        match tok.kind {
            Kind::Open('(') => {
                self.pos += 1;
                self.enter()?;
                let inner = self.parse_or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(t) if t.kind == Kind::Close(')') => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err(self.expected(&format!(
                        "\")\" (to close the \"(\" at column {})",
                        tok.column
                    ))),
                }
            }
            Kind::Word => {
                let subject = parse_subject(&tok)?;
                self.pos += 1;
                self.parse_comparison(subject)
            }
            _ => Err(self.expected("a subject such as attribute:NAME")),
        }
    }

    fn parse_comparison(&mut self, subject: Subject) -> Result<Expression, QueryError> {
        let operator = match self.peek() {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Symbol) => Operator::from_token(&t.text),
            _ => None,
        };
        let Some(operator) = operator else {
            return Err(self.expected("an operator"));
        };
        self.pos += 1;
        let argument = match operator {
            Operator::Exists | Operator::NotExists => Argument::None,
            Operator::In | Operator::NotIn => Argument::List(self.parse_list()?),
            _ => Argument::Single(self.parse_value("a value")?),
        };
        Ok(Expression::Compare {
            subject,
            operator,
            argument,
        })
    }

    fn parse_value(&mut self, what: &str) -> Result<Value, QueryError> {
        match self.peek() {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => {
                let v = Value::new(t.text.clone());
                self.pos += 1;
                Ok(v)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn parse_list(&mut self) -> Result<Vec<Value>, QueryError> {
        let close = match self.peek().map(|t| t.kind) {
            Some(Kind::Open('[')) => ']',
            Some(Kind::Open('(')) => ')',
            _ => return Err(self.expected("a list such as [a, b]")),
        };
        self.pos += 1;
        let mut values = vec![self.parse_value("a value in the list")?];
        loop {
            match self.peek().map(|t| t.kind) {
                Some(Kind::Comma) => {
                    self.pos += 1;
                    values.push(self.parse_value("a value in the list")?);
                }
                Some(Kind::Close(c)) if c == close => {
                    self.pos += 1;
                    return Ok(values);
                }
                _ => return Err(self.expected(&format!("\",\" or \"{close}\""))),
            }
        }
    }
}

fn parse_subject(tok: &Token) -> Result<Subject, QueryError> {
    let text = tok.text.as_str();
    if let Some((prefix, name)) = text.split_once(':') {
        if prefix.eq_ignore_ascii_case("attribute") && !name.is_empty() {
            return Ok(Subject::Attribute(name.to_string()));
        }
        if prefix.eq_ignore_ascii_case("task") && name.eq_ignore_ascii_case("group") {
            return Ok(Subject::TaskGroup);
        }
    }
    let subject = match text.to_ascii_lowercase().as_str() {
        "ec2instanceid" | "instanceid" => Subject::InstanceId,
        "runningtaskscount" => Subject::RunningTasksCount,
        "registeredat" => Subject::RegisteredAt,
        "agentversion" => Subject::AgentVersion,
        "agentconnected" => Subject::AgentConnected,
        _ => {
            return Err(QueryError::UnknownSubject {
                subject: tok.text.clone(),
                column: tok.column,
            });
        }
    };
    Ok(subject)
}
