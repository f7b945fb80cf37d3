//! The container runtime abstraction.
//!
//! [`Runtime`] is the only door from the agent to a container engine: nothing
//! else in the agent talks to Docker (or any other engine) directly. The real
//! implementation is [`crate::agent::docker::DockerRuntime`]; an in-memory one
//! for simulations and scale tests is [`crate::agent::fake::FakeRuntime`].
//!
//! Errors are reported as [`RuntimeError`], whose messages follow the ECS
//! stopped-reason style ("CannotPullContainerError: ...") so the agent can pass
//! them to the control plane as they are.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::vocab::ids::last_segment;

pub use crate::vocab::Protocol;

/// A container id as the engine reports it (Docker: 64 hex characters).
pub type ContainerId = String;

/// Result type of every [`Runtime`] call.
pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// What the engine reports about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// ECS-style architecture: "amd64", "arm64", "arm/v7", "arm/v6" (see [`normalize_architecture`]).
    pub architecture: String,
    pub os_type: String,
    pub kernel_version: String,
    pub docker_version: String,
    pub hostname: String,
}

/// Maps an engine or `uname -m` architecture name to the ECS/OCI style.
///
/// "x86_64" → "amd64", "aarch64" → "arm64", "armv7l" → "arm/v7",
/// "armv6l" → "arm/v6"; names already in that style are kept; anything else
/// is returned lowercased.
pub fn normalize_architecture(arch: &str) -> String {
    let a = arch.trim().to_ascii_lowercase();
    match a.as_str() {
        "x86_64" | "amd64" | "x86-64" => "amd64".into(),
        "aarch64" | "arm64" | "arm64/v8" | "armv8" | "armv8l" => "arm64".into(),
        "armv7l" | "armv7" | "armhf" | "arm/v7" | "arm" => "arm/v7".into(),
        "armv6l" | "armv6" | "armel" | "arm/v6" => "arm/v6".into(),
        "i386" | "i686" | "386" => "386".into(),
        _ => a,
    }
}

/// Credentials for a private registry.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// Registry host, e.g. "registry.example.com:5000".
    pub server: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .finish()
    }
}

/// ECS_IMAGE_PULL_BEHAVIOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullBehavior {
    /// Try to pull; if the pull fails but the image is cached, use the cached one.
    #[default]
    Default,
    /// The pull must succeed.
    Always,
    /// Pull only if the image is not present locally.
    Once,
    /// Use the local image if present, else pull.
    PreferCached,
}

impl FromStr for PullBehavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "default" | "" => Ok(Self::Default),
            "always" => Ok(Self::Always),
            "once" => Ok(Self::Once),
            "prefer-cached" | "prefercached" => Ok(Self::PreferCached),
            other => Err(format!(
                "unknown image pull behavior {other:?} (expected default, always, once or prefer-cached)"
            )),
        }
    }
}

impl fmt::Display for PullBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Always => "always",
            Self::Once => "once",
            Self::PreferCached => "prefer-cached",
        })
    }
}

/// A published port. `host_port` is chosen by the agent and is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
}

/// A health check in ECS form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    /// `["CMD-SHELL", "curl -f http://localhost/"]` or `["CMD", "/bin/check", "arg"]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl Default for HealthCheckSpec {
    /// ECS defaults: interval 30s, timeout 5s, 3 retries, no start period.
    fn default() -> Self {
        Self {
            test: Vec::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            retries: 3,
            start_period: Duration::ZERO,
        }
    }
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub environment: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub entry_point: Option<Vec<String>>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub cpu_shares: Option<i64>,
    pub memory_limit_mib: Option<i64>,
    pub memory_reservation_mib: Option<i64>,
    pub port_bindings: Vec<PortBinding>,
    /// A user-defined bridge network to attach to (None: the default bridge).
    pub network: Option<String>,
    /// DNS aliases on `network` (ignored on the default bridge).
    pub network_aliases: Vec<String>,
    /// "name:alias" as `docker --link`; meant for the default bridge.
    pub links: Vec<String>,
    pub health_check: Option<HealthCheckSpec>,
    /// Time between SIGTERM and SIGKILL when the engine stops the container
    /// (zero: the engine's default).
    pub stop_timeout: Duration,
    /// None: "json-file".
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
    pub privileged: bool,
    pub readonly_root_filesystem: bool,
    /// "host:ip" entries for /etc/hosts.
    pub extra_hosts: Vec<String>,
    /// Variables the executor adds to `environment` from the task's
    /// secrets just before creating the container (asked of the control
    /// plane then, never stored in the assignment or the spec before).
    #[serde(default)]
    pub secret_variables: Vec<String>,
}

impl ContainerSpec {
    /// A spec with only a name and an image, and ECS's 30 second stop timeout.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            stop_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
}

