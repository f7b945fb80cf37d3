//! ECS task definitions: the document a user registers with
//! `orc register-task-definition` (the same JSON `aws ecs register-task-definition`
//! and `describe-task-definition` use), and the `overrides` of run-task.
//!
//! This module owns the task-definition document itself:
//!
//! * the serde types, shaped so that serializing gives ECS-shaped camelCase JSON;
//! * parsing ([`parse_register_input`], [`parse_container_definitions`],
//!   [`parse_overrides`]), which accepts every field ECS accepts, keeps the
//!   ones orc implements and reports the others as [`Warning`]s naming their
//!   JSON path, and reports type errors with their JSON path;
//! * validation ([`validate`]) with ECS's rules plus the ones orc needs;
//! * references to a task definition ([`TaskDefinitionRef`]);
//! * applying run-task overrides ([`apply_overrides`]);
//! * small resource helpers for the scheduler and the agent.
//!
//! It must not do I/O or storage: no files, no network, no database, no clock.
//! Assigning ARNs, revisions, status and timestamps is the caller's job; this
//! module only carries those output fields.
//!
//! Paths in errors and warnings are relative to the task definition object,
//! e.g. `containerDefinitions[1].memory`; for overrides, relative to the
//! `TaskOverride` object, e.g. `containerOverrides[0].name`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// Maximum number of containers in one task definition (ECS limit).
pub const MAX_CONTAINERS: usize = 10;
/// Smallest memory limit or reservation Docker accepts for a container, in MiB.
pub const MIN_CONTAINER_MEMORY_MIB: i64 = 6;
/// Default `stopTimeout`, in seconds.
pub const DEFAULT_STOP_TIMEOUT_SECS: i64 = 30;
/// Largest allowed `stopTimeout`, in seconds.
pub const MAX_STOP_TIMEOUT_SECS: i64 = 120;
/// Default health-check interval, in seconds.
pub const DEFAULT_HEALTH_CHECK_INTERVAL_SECS: i64 = 30;
/// Default health-check timeout, in seconds.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT_SECS: i64 = 5;
/// Default number of health-check retries.
pub const DEFAULT_HEALTH_CHECK_RETRIES: i64 = 3;
/// Default health-check start period, in seconds.
pub const DEFAULT_HEALTH_CHECK_START_PERIOD_SECS: i64 = 0;

// ---------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------

/// An error found while parsing, validating or overriding a task definition.
///
/// Its `Display` reads like a sentence (lowercase, no trailing period) and
/// starts with the JSON path when there is one, e.g.
/// `containerDefinitions[1].memory: expected an integer`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskDefinitionError {
    /// The input is not well-formed JSON.
    #[error("{message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// Full sentence, including line and column.
        message: String,
    },
    /// The JSON is well formed but a value has the wrong type or breaks a rule.
    #[error("{}", display_with_path(.path, .message))]
    Invalid {
        /// JSON path of the offending value (empty for the whole document).
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

fn display_with_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

impl TaskDefinitionError {
    /// Builds an [`TaskDefinitionError::Invalid`] error.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        TaskDefinitionError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// JSON path of the offending value; empty for syntax errors and
    /// whole-document errors.
    pub fn path(&self) -> &str {
        match self {
            TaskDefinitionError::Syntax { .. } => "",
            TaskDefinitionError::Invalid { path, .. } => path,
        }
    }

    /// The message without the path.
    pub fn message(&self) -> &str {
        match self {
            TaskDefinitionError::Syntax { message, .. } => message,
            TaskDefinitionError::Invalid { message, .. } => message,
        }
    }

    fn from_json(e: &serde_json::Error) -> Self {
        let full = e.to_string();
        let line = e.line();
        let column = e.column();
        let suffix = format!(" at line {line} column {column}");
        let what = full.strip_suffix(&suffix).unwrap_or(&full);
        TaskDefinitionError::Syntax {
            line,
            column,
            message: format!("invalid JSON at line {line}, column {column}: {what}"),
        }
    }
}

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
// Types
// ---------------------------------------------------------------------------

/// Status of a registered task definition revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskDefinitionStatus {
    /// Usable for new tasks and services.
    Active,
    /// Deregistered.
    Inactive,
    /// Being deleted.
    DeleteInProgress,
}

/// Transport protocol of a port mapping.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Condition a container waits for on another container before starting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyCondition {
    /// The dependency has been started.
    Start,
    /// The dependency has exited (any status).
    Complete,
    /// The dependency has exited with status 0.
    Success,
    /// The dependency's health check passes.
    Healthy,
}

impl fmt::Display for DependencyCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DependencyCondition::Start => "START",
            DependencyCondition::Complete => "COMPLETE",
            DependencyCondition::Success => "SUCCESS",
            DependencyCondition::Healthy => "HEALTHY",
        })
    }
}

/// An ECS task definition (input fields of RegisterTaskDefinition plus the
/// output fields ECS returns).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// Family name; revisions are numbered within a family.
    #[serde(default)]
    pub family: String,
    /// The containers of the task.
    #[serde(default)]
    pub container_definitions: Vec<ContainerDefinition>,
    /// Docker network mode (`bridge`, `host`, `awsvpc`, `none`); orc runs bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// Role the containers may assume (stored only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// Role the agent uses to pull images and ship logs (stored only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// Task-level CPU, a string as in ECS: `"1024"` or `"1 vCPU"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory, a string as in ECS: `"512"` (MiB) or `"1 GB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Placement constraints (`memberOf` expressions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Launch types the definition is meant for (`EC2`, `EXTERNAL`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<String>,
    /// Volumes, kept as raw JSON (not implemented yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Value>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Output: the ARN of this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    /// Output: the revision number within the family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Output: the status of this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskDefinitionStatus>,
    /// Output: registration time, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<f64>,
    /// Output: deregistration time, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<f64>,
    /// Output: launch types the definition is compatible with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compatibilities: Vec<String>,
}

/// One container of a task definition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    /// Container name, unique in the task.
    #[serde(default)]
    pub name: String,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// CPU units (1024 = one core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    /// Hard memory limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Soft memory limit, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    /// Docker links, `name` or `name:alias`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Port mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Whether the task stops when this container stops; see [`ContainerDefinition::is_essential`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// Entry point override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    /// Command override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// User (`user`, `user:group`, `uid`, `uid:gid`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Container health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Start-up dependencies on other containers of the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    /// Seconds between SIGTERM and SIGKILL; see [`ContainerDefinition::stop_timeout_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// Seconds to wait for dependencies before giving up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<i64>,
    /// Log driver configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    /// Docker labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_labels: BTreeMap<String, String>,
    /// Container hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Run privileged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Read-only root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    /// Extra `/etc/hosts` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Mount points, kept as raw JSON (not implemented yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<Value>,
    /// Volumes from other containers, kept as raw JSON (not implemented yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<Value>,
}

/// A port mapping of a container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port inside the container (required by validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i64>,
    /// Port on the host; absent or 0 means a dynamic port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    /// Protocol, `tcp` by default.
    #[serde(default)]
    pub protocol: Protocol,
    /// Name of the mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl PortMapping {
    /// The host port if it is static (greater than 0 and a valid port number).
    pub fn static_host_port(&self) -> Option<u16> {
        self.host_port
            .filter(|p| *p > 0)
            .and_then(|p| u16::try_from(p).ok())
    }
}

/// A `{name, value}` pair (environment variables).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValuePair {
    /// Variable name.
    #[serde(default)]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// A container health check (Docker `HEALTHCHECK`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `["CMD", exe, args...]` or `["CMD-SHELL", "shell command"]`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Seconds between checks (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Seconds before a check is considered failed (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Consecutive failures before unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Grace period in seconds (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
}

