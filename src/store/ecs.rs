//! The ECS part of the state machine: task definitions, container
//! instances and tasks, and the resource index the scheduler reads. Pure
//! like the rest of `apply`: time and ids arrive in the command.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::command::Outcome;
use super::rows::StoredTaskDefinition;
use super::state::State;
use crate::model::{
    self, stop_code, Container, ContainerInstance, InstanceRegistration, Task, TaskStateChange,
    TaskStatus,
};
use crate::taskdef::{self, TaskDefinition, TaskDefinitionStatus, TaskOverride};
use crate::vocab::ids::{last_segment, ContainerInstanceId};
use crate::vocab::Protocol;
use crate::Error;

/// What the tasks placed on one instance hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU units reserved.
    pub cpu: i64,
    /// Memory MiB reserved.
    pub memory_mib: i64,
    /// Static host ports bound.
    pub ports: BTreeSet<(u16, Protocol)>,
    /// Tasks per group.
    pub groups: BTreeMap<String, u32>,
    /// Keys of the tasks that hold resources here.
    pub tasks: BTreeSet<String>,
}

/// Derived indexes, rebuilt after loading and kept current by `apply`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Indexes {
    /// Per instance key (`cluster/id`): what its non-stopped tasks hold.
    pub usage: BTreeMap<String, Usage>,
    /// Per instance key: every task placed there that is not yet STOPPED.
    pub assigned: BTreeMap<String, BTreeSet<String>>,
}

/// The key a task definition revision is stored under.
pub fn task_definition_key(family: &str, revision: i64) -> String {
    format!("{family}:{revision:010}")
}

/// The key of a cluster-scoped row (tasks, instances).
pub fn scoped_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/{id}")
}

/// Milliseconds since the epoch as the epoch seconds ECS prints.
pub(super) fn seconds(now_ms: u64) -> f64 {
    now_ms as f64 / 1000.0
}

/// What a task needs on its instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// CPU units.
    pub cpu: i64,
    /// Memory MiB.
    pub memory_mib: i64,
    /// Static host ports.
    pub ports: Vec<(u16, Protocol)>,
}

/// The demand of a resolved task definition.
pub fn demand_of(definition: &TaskDefinition) -> Demand {
    Demand {
        cpu: definition.total_cpu(),
        memory_mib: definition.total_memory_reservation_mib(),
        ports: definition.static_host_ports(),
    }
}

impl State {
    /// The number of the latest revision of a family, any status.
    pub fn latest_revision(&self, family: &str) -> Option<i64> {
        self.task_definitions
            .scan_prefix(&format!("{family}:"))
            .last()
            .and_then(|(key, _)| key.rsplit(':').next()?.parse().ok())
    }

    /// Resolves `family`, `family:revision` or an ARN to a stored revision;
    /// a bare family means its latest ACTIVE revision.
    pub fn stored_task_definition(&self, reference: &str) -> Result<&StoredTaskDefinition, Error> {
        let parsed = taskdef::TaskDefinitionRef::parse(reference)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let found = match parsed.revision {
            Some(revision) => self
                .task_definitions
                .get(&task_definition_key(&parsed.family, revision)),
            None => self
                .task_definitions
                .scan_prefix(&format!("{}:", parsed.family))
                .map(|(_, td)| td)
                .filter(|td| td.status() == TaskDefinitionStatus::Active)
                .last(),
        };
        found.ok_or_else(|| {
            Error::NotFound(format!(
                "task definition {reference:?} not found: register it with `orc register-task-definition`"
            ))
        })
    }

    /// Like `stored_task_definition`, parsed.
    pub fn resolve_task_definition(&self, reference: &str) -> Result<TaskDefinition, Error> {
        self.stored_task_definition(reference)?.definition()
    }

