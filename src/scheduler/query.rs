//! The ECS cluster query language used by `memberOf` placement constraints
//! and instance filters: tokenizer, parser (into an [`Expression`] tree) and
//! evaluator against anything implementing [`QuerySubject`].
//!
//! This module owns only the language. It must do no I/O: no files, no
//! network, no clock, no logging. Errors are values ([`QueryError`]) and no
//! input, however malformed, may make it panic.

use std::cmp::Ordering;
use std::collections::BTreeMap;
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
    fn positive(self) -> Option<Operator> {
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
    number: Option<f64>,
}

impl Value {
    /// Wraps a literal.
    pub fn new(text: impl Into<String>) -> Value {
        let text = text.into();
        let number = parse_number(&text);
        Value { text, number }
    }
}

fn parse_number(s: &str) -> Option<f64> {
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
pub trait QuerySubject {
    /// The value of attribute `name`, if the instance has it.
    fn attribute(&self, name: &str) -> Option<&str>;
    /// The container instance id (`ec2InstanceId`).
    fn instance_id(&self) -> &str;
    /// Number of running (and pending) tasks.
    fn running_tasks_count(&self) -> u32;
    /// Calls `f` on each task group with at least one task on the instance
    /// until it returns true; returns whether it did.
    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool;
    /// Registration time as ISO-8601 text, if known.
    fn registered_at(&self) -> Option<&str> {
        None
    }
    /// Agent version, if known.
    fn agent_version(&self) -> Option<&str> {
        None
    }
    /// Whether the agent is connected, if known.
    fn agent_connected(&self) -> Option<bool> {
        None
    }
}

/// A plain-data [`QuerySubject`], handy for filters and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Container instance id.
    pub instance_id: String,
    /// Built-in and custom attributes.
    pub attributes: BTreeMap<String, String>,
    /// Running plus pending tasks.
    pub running_tasks_count: u32,
    /// Task count per task group (`service:web`, `family:web`, ...).
    pub task_groups: BTreeMap<String, u32>,
    /// Registration time, ISO-8601.
    pub registered_at: Option<String>,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Agent connection state.
    pub agent_connected: Option<bool>,
}

impl QuerySubject for InstanceFacts {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
    fn instance_id(&self) -> &str {
        &self.instance_id
    }
    fn running_tasks_count(&self) -> u32 {
        self.running_tasks_count
    }
    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.task_groups
            .iter()
            .any(|(group, &count)| count > 0 && f(group))
    }
    fn registered_at(&self) -> Option<&str> {
        self.registered_at.as_deref()
    }
    fn agent_version(&self) -> Option<&str> {
        self.agent_version.as_deref()
    }
    fn agent_connected(&self) -> Option<bool> {
        self.agent_connected
    }
}

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

impl Expression {
    /// Whether `subject` satisfies the expression.
    pub fn matches(&self, subject: &dyn QuerySubject) -> bool {
        match self {
            Expression::And(a, b) => a.matches(subject) && b.matches(subject),
            Expression::Or(a, b) => a.matches(subject) || b.matches(subject),
            Expression::Not(a) => !a.matches(subject),
            Expression::Compare {
                subject: field,
                operator,
                argument,
            } => compare(field, *operator, argument, subject),
        }
    }
}

fn compare(field: &Subject, op: Operator, arg: &Argument, s: &dyn QuerySubject) -> bool {
    if let Some(positive) = op.positive() {
        return !compare(field, positive, arg, s);
    }
    match field {
        Subject::TaskGroup => s.any_task_group(&mut |group| test_value(op, Some(group), arg)),
        Subject::Attribute(name) => test_value(op, s.attribute(name), arg),
        Subject::InstanceId => test_value(op, Some(s.instance_id()), arg),
        Subject::RunningTasksCount => {
            let n = s.running_tasks_count().to_string();
            test_value(op, Some(&n), arg)
        }
        Subject::RegisteredAt => test_value(op, s.registered_at(), arg),
        Subject::AgentVersion => test_value(op, s.agent_version(), arg),
        Subject::AgentConnected => {
            let v = s
                .agent_connected()
                .map(|c| if c { "true" } else { "false" });
            test_value(op, v, arg)
        }
    }
}

