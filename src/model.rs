//! ECS's domain vocabulary: clusters, container instances, task definitions,
//! tasks and services, as plain serde types whose JSON is shaped like the
//! `aws ecs` responses. No I/O and no protobuf here: the store keeps these
//! types, the API shapes responses from them, the CLI prints them.

use serde::{Deserialize, Serialize};

use crate::vocab::ids::last_segment;

pub mod elbv2;

/// The partition, region and account that every orc ARN carries. orc runs on
/// the user's own hardware, so the partition is `orc` and the account zeros.
pub const ARN_PREFIX: &str = "arn:orc:ecs:local:000000000000";

/// The name of the cluster that always exists.
pub const DEFAULT_CLUSTER: &str = "default";

/// Builds the ARN of a resource, e.g. `arn(“cluster”, “default”)`.
pub fn arn(kind: &str, rest: &str) -> String {
    format!("{ARN_PREFIX}:{kind}/{rest}")
}

/// Accepts a cluster given by name or ARN and returns its name.
pub fn cluster_name_from(name_or_arn: &str) -> String {
    let trimmed = name_or_arn.trim();
    match trimmed.strip_prefix("arn:") {
        Some(_) => trimmed
            .rsplit_once("cluster/")
            .map(|(_, name)| name.to_string())
            .unwrap_or_else(|| trimmed.to_string()),
        None => trimmed.to_string(),
    }
}

/// Checks a cluster name against ECS's rule: up to 255 letters (upper and
/// lowercase), numbers, underscores and hyphens.
pub fn validate_cluster_name(name: &str) -> crate::Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(crate::Error::InvalidInput(format!(
            "clusterName: must be 1 to 255 characters, got {}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(crate::Error::InvalidInput(format!(
            "clusterName: {name:?} contains {bad:?}; use only letters, numbers, hyphens and underscores"
        )));
    }
    Ok(())
}

/// A logical cluster as stored. Counts are derived at read time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// ECS's `clusterName`.
    pub cluster_name: String,
    /// ECS's `clusterArn`.
    pub cluster_arn: String,
    /// `ACTIVE`, or `INACTIVE` once deleted (kept so describe still answers).
    pub status: String,
    /// Tags given at creation, in ECS's `[{key, value}]` shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Milliseconds since the epoch when the cluster was created (from the command).
    pub created_at_ms: u64,
}

/// ECS's tag shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag's key.
    pub key: String,
    /// The tag's value.
    #[serde(default)]
    pub value: String,
}

/// The counts ECS reports beside a cluster, derived from the other tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCounts {
    /// Container instances registered (any status but INACTIVE).
    pub registered_container_instances_count: u64,
    /// Tasks whose last status is RUNNING.
    pub running_tasks_count: u64,
    /// Tasks not yet RUNNING and not stopped.
    pub pending_tasks_count: u64,
    /// Services whose status is ACTIVE.
    pub active_services_count: u64,
}

/// One server of the control plane as `orc cluster status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerMember {
    /// Its raft node id.
    pub id: u64,
    /// Its advertised API address.
    pub address: String,
    /// `leader`, `follower`, `candidate`, `learner` or `failed`.
    pub role: String,
    /// Whether it votes (learners do not).
    pub voter: bool,
    /// The highest log index known to be replicated on it (leader's view).
    pub matched_index: u64,
    /// Whether it answers (only the leader knows its followers' health).
    pub healthy: bool,
    /// Why it stopped serving (its storage failed); empty otherwise.
    pub failure: String,
}

/// The control plane's status as one server answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlPlaneStatus {
    /// The control plane's id.
    pub cluster_id: String,
    /// The server that answered.
    pub answering_node_id: u64,
    /// The leader's node id, 0 when none is known.
    pub leader_id: u64,
    /// The leader's address, empty when unknown.
    pub leader_address: String,
    /// The current raft term.
    pub term: u64,
    /// The highest committed index.
    pub commit_index: u64,
    /// The highest applied index.
    pub applied_index: u64,
    /// Every member.
    pub members: Vec<ServerMember>,
    /// The state's revision.
    pub revision: u64,
    /// The index the log was last compacted at.
    pub snapshot_index: u64,
}

/// The control plane's members after a membership change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The control plane's id.
    pub cluster_id: String,
    /// Every member.
    pub members: Vec<ServerMember>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_and_arns() {
        assert_eq!(cluster_name_from("web"), "web");
        assert_eq!(cluster_name_from(&arn("cluster", "web")), "web");
        assert!(validate_cluster_name("lab_1-a").is_ok());
        let error = validate_cluster_name("bad name").unwrap_err().to_string();
        assert!(error.contains("' '"), "{error}");
        assert!(validate_cluster_name("").is_err());
        assert!(validate_cluster_name(&"x".repeat(256)).is_err());
    }
}