    /// The task definition a task runs (its revision with its overrides applied).
    pub fn task_definition_of(&self, task: &Task) -> Result<TaskDefinition, Error> {
        let definition = self.resolve_task_definition(&task.task_definition_arn)?;
        match &task.overrides {
            Some(overrides) => {
                let overrides: TaskOverride =
                    serde_json::from_value(overrides.clone()).map_err(|e| {
                        Error::Internal(format!("stored overrides are undecodable: {e}"))
                    })?;
                taskdef::apply_overrides(&definition, &overrides)
                    .map_err(|e| Error::InvalidInput(e.to_string()))
            }
            None => Ok(definition),
        }
    }

    /// A container instance by cluster and id (or ARN).
    pub fn container_instance(
        &self,
        cluster: &str,
        id_or_arn: &str,
    ) -> Result<&ContainerInstance, Error> {
        let id = last_segment(id_or_arn);
        self.container_instances.get(&scoped_key(cluster, id)).ok_or_else(|| {
            Error::NotFound(format!(
                "container instance {id:?} not found in cluster {cluster:?} (see `orc list-container-instances`)"
            ))
        })
    }

    /// A task by cluster and id (or ARN).
    pub fn task(&self, cluster: &str, id_or_arn: &str) -> Result<&Task, Error> {
        let id = last_segment(id_or_arn);
        self.tasks.get(&scoped_key(cluster, id)).ok_or_else(|| {
            Error::NotFound(format!(
                "task {id:?} not found in cluster {cluster:?} (see `orc list-tasks`)"
            ))
        })
    }

    /// What the tasks on an instance hold (empty when none).
    pub fn usage(&self, cluster: &str, instance_id: &str) -> Usage {
        self.indexes
            .usage
            .get(&scoped_key(cluster, instance_id))
            .cloned()
            .unwrap_or_default()
    }

    /// The tasks assigned to an instance and not yet STOPPED.
    pub fn assigned_tasks(&self, cluster: &str, instance_id: &str) -> Vec<&Task> {
        self.indexes
            .assigned
            .get(&scoped_key(cluster, instance_id))
            .into_iter()
            .flatten()
            .filter_map(|key| self.tasks.get(key))
            .collect()
    }

    /// Why `demand` does not fit on the instance now, or `None` when it fits.
    pub fn misfit(&self, instance: &ContainerInstance, demand: &Demand) -> Option<String> {
        let usage = self.usage(&instance.cluster, instance.id());
        let registration = &instance.registration;
        if usage.cpu + demand.cpu > registration.cpu {
            return Some("RESOURCE:CPU".into());
        }
        if usage.memory_mib + demand.memory_mib > registration.memory_mib {
            return Some("RESOURCE:MEMORY".into());
        }
        for port in &demand.ports {
            if usage.ports.contains(port) || registration.reserved_ports.contains(&port.0) {
                return Some("RESOURCE:PORTS".into());
            }
        }
        None
    }

    /// Rebuilds the resource index from the task rows.
    pub(super) fn rebuild_ecs_indexes(&mut self) {
        self.indexes = Indexes::default();
        let keys: Vec<String> = self.tasks.iter().map(|(key, _)| key.clone()).collect();
        for key in keys {
            self.hold(&key);
        }
    }

    /// Records that a task holds resources on its instance.
    fn hold(&mut self, task_key: &str) {
        let Some(task) = self.tasks.get(task_key) else {
            return;
        };
        if task.last_status == TaskStatus::Stopped {
            return;
        }
        let Some(instance_id) = task.container_instance_id() else {
            return;
        };
        let instance_key = scoped_key(&task.cluster_name(), instance_id);
        let demand = self
            .task_definition_of(task)
            .map(|td| demand_of(&td))
            .unwrap_or(Demand {
                cpu: 0,
                memory_mib: 0,
                ports: vec![],
            });
        let group = task.group.clone();
        let usage = self.indexes.usage.entry(instance_key.clone()).or_default();
        if usage.tasks.insert(task_key.to_string()) {
            usage.cpu += demand.cpu;
            usage.memory_mib += demand.memory_mib;
            usage.ports.extend(demand.ports);
            *usage.groups.entry(group).or_default() += 1;
        }
        self.indexes
            .assigned
            .entry(instance_key)
            .or_default()
            .insert(task_key.to_string());
    }

