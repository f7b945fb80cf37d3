//! Parsing task definition documents: a schema walker over the raw JSON
//! that accepts every field ECS accepts, keeps the ones orc implements,
//! reports the others as [`Warning`]s naming their JSON path, and reports
//! type errors with their JSON path.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::*;

/// A field that was accepted but is not (fully) implemented by orc, or an
/// unknown field that was ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// JSON path of the field, e.g. `containerDefinitions[0].secrets`.
    pub path: String,
    /// What orc did with it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_with_path(&self.path, &self.message))
    }
}

// ---------------------------------------------------------------------------
// Schema used to walk raw JSON
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Epoch seconds; an (ISO) string is dropped with a warning.
    Timestamp,
    /// String, or an integer that is normalized into a string (task cpu/memory).
    StrOrInt,
    StrList,
    StrMap,
    Enum(&'static [&'static str]),
    Obj(&'static [Field]),
    ObjList(&'static [Field]),
    /// Array kept as raw JSON; warned about when non-empty.
    RawList,
    /// ECS field orc does not implement: dropped, warned about when non-empty.
    Unsupported,
    /// ECS output field orc does not keep: dropped silently.
    OutputIgnored,
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn unsup(name: &'static str) -> Field {
    f(name, Kind::Unsupported)
}

const PROTOCOLS: &[&str] = &["tcp", "udp"];
const CONDITIONS: &[&str] = &["START", "COMPLETE", "SUCCESS", "HEALTHY"];
const NETWORK_MODES: &[&str] = &["bridge", "host", "awsvpc", "none"];
const STATUSES: &[&str] = &["ACTIVE", "INACTIVE", "DELETE_IN_PROGRESS"];

const PORT_MAPPING: &[Field] = &[
    f("containerPort", Kind::Int),
    f("hostPort", Kind::Int),
    f("protocol", Kind::Enum(PROTOCOLS)),
    f("name", Kind::Str),
    unsup("appProtocol"),
    unsup("containerPortRange"),
    unsup("hostPortRange"),
];

const KEY_VALUE: &[Field] = &[f("name", Kind::Str), f("value", Kind::Str)];

const HEALTH_CHECK: &[Field] = &[
    f("command", Kind::StrList),
    f("interval", Kind::Int),
    f("timeout", Kind::Int),
    f("retries", Kind::Int),
    f("startPeriod", Kind::Int),
];

const DEPENDENCY: &[Field] = &[
    req("containerName", Kind::Str),
    req("condition", Kind::Enum(CONDITIONS)),
];

const LOG_CONFIGURATION: &[Field] = &[
    req("logDriver", Kind::Str),
    f("options", Kind::StrMap),
    unsup("secretOptions"),
];

const SECRET: &[Field] = &[req("name", Kind::Str), req("valueFrom", Kind::Str)];

const HOST_ENTRY: &[Field] = &[req("hostname", Kind::Str), req("ipAddress", Kind::Str)];

const ULIMIT: &[Field] = &[
    req("name", Kind::Str),
    req("softLimit", Kind::Int),
    req("hardLimit", Kind::Int),
];

const PLACEMENT_CONSTRAINT: &[Field] = &[req("type", Kind::Str), f("expression", Kind::Str)];

const TAG: &[Field] = &[req("key", Kind::Str), f("value", Kind::Str)];

const CONTAINER: &[Field] = &[
    f("name", Kind::Str),
    f("image", Kind::Str),
    f("cpu", Kind::Int),
    f("memory", Kind::Int),
    f("memoryReservation", Kind::Int),
    f("links", Kind::StrList),
    f("portMappings", Kind::ObjList(PORT_MAPPING)),
    f("essential", Kind::Bool),
    f("entryPoint", Kind::StrList),
    f("command", Kind::StrList),
    f("environment", Kind::ObjList(KEY_VALUE)),
    f("workingDirectory", Kind::Str),
    f("user", Kind::Str),
    f("healthCheck", Kind::Obj(HEALTH_CHECK)),
    f("dependsOn", Kind::ObjList(DEPENDENCY)),
    f("stopTimeout", Kind::Int),
    f("startTimeout", Kind::Int),
    f("logConfiguration", Kind::Obj(LOG_CONFIGURATION)),
    f("dockerLabels", Kind::StrMap),
    f("hostname", Kind::Str),
    f("privileged", Kind::Bool),
    f("readonlyRootFilesystem", Kind::Bool),
    f("extraHosts", Kind::ObjList(HOST_ENTRY)),
    f("dnsServers", Kind::StrList),
    f("ulimits", Kind::ObjList(ULIMIT)),
    f("mountPoints", Kind::RawList),
    f("volumesFrom", Kind::RawList),
    unsup("repositoryCredentials"),
    f("secrets", Kind::ObjList(SECRET)),
    unsup("linuxParameters"),
    unsup("firelensConfiguration"),
    unsup("systemControls"),
    unsup("resourceRequirements"),
    unsup("environmentFiles"),
    unsup("restartPolicy"),
    unsup("credentialSpecs"),
    unsup("dnsSearchDomains"),
    unsup("disableNetworking"),
    unsup("interactive"),
    unsup("pseudoTerminal"),
    unsup("dockerSecurityOptions"),
    unsup("versionConsistency"),
];

const TASK_DEFINITION: &[Field] = &[
    f("family", Kind::Str),
    f("containerDefinitions", Kind::ObjList(CONTAINER)),
    f("networkMode", Kind::Enum(NETWORK_MODES)),
    f("taskRoleArn", Kind::Str),
    f("executionRoleArn", Kind::Str),
    f("cpu", Kind::StrOrInt),
    f("memory", Kind::StrOrInt),
    f("placementConstraints", Kind::ObjList(PLACEMENT_CONSTRAINT)),
    f("requiresCompatibilities", Kind::StrList),
    f("volumes", Kind::RawList),
    f("tags", Kind::ObjList(TAG)),
    f("taskDefinitionArn", Kind::Str),
    f("revision", Kind::Int),
    f("status", Kind::Enum(STATUSES)),
    f("registeredAt", Kind::Timestamp),
    f("deregisteredAt", Kind::Timestamp),
    f("compatibilities", Kind::StrList),
    unsup("pidMode"),
    unsup("ipcMode"),
    unsup("proxyConfiguration"),
    unsup("inferenceAccelerators"),
    unsup("ephemeralStorage"),
    unsup("runtimePlatform"),
    unsup("enableFaultInjection"),
    f("requiresAttributes", Kind::OutputIgnored),
    f("registeredBy", Kind::OutputIgnored),
];

const CONTAINER_OVERRIDE: &[Field] = &[
    req("name", Kind::Str),
    f("command", Kind::StrList),
    f("environment", Kind::ObjList(KEY_VALUE)),
    f("cpu", Kind::Int),
    f("memory", Kind::Int),
    f("memoryReservation", Kind::Int),
    unsup("environmentFiles"),
    unsup("resourceRequirements"),
];

const TASK_OVERRIDE: &[Field] = &[
    f("containerOverrides", Kind::ObjList(CONTAINER_OVERRIDE)),
    f("cpu", Kind::StrOrInt),
    f("memory", Kind::StrOrInt),
    f("taskRoleArn", Kind::Str),
    f("executionRoleArn", Kind::Str),
    unsup("inferenceAcceleratorOverrides"),
    unsup("ephemeralStorage"),
];

/// Whether `typed` is `known` misspelt: at most two letters changed, added,
/// dropped or swapped (`memroy` for `memory`), ignoring case; short names
/// need a closer match.
pub(super) fn is_misspelling(typed: &str, known: &str) -> bool {
    let typed: Vec<char> = typed.to_lowercase().chars().collect();
    let known: Vec<char> = known.to_lowercase().chars().collect();
    let allowed = if known.len() <= 4 { 1 } else { 2 };
    if typed.len().abs_diff(known.len()) > allowed {
        return false;
    }
    // Optimal string alignment distance (Damerau–Levenshtein without
    // repeated edits of one substring).
    let (n, m) = (typed.len(), known.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(typed[i - 1] != known[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && typed[i - 1] == known[j - 2] && typed[i - 2] == known[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[n][m] <= allowed
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// Whether a value carries information (not null, `false`, `[]`, `{}` or `""`).
fn is_meaningful(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(path: &str, what: &str, got: &Value) -> TaskDefinitionError {
    TaskDefinitionError::invalid(path, format!("expected {what}, got {}", type_name(got)))
}

/// Walks `obj` against `fields`: collects warnings, checks types, and returns
/// a cleaned object holding only the fields the typed structs know.
fn check_object(
    obj: &Map<String, Value>,
    fields: &[Field],
    path: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Map<String, Value>, TaskDefinitionError> {
    let mut out = Map::new();
    for (key, value) in obj {
        let field_path = join(path, key);
        let Some(field) = fields.iter().find(|fd| fd.name == key) else {
            let hint = fields
                .iter()
                .find(|fd| fd.name.eq_ignore_ascii_case(key))
                .or_else(|| fields.iter().find(|fd| is_misspelling(key, fd.name)))
                .map(|fd| format!(" (did you mean \"{}\"?)", fd.name))
                .unwrap_or_default();
            warnings.push(Warning {
                path: field_path,
                message: format!("unknown field, ignored{hint}"),
            });
            continue;
        };
        match field.kind {
            Kind::Unsupported => {
                if is_meaningful(value) {
                    warnings.push(Warning {
                        path: field_path,
                        message: "not supported by orc, ignored".to_string(),
                    });
                }
            }
            Kind::OutputIgnored => {}
            kind => {
                if let Some(v) = check_value(value, kind, &field_path, warnings)? {
                    out.insert(key.clone(), v);
                }
            }
        }
    }
    for field in fields.iter().filter(|fd| fd.required) {
        if !out.contains_key(field.name) {
            return Err(TaskDefinitionError::invalid(
                join(path, field.name),
                "missing required field",
            ));
        }
    }
    Ok(out)
}

/// Checks one value; `Ok(None)` means "drop it" (null, or ignored).
fn check_value(
    value: &Value,
    kind: Kind,
    path: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Value>, TaskDefinitionError> {
    if value.is_null() {
        return Ok(None);
    }
    let checked = match kind {
        Kind::Str => match value {
            Value::String(_) => value.clone(),
            _ => return Err(expected(path, "a string", value)),
        },
        Kind::Int => {
            if value.is_i64() {
                value.clone()
            } else if value.is_u64() {
                return Err(TaskDefinitionError::invalid(path, "integer out of range"));
            } else {
                return Err(expected(path, "an integer", value));
            }
        }
        Kind::Bool => match value {
            Value::Bool(_) => value.clone(),
            _ => return Err(expected(path, "a boolean", value)),
        },
        Kind::Timestamp => match value {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => value.clone(),
            Value::String(_) => {
                warnings.push(Warning {
                    path: path.to_string(),
                    message: "timestamp is not in epoch seconds, ignored".to_string(),
                });
                return Ok(None);
            }
            _ => return Err(expected(path, "a number of epoch seconds", value)),
        },
        Kind::StrOrInt => match value {
            Value::String(_) => value.clone(),
            Value::Number(n) if n.is_i64() || n.is_u64() => Value::String(n.to_string()),
            _ => return Err(expected(path, "a string", value)),
        },
        Kind::StrList => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        return Err(expected(&index(path, i), "a string", item));
                    }
                }
                value.clone()
            }
            _ => return Err(expected(path, "an array of strings", value)),
        },
        Kind::StrMap => match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if !v.is_string() {
                        return Err(expected(&join(path, k), "a string", v));
                    }
                }
                value.clone()
            }
            _ => return Err(expected(path, "an object of strings", value)),
        },
        Kind::Enum(allowed) => match value {
            Value::String(s) if allowed.contains(&s.as_str()) => value.clone(),
            Value::String(s) => {
                return Err(TaskDefinitionError::invalid(
                    path,
                    format!("must be one of {}, got \"{s}\"", allowed.join(", ")),
                ));
            }
            _ => return Err(expected(path, "a string", value)),
        },
        Kind::Obj(fields) => match value {
            Value::Object(map) => Value::Object(check_object(map, fields, path, warnings)?),
            _ => return Err(expected(path, "an object", value)),
        },
        Kind::ObjList(fields) => match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = index(path, i);
                    match item {
                        Value::Object(map) => out.push(Value::Object(check_object(
                            map, fields, &item_path, warnings,
                        )?)),
                        _ => return Err(expected(&item_path, "an object", item)),
                    }
                }
                Value::Array(out)
            }
            _ => return Err(expected(path, "an array", value)),
        },
        Kind::RawList => match value {
            Value::Array(items) => {
                if !items.is_empty() {
                    warnings.push(Warning {
                        path: path.to_string(),
                        message: "accepted and stored, but not implemented by orc yet".to_string(),
                    });
                }
                value.clone()
            }
            _ => return Err(expected(path, "an array", value)),
        },
        // Handled by check_object; never reached with these kinds.
        Kind::Unsupported | Kind::OutputIgnored => return Ok(None),
    };
    Ok(Some(checked))
}