// ------------------------------------------------------------------ tasks

/// A task's (and a container's) lifecycle status, in ECS's order. A task's
/// `lastStatus` only moves forward along this order; `apply` enforces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Accepted, not yet placed on an instance.
    Provisioning,
    /// Placed; the agent is pulling images and creating containers.
    Pending,
    /// Containers are starting.
    Activating,
    /// Every essential container runs.
    Running,
    /// Stopping was decided; load balancer targets are being removed.
    Deactivating,
    /// Containers are being stopped.
    Stopping,
    /// Resources (networks, ports) are being released.
    Deprovisioning,
    /// Done; kept for describe-tasks for at least an hour.
    Stopped,
}

impl TaskStatus {
    /// ECS's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    /// Parses ECS's spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<TaskStatus> {
        serde_json::from_value(serde_json::Value::String(text.trim().to_ascii_uppercase())).ok()
    }
}

/// Why a task stopped, as ECS names it.
pub mod stop_code {
    /// A container could not be pulled, created or started.
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
    /// An essential container exited.
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    /// `orc stop-task`.
    pub const USER_INITIATED: &str = "UserInitiated";
    /// A service stopped it (scale-in, deployment, unreachable host).
    pub const SERVICE_SCHEDULER_INITIATED: &str = "ServiceSchedulerInitiated";
    /// The stopped reason of a task whose essential container was removed
    /// by hand (`docker rm -f`), with the stop code
    /// [`ESSENTIAL_CONTAINER_EXITED`]: orc does not recreate it.
    pub const ESSENTIAL_CONTAINER_REMOVED_REASON: &str =
        "Essential container in task was removed outside orc";
}

/// A host port a container is reachable on (ECS's `networkBindings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    /// The host address bound (`0.0.0.0` for all).
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    /// The port inside the container.
    pub container_port: u16,
    /// The port on the instance.
    pub host_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One container of a task, as ECS describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// ECS's container ARN.
    pub container_arn: String,
    /// The task's ARN.
    pub task_arn: String,
    /// The name from the container definition.
    pub name: String,
    /// The image reference.
    pub image: String,
    /// The engine's container id, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// PENDING, RUNNING or STOPPED (ECS reports these for containers).
    pub last_status: String,
    /// The exit code once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it stopped or failed, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Host ports it is reachable on.
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: String,
    /// Whether the task stops when this container stops.
    pub essential: bool,
}

/// What the agent reports about one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateChange {
    /// The container's name.
    pub container_name: String,
    /// The engine's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    pub status: String,
    /// Exit code once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Reason in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Host ports bound.
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    #[serde(default = "unknown")]
    pub health_status: String,
}

fn unknown() -> String {
    "UNKNOWN".to_string()
}

/// What the agent reports about a task (ECS SubmitTaskStateChange).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    /// The task's ARN.
    pub task_arn: String,
    /// The task's new lastStatus.
    pub status: TaskStatus,
    /// Why it stopped (e.g. "Essential container in task exited").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// TaskFailedToStart or EssentialContainerExited when the agent stopped it on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    /// Every container's state.
    #[serde(default)]
    pub containers: Vec<ContainerStateChange>,
    /// HEALTHY when every essential container is, UNHEALTHY when one is not, else UNKNOWN.
    #[serde(default = "unknown")]
    pub health_status: String,
    /// When the agent observed the change (ms since the epoch).
    pub at_ms: u64,
}

/// A task as stored and as ECS describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// ECS's task ARN: `…:task/CLUSTER/ID`.
    pub task_arn: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// `family:revision` ARN of the task definition.
    pub task_definition_arn: String,
    /// The instance it was placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    /// Overrides given to run-task, as ECS JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<serde_json::Value>,
    /// What the agent last reported.
    pub last_status: TaskStatus,
    /// What the control plane wants: RUNNING or STOPPED. Only the control plane writes it.
    pub desired_status: TaskStatus,
    /// CPU units reserved.
    pub cpu: String,
    /// Memory MiB reserved.
    pub memory: String,
    /// The containers.
    pub containers: Vec<Container>,
    /// Who started it (`--started-by`, or `ecs-svc/…` for a service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// The task group (`family:NAME` by default, `service:NAME` for services).
    pub group: String,
    /// Bumped on every change to the task.
    pub version: u64,
    /// ECS's stop code once stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    /// Why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// Always EC2 in orc.
    pub launch_type: String,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: String,
    /// Epoch seconds, as the aws CLI prints them.
    pub created_at: f64,
    /// When it reached RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// When stopping was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    /// When it reached STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    /// orc's addition: while PROVISIONING, why no instance can take it
    /// (`orc explain-task` gives the verdict per instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_reason: Option<String>,
    /// orc's addition: the `--placement-strategy` of the run-task call that
    /// started it, so a task that waits in PROVISIONING is placed as asked
    /// (empty for service tasks: their service's applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<crate::vocab::placement::PlacementStrategy>,
    /// orc's addition: the `--placement-constraints` of that run-task call
    /// (the task definition's own constraints apply besides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<crate::vocab::placement::PlacementConstraint>,
}

