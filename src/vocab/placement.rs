//! ECS placement specs as users write them: strategies (binpack, spread,
//! random) and constraints (distinctInstance, memberOf), their limits, and
//! the parsers for their JSON and CLI shorthand forms. Deciding where a task
//! goes is `scheduler::placement`; this module is only the vocabulary that
//! services, run-task and the CLI share.
//!
//! Plain data and pure parsing: no I/O, no clock, no logging.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::vocab::query::{self, Expression, QueryError};

/// Most strategies ECS lets you chain.
pub const MAX_STRATEGIES: usize = 5;

/// Most constraints ECS accepts for one task or service.
pub const MAX_CONSTRAINTS: usize = 10;

/// Resource a binpack strategy packs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Remaining CPU units.
    Cpu,
    /// Remaining memory.
    Memory,
}

/// What a spread strategy spreads over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpreadField {
    /// Each instance (`instanceId` or `host`).
    InstanceId,
    /// Each distinct value of an attribute (`attribute:NAME`).
    Attribute(String),
}

/// One placement strategy; a list of them is applied as successive
/// tie-breakers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawStrategy", into = "RawStrategy")]
pub enum PlacementStrategy {
    /// Prefer the instance with the least of the field left.
    Binpack(Field),
    /// Prefer the instance (or attribute value) with the fewest tasks of the
    /// group.
    Spread(SpreadField),
    /// Pick uniformly at random (seeded).
    Random,
}

/// One placement constraint; all of them must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawConstraint", into = "RawConstraint")]
pub enum PlacementConstraint {
    /// At most one task of the group per instance.
    DistinctInstance,
    /// Only instances matching the cluster query expression.
    MemberOf(Expression),
}

/// Errors from parsing or validating strategies and constraints.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// More than [`MAX_STRATEGIES`] strategies.
    #[error("at most {max} placement strategies can be chained, got {count}")]
    TooManyStrategies {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_CONSTRAINTS`] constraints.
    #[error("at most {max} placement constraints can be given, got {count}")]
    TooManyConstraints {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `type` is not binpack, spread or random.
    #[error("unknown placement strategy type \"{found}\"; use binpack, spread or random")]
    UnknownStrategyType {
        /// The type given.
        found: String,
    },
    /// binpack or spread without a field.
    #[error("the {strategy} strategy needs a field")]
    MissingField {
        /// binpack or spread.
        strategy: String,
    },
    /// binpack on something other than cpu or memory.
    #[error("the binpack field must be cpu or memory, got \"{found}\"")]
    InvalidBinpackField {
        /// The field given.
        found: String,
    },
    /// spread on something other than instanceId, host or attribute:NAME.
    #[error("the spread field must be instanceId, host or attribute:NAME, got \"{found}\"")]
    InvalidSpreadField {
        /// The field given.
        found: String,
    },
    /// `type` is not distinctInstance or memberOf.
    #[error("unknown placement constraint type \"{found}\"; use distinctInstance or memberOf")]
    UnknownConstraintType {
        /// The type given.
        found: String,
    },
    /// memberOf without an expression.
    #[error("the memberOf constraint needs an expression")]
    MissingExpression,
    /// distinctInstance with an expression.
    #[error("the distinctInstance constraint takes no expression")]
    UnexpectedExpression,
    /// The memberOf expression does not parse.
    #[error("invalid memberOf expression: {0}")]
    Expression(#[from] QueryError),
    /// The JSON form does not parse.
    #[error("invalid placement JSON: {0}")]
    Json(String),
    /// The shorthand form does not parse.
    #[error("invalid shorthand \"{item}\": {message}")]
    Shorthand {
        /// The offending part of the input.
        item: String,
        /// What is wrong with it.
        message: String,
    },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Cpu => "cpu",
            Field::Memory => "memory",
        })
    }
}

impl fmt::Display for SpreadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpreadField::InstanceId => f.write_str("instanceId"),
            SpreadField::Attribute(name) => write!(f, "attribute:{name}"),
        }
    }
}

impl fmt::Display for PlacementStrategy {
    /// `binpack(memory)`, `spread(attribute:ecs.availability-zone)`, `random`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementStrategy::Binpack(field) => write!(f, "binpack({field})"),
            PlacementStrategy::Spread(field) => write!(f, "spread({field})"),
            PlacementStrategy::Random => f.write_str("random"),
        }
    }
}

impl fmt::Display for PlacementConstraint {
    /// `distinctInstance` or `memberOf(EXPRESSION)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementConstraint::DistinctInstance => f.write_str("distinctInstance"),
            PlacementConstraint::MemberOf(e) => write!(f, "memberOf({e})"),
        }
    }
}