    /// Releases what a task held (it reached STOPPED).
    pub(super) fn release(&mut self, task_key: &str) {
        let Some(task) = self.tasks.get(task_key) else {
            return;
        };
        let Some(instance_id) = task.container_instance_id() else {
            return;
        };
        let instance_key = scoped_key(&task.cluster_name(), instance_id);
        let demand = self.task_definition_of(task).map(|td| demand_of(&td)).ok();
        let group = task.group.clone();
        if let Some(usage) = self.indexes.usage.get_mut(&instance_key) {
            if usage.tasks.remove(task_key) {
                if let Some(demand) = demand {
                    usage.cpu -= demand.cpu;
                    usage.memory_mib -= demand.memory_mib;
                    for port in demand.ports {
                        usage.ports.remove(&port);
                    }
                }
                if let Some(count) = usage.groups.get_mut(&group) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        usage.groups.remove(&group);
                    }
                }
            }
        }
        if let Some(assigned) = self.indexes.assigned.get_mut(&instance_key) {
            assigned.remove(task_key);
        }
    }
}

/// ECS RegisterTaskDefinition: the next revision of the family.
pub fn register_task_definition(
    state: &mut State,
    definition: &TaskDefinition,
    now_ms: u64,
) -> Outcome {
    taskdef::validate(definition).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let revision = state.latest_revision(&definition.family).unwrap_or(0) + 1;
    let mut stored = definition.clone();
    stored.revision = Some(revision);
    stored.task_definition_arn = Some(model::arn(
        "task-definition",
        &format!("{}:{revision}", definition.family),
    ));
    stored.status = Some(TaskDefinitionStatus::Active);
    stored.registered_at = Some(seconds(now_ms));
    stored.compatibilities = vec!["EC2".to_string()];
    let row = StoredTaskDefinition::of(&stored)?;
    let answer = json!({ "taskDefinition": row.json() });
    state
        .task_definitions
        .insert(task_definition_key(&definition.family, revision), row);
    Ok(answer)
}

/// ECS DeregisterTaskDefinition: the revision turns INACTIVE.
pub fn deregister_task_definition(
    state: &mut State,
    family: &str,
    revision: i64,
    now_ms: u64,
) -> Outcome {
    let key = task_definition_key(family, revision);
    let row = state
        .task_definitions
        .get_mut(&key)
        .ok_or_else(|| Error::NotFound(format!("task definition {family}:{revision} not found")))?;
    let mut definition = row.definition()?;
    if definition.status == Some(TaskDefinitionStatus::Active) {
        definition.status = Some(TaskDefinitionStatus::Inactive);
        definition.deregistered_at = Some(seconds(now_ms));
        *row = StoredTaskDefinition::of(&definition)?;
    }
    Ok(json!({ "taskDefinition": row.json() }))
}

/// ECS DeleteTaskDefinitions: INACTIVE revisions turn DELETE_IN_PROGRESS
/// (kept while tasks still reference them); others are failures.
pub fn delete_task_definitions(state: &mut State, revisions: &[(String, i64)]) -> Outcome {
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for (family, revision) in revisions {
        let arn = model::arn("task-definition", &format!("{family}:{revision}"));
        match state.task_definitions.get_mut(&task_definition_key(family, *revision)) {
            None => failures.push(json!({"arn": arn, "reason": "TASK_DEFINITION_NOT_FOUND"})),
            Some(row) if row.status() == TaskDefinitionStatus::Active => failures.push(json!({
                "arn": arn,
                "reason": "The specified task definition is still in ACTIVE status. Please deregister the target and try again.",
            })),
            Some(row) => {
                let mut definition = row.definition()?;
                definition.status = Some(TaskDefinitionStatus::DeleteInProgress);
                *row = StoredTaskDefinition::of(&definition)?;
                deleted.push(definition);
            }
        }
    }
    Ok(json!({ "taskDefinitions": deleted, "failures": failures }))
}