impl Task {
    /// The desired status as ECS shows it: STOPPED for a DEACTIVATING task
    /// (its stop is decided; orc keeps the stored desired status RUNNING
    /// until its load balancer targets have drained, so the agent keeps it
    /// running meanwhile).
    pub fn shown_desired_status(&self) -> TaskStatus {
        if self.last_status == TaskStatus::Deactivating {
            TaskStatus::Stopped
        } else {
            self.desired_status
        }
    }

    /// The task as ECS describes it (see [`Task::shown_desired_status`]).
    pub fn shown(&self) -> Task {
        Task {
            desired_status: self.shown_desired_status(),
            ..self.clone()
        }
    }

    /// The task id (last ARN segment).
    pub fn id(&self) -> &str {
        last_segment(&self.task_arn)
    }

    /// The cluster name from the cluster ARN.
    pub fn cluster_name(&self) -> String {
        cluster_name_from(&self.cluster_arn)
    }

    /// The container instance id from its ARN.
    pub fn container_instance_id(&self) -> Option<&str> {
        self.container_instance_arn.as_deref().map(last_segment)
    }
}

/// What the agent receives per assigned task: the task and its resolved
/// task definition (overrides applied).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The task as stored.
    pub task: Task,
    /// The task definition to run, with run-task overrides applied.
    pub task_definition: crate::taskdef::TaskDefinition,
}

// ------------------------------------------------------- container instances

/// ECS's `{name, value}` attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// e.g. `ecs.cpu-architecture`.
    pub name: String,
    /// e.g. `arm64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What an agent tells the control plane when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRegistration {
    /// The node's hostname.
    pub hostname: String,
    /// CPU units (1024 per core).
    pub cpu: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Host ports reserved on the instance (ECS reserves 22, 2375, 2376, 51678, 51679).
    #[serde(default)]
    pub reserved_ports: Vec<u16>,
    /// Built-in and custom attributes (`ecs.cpu-architecture`, `ecs.os-type`, `--attribute k=v`).
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// The agent's version.
    pub agent_version: String,
    /// The container engine's version.
    pub docker_version: String,
}

/// A container instance as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    /// ECS's ARN: `…:container-instance/CLUSTER/ID`.
    pub container_instance_arn: String,
    /// The instance id (orc's stand-in for the EC2 instance id).
    pub ec2_instance_id: String,
    /// The cluster name.
    pub cluster: String,
    /// ACTIVE, DRAINING (set by a user), DISCONNECTED (missed heartbeats), or INACTIVE (deregistered).
    pub status: String,
    /// What the user asked for: ACTIVE or DRAINING (survives a disconnect).
    pub desired_state: String,
    /// Whether the agent's heartbeats are arriving.
    pub agent_connected: bool,
    /// Registered resources and attributes.
    pub registration: InstanceRegistration,
    /// When it registered (epoch seconds).
    pub registered_at: f64,
    /// Bumped on every change.
    pub version: u64,
    /// The random session of the agent process that registered last: the
    /// one agent that owns this instance (another one with the same id is a
    /// copied data dir). Empty for agents that send none. Not shown by
    /// describe-container-instances.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_session: String,
}

impl ContainerInstance {
    /// The instance id (last ARN segment).
    pub fn id(&self) -> &str {
        last_segment(&self.container_instance_arn)
    }

    /// An attribute's value.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.registration
            .attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
    }
}

// ------------------------------------------------------------------ services

/// ECS's deployment circuit breaker settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    /// Mark a deployment FAILED after repeated failed launches.
    #[serde(default)]
    pub enable: bool,
    /// Roll back to the last completed deployment when it fails.
    #[serde(default)]
    pub rollback: bool,
}

/// ECS's deployment configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Upper bound of tasks during a deployment, in percent of the desired count.
    #[serde(default = "two_hundred")]
    pub maximum_percent: u32,
    /// Lower bound of healthy tasks during a deployment, in percent.
    #[serde(default = "one_hundred")]
    pub minimum_healthy_percent: u32,
    /// The circuit breaker.
    #[serde(default)]
    pub deployment_circuit_breaker: DeploymentCircuitBreaker,
}

fn two_hundred() -> u32 {
    200
}

fn one_hundred() -> u32 {
    100
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        DeploymentConfiguration {
            maximum_percent: 200,
            minimum_healthy_percent: 100,
            deployment_circuit_breaker: DeploymentCircuitBreaker::default(),
        }
    }
}