fn parse_json(json: &str) -> Result<Value, TaskDefinitionError> {
    serde_json::from_str(json).map_err(|e| TaskDefinitionError::from_json(&e))
}

/// Deserializes an already-checked value; failure here means the schema and
/// the typed structs disagree, reported as an error rather than a panic.
fn typed<T: serde::de::DeserializeOwned>(
    value: Map<String, Value>,
) -> Result<T, TaskDefinitionError> {
    serde_json::from_value(Value::Object(value))
        .map_err(|e| TaskDefinitionError::invalid("", e.to_string()))
}

fn task_definition_from_object(
    obj: &Map<String, Value>,
) -> Result<(TaskDefinition, Vec<Warning>), TaskDefinitionError> {
    let mut warnings = Vec::new();
    let cleaned = check_object(obj, TASK_DEFINITION, "", &mut warnings)?;
    let td: TaskDefinition = typed(cleaned)?;
    if let Some(mode) = td.network_mode.as_deref().filter(|m| *m != "bridge") {
        warnings.push(Warning {
            path: "networkMode".to_string(),
            message: format!(
                "network mode \"{mode}\" is not supported by orc, containers use bridge networking"
            ),
        });
    }
    Ok((td, warnings))
}

// ---------------------------------------------------------------------------
// Public parsing entry points
// ---------------------------------------------------------------------------