/// An agent registers (or re-registers after a restart) an instance.
pub fn register_container_instance(
    state: &mut State,
    cluster: &str,
    instance_id: &str,
    registration: &InstanceRegistration,
    now_ms: u64,
    agent_session: &str,
) -> Outcome {
    state.active_cluster(cluster)?;
    let key = scoped_key(cluster, instance_id);
    let instance = match state.container_instances.get(&key) {
        Some(existing) => {
            let mut instance = existing.clone();
            instance.registration = registration.clone();
            instance.agent_connected = true;
            instance.status = instance.desired_state.clone();
            instance.version += 1;
            instance.agent_session = agent_session.to_string();
            instance
        }
        None => ContainerInstance {
            container_instance_arn: model::arn(
                "container-instance",
                &format!("{cluster}/{instance_id}"),
            ),
            ec2_instance_id: instance_id.to_string(),
            cluster: cluster.to_string(),
            status: "ACTIVE".into(),
            desired_state: "ACTIVE".into(),
            agent_connected: true,
            registration: registration.clone(),
            registered_at: seconds(now_ms),
            version: 1,
            agent_session: agent_session.to_string(),
        },
    };
    state.container_instances.insert(key, instance.clone());
    Ok(json!({ "containerInstance": instance }))
}

/// ECS UpdateContainerInstancesState: ACTIVE or DRAINING.
pub fn update_container_instances_state(
    state: &mut State,
    cluster: &str,
    ids: &[ContainerInstanceId],
    status: &str,
) -> Outcome {
    state.active_cluster(cluster)?;
    if status != "ACTIVE" && status != "DRAINING" {
        return Err(Error::InvalidInput(format!(
            "status: must be ACTIVE or DRAINING, got {status:?}"
        )));
    }
    let mut updated = Vec::new();
    let mut failures = Vec::new();
    for id_or_arn in ids {
        let id = last_segment(id_or_arn);
        match state.container_instances.get_mut(&scoped_key(cluster, id)) {
            Some(instance) => {
                instance.desired_state = status.to_string();
                instance.status = if instance.agent_connected || status == "DRAINING" {
                    status.to_string()
                } else {
                    "DISCONNECTED".to_string()
                };
                instance.version += 1;
                updated.push(instance.clone());
            }
            None => failures.push(json!({"arn": id_or_arn, "reason": "MISSING"})),
        }
    }
    Ok(json!({ "containerInstances": updated, "failures": failures }))
}

/// The leader's liveness check: heartbeats stopped (or resumed).
pub fn set_instance_connected(
    state: &mut State,
    cluster: &str,
    instance_id: &str,
    connected: bool,
) -> Outcome {
    let instance = state
        .container_instances
        .get_mut(&scoped_key(cluster, instance_id))
        .ok_or_else(|| Error::NotFound(format!("container instance {instance_id} not found")))?;
    let mut lost = false;
    if instance.agent_connected != connected {
        instance.agent_connected = connected;
        instance.status = match (connected, instance.desired_state.as_str()) {
            (_, "DRAINING") => "DRAINING".into(),
            (true, _) => "ACTIVE".into(),
            (false, _) => "DISCONNECTED".into(),
        };
        instance.version += 1;
        lost = !connected;
    }
    let answer = json!({ "containerInstance": instance.clone() });
    if lost {
        // Its tasks are gone as far as the cluster knows: services replace them elsewhere.
        let hostname = instance.registration.hostname.clone();
        let keys: Vec<String> = state
            .indexes
            .assigned
            .get(&scoped_key(cluster, instance_id))
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            state.release(&key);
            if let Some(task) = state.tasks.get_mut(&key) {
                task.last_status = TaskStatus::Stopped;
                task.desired_status = TaskStatus::Stopped;
                if task.group.starts_with("service:") && task.stop_code.is_none() {
                    task.stop_code = Some(stop_code::SERVICE_SCHEDULER_INITIATED.to_string());
                }
                if task.stopped_reason.is_none() {
                    task.stopped_reason =
                        Some(format!("Host {hostname} ({instance_id}) is unreachable"));
                }
                for container in task.containers.iter_mut() {
                    container.last_status = "STOPPED".into();
                }
                task.version += 1;
            }
        }
    }
    Ok(answer)
}