impl HealthCheck {
    /// Interval in seconds, defaulting to 30.
    pub fn interval_secs(&self) -> i64 {
        self.interval.unwrap_or(DEFAULT_HEALTH_CHECK_INTERVAL_SECS)
    }
    /// Timeout in seconds, defaulting to 5.
    pub fn timeout_secs(&self) -> i64 {
        self.timeout.unwrap_or(DEFAULT_HEALTH_CHECK_TIMEOUT_SECS)
    }
    /// Retries, defaulting to 3.
    pub fn retries_count(&self) -> i64 {
        self.retries.unwrap_or(DEFAULT_HEALTH_CHECK_RETRIES)
    }
    /// Start period in seconds, defaulting to 0.
    pub fn start_period_secs(&self) -> i64 {
        self.start_period
            .unwrap_or(DEFAULT_HEALTH_CHECK_START_PERIOD_SECS)
    }
}

/// A start-up dependency on another container of the task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    /// The container depended upon.
    pub container_name: String,
    /// What to wait for.
    pub condition: DependencyCondition,
}

/// Log driver configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    /// Docker log driver (`json-file`, `journald`, `syslog`, ...).
    #[serde(default)]
    pub log_driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// An `/etc/hosts` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    /// Host name.
    #[serde(default)]
    pub hostname: String,
    /// IP address.
    #[serde(default)]
    pub ip_address: String,
}

/// A resource limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    /// Limit name (`nofile`, `nproc`, ...).
    #[serde(default)]
    pub name: String,
    /// Soft limit.
    #[serde(default)]
    pub soft_limit: i64,
    /// Hard limit.
    #[serde(default)]
    pub hard_limit: i64,
}

/// A task placement constraint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    /// Constraint type; only `memberOf` is valid in a task definition.
    #[serde(rename = "type", default)]
    pub constraint_type: String,
    /// Cluster query language expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// A `{key, value}` tag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Tag key.
    #[serde(default)]
    pub key: String,
    /// Tag value.
    #[serde(default)]
    pub value: String,
}

/// Run-task overrides (ECS `TaskOverride`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    /// Per-container overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_overrides: Vec<ContainerOverride>,
    /// Task-level CPU override (string, as in ECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory override (string, as in ECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Task role override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// Execution role override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

/// Overrides for one container (ECS `ContainerOverride`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    /// Name of the container to override.
    #[serde(default)]
    pub name: String,
    /// Replacement command, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables merged (by name) into the container's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
    /// CPU units override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    /// Hard memory limit override, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Soft memory limit override, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
}

// ---------------------------------------------------------------------------
// Helpers on the types
// ---------------------------------------------------------------------------

impl ContainerDefinition {
    /// Whether the container is essential (ECS default: true).
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// Stop timeout in seconds, defaulting to 30.
    pub fn stop_timeout_secs(&self) -> i64 {
        self.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT_SECS)
    }

    /// Memory the scheduler reserves for this container: `memoryReservation`
    /// if set, else `memory`, else `None`.
    pub fn memory_reservation_mib(&self) -> Option<i64> {
        self.memory_reservation.or(self.memory)
    }

    /// Looks up an environment variable by name.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.environment
            .iter()
            .rev()
            .find(|kv| kv.name == name)
            .map(|kv| kv.value.as_str())
    }
}

impl TaskDefinition {
    /// Finds a container by name.
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// Task-level CPU in units, if set and understood (`"1024"`, `"1 vCPU"`, `"0.5vcpu"`).
    pub fn task_cpu_units(&self) -> Option<i64> {
        self.cpu.as_deref().and_then(parse_task_cpu)
    }

    /// Task-level memory in MiB, if set and understood (`"512"`, `"1 GB"`, `"0.5GB"`).
    pub fn task_memory_mib(&self) -> Option<i64> {
        self.memory.as_deref().and_then(parse_task_memory)
    }

    /// CPU units the scheduler reserves: task-level `cpu` when set, else the
    /// sum of the containers' `cpu`.
    pub fn total_cpu(&self) -> i64 {
        self.task_cpu_units().unwrap_or_else(|| {
            self.container_definitions
                .iter()
                .fold(0i64, |acc, c| acc.saturating_add(c.cpu.unwrap_or(0).max(0)))
        })
    }

    /// Memory (MiB) the scheduler reserves: task-level `memory` when set, else
    /// the sum of [`ContainerDefinition::memory_reservation_mib`].
    pub fn total_memory_reservation_mib(&self) -> i64 {
        self.task_memory_mib().unwrap_or_else(|| {
            self.container_definitions.iter().fold(0i64, |acc, c| {
                acc.saturating_add(c.memory_reservation_mib().unwrap_or(0).max(0))
            })
        })
    }

    /// Static host ports (hostPort > 0) the task needs on its instance.
    pub fn static_host_ports(&self) -> Vec<(u16, Protocol)> {
        self.container_definitions
            .iter()
            .flat_map(|c| c.port_mappings.iter())
            .filter_map(|pm| pm.static_host_port().map(|p| (p, pm.protocol)))
            .collect()
    }

    /// `family:revision`, or just `family` when no revision is assigned.
    pub fn family_revision(&self) -> String {
        match self.revision {
            Some(r) => format!("{}:{}", self.family, r),
            None => self.family.clone(),
        }
    }
}

/// Parses a task-level CPU string: `"1024"`, `"1 vCPU"`, `"0.25 vcpu"`.
fn parse_task_cpu(s: &str) -> Option<i64> {
    parse_amount(s, &["vcpu"], 1024)
}

/// Parses a task-level memory string: `"512"` (MiB), `"1 GB"`, `"0.5gb"`.
fn parse_task_memory(s: &str) -> Option<i64> {
    parse_amount(s, &["gb", "gib"], 1024)
}

fn parse_amount(s: &str, units: &[&str], factor: i64) -> Option<i64> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().ok();
    }
    let lower = t.to_ascii_lowercase();
    for unit in units {
        if let Some(num) = lower.strip_suffix(unit) {
            let num = num.trim();
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return None;
            }
            let v: f64 = num.parse().ok()?;
            if !v.is_finite() {
                return None;
            }
            // `as` saturates, so huge values cannot overflow.
            return Some((v * factor as f64).round() as i64);
        }
    }
    None
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
    unsup("secrets"),
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

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Checks ECS's naming rule: 1 to 255 letters, numbers, hyphens, underscores.
fn check_name(path: &str, what: &str, name: &str) -> Result<(), TaskDefinitionError> {
    if name.is_empty() {
        return Err(TaskDefinitionError::invalid(
            path,
            format!("{what} is required"),
        ));
    }
    if name.len() > 255 {
        return Err(TaskDefinitionError::invalid(
            path,
            format!("{what} must be at most 255 characters (got {})", name.len()),
        ));
    }
    if !name.chars().all(is_name_char) {
        return Err(TaskDefinitionError::invalid(
            path,
            format!("{what} \"{name}\" may only contain letters, numbers, hyphens and underscores"),
        ));
    }
    Ok(())
}

fn check_range(
    path: String,
    what: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
    unit: &str,
) -> Result<(), TaskDefinitionError> {
    match value {
        Some(v) if v < min || v > max => Err(TaskDefinitionError::invalid(
            path,
            format!("{what} must be between {min} and {max}{unit} (got {v})"),
        )),
        _ => Ok(()),
    }
}