/// ECS's load balancer entry of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// The target group (orc's built-in proxy).
    pub target_group_arn: String,
    /// The container that receives traffic.
    pub container_name: String,
    /// Its port.
    pub container_port: u16,
}

/// One deployment of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/NUMBER`.
    pub id: String,
    /// PRIMARY (the newest) or ACTIVE (older ones still holding tasks).
    pub status: String,
    /// The task definition it runs.
    pub task_definition: String,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: String,
    /// Why it is in that state.
    pub rollout_state_reason: String,
    /// Launches that failed (tasks stopped by their own failure).
    pub failed_tasks: u32,
    /// Failures since the last steady state (drives the restart back-off).
    pub consecutive_failures: u32,
    /// When the newest failure was seen (ms).
    pub last_failure_ms: u64,
    /// Epoch seconds.
    pub created_at: f64,
    /// Epoch seconds.
    pub updated_at: f64,
    /// The service's load balancers when the deployment started: its tasks
    /// register in these target groups (an update that changes them starts
    /// a new deployment, as ECS's does). `None` for a deployment stored
    /// before orc kept them: the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancers: Option<Vec<LoadBalancer>>,
}

/// A service event, newest first in `describe-services`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// A unique id.
    pub id: String,
    /// Epoch seconds.
    pub created_at: f64,
    /// ECS's wording, e.g. "(service web) has reached a steady state.".
    pub message: String,
}
/// The first restart delay of a crash loop; it doubles per consecutive failure.
pub const BACKOFF_BASE_MS: u64 = 250;
/// The longest restart delay.
pub const BACKOFF_CAP_MS: u64 = 30_000;

/// The restart delay after `failures` consecutive failed launches.
pub fn backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    BACKOFF_BASE_MS
        .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
        .min(BACKOFF_CAP_MS)
}

/// The restart delay of a service: failures are counted in rounds of the
/// desired count (a service of 4 whose 4 new tasks all fail has failed once),
/// so a bad revision reaches the circuit breaker quickly while a crash loop
/// still slows down exponentially. The service reconciler waits it out and
/// `apply` records it, so both read it from here.
pub fn restart_delay_ms(consecutive_failures: u32, desired: u32) -> u64 {
    backoff_ms(consecutive_failures.div_ceil(desired.max(1)))
}

/// A service as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// ECS's ARN.
    pub service_arn: String,
    /// The name.
    pub service_name: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// ACTIVE, DRAINING (being deleted) or INACTIVE.
    pub status: String,
    /// How many tasks to keep running (REPLICA).
    pub desired_count: u32,
    /// The task definition of the primary deployment.
    pub task_definition: String,
    /// Rolling deployment settings.
    pub deployment_configuration: DeploymentConfiguration,
    /// Placement strategies (ECS JSON).
    #[serde(default)]
    pub placement_strategy: Vec<crate::vocab::placement::PlacementStrategy>,
    /// Placement constraints (ECS JSON).
    #[serde(default)]
    pub placement_constraints: Vec<crate::vocab::placement::PlacementConstraint>,
    /// Load balancers (orc's built-in proxy target groups).
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    /// Seconds after start during which failed health checks are ignored.
    #[serde(default)]
    pub health_check_grace_period_seconds: u32,
    /// REPLICA or DAEMON.
    pub scheduling_strategy: String,
    /// Newest first; the first is PRIMARY.
    pub deployments: Vec<Deployment>,
    /// The newest 100 events, newest first.
    pub events: Vec<ServiceEvent>,
    /// Epoch seconds.
    pub created_at: f64,
    /// Counter for deployment ids.
    pub next_deployment: u64,
    /// The task definition of the newest deployment that completed (for rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_task_definition: Option<String>,
}

impl Service {
    /// The group its tasks carry.
    pub fn group(&self) -> String {
        format!("service:{}", self.service_name)
    }

    /// The load balancers `task` registers in: those of the deployment
    /// that started it, or (a task of no deployment still kept) the
    /// service's.
    pub fn load_balancers_of(&self, task: &Task) -> &[LoadBalancer] {
        task.started_by
            .as_deref()
            .and_then(|id| self.deployments.iter().find(|d| d.id == id))
            .and_then(|d| d.load_balancers.as_deref())
            .unwrap_or(&self.load_balancers)
    }

    /// Every load balancer entry of the service and of its deployments
    /// (an older deployment's tasks may still be in the groups it had).
    pub fn all_load_balancers(&self) -> impl Iterator<Item = &LoadBalancer> {
        self.load_balancers.iter().chain(
            self.deployments
                .iter()
                .filter_map(|d| d.load_balancers.as_deref())
                .flatten(),
        )
    }

    /// Whether any of its tasks is behind a target group.
    pub fn behind_load_balancer(&self) -> bool {
        self.all_load_balancers().next().is_some()
    }
}