/// One task of a run-task decision: its id and the instance chosen for it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlannedTask {
    /// The new task's id.
    pub task_id: String,
    /// The instance placement chose.
    pub instance_id: String,
}

/// Everything a run-task decision carries besides the placements.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskLaunch {
    /// The cluster.
    pub cluster: String,
    /// The resolved `family:revision` ARN.
    pub task_definition_arn: String,
    /// Run-task overrides (ECS JSON).
    pub overrides: Option<serde_json::Value>,
    /// `--started-by`.
    pub started_by: Option<String>,
    /// The task group.
    pub group: String,
    /// The run-task call's placement strategies, kept on its tasks (empty
    /// for services, whose own strategies apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<crate::vocab::placement::PlacementStrategy>,
    /// The run-task call's placement constraints, kept on its tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<crate::vocab::placement::PlacementConstraint>,
}

/// A run-task copy that fit on no instance: it stays PROVISIONING, with the
/// reason, until the leader finds room for it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnplacedTask {
    /// The new task's id.
    pub task_id: String,
    /// Why it fits nowhere (ECS reason and detail).
    pub reason: String,
}

fn containers_for(
    definition: &crate::taskdef::TaskDefinition,
    cluster: &str,
    task_id: &str,
    task_arn: &str,
) -> Vec<Container> {
    definition
        .container_definitions
        .iter()
        .map(|c| Container {
            container_arn: model::arn("container", &format!("{cluster}/{task_id}/{}", c.name)),
            task_arn: task_arn.to_string(),
            name: c.name.clone(),
            image: c.image.clone(),
            runtime_id: None,
            last_status: "PENDING".into(),
            exit_code: None,
            reason: None,
            network_bindings: vec![],
            health_status: "UNKNOWN".into(),
            essential: c.is_essential(),
        })
        .collect()
}

/// The instance's ARN when `demand` may go there now, or an ECS failure.
fn admit(
    state: &State,
    cluster: &str,
    instance_id: &str,
    demand: &Demand,
) -> Result<String, serde_json::Value> {
    let instance = state
        .container_instance(cluster, instance_id)
        .map_err(|_| json!({"arn": instance_id, "reason": "MISSING"}))?;
    if instance.status != "ACTIVE" || !instance.agent_connected {
        return Err(
            json!({"arn": instance.container_instance_arn, "reason": format!("INSTANCE {}", instance.status)}),
        );
    }
    if let Some(reason) = state.misfit(instance, demand) {
        return Err(json!({"arn": instance.container_instance_arn, "reason": reason}));
    }
    Ok(instance.container_instance_arn.clone())
}