/// Validates a task definition against ECS's rules (and orc's). Returns the
/// first problem found, with its JSON path.
pub fn validate(td: &TaskDefinition) -> Result<(), TaskDefinitionError> {
    check_name("family", "family", &td.family)?;

    if let Some(cpu) = td
        .cpu
        .as_ref()
        .filter(|_| td.task_cpu_units().is_none_or(|v| v <= 0))
    {
        return Err(TaskDefinitionError::invalid(
            "cpu",
            format!("task cpu \"{cpu}\" is not a positive number of CPU units or vCPUs"),
        ));
    }
    if let Some(mem) = td
        .memory
        .as_ref()
        .filter(|_| td.task_memory_mib().is_none_or(|v| v <= 0))
    {
        return Err(TaskDefinitionError::invalid(
            "memory",
            format!("task memory \"{mem}\" is not a positive number of MiB or GB"),
        ));
    }
    for (i, pc) in td.placement_constraints.iter().enumerate() {
        if pc.constraint_type != "memberOf" {
            return Err(TaskDefinitionError::invalid(
                format!("placementConstraints[{i}].type"),
                format!(
                    "placement constraint type must be memberOf (got \"{}\")",
                    pc.constraint_type
                ),
            ));
        }
    }

    let containers = &td.container_definitions;
    if containers.is_empty() {
        return Err(TaskDefinitionError::invalid(
            "containerDefinitions",
            "at least one container definition is required",
        ));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(TaskDefinitionError::invalid(
            "containerDefinitions",
            format!(
                "a task definition can have at most {MAX_CONTAINERS} containers (got {})",
                containers.len()
            ),
        ));
    }

    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("containerDefinitions[{i}].name");
        check_name(&path, "container name", &c.name)?;
        if let Some(first) = by_name.insert(c.name.as_str(), i) {
            return Err(TaskDefinitionError::invalid(
                path,
                format!(
                    "duplicate container name \"{}\" (also used by containerDefinitions[{first}])",
                    c.name
                ),
            ));
        }
    }

    if !containers.iter().any(ContainerDefinition::is_essential) {
        return Err(TaskDefinitionError::invalid(
            "containerDefinitions",
            "at least one container must be essential",
        ));
    }

    let task_memory_set = td.memory.is_some();
    let mut host_ports: HashMap<(i64, Protocol), String> = HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        validate_container(td, i, c, task_memory_set, &by_name, &mut host_ports)?;
    }

    check_dependency_cycles(containers, &by_name)
}

fn validate_container(
    td: &TaskDefinition,
    i: usize,
    c: &ContainerDefinition,
    task_memory_set: bool,
    by_name: &HashMap<&str, usize>,
    host_ports: &mut HashMap<(i64, Protocol), String>,
) -> Result<(), TaskDefinitionError> {
    let base = format!("containerDefinitions[{i}]");
    let p = |field: &str| format!("{base}.{field}");

    if c.image.trim().is_empty() {
        return Err(TaskDefinitionError::invalid(
            p("image"),
            "image is required",
        ));
    }
    if c.image
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Err(TaskDefinitionError::invalid(
            p("image"),
            format!(
                "image \"{}\" must not contain whitespace",
                c.image.escape_debug()
            ),
        ));
    }

    if let Some(cpu) = c.cpu.filter(|v| *v < 0) {
        return Err(TaskDefinitionError::invalid(
            p("cpu"),
            format!("cpu must not be negative (got {cpu})"),
        ));
    }
    for (field, value) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(v) = value.filter(|v| *v < MIN_CONTAINER_MEMORY_MIB) {
            return Err(TaskDefinitionError::invalid(
                p(field),
                format!("{field} must be at least {MIN_CONTAINER_MEMORY_MIB} MiB (got {v})"),
            ));
        }
    }
    if let (Some(mem), Some(res)) = (c.memory, c.memory_reservation) {
        if res > mem {
            return Err(TaskDefinitionError::invalid(
                p("memoryReservation"),
                format!("memoryReservation ({res} MiB) must not exceed memory ({mem} MiB)"),
            ));
        }
    }
    if c.memory.is_none() && c.memory_reservation.is_none() && !task_memory_set {
        return Err(TaskDefinitionError::invalid(
            p("memory"),
            "memory or memoryReservation is required when the task definition has no task-level memory",
        ));
    }

    for (j, pm) in c.port_mappings.iter().enumerate() {
        let pm_path = format!("{base}.portMappings[{j}]");
        match pm.container_port {
            None => {
                return Err(TaskDefinitionError::invalid(
                    format!("{pm_path}.containerPort"),
                    "containerPort is required",
                ));
            }
            Some(port) => check_range(
                format!("{pm_path}.containerPort"),
                "containerPort",
                Some(port),
                1,
                65535,
                "",
            )?,
        }
        check_range(
            format!("{pm_path}.hostPort"),
            "hostPort",
            pm.host_port,
            0,
            65535,
            "",
        )?;
        if let Some(hp) = pm.host_port.filter(|hp| *hp > 0) {
            let here = format!("{pm_path}.hostPort");
            if let Some(prev) = host_ports.get(&(hp, pm.protocol)) {
                return Err(TaskDefinitionError::invalid(
                    here,
                    format!("host port {hp}/{} is already used by {prev}", pm.protocol),
                ));
            }
            host_ports.insert((hp, pm.protocol), here);
        }
    }

    for (j, kv) in c.environment.iter().enumerate() {
        if kv.name.is_empty() {
            return Err(TaskDefinitionError::invalid(
                format!("{base}.environment[{j}].name"),
                "environment variable name must not be empty",
            ));
        }
    }

    for (j, link) in c.links.iter().enumerate() {
        let target = link.split(':').next().unwrap_or("");
        let path = format!("{base}.links[{j}]");
        if target == c.name {
            return Err(TaskDefinitionError::invalid(
                path,
                "a container cannot link to itself",
            ));
        }
        if !by_name.contains_key(target) {
            return Err(TaskDefinitionError::invalid(
                path,
                format!("link names unknown container \"{target}\""),
            ));
        }
    }

    for (j, dep) in c.depends_on.iter().enumerate() {
        let path = format!("{base}.dependsOn[{j}].containerName");
        if dep.container_name == c.name {
            return Err(TaskDefinitionError::invalid(
                path,
                "a container cannot depend on itself",
            ));
        }
        let Some(&target) = by_name.get(dep.container_name.as_str()) else {
            return Err(TaskDefinitionError::invalid(
                path,
                format!(
                    "dependsOn names unknown container \"{}\"",
                    dep.container_name
                ),
            ));
        };
        let target_def = &td.container_definitions[target];
        match dep.condition {
            DependencyCondition::Healthy if target_def.health_check.is_none() => {
                return Err(TaskDefinitionError::invalid(
                    format!("{base}.dependsOn[{j}].condition"),
                    format!(
                        "condition HEALTHY requires container \"{}\" to have a healthCheck",
                        dep.container_name
                    ),
                ));
            }
            DependencyCondition::Complete | DependencyCondition::Success
                if target_def.is_essential() =>
            {
                return Err(TaskDefinitionError::invalid(
                    format!("{base}.dependsOn[{j}].condition"),
                    format!(
                        "condition {} cannot be used on essential container \"{}\"",
                        dep.condition, dep.container_name
                    ),
                ));
            }
            _ => {}
        }
    }

    if let Some(hc) = &c.health_check {
        let hp = |field: &str| format!("{base}.healthCheck.{field}");
        match hc.command.first().map(String::as_str) {
            None => {
                return Err(TaskDefinitionError::invalid(
                    hp("command"),
                    "healthCheck command must not be empty",
                ));
            }
            Some("CMD") | Some("CMD-SHELL") => {
                if hc.command.len() < 2 || hc.command[1].trim().is_empty() {
                    return Err(TaskDefinitionError::invalid(
                        hp("command"),
                        format!(
                            "healthCheck command needs a command after {}",
                            hc.command[0]
                        ),
                    ));
                }
            }
            Some(other) => {
                return Err(TaskDefinitionError::invalid(
                    hp("command[0]"),
                    format!(
                        "healthCheck command must start with CMD or CMD-SHELL (got \"{other}\")"
                    ),
                ));
            }
        }
        check_range(hp("interval"), "interval", hc.interval, 5, 300, " seconds")?;
        check_range(hp("timeout"), "timeout", hc.timeout, 2, 60, " seconds")?;
        check_range(hp("retries"), "retries", hc.retries, 1, 10, "")?;
        check_range(
            hp("startPeriod"),
            "startPeriod",
            hc.start_period,
            0,
            300,
            " seconds",
        )?;
    }

    check_range(
        p("stopTimeout"),
        "stopTimeout",
        c.stop_timeout,
        0,
        MAX_STOP_TIMEOUT_SECS,
        " seconds",
    )?;
    if let Some(st) = c.start_timeout.filter(|v| *v < 0) {
        return Err(TaskDefinitionError::invalid(
            p("startTimeout"),
            format!("startTimeout must not be negative (got {st})"),
        ));
    }
    for (j, u) in c.ulimits.iter().enumerate() {
        if u.soft_limit > u.hard_limit {
            return Err(TaskDefinitionError::invalid(
                format!("{base}.ulimits[{j}].softLimit"),
                format!(
                    "softLimit ({}) must not exceed hardLimit ({})",
                    u.soft_limit, u.hard_limit
                ),
            ));
        }
    }
    Ok(())
}