/// Parses what `aws ecs register-task-definition --cli-input-json` accepts, or
/// the `{"taskDefinition": {...}, "tags": [...]}` document that
/// `describe-task-definition` prints.
///
/// Fields orc does not implement and unknown fields are accepted and reported
/// as warnings. Type errors name the JSON path. The result is not validated;
/// call [`validate`].
pub fn parse_register_input(
    json: &str,
) -> Result<(TaskDefinition, Vec<Warning>), TaskDefinitionError> {
    let value = parse_json(json)?;
    let Value::Object(top) = value else {
        return Err(expected("", "a JSON object", &value));
    };
    match top.get("taskDefinition") {
        Some(Value::Object(inner)) => {
            let (mut td, mut warnings) = task_definition_from_object(inner)?;
            for (key, value) in &top {
                match key.as_str() {
                    "taskDefinition" => {}
                    // describe-task-definition --include TAGS puts tags beside the definition.
                    "tags" => {
                        let mut tag_warnings = Vec::new();
                        let checked =
                            check_value(value, Kind::ObjList(TAG), "tags", &mut tag_warnings)?;
                        warnings.extend(tag_warnings);
                        if let Some(v) = checked.filter(|_| td.tags.is_empty()) {
                            td.tags = serde_json::from_value(v)
                                .map_err(|e| TaskDefinitionError::invalid("tags", e.to_string()))?;
                        }
                    }
                    _ => warnings.push(Warning {
                        path: key.clone(),
                        message: "unknown field, ignored".to_string(),
                    }),
                }
            }
            Ok((td, warnings))
        }
        Some(other) if !other.is_null() => Err(expected("taskDefinition", "an object", other)),
        _ => task_definition_from_object(&top),
    }
}