/// Creates the placed tasks, re-checking each placement against the
/// instance's capacity now: a stale decision becomes a failure, never a
/// double booking. Copies that fit nowhere are created PROVISIONING.
pub fn run_task(
    state: &mut State,
    launch: &TaskLaunch,
    planned: &[PlannedTask],
    unplaced: &[UnplacedTask],
    now_ms: u64,
) -> Outcome {
    let cluster = model::cluster_name_from(&launch.cluster);
    let cluster_arn = state.active_cluster(&cluster)?.cluster_arn.clone();
    let stub = Task {
        task_arn: String::new(),
        cluster_arn: cluster_arn.clone(),
        task_definition_arn: launch.task_definition_arn.clone(),
        container_instance_arn: None,
        overrides: launch.overrides.clone(),
        last_status: TaskStatus::Provisioning,
        desired_status: TaskStatus::Running,
        cpu: String::new(),
        memory: String::new(),
        containers: vec![],
        started_by: launch.started_by.clone(),
        group: launch.group.clone(),
        version: 1,
        stop_code: None,
        stopped_reason: None,
        launch_type: "EC2".into(),
        health_status: "UNKNOWN".into(),
        created_at: seconds(now_ms),
        started_at: None,
        stopping_at: None,
        stopped_at: None,
        placement_reason: None,
        placement_strategy: launch.placement_strategy.clone(),
        placement_constraints: launch.placement_constraints.clone(),
    };
    let definition = state.task_definition_of(&stub)?;
    let demand = demand_of(&definition);
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    let copies = planned
        .iter()
        .map(|p| (p.task_id.as_str(), Some(p.instance_id.as_str()), None))
        .chain(
            unplaced
                .iter()
                .map(|u| (u.task_id.as_str(), None, Some(u.reason.clone()))),
        );
    for (task_id, instance_id, reason) in copies {
        let task_arn = model::arn("task", &format!("{cluster}/{task_id}"));
        let key = scoped_key(&cluster, task_id);
        if state.tasks.contains(&key) {
            failures.push(json!({"arn": task_arn, "reason": "DUPLICATE_TASK_ID"}));
            continue;
        }
        let mut task = stub.clone();
        task.task_arn = task_arn.clone();
        task.cpu = demand.cpu.to_string();
        task.memory = demand.memory_mib.to_string();
        task.containers = containers_for(&definition, &cluster, task_id, &task_arn);
        match instance_id {
            Some(instance_id) => match admit(state, &cluster, instance_id, &demand) {
                Ok(instance_arn) => {
                    task.container_instance_arn = Some(instance_arn);
                    task.last_status = TaskStatus::Pending;
                }
                Err(failure) => {
                    failures.push(failure);
                    continue;
                }
            },
            None => {
                let reason = reason.unwrap_or_default();
                failures.push(json!({"arn": task_arn, "reason": reason.clone()}));
                task.placement_reason = Some(reason);
            }
        }
        state.tasks.insert(key.clone(), task.clone());
        state.hold(&key);
        tasks.push(task);
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

/// The leader found room for PROVISIONING tasks: they move to their
/// instances (re-checked like any placement).
pub fn place_tasks(state: &mut State, cluster: &str, planned: &[PlannedTask]) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let mut placed = Vec::new();
    for plan in planned {
        let key = scoped_key(&cluster, &plan.task_id);
        let Some(task) = state.tasks.get(&key) else {
            continue;
        };
        if task.last_status != TaskStatus::Provisioning
            || task.desired_status != TaskStatus::Running
        {
            continue;
        }
        let Ok(definition) = state.task_definition_of(task) else {
            continue;
        };
        let demand = demand_of(&definition);
        if let Ok(instance_arn) = admit(state, &cluster, &plan.instance_id, &demand) {
            let task = state.tasks.get_mut(&key).expect("checked above");
            task.container_instance_arn = Some(instance_arn);
            task.last_status = TaskStatus::Pending;
            task.placement_reason = None;
            task.version += 1;
            state.hold(&key);
            placed.push(plan.task_id.clone());
        }
    }
    Ok(json!({ "placed": placed }))
}

/// ECS StopTask (and the service scheduler's stops): desired STOPPED. A task
/// that never reached an instance stops at once.
pub fn stop_task(
    state: &mut State,
    cluster: &str,
    task_id: &str,
    reason: &str,
    code: &str,
    now_ms: u64,
) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let key = scoped_key(&cluster, last_segment(task_id));
    state.task(&cluster, task_id)?;
    let unplaced = {
        let task = state.tasks.get_mut(&key).expect("checked above");
        if task.desired_status != TaskStatus::Stopped {
            task.desired_status = TaskStatus::Stopped;
            task.stop_code = Some(code.to_string());
            task.stopped_reason = Some(reason.to_string());
            task.stopping_at = Some(seconds(now_ms));
            task.version += 1;
        }
        task.container_instance_arn.is_none() && task.last_status != TaskStatus::Stopped
    };
    if unplaced {
        state.release(&key);
        let task = state.tasks.get_mut(&key).expect("checked above");
        task.last_status = TaskStatus::Stopped;
        task.stopped_at = Some(seconds(now_ms));
    }
    Ok(json!({ "task": state.tasks.get(&key).cloned() }))
}