impl ContainerState {
    /// Parses Docker's state names ("created", "running", ...); "removing" counts as dead.
    pub fn from_docker(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "created" => Self::Created,
            "running" => Self::Running,
            "restarting" => Self::Restarting,
            "paused" => Self::Paused,
            "exited" => Self::Exited,
            "dead" | "removing" => Self::Dead,
            _ => return None,
        })
    }

    /// True once the container's process has ended for good.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Exited | Self::Dead)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No health check configured.
    #[default]
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// Parses Docker's health status names.
    pub fn from_docker(s: &str) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "starting" => Self::Starting,
            "healthy" => Self::Healthy,
            "unhealthy" => Self::Unhealthy,
            _ => Self::None,
        }
    }
}

/// What `inspect_container` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub name: String,
    pub state: ContainerState,
    /// Set once the container has exited.
    pub exit_code: Option<i64>,
    /// The engine's error for this container, in ECS words when recognised
    /// (e.g. the exec format error message of [`RuntimeError::ExecFormat`]).
    pub error: Option<String>,
    pub oom_killed: bool,
    pub health: HealthStatus,
    /// RFC 3339 timestamps.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Published ports as the engine reports them.
    pub host_ports: Vec<PortBinding>,
    pub ip_address: Option<String>,
}

/// One row of `list_containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub id: ContainerId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
}

/// One row of `list_networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a container's output, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeEventKind {
    Start,
    Die { exit_code: i64 },
    HealthStatus(HealthStatus),
    Oom,
}

/// A container lifecycle event from the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    pub container_id: ContainerId,
    pub kind: RuntimeEventKind,
    pub labels: BTreeMap<String, String>,
}

/// Plain-words message for an image built for another CPU architecture.
pub const EXEC_FORMAT_MESSAGE: &str = "CannotStartContainerError: the image's binary is built for another CPU architecture (exec format error)";

/// True when an engine message says a binary could not be executed on this CPU.
pub fn is_exec_format_error(message: &str) -> bool {
    message.to_ascii_lowercase().contains("exec format error")
}

/// Errors of the runtime, worded for ECS-style stopped reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("CannotPullContainerError: {image}: {message}")]
    ImagePull { image: String, message: String },
    /// `platform` is e.g. "linux/arm64".
    #[error("CannotPullContainerError: image {image} has no variant for {platform}")]
    PlatformMismatch { image: String, platform: String },
    #[error("CannotCreateContainerError: {0}")]
    CreateContainer(String),
    #[error("CannotStartContainerError: {0}")]
    StartContainer(String),
    /// `detail` keeps the engine's own words for logs; Display is [`EXEC_FORMAT_MESSAGE`].
    #[error("CannotStartContainerError: the image's binary is built for another CPU architecture (exec format error)")]
    ExecFormat { detail: String },
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("the container engine is unreachable ({0}): check that docker is running")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// The ECS error name for a stopped reason, if this error has one.
    pub fn ecs_reason(&self) -> Option<&'static str> {
        match self {
            Self::ImagePull { .. } | Self::PlatformMismatch { .. } => {
                Some("CannotPullContainerError")
            }
            Self::CreateContainer(_) => Some("CannotCreateContainerError"),
            Self::StartContainer(_) | Self::ExecFormat { .. } => Some("CannotStartContainerError"),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The only door from the agent to a container engine.
///
/// Label filters are Docker's syntax: `"key"` (label present) or
/// `"key=value"`; `None` means no filter.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Resources and identity of this node.
    async fn info(&self) -> RuntimeResult<NodeResources>;

    /// Whether `image` is in the local image store.
    async fn image_present(&self, image: &str) -> RuntimeResult<bool>;

    /// Pulls `image` (":latest" when it names no tag or digest).
    async fn pull_image(&self, image: &str, auth: Option<&RegistryAuth>) -> RuntimeResult<()>;

    /// Makes `image` available according to `behavior` (ECS_IMAGE_PULL_BEHAVIOR).
    async fn ensure_image(
        &self,
        image: &str,
        behavior: PullBehavior,
        auth: Option<&RegistryAuth>,
    ) -> RuntimeResult<()> {
        match behavior {
            PullBehavior::Always => self.pull_image(image, auth).await,
            PullBehavior::Once | PullBehavior::PreferCached => {
                if self.image_present(image).await? {
                    Ok(())
                } else {
                    self.pull_image(image, auth).await
                }
            }
            PullBehavior::Default => match self.pull_image(image, auth).await {
                Ok(()) => Ok(()),
                Err(e @ RuntimeError::Unavailable(_)) => Err(e),
                Err(e) => {
                    if self.image_present(image).await? {
                        tracing::warn!(image, error = %e, "image pull failed, using the cached image");
                        Ok(())
                    } else {
                        Err(e)
                    }
                }
            },
        }
    }

    /// Creates a bridge network (idempotent: an existing network of that name
    /// is kept) and returns its id.
    async fn create_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> RuntimeResult<String>;

    /// Removes a network; a missing network is not an error.
    async fn remove_network(&self, name: &str) -> RuntimeResult<()>;

    async fn list_networks(&self, label: Option<&str>) -> RuntimeResult<Vec<NetworkInfo>>;

    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<ContainerId>;

    async fn start_container(&self, id: &str) -> RuntimeResult<()>;

    /// SIGTERM, then SIGKILL after `timeout` (as `docker stop -t`). Stopping a
    /// container that is not running is not an error.
    async fn stop_container(&self, id: &str, timeout: Duration) -> RuntimeResult<()>;

    /// Force-removes a container with its anonymous volumes; a missing
    /// container is not an error.
    async fn remove_container(&self, id: &str) -> RuntimeResult<()>;

    /// `id` may be an id or a name.
    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerStatus>;

    /// All containers, including exited ones, matching the label filter.
    async fn list_containers(&self, label: Option<&str>) -> RuntimeResult<Vec<ContainerSummary>>;

    /// A container's output. `since` is in epoch seconds; `tail` keeps the
    /// last N lines (None: all). With `follow`, the stream goes on until the
    /// container stops.
    fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<i64>,
        tail: Option<u64>,
    ) -> BoxStream<'static, RuntimeResult<LogLine>>;

    /// Container events (start, die, health status, oom) from now on.
    fn events(&self, label: Option<&str>) -> BoxStream<'static, RuntimeResult<RuntimeEvent>>;
}