/// Parses the `--family X --container-definitions '[...]'` form: `json` is the
/// array of container definitions. Paths are reported as
/// `containerDefinitions[i]...`, like [`parse_register_input`].
pub fn parse_container_definitions(
    family: &str,
    json: &str,
) -> Result<(TaskDefinition, Vec<Warning>), TaskDefinitionError> {
    let value = parse_json(json)?;
    if !value.is_array() {
        return Err(expected(
            "containerDefinitions",
            "an array of container definitions",
            &value,
        ));
    }
    let mut obj = Map::new();
    obj.insert("family".to_string(), Value::String(family.to_string()));
    obj.insert("containerDefinitions".to_string(), value);
    task_definition_from_object(&obj)
}

/// Parses run-task `overrides` (an ECS `TaskOverride` object). Unsupported and
/// unknown fields are ignored; use [`parse_overrides_with_warnings`] to see them.
pub fn parse_overrides(json: &str) -> Result<TaskOverride, TaskDefinitionError> {
    parse_overrides_with_warnings(json).map(|(o, _)| o)
}

/// Like [`parse_overrides`], also returning warnings for ignored fields.
pub fn parse_overrides_with_warnings(
    json: &str,
) -> Result<(TaskOverride, Vec<Warning>), TaskDefinitionError> {
    let value = parse_json(json)?;
    let Value::Object(obj) = value else {
        return Err(expected("", "a JSON object", &value));
    };
    let mut warnings = Vec::new();
    let cleaned = check_object(&obj, TASK_OVERRIDE, "", &mut warnings)?;
    Ok((typed(cleaned)?, warnings))
}