impl PlacementStrategy {
    /// Builds a strategy from ECS's `type` and `field` strings.
    pub fn from_parts(kind: &str, field: Option<&str>) -> Result<Self, PlacementError> {
        let field = field.map(str::trim).filter(|f| !f.is_empty());
        match kind.trim().to_ascii_lowercase().as_str() {
            "random" => Ok(PlacementStrategy::Random),
            "binpack" => {
                let field = field.ok_or_else(|| PlacementError::MissingField {
                    strategy: "binpack".to_string(),
                })?;
                match field.to_ascii_lowercase().as_str() {
                    "cpu" => Ok(PlacementStrategy::Binpack(Field::Cpu)),
                    "memory" => Ok(PlacementStrategy::Binpack(Field::Memory)),
                    _ => Err(PlacementError::InvalidBinpackField {
                        found: field.to_string(),
                    }),
                }
            }
            "spread" => {
                let field = field.ok_or_else(|| PlacementError::MissingField {
                    strategy: "spread".to_string(),
                })?;
                if field.eq_ignore_ascii_case("instanceId") || field.eq_ignore_ascii_case("host") {
                    return Ok(PlacementStrategy::Spread(SpreadField::InstanceId));
                }
                match field.split_once(':') {
                    Some((prefix, name))
                        if prefix.eq_ignore_ascii_case("attribute") && !name.is_empty() =>
                    {
                        Ok(PlacementStrategy::Spread(SpreadField::Attribute(
                            name.to_string(),
                        )))
                    }
                    _ => Err(PlacementError::InvalidSpreadField {
                        found: field.to_string(),
                    }),
                }
            }
            _ => Err(PlacementError::UnknownStrategyType {
                found: kind.to_string(),
            }),
        }
    }
}

impl PlacementConstraint {
    /// Builds a constraint from ECS's `type` and `expression` strings.
    pub fn from_parts(kind: &str, expression: Option<&str>) -> Result<Self, PlacementError> {
        let expression = expression.filter(|e| !e.trim().is_empty());
        match kind.trim().to_ascii_lowercase().as_str() {
            "distinctinstance" => match expression {
                None => Ok(PlacementConstraint::DistinctInstance),
                Some(_) => Err(PlacementError::UnexpectedExpression),
            },
            "memberof" => {
                let text = expression.ok_or(PlacementError::MissingExpression)?;
                Ok(PlacementConstraint::MemberOf(query::parse(text)?))
            }
            _ => Err(PlacementError::UnknownConstraintType {
                found: kind.to_string(),
            }),
        }
    }
}

/// ECS's JSON shape for a strategy.
#[derive(Serialize, Deserialize)]
struct RawStrategy {
    #[serde(rename = "type", alias = "Type")]
    kind: String,
    #[serde(default, alias = "Field", skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl TryFrom<RawStrategy> for PlacementStrategy {
    type Error = PlacementError;
    fn try_from(raw: RawStrategy) -> Result<Self, Self::Error> {
        PlacementStrategy::from_parts(&raw.kind, raw.field.as_deref())
    }
}

impl From<PlacementStrategy> for RawStrategy {
    fn from(s: PlacementStrategy) -> Self {
        let (kind, field) = match s {
            PlacementStrategy::Binpack(f) => ("binpack", Some(f.to_string())),
            PlacementStrategy::Spread(f) => ("spread", Some(f.to_string())),
            PlacementStrategy::Random => ("random", None),
        };
        RawStrategy {
            kind: kind.to_string(),
            field,
        }
    }
}