/// Splits a Docker-style label filter into key and optional value.
pub fn parse_label_filter(filter: &str) -> (&str, Option<&str>) {
    match filter.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (filter, None),
    }
}

/// Whether `labels` match a Docker-style label filter.
pub fn labels_match(labels: &BTreeMap<String, String>, filter: Option<&str>) -> bool {
    match filter {
        None => true,
        Some(f) => match parse_label_filter(f) {
            (k, None) => labels.contains_key(k),
            (k, Some(v)) => labels.get(k).map(String::as_str) == Some(v),
        },
    }
}

/// Epoch milliseconds of an RFC 3339 time as the engine writes it
/// ("2026-11-29T17:35:16.123456789Z", or with a "+01:00" offset); None when
/// it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':')?;
        (
            c,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
        )
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis: i64 = if fraction.is_empty() {
        0
    } else {
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{:0<3}", &fraction[..fraction.len().min(3)])
            .parse()
            .ok()?
    };
    let days = crate::vocab::time::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs * 1000 + millis).ok()
}

/// Adds ":latest" to an image reference that names no tag or digest.
pub fn image_with_tag(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let last = last_segment(image);
    if last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_map_to_ecs_names() {
        assert_eq!(normalize_architecture("x86_64"), "amd64");
        assert_eq!(normalize_architecture("aarch64"), "arm64");
        assert_eq!(normalize_architecture("armv7l"), "arm/v7");
        assert_eq!(normalize_architecture("armv6l"), "arm/v6");
        assert_eq!(normalize_architecture("riscv64"), "riscv64");
    }

    #[test]
    fn pull_behavior_parses_ecs_values() {
        assert_eq!("prefer-cached".parse(), Ok(PullBehavior::PreferCached));
        assert_eq!("ONCE".parse(), Ok(PullBehavior::Once));
        assert_eq!("always".parse(), Ok(PullBehavior::Always));
        assert_eq!("default".parse(), Ok(PullBehavior::Default));
        assert!("sometimes".parse::<PullBehavior>().is_err());
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_with_tag("nginx"), "nginx:latest");
        assert_eq!(
            image_with_tag("127.0.0.1:5000/a/b"),
            "127.0.0.1:5000/a/b:latest"
        );
        assert_eq!(
            image_with_tag("127.0.0.1:5000/a/b:1"),
            "127.0.0.1:5000/a/b:1"
        );
        assert_eq!(image_with_tag("a@sha256:00"), "a@sha256:00");
    }

    #[test]
    fn error_messages() {
        let e = RuntimeError::PlatformMismatch {
            image: "x".into(),
            platform: "linux/arm64".into(),
        };
        assert_eq!(
            e.to_string(),
            "CannotPullContainerError: image x has no variant for linux/arm64"
        );
        let e = RuntimeError::ExecFormat {
            detail: "exec /app: exec format error".into(),
        };
        assert_eq!(e.to_string(), EXEC_FORMAT_MESSAGE);
        assert_eq!(e.ecs_reason(), Some("CannotStartContainerError"));
    }

    #[test]
    fn rfc3339_times_parse_to_epoch_millis() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:34:56.789123456Z"),
            Some(1_709_210_096_789)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T13:34:56.5+01:00"),
            Some(1_709_210_096_500)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn label_filters() {
        let mut l = BTreeMap::new();
        l.insert("a".to_string(), "1".to_string());
        assert!(labels_match(&l, None));
        assert!(labels_match(&l, Some("a")));
        assert!(labels_match(&l, Some("a=1")));
        assert!(!labels_match(&l, Some("a=2")));
        assert!(!labels_match(&l, Some("b")));
    }
}
