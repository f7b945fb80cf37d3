//! The task definition's serde types (shaped so that serializing gives
//! ECS-shaped camelCase JSON), its limits, its error type, small resource
//! helpers for the scheduler and the agent, and references to a task
//! definition ([`TaskDefinitionRef`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

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

pub(super) fn display_with_path(path: &str, message: &str) -> String {
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

    pub(super) fn from_json(e: &serde_json::Error) -> Self {
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
    /// Environment variables whose values come from orc's secret store,
    /// delivered only to the agent that runs the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretReference>,
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

/// A `{name, valueFrom}` pair: an environment variable set from a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// The variable's name in the container.
    #[serde(default)]
    pub name: String,
    /// The secret: its name, or its ARN
    /// (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`).
    #[serde(default)]
    pub value_from: String,
}

/// Checks a Secrets Manager secret name: 1 to 512 of letters, digits and
/// `/_+=.@-`.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
    if name.is_empty() || name.len() > 512 || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?} is not a secret name: use 1 to 512 letters, digits and /_+=.@-"
        ));
    }
    Ok(())
}

/// The secret a `valueFrom` (or a `SecretId`) names: a plain name, or a
/// Secrets Manager ARN `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`.
pub fn secret_name_from(value_from: &str) -> Result<String, String> {
    let name = match value_from.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts[..] {
                [_, "secretsmanager", _, _, resource] if resource.starts_with("secret:") => {
                    &resource["secret:".len()..]
                }
                _ => {
                    return Err(format!(
                        "{value_from:?} is not a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME): give the secret's name or its ARN"
                    ))
                }
            }
        }
        None => value_from,
    };
    check_secret_name(name)?;
    Ok(name.to_string())
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
pub(super) fn parse_task_cpu(s: &str) -> Option<i64> {
    parse_amount(s, &["vcpu"], 1024)
}

/// Parses a task-level memory string: `"512"` (MiB), `"1 GB"`, `"0.5gb"`.
pub(super) fn parse_task_memory(s: &str) -> Option<i64> {
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