/// Edges of the start-up graph: (from container, to container, JSON path of the edge).
fn dependency_edges(
    containers: &[ContainerDefinition],
    by_name: &HashMap<&str, usize>,
) -> Vec<Vec<(usize, String)>> {
    containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let deps = c.depends_on.iter().enumerate().filter_map(|(j, d)| {
                by_name.get(d.container_name.as_str()).map(|&t| {
                    (
                        t,
                        format!("containerDefinitions[{i}].dependsOn[{j}].containerName"),
                    )
                })
            });
            let links = c.links.iter().enumerate().filter_map(|(j, l)| {
                let target = l.split(':').next().unwrap_or("");
                by_name
                    .get(target)
                    .map(|&t| (t, format!("containerDefinitions[{i}].links[{j}]")))
            });
            deps.chain(links).filter(|(t, _)| *t != i).collect()
        })
        .collect()
}

fn check_dependency_cycles(
    containers: &[ContainerDefinition],
    by_name: &HashMap<&str, usize>,
) -> Result<(), TaskDefinitionError> {
    let edges = dependency_edges(containers, by_name);
    // 0 = unvisited, 1 = on stack, 2 = done. Depth is bounded by MAX_CONTAINERS.
    let mut state = vec![0u8; containers.len()];
    let mut stack = Vec::new();
    fn visit(
        n: usize,
        edges: &[Vec<(usize, String)>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
        containers: &[ContainerDefinition],
    ) -> Result<(), TaskDefinitionError> {
        state[n] = 1;
        stack.push(n);
        for (t, path) in &edges[n] {
            match state[*t] {
                1 => {
                    let start = stack.iter().position(|x| x == t).unwrap_or(0);
                    let mut names: Vec<&str> = stack[start..]
                        .iter()
                        .map(|&k| containers[k].name.as_str())
                        .collect();
                    names.push(containers[*t].name.as_str());
                    return Err(TaskDefinitionError::invalid(
                        path.clone(),
                        format!("dependency cycle: {}", names.join(" -> ")),
                    ));
                }
                0 => visit(*t, edges, state, stack, containers)?,
                _ => {}
            }
        }
        stack.pop();
        state[n] = 2;
        Ok(())
    }
    for n in 0..containers.len() {
        if state[n] == 0 {
            visit(n, &edges, &mut state, &mut stack, containers)?;
        }
    }
    Ok(())
}

impl TaskDefinition {
    /// Container indices in an order where every container comes after the
    /// containers it depends on or links to. Call on a validated definition;
    /// containers caught in a cycle are appended at the end in declaration order.
    pub fn start_order(&self) -> Vec<usize> {
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.container_definitions.iter().enumerate() {
            by_name.entry(c.name.as_str()).or_insert(i);
        }
        let edges = dependency_edges(&self.container_definitions, &by_name);
        let n = self.container_definitions.len();
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        loop {
            let next = (0..n).find(|&i| !placed[i] && edges[i].iter().all(|(t, _)| placed[*t]));
            match next {
                Some(i) => {
                    placed[i] = true;
                    order.push(i);
                }
                None => break,
            }
        }
        order.extend((0..n).filter(|&i| !placed[i]));
        order
    }
}

// ---------------------------------------------------------------------------
// Task definition references
// ---------------------------------------------------------------------------

/// A reference to a task definition as accepted by run-task and friends:
/// `family`, `family:revision`, or
/// `arn:aws:ecs:region:account:task-definition/family:revision`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskDefinitionRef {
    /// Family name.
    pub family: String,
    /// Revision; `None` means the latest ACTIVE revision.
    pub revision: Option<i64>,
    /// The ARN prefix up to and including `task-definition/`, when the
    /// reference was given as an ARN.
    pub arn_prefix: Option<String>,
}

impl TaskDefinitionRef {
    /// Parses `family`, `family:revision` or a task-definition ARN.
    pub fn parse(s: &str) -> Result<Self, TaskDefinitionError> {
        const PATH: &str = "taskDefinition";
        let s = s.trim();
        let (arn_prefix, rest) = if s.starts_with("arn:") {
            let parts: Vec<&str> = s.splitn(6, ':').collect();
            let resource = parts.get(5).copied().unwrap_or("");
            let Some(rest) = resource.strip_prefix("task-definition/") else {
                return Err(TaskDefinitionError::invalid(
                    PATH,
                    format!("\"{s}\" is not a task definition ARN"),
                ));
            };
            (Some(s[..s.len() - rest.len()].to_string()), rest)
        } else {
            (None, s)
        };
        let (family, revision) = match rest.split_once(':') {
            Some((fam, rev)) => {
                let revision = rev
                    .parse::<i64>()
                    .ok()
                    .filter(|r| *r >= 1 && rev.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        TaskDefinitionError::invalid(
                            PATH,
                            format!("revision \"{rev}\" must be a positive integer"),
                        )
                    })?;
                (fam, Some(revision))
            }
            None => (rest, None),
        };
        check_name(PATH, "family", family)?;
        Ok(TaskDefinitionRef {
            family: family.to_string(),
            revision,
            arn_prefix,
        })
    }
}

impl fmt::Display for TaskDefinitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(prefix) = &self.arn_prefix {
            f.write_str(prefix)?;
        }
        f.write_str(&self.family)?;
        if let Some(r) = self.revision {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for TaskDefinitionRef {
    type Err = TaskDefinitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskDefinitionRef::parse(s)
    }
}

// ---------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------