/// An agent's report. States only move forward: a report that would move a
/// task back is ignored (the task is left unchanged). The answer is ECS's
/// acknowledgment with the task's status and version, not the task.
pub fn submit_task_state_change(
    state: &mut State,
    cluster: &str,
    instance_id: &str,
    change: &TaskStateChange,
) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let task_id = last_segment(&change.task_arn).to_string();
    let key = scoped_key(&cluster, &task_id);
    let task = state.task(&cluster, &task_id)?;
    if task.container_instance_id() != Some(instance_id) {
        return Err(Error::Conflict(format!(
            "task {task_id} is not assigned to container instance {instance_id}"
        )));
    }
    if change.status < task.last_status {
        return Ok(json!({
            "acknowledgment": "IGNORED",
            "ignored": "states only move forward",
            "lastStatus": task.last_status,
            "version": task.version,
        }));
    }
    let stopped_now =
        change.status == TaskStatus::Stopped && task.last_status != TaskStatus::Stopped;
    if stopped_now {
        state.release(&key);
    }
    let task = state.tasks.get_mut(&key).expect("checked above");
    // A task the service scheduler is draining (DEACTIVATING) that stops
    // before its drain ends stopped as asked, not of its own failure.
    let was_deactivating = task.last_status == TaskStatus::Deactivating;
    if change.status == TaskStatus::Running && task.started_at.is_none() {
        task.started_at = Some(seconds(change.at_ms));
    }
    task.last_status = change.status;
    task.health_status = change.health_status.clone();
    for report in &change.containers {
        if let Some(container) = task
            .containers
            .iter_mut()
            .find(|c| c.name == report.container_name)
        {
            container.runtime_id = report.runtime_id.clone().or(container.runtime_id.take());
            container.last_status = report.status.clone();
            container.exit_code = report.exit_code.or(container.exit_code);
            container.reason = report.reason.clone().or(container.reason.take());
            if !report.network_bindings.is_empty() {
                container.network_bindings = report.network_bindings.clone();
            }
            container.health_status = report.health_status.clone();
        }
    }
    let failed_on_its_own = change.status >= TaskStatus::Deactivating
        && task.desired_status != TaskStatus::Stopped
        && !was_deactivating;
    if was_deactivating && change.status > TaskStatus::Deactivating {
        task.desired_status = TaskStatus::Stopped;
    }
    if failed_on_its_own {
        // The agent stopped it on its own (essential container exited, failed to start).
        task.desired_status = TaskStatus::Stopped;
        task.stop_code = change
            .stop_code
            .clone()
            .or(Some(stop_code::ESSENTIAL_CONTAINER_EXITED.to_string()));
        task.stopped_reason = change.reason.clone();
        task.stopping_at = Some(seconds(change.at_ms));
    } else if task.stopped_reason.is_none() {
        task.stopped_reason = change.reason.clone();
    }
    if stopped_now {
        task.stopped_at = Some(seconds(change.at_ms));
    }
    task.version += 1;
    // ECS answers an acknowledgment; the task itself is not repeated, as
    // this answer is remembered for retries like every request's.
    let answer = json!({
        "acknowledgment": "ACCEPT",
        "lastStatus": task.last_status,
        "version": task.version,
    });
    if failed_on_its_own {
        super::services::record_failed_launch(state, &key, change.at_ms);
    }
    Ok(answer)
}

/// Forgets stopped tasks that stopped before `before_ms` (ECS keeps them an hour).
pub fn prune_stopped_tasks(state: &mut State, before_ms: u64) -> Outcome {
    let cutoff = seconds(before_ms);
    let old: Vec<String> = state
        .tasks
        .iter()
        .filter(|(_, t)| {
            t.last_status == TaskStatus::Stopped && t.stopped_at.is_some_and(|at| at < cutoff)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in &old {
        state.tasks.remove(key);
    }
    Ok(json!({ "pruned": old.len() }))
}