/// ECS's JSON shape for a constraint.
#[derive(Serialize, Deserialize)]
struct RawConstraint {
    #[serde(rename = "type", alias = "Type")]
    kind: String,
    #[serde(default, alias = "Expression", skip_serializing_if = "Option::is_none")]
    expression: Option<String>,
}

impl TryFrom<RawConstraint> for PlacementConstraint {
    type Error = PlacementError;
    fn try_from(raw: RawConstraint) -> Result<Self, Self::Error> {
        PlacementConstraint::from_parts(&raw.kind, raw.expression.as_deref())
    }
}

impl From<PlacementConstraint> for RawConstraint {
    fn from(c: PlacementConstraint) -> Self {
        match c {
            PlacementConstraint::DistinctInstance => RawConstraint {
                kind: "distinctInstance".to_string(),
                expression: None,
            },
            PlacementConstraint::MemberOf(e) => RawConstraint {
                kind: "memberOf".to_string(),
                expression: Some(e.to_string()),
            },
        }
    }
}

/// ECS's default for standalone tasks (`run-task`): random.
pub fn default_run_task_strategies() -> Vec<PlacementStrategy> {
    vec![PlacementStrategy::Random]
}

/// ECS's default for services: spread over availability zone, then over
/// instances.
pub fn default_service_strategies() -> Vec<PlacementStrategy> {
    vec![
        PlacementStrategy::Spread(SpreadField::Attribute("ecs.availability-zone".to_string())),
        PlacementStrategy::Spread(SpreadField::InstanceId),
    ]
}

/// Rejects more than [`MAX_STRATEGIES`] strategies.
pub fn validate_strategies(strategies: &[PlacementStrategy]) -> Result<(), PlacementError> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(PlacementError::TooManyStrategies {
            count: strategies.len(),
            max: MAX_STRATEGIES,
        });
    }
    Ok(())
}

/// Rejects more than [`MAX_CONSTRAINTS`] constraints.
pub fn validate_constraints(constraints: &[PlacementConstraint]) -> Result<(), PlacementError> {
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(PlacementError::TooManyConstraints {
            count: constraints.len(),
            max: MAX_CONSTRAINTS,
        });
    }
    Ok(())
}

