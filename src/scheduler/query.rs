//! Evaluating ECS cluster query expressions (whose syntax is
//! `vocab::query`) against anything implementing [`QuerySubject`].
//!
//! It must do no I/O: no files, no network, no clock, no logging.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::vocab::query::parse_number;

pub use crate::vocab::query::*;

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
/// empty) and everything else is literal, as ECS's `=~`.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    crate::vocab::wildcard::matches(
        pattern,
        text,
        crate::vocab::wildcard::Wildcards {
            any_one: false,
            ignore_case: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each expression of the table parses, matches `f` as the table says,
    /// and its canonical form parses back to the same tree.
    fn check_table<E: AsRef<str>>(f: &InstanceFacts, table: &[(E, bool)]) {
        for (expr, want) in table {
            let expr = expr.as_ref();
            let parsed = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(parsed.matches(f), *want, "{expr}");
            assert_eq!(
                parse(&parsed.to_string()).as_ref(),
                Ok(&parsed),
                "{expr} -> {parsed}"
            );
        }
    }

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
        check_table(&f, table);
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
        check_table(&f, &table);
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