/// Applies run-task overrides to a task definition and validates the result.
///
/// `command` replaces the container's command; `environment` entries replace
/// variables of the same name or are appended; cpu/memory/memoryReservation and
/// the task-level fields replace the originals. An override naming an unknown
/// container, or the same container twice, is an error at
/// `containerOverrides[i].name`.
pub fn apply_overrides(
    td: &TaskDefinition,
    overrides: &TaskOverride,
) -> Result<TaskDefinition, TaskDefinitionError> {
    let mut out = td.clone();
    let mut seen = HashSet::new();
    for (i, co) in overrides.container_overrides.iter().enumerate() {
        let path = format!("containerOverrides[{i}].name");
        if co.name.is_empty() {
            return Err(TaskDefinitionError::invalid(
                path,
                "container name is required",
            ));
        }
        if !seen.insert(co.name.as_str()) {
            return Err(TaskDefinitionError::invalid(
                path,
                format!("duplicate override for container \"{}\"", co.name),
            ));
        }
        let Some(c) = out
            .container_definitions
            .iter_mut()
            .find(|c| c.name == co.name)
        else {
            return Err(TaskDefinitionError::invalid(
                path,
                format!(
                    "no container named \"{}\" in task definition {}",
                    co.name,
                    td.family_revision()
                ),
            ));
        };
        if let Some(cmd) = &co.command {
            c.command = cmd.clone();
        }
        for kv in &co.environment {
            match c.environment.iter_mut().find(|e| e.name == kv.name) {
                Some(existing) => existing.value = kv.value.clone(),
                None => c.environment.push(kv.clone()),
            }
        }
        if co.cpu.is_some() {
            c.cpu = co.cpu;
        }
        if co.memory.is_some() {
            c.memory = co.memory;
        }
        if co.memory_reservation.is_some() {
            c.memory_reservation = co.memory_reservation;
        }
    }
    if overrides.cpu.is_some() {
        out.cpu = overrides.cpu.clone();
    }
    if overrides.memory.is_some() {
        out.memory = overrides.memory.clone();
    }
    if overrides.task_role_arn.is_some() {
        out.task_role_arn = overrides.task_role_arn.clone();
    }
    if overrides.execution_role_arn.is_some() {
        out.execution_role_arn = overrides.execution_role_arn.clone();
    }
    validate(&out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{
        "family": "web-app",
        "networkMode": "bridge",
        "taskRoleArn": "arn:aws:iam::123456789012:role/app",
        "containerDefinitions": [
            {
                "name": "web",
                "image": "nginx:1.25",
                "cpu": 256,
                "memory": 256,
                "memoryReservation": 128,
                "essential": true,
                "links": ["app:backend"],
                "portMappings": [
                    {"containerPort": 80, "hostPort": 8080, "protocol": "tcp"},
                    {"containerPort": 443, "hostPort": 0}
                ],
                "dependsOn": [{"containerName": "app", "condition": "HEALTHY"}],
                "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "10m"}},
                "dockerLabels": {"team": "web"},
                "stopTimeout": 20
            },
            {
                "name": "app",
                "image": "registry.local:5000/app@sha256:abc",
                "cpu": 512,
                "memoryReservation": 192,
                "essential": true,
                "entryPoint": ["/bin/app"],
                "command": ["serve", "--port", "3000"],
                "environment": [{"name": "MODE", "value": "prod"}, {"name": "LOG", "value": "info"}],
                "portMappings": [{"containerPort": 3000, "protocol": "udp", "hostPort": 3000}],
                "healthCheck": {
                    "command": ["CMD-SHELL", "curl -f http://localhost:3000/ || exit 1"],
                    "interval": 10, "timeout": 3, "retries": 5, "startPeriod": 15
                },
                "workingDirectory": "/srv",
                "user": "1000:1000",
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.5"}],
                "dnsServers": ["10.0.0.2"]
            }
        ],
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:arch == arm64"}],
        "requiresCompatibilities": ["EC2"],
        "tags": [{"key": "env", "value": "prod"}]
    }"#;

    fn valid() -> TaskDefinition {
        let (td, warnings) = parse_register_input(VALID).expect("valid document parses");
        assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
        td
    }

    /// Sets a value in the VALID document at a JSON pointer, parses, validates.
    fn with(pointer: &str, value: Value) -> Result<TaskDefinition, TaskDefinitionError> {
        let mut doc: Value = serde_json::from_str(VALID).unwrap();
        set_pointer(&mut doc, pointer, value);
        let (td, _) = parse_register_input(&doc.to_string())?;
        validate(&td)?;
        Ok(td)
    }

    fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = doc.pointer_mut(parent).unwrap();
        match target {
            Value::Object(m) => {
                m.insert(key.to_string(), value);
            }
            Value::Array(a) => {
                let i: usize = key.parse().unwrap();
                if i < a.len() {
                    a[i] = value;
                } else {
                    a.push(value);
                }
            }
            _ => panic!("bad pointer {pointer}"),
        }
    }

    fn remove_pointer(doc: &mut Value, pointer: &str) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
            m.remove(key);
        }
    }

    fn err_with(pointer: &str, value: Value) -> TaskDefinitionError {
        with(pointer, value).expect_err("expected an error")
    }

    fn assert_err(e: &TaskDefinitionError, path: &str, contains: &str) {
        assert_eq!(e.path(), path, "wrong path in: {e}");
        assert!(
            e.to_string().contains(contains),
            "message {:?} does not contain {:?}",
            e.to_string(),
            contains
        );
    }

    #[test]
    fn valid_document_parses_and_validates() {
        let td = valid();
        validate(&td).unwrap();
        assert_eq!(td.family, "web-app");
        assert_eq!(td.container_definitions.len(), 2);
        let web = &td.container_definitions[0];
        assert_eq!(web.links, vec!["app:backend"]);
        assert_eq!(web.port_mappings[1].protocol, Protocol::Tcp);
        assert_eq!(web.depends_on[0].condition, DependencyCondition::Healthy);
        assert_eq!(web.stop_timeout_secs(), 20);
        let app = td.container("app").unwrap();
        assert_eq!(app.env("MODE"), Some("prod"));
        let hc = app.health_check.as_ref().unwrap();
        assert_eq!(hc.interval_secs(), 10);
        assert_eq!(app.stop_timeout_secs(), DEFAULT_STOP_TIMEOUT_SECS);
        assert!(app.is_essential());
        assert_eq!(td.start_order(), vec![1, 0]);
    }

    #[test]
    fn health_check_defaults() {
        let hc = HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            ..Default::default()
        };
        assert_eq!(hc.interval_secs(), 30);
        assert_eq!(hc.timeout_secs(), 5);
        assert_eq!(hc.retries_count(), 3);
        assert_eq!(hc.start_period_secs(), 0);
    }

    #[test]
    fn serialization_is_ecs_shaped() {
        let td = valid();
        let v = serde_json::to_value(&td).unwrap();
        let c0 = &v["containerDefinitions"][0];
        assert_eq!(c0["memoryReservation"], 128);
        assert_eq!(c0["portMappings"][0]["containerPort"], 80);
        assert_eq!(c0["dependsOn"][0]["containerName"], "app");
        assert_eq!(c0["logConfiguration"]["logDriver"], "json-file");
        assert!(c0.get("entryPoint").is_none(), "empty vec skipped");
        assert!(c0.get("healthCheck").is_none(), "none skipped");
        assert_eq!(v["placementConstraints"][0]["type"], "memberOf");
        assert!(v.get("revision").is_none());
        assert_eq!(
            v["containerDefinitions"][1]["healthCheck"]["startPeriod"],
            15
        );
    }

    #[test]
    fn round_trip() {
        let mut td = valid();
        td.revision = Some(3);
        td.status = Some(TaskDefinitionStatus::Active);
        td.task_definition_arn = Some("arn:aws:ecs:eu-west-1:123:task-definition/web-app:3".into());
        td.registered_at = Some(1_700_000_000.123);
        td.compatibilities = vec!["EC2".into(), "EXTERNAL".into()];
        td.volumes = vec![serde_json::json!({"name": "data"})];
        let json = serde_json::to_string_pretty(&td).unwrap();
        let (back, warnings) = parse_register_input(&json).unwrap();
        assert_eq!(back, td);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "volumes");
        // And in the describe-task-definition wrapper.
        let wrapped = format!(r#"{{"taskDefinition": {json}}}"#);
        let (back2, _) = parse_register_input(&wrapped).unwrap();
        assert_eq!(back2, td);
    }

    #[test]
    fn describe_wrapper_with_outside_tags() {
        let json = r#"{
            "taskDefinition": {
                "family": "x", "revision": 2, "status": "INACTIVE",
                "registeredAt": "2024-01-01T00:00:00+00:00",
                "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
                "registeredBy": "arn:aws:iam::1:root",
                "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 64,
                    "mountPoints": [], "volumesFrom": [], "systemControls": [], "secrets": []}],
                "volumes": [], "placementConstraints": []
            },
            "tags": [{"key": "k", "value": "v"}],
            "ResponseMetadata": {}
        }"#;
        let (td, warnings) = parse_register_input(json).unwrap();
        assert_eq!(td.revision, Some(2));
        assert_eq!(td.status, Some(TaskDefinitionStatus::Inactive));
        assert_eq!(td.registered_at, None);
        assert_eq!(
            td.tags,
            vec![Tag {
                key: "k".into(),
                value: "v".into()
            }]
        );
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["registeredAt", "ResponseMetadata"],
            "{warnings:?}"
        );
        validate(&td).unwrap();
    }

    #[test]
    fn unsupported_and_unknown_fields_warn() {
        let json = r#"{
            "family": "f",
            "pidMode": "host",
            "networkMode": "awsvpc",
            "runtimePlatform": {"cpuArchitecture": "ARM64"},
            "volumes": [{"name": "v", "host": {"sourcePath": "/data"}}],
            "containerDefinitions": [{
                "name": "a", "image": "busybox", "memory": 64,
                "secrets": [{"name": "X", "valueFrom": "arn:..."}],
                "interactive": false, "pseudoTerminal": null,
                "repositoryCredentials": {"credentialsParameter": "arn:..."},
                "linuxParameters": {"initProcessEnabled": true},
                "mountPoints": [{"sourceVolume": "v", "containerPath": "/data"}],
                "portMappings": [{"containerPort": 80, "appProtocol": "http"}],
                "memroy": 128,
                "Image": "x"
            }]
        }"#;
        let (td, warnings) = parse_register_input(json).unwrap();
        let find = |p: &str| {
            warnings
                .iter()
                .find(|w| w.path == p)
                .unwrap_or_else(|| panic!("no warning for {p}: {warnings:?}"))
        };
        find("pidMode");
        find("runtimePlatform");
        find("volumes");
        assert!(find("networkMode").message.contains("awsvpc"));
        assert!(find("containerDefinitions[0].secrets")
            .message
            .contains("not supported"));
        find("containerDefinitions[0].repositoryCredentials");
        find("containerDefinitions[0].linuxParameters");
        find("containerDefinitions[0].mountPoints");
        find("containerDefinitions[0].portMappings[0].appProtocol");
        assert_eq!(
            find("containerDefinitions[0].memroy").message,
            "unknown field, ignored"
        );
        assert!(find("containerDefinitions[0].Image")
            .message
            .contains("did you mean \"image\""));
        assert_eq!(warnings.len(), 11, "{warnings:?}");
        assert_eq!(td.volumes.len(), 1);
        assert_eq!(td.container_definitions[0].mount_points.len(), 1);
        assert_eq!(td.container_definitions[0].memory, Some(64));
        assert_eq!(
            warnings[0].to_string(),
            format!("{}: {}", warnings[0].path, warnings[0].message)
        );
        validate(&td).unwrap();
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = err_with("/containerDefinitions/1/memory", serde_json::json!("512"));
        assert_eq!(
            e.to_string(),
            "containerDefinitions[1].memory: expected an integer, got a string"
        );
        let e = err_with(
            "/containerDefinitions/0/portMappings/0/containerPort",
            serde_json::json!(80.5),
        );
        assert_err(
            &e,
            "containerDefinitions[0].portMappings[0].containerPort",
            "expected an integer",
        );
        let e = err_with("/containerDefinitions/1/command/1", serde_json::json!(3));
        assert_err(
            &e,
            "containerDefinitions[1].command[1]",
            "expected a string",
        );
        let e = err_with(
            "/containerDefinitions/0/dockerLabels/team",
            serde_json::json!(1),
        );
        assert_err(
            &e,
            "containerDefinitions[0].dockerLabels.team",
            "expected a string",
        );
        let e = err_with(
            "/containerDefinitions/0/essential",
            serde_json::json!("yes"),
        );
        assert_err(
            &e,
            "containerDefinitions[0].essential",
            "expected a boolean",
        );
        let e = err_with(
            "/containerDefinitions/0/portMappings/0/protocol",
            serde_json::json!("sctp"),
        );
        assert_err(
            &e,
            "containerDefinitions[0].portMappings[0].protocol",
            "must be one of tcp, udp",
        );
        let e = err_with(
            "/containerDefinitions/0/dependsOn/0/condition",
            serde_json::json!("READY"),
        );
        assert_err(
            &e,
            "containerDefinitions[0].dependsOn[0].condition",
            "START, COMPLETE",
        );
        let e = err_with("/containerDefinitions/0/cpu", serde_json::json!(u64::MAX));
        assert_err(&e, "containerDefinitions[0].cpu", "out of range");
        let e = err_with("/containerDefinitions/1", serde_json::json!("app"));
        assert_err(&e, "containerDefinitions[1]", "expected an object");
        let e = err_with("/containerDefinitions", serde_json::json!({}));
        assert_err(&e, "containerDefinitions", "expected an array");

        let mut doc: Value = serde_json::from_str(VALID).unwrap();
        remove_pointer(&mut doc, "/containerDefinitions/0/dependsOn/0/condition");
        let e = parse_register_input(&doc.to_string()).unwrap_err();
        assert_err(
            &e,
            "containerDefinitions[0].dependsOn[0].condition",
            "missing required field",
        );

        // Task-level cpu/memory given as numbers are normalized to strings.
        let td = with("/memory", serde_json::json!(1024)).unwrap();
        assert_eq!(td.memory.as_deref(), Some("1024"));
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let e = parse_register_input("{\n  \"family\": \"x\",\n  oops\n}").unwrap_err();
        match &e {
            TaskDefinitionError::Syntax { line, column, .. } => {
                assert_eq!(*line, 3);
                assert_eq!(*column, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("invalid JSON at line 3, column 3: "),
            "{e}"
        );
        assert_eq!(e.path(), "");
        let e = parse_register_input("[1, 2]").unwrap_err();
        assert_eq!(e.to_string(), "expected a JSON object, got an array");
    }

    #[test]
    fn validation_errors() {
        use serde_json::json;
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("/family", json!(""), "family", "family is required"),
            ("/family", json!("bad family!"), "family", "letters, numbers, hyphens and underscores"),
            ("/family", json!("a".repeat(256)), "family", "at most 255"),
            ("/containerDefinitions", json!([]), "containerDefinitions", "at least one container"),
            ("/containerDefinitions/1/name", json!("web"), "containerDefinitions[1].name", "duplicate container name \"web\""),
            ("/containerDefinitions/1/name", json!("app.v2"), "containerDefinitions[1].name", "container name"),
            ("/containerDefinitions/0/image", json!(""), "containerDefinitions[0].image", "image is required"),
            ("/containerDefinitions/0/memoryReservation", json!(512), "containerDefinitions[0].memoryReservation", "memoryReservation (512 MiB) must not exceed memory (256 MiB)"),
            ("/containerDefinitions/0/memory", json!(4), "containerDefinitions[0].memory", "at least 6 MiB"),
            ("/containerDefinitions/0/portMappings/0/containerPort", json!(0), "containerDefinitions[0].portMappings[0].containerPort", "between 1 and 65535"),
            ("/containerDefinitions/0/portMappings/0/containerPort", json!(70000), "containerDefinitions[0].portMappings[0].containerPort", "between 1 and 65535"),
            ("/containerDefinitions/0/portMappings/0/hostPort", json!(-1), "containerDefinitions[0].portMappings[0].hostPort", "between 0 and 65535"),
            ("/containerDefinitions/0/portMappings/0/hostPort", json!(65536), "containerDefinitions[0].portMappings[0].hostPort", "between 0 and 65535"),
            ("/containerDefinitions/0/portMappings/1", json!({"containerPort": 81, "hostPort": 8080}), "containerDefinitions[0].portMappings[1].hostPort", "host port 8080/tcp is already used by containerDefinitions[0].portMappings[0].hostPort"),
            ("/containerDefinitions/1/portMappings/0/hostPort", json!(8080), "containerDefinitions[1].portMappings[0].hostPort", "unused"),
            ("/containerDefinitions/0/dependsOn/0/containerName", json!("nope"), "containerDefinitions[0].dependsOn[0].containerName", "unknown container \"nope\""),
            ("/containerDefinitions/0/dependsOn/0/containerName", json!("web"), "containerDefinitions[0].dependsOn[0].containerName", "itself"),
            ("/containerDefinitions/1/dependsOn", json!([{"containerName": "web", "condition": "START"}]), "containerDefinitions[1].dependsOn[0].containerName", "dependency cycle"),
            ("/containerDefinitions/1/links", json!(["web"]), "containerDefinitions[1].links[0]", "dependency cycle: web -> app -> web"),
            ("/containerDefinitions/0/links/0", json!("db:database"), "containerDefinitions[0].links[0]", "unknown container \"db\""),
            ("/containerDefinitions/1/healthCheck/command", json!([]), "containerDefinitions[1].healthCheck.command", "must not be empty"),
            ("/containerDefinitions/1/healthCheck/command", json!(["curl", "-f", "x"]), "containerDefinitions[1].healthCheck.command[0]", "CMD or CMD-SHELL"),
            ("/containerDefinitions/1/healthCheck/interval", json!(4), "containerDefinitions[1].healthCheck.interval", "between 5 and 300 seconds"),
            ("/containerDefinitions/1/healthCheck/interval", json!(301), "containerDefinitions[1].healthCheck.interval", "between 5 and 300"),
            ("/containerDefinitions/1/healthCheck/timeout", json!(1), "containerDefinitions[1].healthCheck.timeout", "between 2 and 60"),
            ("/containerDefinitions/1/healthCheck/timeout", json!(61), "containerDefinitions[1].healthCheck.timeout", "between 2 and 60"),
            ("/containerDefinitions/1/healthCheck/retries", json!(0), "containerDefinitions[1].healthCheck.retries", "between 1 and 10"),
            ("/containerDefinitions/1/healthCheck/retries", json!(11), "containerDefinitions[1].healthCheck.retries", "between 1 and 10"),
            ("/containerDefinitions/1/healthCheck/startPeriod", json!(-1), "containerDefinitions[1].healthCheck.startPeriod", "between 0 and 300"),
            ("/containerDefinitions/1/healthCheck/startPeriod", json!(301), "containerDefinitions[1].healthCheck.startPeriod", "between 0 and 300"),
            ("/containerDefinitions/0/stopTimeout", json!(-1), "containerDefinitions[0].stopTimeout", "between 0 and 120"),
            ("/containerDefinitions/0/stopTimeout", json!(121), "containerDefinitions[0].stopTimeout", "between 0 and 120"),
            ("/memory", json!("lots"), "memory", "task memory \"lots\""),
            ("/placementConstraints/0/type", json!("distinctInstance"), "placementConstraints[0].type", "memberOf"),
        ];
        for (pointer, value, path, msg) in cases {
            let res = with(pointer, value.clone());
            if msg == "unused" {
                // Same host port with a different protocol is fine...
                let td = res.unwrap_or_else(|e| panic!("{pointer}={value}: {e}"));
                // ...but the same protocol is not.
                let mut doc = serde_json::to_value(&td).unwrap();
                set_pointer(
                    &mut doc,
                    "/containerDefinitions/1/portMappings/0/protocol",
                    json!("tcp"),
                );
                let td: TaskDefinition = serde_json::from_value(doc).unwrap();
                assert_err(&validate(&td).unwrap_err(), path, "already used");
                continue;
            }
            let e = res.expect_err(&format!("{pointer}={value} should fail"));
            assert_err(&e, path, msg);
            assert!(!e.to_string().ends_with('.'), "{e}");
        }
    }

    #[test]
    fn validation_structural_errors() {
        let mut td = valid();
        td.container_definitions[1].health_check = None;
        let e = validate(&td).unwrap_err();
        assert_err(
            &e,
            "containerDefinitions[0].dependsOn[0].condition",
            "HEALTHY requires",
        );

        let mut td = valid();
        for c in &mut td.container_definitions {
            c.essential = Some(false);
        }
        assert_err(
            &validate(&td).unwrap_err(),
            "containerDefinitions",
            "essential",
        );

        let mut td = valid();
        let base = td.container_definitions[1].clone();
        for i in 0..10 {
            let mut c = base.clone();
            c.name = format!("extra{i}");
            c.port_mappings.clear();
            td.container_definitions.push(c);
        }
        assert_err(
            &validate(&td).unwrap_err(),
            "containerDefinitions",
            "at most 10 containers (got 12)",
        );

        // No memory anywhere: error, unless task-level memory is set.
        let mut td = valid();
        td.container_definitions[1].memory_reservation = None;
        let e = validate(&td).unwrap_err();
        assert_err(
            &e,
            "containerDefinitions[1].memory",
            "memory or memoryReservation is required",
        );
        td.memory = Some("1 GB".into());
        validate(&td).unwrap();
        assert_eq!(td.total_memory_reservation_mib(), 1024);

        let mut td = valid();
        td.container_definitions[0].port_mappings[0].container_port = None;
        assert_err(
            &validate(&td).unwrap_err(),
            "containerDefinitions[0].portMappings[0].containerPort",
            "required",
        );

        let e = TaskDefinitionError::invalid("", "whole document");
        assert_eq!(e.to_string(), "whole document");
        assert_eq!(e.message(), "whole document");
    }

    #[test]
    fn container_definitions_form() {
        let json = r#"[{"name": "a", "image": "busybox", "memory": 32, "secrets": [{"name":"x","valueFrom":"y"}]},
                       {"name": "b", "image": "busybox", "memory": "32"}]"#;
        let e = parse_container_definitions("fam", json).unwrap_err();
        assert_eq!(e.path(), "containerDefinitions[1].memory");
        let json = r#"[{"name": "a", "image": "busybox", "memory": 32, "secrets": [{"name":"x","valueFrom":"y"}]}]"#;
        let (td, warnings) = parse_container_definitions("fam", json).unwrap();
        assert_eq!(td.family, "fam");
        assert_eq!(warnings[0].path, "containerDefinitions[0].secrets");
        validate(&td).unwrap();
        let e = parse_container_definitions("fam", r#"{"name": "a"}"#).unwrap_err();
        assert_eq!(e.path(), "containerDefinitions");
        let e = parse_container_definitions("fam", "[").unwrap_err();
        assert!(matches!(e, TaskDefinitionError::Syntax { .. }));
    }

    #[test]
    fn resource_helpers() {
        let td = valid();
        assert_eq!(td.total_cpu(), 768);
        assert_eq!(td.total_memory_reservation_mib(), 128 + 192);
        assert_eq!(
            td.container_definitions[0].memory_reservation_mib(),
            Some(128)
        );
        let mut ports = td.static_host_ports();
        ports.sort();
        assert_eq!(ports, vec![(3000, Protocol::Udp), (8080, Protocol::Tcp)]);
        let mut td2 = td.clone();
        td2.cpu = Some("0.5 vCPU".into());
        assert_eq!(td2.total_cpu(), 512);
        td2.cpu = Some("2048".into());
        assert_eq!(td2.total_cpu(), 2048);
        td2.container_definitions[0].memory_reservation = None;
        assert_eq!(
            td2.container_definitions[0].memory_reservation_mib(),
            Some(256)
        );
        assert_eq!(parse_task_memory("2GB"), Some(2048));
        assert_eq!(parse_task_memory("0.5 gb"), Some(512));
        assert_eq!(parse_task_memory("GB"), None);
        assert_eq!(parse_task_memory("1e999 GB"), None);
        assert_eq!(parse_task_cpu("1 vcpu"), Some(1024));
        assert_eq!(parse_task_cpu("-1"), None);
    }

    #[test]
    fn task_definition_ref() {
        let r = TaskDefinitionRef::parse("web-app").unwrap();
        assert_eq!((r.family.as_str(), r.revision), ("web-app", None));
        assert_eq!(r.to_string(), "web-app");
        let r: TaskDefinitionRef = "web_app:12".parse().unwrap();
        assert_eq!((r.family.as_str(), r.revision), ("web_app", Some(12)));
        assert_eq!(r.to_string(), "web_app:12");
        let arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web-app:7";
        let r = TaskDefinitionRef::parse(arn).unwrap();
        assert_eq!((r.family.as_str(), r.revision), ("web-app", Some(7)));
        assert_eq!(
            r.arn_prefix.as_deref(),
            Some("arn:aws:ecs:eu-west-1:123456789012:task-definition/")
        );
        assert_eq!(r.to_string(), arn);
        for bad in [
            "",
            "web:",
            "web:0",
            "web:-1",
            "web:+1",
            "web:x",
            "we b",
            "web:1:2",
            "arn:aws:ecs:eu-west-1:1:service/web:1",
            "arn:aws",
            "arn:aws:ecs:r:a:task-definition/",
        ] {
            let e = TaskDefinitionRef::parse(bad).expect_err(bad);
            assert_eq!(e.path(), "taskDefinition");
        }
    }

    #[test]
    fn overrides() {
        let td = valid();
        let o = parse_overrides(
            r#"{"containerOverrides": [{"name": "app", "command": ["migrate"],
                  "environment": [{"name": "MODE", "value": "debug"}, {"name": "NEW", "value": "1"}],
                  "memoryReservation": 300, "environmentFiles": [{"type": "s3", "value": "x"}]}],
                "memory": "2048", "taskRoleArn": "arn:aws:iam::1:role/other"}"#,
        )
        .unwrap();
        let out = apply_overrides(&td, &o).unwrap();
        let app = out.container("app").unwrap();
        assert_eq!(app.command, vec!["migrate"]);
        assert_eq!(app.env("MODE"), Some("debug"));
        assert_eq!(app.env("LOG"), Some("info"));
        assert_eq!(app.env("NEW"), Some("1"));
        assert_eq!(app.environment.len(), 3);
        assert_eq!(app.memory_reservation, Some(300));
        assert_eq!(out.memory.as_deref(), Some("2048"));
        assert_eq!(out.total_memory_reservation_mib(), 2048);
        assert_eq!(
            out.task_role_arn.as_deref(),
            Some("arn:aws:iam::1:role/other")
        );
        // Untouched container unchanged.
        assert_eq!(out.container_definitions[0], td.container_definitions[0]);

        let (_, warnings) = parse_overrides_with_warnings(
            r#"{"containerOverrides": [{"name": "app", "environmentFiles": [{"type": "s3", "value": "x"}]}], "typo": 1}"#,
        )
        .unwrap();
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["containerOverrides[0].environmentFiles", "typo"]
        );

        let o = parse_overrides(r#"{"containerOverrides": [{"name": "app"}, {"name": "ghost"}]}"#)
            .unwrap();
        let e = apply_overrides(&td, &o).unwrap_err();
        assert_err(
            &e,
            "containerOverrides[1].name",
            "no container named \"ghost\"",
        );

        let o = parse_overrides(r#"{"containerOverrides": [{"name": "app"}, {"name": "app"}]}"#)
            .unwrap();
        assert_err(
            &apply_overrides(&td, &o).unwrap_err(),
            "containerOverrides[1].name",
            "duplicate",
        );

        let e = parse_overrides(r#"{"containerOverrides": [{"command": ["x"]}]}"#).unwrap_err();
        assert_err(&e, "containerOverrides[0].name", "missing required field");

        let e =
            parse_overrides(r#"{"containerOverrides": [{"name": "a", "cpu": "1"}]}"#).unwrap_err();
        assert_err(&e, "containerOverrides[0].cpu", "expected an integer");

        // Overrides producing an invalid definition are rejected.
        let o = parse_overrides(
            r#"{"containerOverrides": [{"name": "web", "memoryReservation": 512}]}"#,
        )
        .unwrap();
        let e = apply_overrides(&td, &o).unwrap_err();
        assert_err(
            &e,
            "containerDefinitions[0].memoryReservation",
            "must not exceed memory",
        );

        // An empty command override clears the command.
        let o =
            parse_overrides(r#"{"containerOverrides": [{"name": "app", "command": []}]}"#).unwrap();
        assert!(apply_overrides(&td, &o)
            .unwrap()
            .container("app")
            .unwrap()
            .command
            .is_empty());
        assert_eq!(parse_overrides("{}").unwrap(), TaskOverride::default());
        assert!(parse_overrides("[]").is_err());
    }

    /// Tiny deterministic PRNG so the fuzz test needs no extra crates.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    fn exercise(json: &str) {
        if let Ok((td, _)) = parse_register_input(json) {
            let _ = validate(&td);
            let _ = td.total_cpu();
            let _ = td.total_memory_reservation_mib();
            let _ = td.static_host_ports();
            let _ = td.start_order();
            let again = serde_json::to_string(&td).unwrap();
            let (back, _) = parse_register_input(&again).expect("re-parse of own output");
            assert_eq!(back, td);
        }
        let _ = parse_container_definitions("f", json);
        if let Ok(o) = parse_overrides(json) {
            let _ = apply_overrides(&valid(), &o);
        }
    }

    fn pointers(v: &Value, prefix: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{prefix}/{k}");
                    out.push(p.clone());
                    pointers(child, p, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let p = format!("{prefix}/{i}");
                    out.push(p.clone());
                    pointers(child, p, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn fuzzish_inputs_never_panic() {
        // Truncations.
        let bytes = VALID.as_bytes();
        for end in 0..bytes.len() {
            if let Ok(s) = std::str::from_utf8(&bytes[..end]) {
                exercise(s);
            }
        }
        // Random garbling.
        let mut rng = Lcg(42);
        let alphabet = b"{}[]\":,0123456789-.eE truefalsnul\\x";
        for _ in 0..300 {
            let mut b = bytes.to_vec();
            for _ in 0..(1 + rng.next() % 4) {
                let pos = (rng.next() as usize) % b.len();
                b[pos] = alphabet[(rng.next() as usize) % alphabet.len()];
            }
            exercise(&String::from_utf8_lossy(&b));
        }
        // Every value replaced by values of every type.
        let doc: Value = serde_json::from_str(VALID).unwrap();
        let mut ptrs = Vec::new();
        pointers(&doc, String::new(), &mut ptrs);
        let replacements = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(i64::MAX),
            serde_json::json!(u64::MAX),
            serde_json::json!(1.5),
            serde_json::json!(1e300),
            serde_json::json!(""),
            serde_json::json!("x"),
            serde_json::json!([]),
            serde_json::json!([1, "a", null]),
            serde_json::json!({}),
            serde_json::json!({"a": {"b": []}}),
        ];
        for p in &ptrs {
            for r in &replacements {
                let mut d = doc.clone();
                set_pointer(&mut d, p, r.clone());
                exercise(&d.to_string());
            }
        }
        // Odd top-level documents.
        for s in [
            "",
            " ",
            "null",
            "1",
            "\"x\"",
            "[]",
            "{}",
            "{\"taskDefinition\": 1}",
            "{\"taskDefinition\": {}}",
            "{\"taskDefinition\": null}",
            "{\"tags\": 5, \"taskDefinition\": {}}",
            &"[".repeat(10_000),
            &"{\"a\":".repeat(5_000),
        ] {
            exercise(s);
        }
    }
}