/// Parses strategies in either ECS form: JSON (`[{"type":"binpack",
/// "field":"memory"}]`, or a single object) when the input starts with `[`
/// or `{`, CLI shorthand (`type=binpack,field=memory type=random`)
/// otherwise. Empty input gives an empty list.
pub fn parse_strategies(input: &str) -> Result<Vec<PlacementStrategy>, PlacementError> {
    let strategies = if looks_like_json(input) {
        parse_json_list(input)?
    } else {
        shorthand_items(input)?
            .into_iter()
            .map(|item| {
                let fields = item.fields(&["type", "field"])?;
                PlacementStrategy::from_parts(
                    item.required(&fields[0], "type")?,
                    fields[1].as_deref(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    validate_strategies(&strategies)?;
    Ok(strategies)
}

/// Parses constraints in either ECS form: JSON (`[{"type":"memberOf",
/// "expression":"attribute:disk == ssd"}]`) or CLI shorthand
/// (`type=distinctInstance type=memberOf,expression="attribute:disk == ssd"`).
pub fn parse_constraints(input: &str) -> Result<Vec<PlacementConstraint>, PlacementError> {
    let constraints = if looks_like_json(input) {
        parse_json_list(input)?
    } else {
        shorthand_items(input)?
            .into_iter()
            .map(|item| {
                let fields = item.fields(&["type", "expression"])?;
                PlacementConstraint::from_parts(
                    item.required(&fields[0], "type")?,
                    fields[1].as_deref(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    validate_constraints(&constraints)?;
    Ok(constraints)
}

fn looks_like_json(input: &str) -> bool {
    matches!(input.trim_start().chars().next(), Some('[') | Some('{'))
}

fn parse_json_list<T: serde::de::DeserializeOwned>(input: &str) -> Result<Vec<T>, PlacementError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    let trimmed = input.trim_start();
    let parsed = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<T>>(trimmed).map(OneOrMany::Many)
    } else {
        serde_json::from_str::<T>(trimmed).map(OneOrMany::One)
    };
    match parsed.map_err(|e| PlacementError::Json(e.to_string()))? {
        OneOrMany::Many(v) => Ok(v),
        OneOrMany::One(x) => Ok(vec![x]),
    }
}

/// One shorthand item: `key=value` pairs, values unquoted.
struct ShorthandItem {
    text: String,
    pairs: Vec<(String, String)>,
}

impl ShorthandItem {
    fn error(&self, message: impl Into<String>) -> PlacementError {
        PlacementError::Shorthand {
            item: self.text.clone(),
            message: message.into(),
        }
    }

    /// Values of the allowed keys, in order; unknown or repeated keys are
    /// errors.
    fn fields(&self, allowed: &[&str]) -> Result<Vec<Option<String>>, PlacementError> {
        let mut out = vec![None; allowed.len()];
        for (key, value) in &self.pairs {
            let Some(i) = allowed.iter().position(|a| a.eq_ignore_ascii_case(key)) else {
                return Err(self.error(format!(
                    "unknown key \"{key}\"; expected {}",
                    allowed.join(" or ")
                )));
            };
            if out[i].replace(value.clone()).is_some() {
                return Err(self.error(format!("key \"{key}\" is given twice")));
            }
        }
        Ok(out)
    }

    fn required<'a>(
        &self,
        value: &'a Option<String>,
        key: &str,
    ) -> Result<&'a str, PlacementError> {
        value
            .as_deref()
            .ok_or_else(|| self.error(format!("missing \"{key}=\"")))
    }
}

/// Splits `s` at `sep` characters that are outside quotes and brackets.
fn split_outside(s: &str, is_sep: impl Fn(char) -> bool) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    for c in s.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                current.push(c);
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                current.push(c);
            }
            None if matches!(c, '[' | '(') => {
                depth += 1;
                current.push(c);
            }
            None if matches!(c, ']' | ')') => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            None if depth == 0 && is_sep(c) => {
                parts.push(std::mem::take(&mut current));
            }
            None => current.push(c),
        }
    }
    parts.push(current);
    parts.retain(|p| !p.trim().is_empty());
    parts
}

/// Does this whitespace-separated chunk begin a new item (`type=`, `field=`
/// or `expression=`)? Chunks that do not continue the previous value, so an
/// unquoted expression with spaces still works.
fn starts_item(chunk: &str) -> bool {
    ["type=", "field=", "expression="].iter().any(|k| {
        chunk.len() >= k.len()
            && chunk.is_char_boundary(k.len())
            && chunk[..k.len()].eq_ignore_ascii_case(k)
            && !chunk[k.len()..].starts_with('=')
    })
}

fn shorthand_items(input: &str) -> Result<Vec<ShorthandItem>, PlacementError> {
    let mut texts: Vec<String> = Vec::new();
    for chunk in split_outside(input, char::is_whitespace) {
        match texts.last_mut() {
            Some(last) if !starts_item(&chunk) => {
                last.push(' ');
                last.push_str(&chunk);
            }
            None if !starts_item(&chunk) => {
                return Err(PlacementError::Shorthand {
                    item: chunk,
                    message: "expected key=value pairs such as type=spread,field=instanceId"
                        .to_string(),
                });
            }
            _ => texts.push(chunk),
        }
    }
    texts
        .into_iter()
        .map(|text| {
            let mut pairs = Vec::new();
            for pair in split_outside(&text, |c| c == ',') {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(PlacementError::Shorthand {
                        item: text.clone(),
                        message: format!("\"{}\" is not key=value", pair.trim()),
                    });
                };
                pairs.push((key.trim().to_string(), unquote(value.trim()).to_string()));
            }
            Ok(ShorthandItem { text, pairs })
        })
        .collect()
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}