/// Applies a positive operator to one value (`None`: missing).
fn test_value(op: Operator, value: Option<&str>, arg: &Argument) -> bool {
    let Some(value) = value else {
        return false;
    };
    match (op, arg) {
        (Operator::Exists, _) => true,
        (Operator::Equals, Argument::Single(v)) => values_equal(value, v),
        (Operator::In, Argument::List(vs)) => vs.iter().any(|v| values_equal(value, v)),
        (Operator::Matches, Argument::Single(v)) => wildcard_match(&v.text, value),
        (Operator::GreaterThan, Argument::Single(v)) => order(value, v) == Ordering::Greater,
        (Operator::GreaterThanEqual, Argument::Single(v)) => order(value, v) != Ordering::Less,
        (Operator::LessThan, Argument::Single(v)) => order(value, v) == Ordering::Less,
        (Operator::LessThanEqual, Argument::Single(v)) => order(value, v) != Ordering::Greater,
        _ => false,
    }
}

fn values_equal(value: &str, arg: &Value) -> bool {
    if value == arg.text {
        return true;
    }
    match (arg.number, parse_number(value)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Numeric when both sides are numbers, text order otherwise.
fn order(value: &str, arg: &Value) -> Ordering {
    match (parse_number(value), arg.number) {
        (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        _ => value.cmp(arg.text.as_str()),
    }
}

/// Wildcard match where `*` stands for any run of characters (possibly
/// empty) and everything else is literal. Linear-time backtracking.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
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

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> InstanceFacts {
        let attributes = [
            ("ecs.cpu-architecture", "arm64"),
            ("ecs.os-type", "linux"),
            ("ecs.instance-type", "pi4b.8gb"),
            ("ecs.availability-zone", "rack-a"),
            ("disk", "ssd"),
            ("gpio", "yes"),
            ("ram_gb", "8"),
            ("note", "hello world"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        InstanceFacts {
            instance_id: "pi-07".to_string(),
            attributes,
            running_tasks_count: 3,
            task_groups: [
                ("service:web".to_string(), 2),
                ("family:batch".to_string(), 1),
                ("service:gone".to_string(), 0),
            ]
            .into_iter()
            .collect(),
            registered_at: Some("2024-05-01T10:00:00Z".to_string()),
            agent_version: Some("1.4.0".to_string()),
            agent_connected: Some(true),
        }
    }

    #[test]
    fn evaluates_every_operator() {
        let f = facts();
        let table: &[(&str, bool)] = &[
            // equals / not_equals
            ("attribute:ecs.cpu-architecture == arm64", true),
            ("attribute:ecs.cpu-architecture equals arm64", true),
            ("attribute:ecs.cpu-architecture == amd64", false),
            ("attribute:ecs.cpu-architecture != amd64", true),
            ("attribute:ecs.cpu-architecture not_equals arm64", false),
            ("attribute:missing != x", true),
            ("attribute:missing == x", false),
            ("attribute:ram_gb == 8.0", true),
            // ordering, numeric when both are numbers
            ("attribute:ram_gb > 4", true),
            ("attribute:ram_gb > 10", false),
            ("attribute:ram_gb >= 8", true),
            ("attribute:ram_gb greater_than_equal 9", false),
            ("attribute:ram_gb < 10", true),
            ("attribute:ram_gb less_than 8", false),
            ("attribute:ram_gb <= 8", true),
            ("attribute:ram_gb less_than_equal 7", false),
            ("attribute:ram_gb greater_than 10", false),
            ("attribute:disk > hdd", true),
            ("attribute:missing > 1", false),
            ("runningTasksCount > 2", true),
            ("runningTasksCount < 3", false),
            ("runningTasksCount == 3", true),
            ("registeredAt >= 2024-01-01", true),
            ("registeredAt < 2024-01-01", false),
            // exists
            ("attribute:gpio exists", true),
            ("attribute:camera exists", false),
            ("attribute:camera !exists", true),
            ("attribute:gpio not_exists", false),
            // in
            ("attribute:ecs.cpu-architecture in [arm64, amd64]", true),
            ("attribute:ecs.cpu-architecture in (arm/v7, amd64)", false),
            (
                "attribute:ecs.cpu-architecture not_in [arm/v7, amd64]",
                true,
            ),
            ("attribute:ecs.cpu-architecture !in [arm64]", false),
            ("ec2InstanceId in ['pi-07', \"pi-08\"]", true),
            // matches
            ("attribute:ecs.instance-type =~ pi4b.*", true),
            ("attribute:ecs.instance-type ~= pi5*", false),
            ("attribute:ecs.instance-type matches *8gb", true),
            ("attribute:ecs.instance-type !~ pi4*", false),
            ("attribute:ecs.instance-type not_matches pi5*", true),
            ("ec2InstanceId =~ pi-0*", true),
            ("attribute:note == 'hello world'", true),
            // task:group
            ("task:group == service:web", true),
            ("task:group == service:api", false),
            ("task:group == service:gone", false),
            ("task:group != service:web", false),
            ("task:group =~ family:*", true),
            ("task:group in [service:api, family:batch]", true),
            ("task:group exists", true),
            // others
            ("agentConnected == true", true),
            ("agentVersion >= 1.4.0", true),
        ];
        for (expr, want) in table {
            let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(parsed.matches(&f), *want, "{expr}");
            // The canonical form parses back to the same tree.
            assert_eq!(
                parse(&parsed.to_string()).as_ref(),
                Ok(&parsed),
                "{expr} -> {parsed}"
            );
        }
    }

    #[test]
    fn boolean_operators_precedence_and_parentheses() {
        let f = facts();
        let t = "attribute:disk == ssd";
        let x = "attribute:disk == hdd";
        let table: Vec<(String, bool)> = vec![
            (format!("{t} and {t}"), true),
            (format!("{t} && {x}"), false),
            (format!("{x} or {t}"), true),
            (format!("{x} || {x}"), false),
            (format!("not {t}"), false),
            (format!("!{x}"), true),
            (format!("! ({x})"), true),
            (format!("NOT {x} AND {t}"), true),
            // and binds tighter than or: t or (x and x) = true
            (format!("{t} or {x} and {x}"), true),
            // (t or x) and x = false
            (format!("({t} or {x}) and {x}"), false),
            (format!("{x} and {x} or {t}"), true),
            (format!("{x} and ({x} or {t})"), false),
            (format!("not ({t} and {x})"), true),
            (format!("((({t})))"), true),
        ];
        for (expr, want) in &table {
            let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(parsed.matches(&f), *want, "{expr}");
            assert_eq!(
                parse(&parsed.to_string()).as_ref(),
                Ok(&parsed),
                "{expr} -> {parsed}"
            );
        }
    }

    #[test]
    fn precedence_builds_the_expected_tree() {
        let e = parse("attribute:a exists or attribute:b exists and attribute:c exists").unwrap();
        assert!(matches!(e, Expression::Or(_, ref rhs) if matches!(**rhs, Expression::And(..))));
        assert_eq!(
            e.to_string(),
            "attribute:a exists or attribute:b exists and attribute:c exists"
        );
        let e = parse("(attribute:a exists or attribute:b exists) and attribute:c exists").unwrap();
        assert_eq!(
            e.to_string(),
            "(attribute:a exists or attribute:b exists) and attribute:c exists"
        );
    }

    #[test]
    fn errors_name_position_and_token() {
        let table: &[(&str, &str)] = &[
            ("", "the expression is empty"),
            ("   ", "the expression is empty"),
            (
                "attribute:ecs.cpu-architecture",
                "expected an operator after \"attribute:ecs.cpu-architecture\" at column 31",
            ),
            (
                "attribute:disk ssd",
                "expected an operator after \"attribute:disk\" at column 16, found \"ssd\"",
            ),
            ("attribute:disk ==", "expected a value after \"==\" at column 18"),
            (
                "attribute:disk == ssd and",
                "expected a subject such as attribute:NAME after \"and\" at column 26",
            ),
            (
                "(attribute:disk == ssd",
                "expected \")\" (to close the \"(\" at column 1) after \"ssd\" at column 23",
            ),
            (
                "attribute:disk == ssd)",
                "expected \"and\", \"or\" or the end of the expression after \"ssd\" at column 22, found \")\"",
            ),
            (
                "attribute:disk in ssd",
                "expected a list such as [a, b] after \"in\" at column 19, found \"ssd\"",
            ),
            (
                "attribute:disk in [ssd hdd]",
                "expected \",\" or \"]\" after \"ssd\" at column 24, found \"hdd\"",
            ),
            ("attribute:disk in [ssd,", "expected a value in the list after \",\" at column 24"),
            ("attribute:disk == 'ssd", "unterminated quoted value starting at column 19"),
            ("attribute:disk = ssd", "unexpected character \"=\" at column 16"),
            ("attribute:disk == ssd & x", "unexpected character \"&\" at column 23"),
            ("disk == ssd", "unknown subject \"disk\" at column 1; use attribute:NAME, ec2InstanceId, runningTasksCount, task:group, registeredAt, agentVersion or agentConnected"),
            ("attribute: == x", "unknown subject \"attribute:\" at column 1; use attribute:NAME, ec2InstanceId, runningTasksCount, task:group, registeredAt, agentVersion or agentConnected"),
            ("== x", "expected a subject such as attribute:NAME at column 1, found \"==\""),
        ];
        for (expr, want) in table {
            let err = parse(expr).expect_err(expr);
            assert_eq!(err.to_string(), *want, "{expr}");
        }
        assert_eq!(parse("attribute:disk ssd").unwrap_err().column(), Some(16));
    }

    #[test]
    fn limits_are_errors_not_crashes() {
        let deep = format!("{}attribute:a exists{}", "(".repeat(100), ")".repeat(100));
        assert!(matches!(parse(&deep), Err(QueryError::TooDeep { .. })));
        let nots = format!("{}attribute:a exists", "not ".repeat(200));
        assert!(matches!(parse(&nots), Err(QueryError::TooDeep { .. })));
        let long = format!("attribute:a == {}", "x".repeat(3000));
        assert!(matches!(parse(&long), Err(QueryError::TooLong { .. })));
    }

    #[test]
    fn never_panics_on_garbage_or_truncation() {
        let samples = [
            "(attribute:ecs.cpu-architecture in [arm64, 'amd64']) and not task:group == service:web || runningTasksCount <= 3 && attribute:x !exists or ec2InstanceId !~ \"pi-*\"",
            "!!!!((([[[,,,]]])))==!=~=<>=&&||'\"\\",
            "ünïcödé == ☃ and attribute:ß =~ *ß*",
        ];
        let f = facts();
        for s in samples {
            let chars: Vec<char> = s.chars().collect();
            for end in 0..=chars.len() {
                let prefix: String = chars[..end].iter().collect();
                if let Ok(e) = parse(&prefix) {
                    let _ = e.matches(&f);
                    assert_eq!(parse(&e.to_string()).as_ref(), Ok(&e), "{prefix}");
                }
                let suffix: String = chars[end..].iter().collect();
                let _ = parse(&suffix);
            }
        }
    }

    #[test]
    fn wildcard_semantics() {
        let table = [
            ("*", "", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("*b*", "abc", true),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a**b", "ab", true),
            ("t2.*", "t2.micro", true),
            ("t2.*", "t3.micro", false),
        ];
        for (p, t, want) in table {
            assert_eq!(wildcard_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn serde_round_trip_as_string() {
        let e = parse("attribute:disk in [ssd, nvme] and not task:group == service:web").unwrap();
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            "\"attribute:disk in [ssd, nvme] and not task:group == service:web\""
        );
        let back: Expression = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let err = serde_json::from_str::<Expression>("\"attribute:disk\"").unwrap_err();
        assert!(err.to_string().contains("expected an operator"), "{err}");
    }
}
