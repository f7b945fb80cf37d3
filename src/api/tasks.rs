//! ECS verbs about task definitions, container instances and tasks. Like
//! `api::ecs`, each takes the ECS request body and returns the ECS response
//! body; run-task decides placement here (a pure call on this server's view)
//! and `apply` re-checks it against capacity when it commits.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{
    cluster_of, described, parse, propose, read_linearizable as read, ActionResult, Paging,
};
use crate::model::{self, stop_code, ContainerInstance, Task, TaskStatus};
use crate::raft::node::RaftHandle;
use crate::scheduler::{self, placement, provisioning};
use crate::store::ecs::{PlannedTask, TaskLaunch, UnplacedTask};
use crate::store::{Command, State};
use crate::taskdef::{self, TaskDefinitionRef, TaskDefinitionStatus};
use crate::vocab::ids::last_segment;
use crate::vocab::limits;
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// ECS allows at most 10 tasks per run-task call.
const MAX_RUN_TASK_COUNT: u64 = 10;

fn invalid(error: impl std::fmt::Display) -> Error {
    Error::InvalidInput(error.to_string())
}

pub(super) async fn register_task_definition(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    check_task_definition_size(body)?;
    let (definition, warnings) = taskdef::parse_register_input(body).map_err(invalid)?;
    taskdef::validate(&definition).map_err(|error| {
        // A refused definition's warnings would be lost with it, and an
        // unknown field is often why it was refused (a misspelt "memory").
        let mut message = error.to_string();
        for warning in &warnings {
            message.push_str(&format!("; also {warning}"));
        }
        Error::InvalidInput(message)
    })?;
    raft.store()
        .read(|state| super::secrets::check_references(state, &definition))?;
    let mut warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    warnings.extend(
        raft.store()
            .read(|state| larger_than_every_instance(state, &definition)),
    );
    let answer = propose(
        raft,
        request_id,
        Command::RegisterTaskDefinition {
            task_definition: definition,
            now_ms: now_ms(),
        },
    )
    .await?;
    Ok(ActionResult {
        body: answer,
        warnings,
    })
}

/// A warning when a definition needs more memory or CPU than any registered
/// container instance has: run-task will refuse it until a larger one joins.
fn larger_than_every_instance(state: &State, definition: &taskdef::TaskDefinition) -> Vec<String> {
    let demand = crate::store::ecs::demand_of(definition);
    let live = || {
        state
            .container_instances
            .values()
            .filter(|i| i.status != "INACTIVE")
    };
    let mut warnings = Vec::new();
    if let Some(memory) = live().map(|i| i.registration.memory_mib).max() {
        if demand.memory_mib > memory {
            warnings.push(format!(
                "memory: the containers need {} MiB, more than any registered container instance has (the largest has {memory} MiB): no task of it can be placed until a larger instance registers",
                demand.memory_mib
            ));
        }
    }
    if let Some(cpu) = live().map(|i| i.registration.cpu).max() {
        if demand.cpu > cpu {
            warnings.push(format!(
                "cpu: the containers need {} CPU units, more than any registered container instance has (the largest has {cpu}): no task of it can be placed until a larger instance registers",
                demand.cpu
            ));
        }
    }
    warnings
}

/// Refuses a task definition over ECS's 64 KiB before it is parsed: its
/// JSON is parsed into several trees, each a few times its size.
fn check_task_definition_size(body: &str) -> Result<()> {
    if body.len() > limits::MAX_TASK_DEFINITION_BYTES {
        return Err(Error::InvalidInput(format!(
            "the task definition is {} of JSON, over ECS's limit of {} per task definition: move large values (such as long environment lists) into the image or a file the container reads",
            limits::human_bytes(body.len()),
            limits::human_bytes(limits::MAX_TASK_DEFINITION_BYTES)
        )));
    }
    Ok(())
}

/// Refuses a task that needs more CPU or memory than the largest container
/// instance of the cluster has in all (free or not): it would wait in
/// PROVISIONING for room that can never appear. A cluster without
/// instances yet is not judged: one may register.
fn check_fits_some_instance(
    state: &State,
    cluster: &str,
    definition: &taskdef::TaskDefinition,
) -> Result<()> {
    let demand = crate::store::ecs::demand_of(definition);
    let instances: Vec<&ContainerInstance> = state
        .container_instances
        .scan_prefix(&format!("{cluster}/"))
        .map(|(_, instance)| instance)
        .filter(|instance| instance.status != "INACTIVE")
        .collect();
    let largest = |resource: fn(&ContainerInstance) -> i64| {
        instances
            .iter()
            .max_by_key(|instance| resource(instance))
            .map(|instance| (instance.id().to_string(), resource(instance)))
    };
    let family = definition.family_revision();
    if let Some((id, memory)) = largest(|i| i.registration.memory_mib) {
        if demand.memory_mib > memory {
            return Err(invalid(format!(
                "task definition {family} needs {} MiB of memory, more than any container instance in cluster {cluster} has: the largest ({id}) has {memory} MiB; lower the containers' memory or memoryReservation",
                demand.memory_mib
            )));
        }
    }
    if let Some((id, cpu)) = largest(|i| i.registration.cpu) {
        if demand.cpu > cpu {
            return Err(invalid(format!(
                "task definition {family} needs {} CPU units, more than any container instance in cluster {cluster} has: the largest ({id}) has {cpu} (1024 per core); lower the containers' cpu",
                demand.cpu
            )));
        }
    }
    Ok(())
}

/// Refuses a list argument longer than ECS accepts for the verb.
fn check_count(field: &str, count: usize, limit: usize, verb: &str) -> Result<()> {
    if count > limit {
        return Err(Error::InvalidInput(limits::too_many(
            field, limit, count, verb,
        )));
    }
    Ok(())
}

/// The cluster a task is in: the one its ARN names (`…:task/CLUSTER/ID`),
/// else the request's `cluster`, else `default`. An ARN and a `cluster` that
/// disagree are refused rather than one silently winning.
fn task_cluster(cluster: &Option<String>, task: &str) -> Result<String> {
    let from_arn = task
        .trim()
        .strip_prefix("arn:")
        .and_then(|arn| arn.rsplit_once(":task/"))
        .and_then(|(_, path)| path.split_once('/'))
        .map(|(cluster, _)| cluster.to_string());
    match (from_arn, cluster) {
        (Some(from_arn), Some(given)) if model::cluster_name_from(given) != from_arn => {
            Err(Error::InvalidInput(format!(
                "the task ARN {task} is in cluster {from_arn:?} but --cluster says {:?}: pass the task's own cluster, or leave --cluster out",
                model::cluster_name_from(given)
            )))
        }
        (Some(from_arn), _) => Ok(from_arn),
        (None, _) => Ok(cluster_of(cluster)),
    }
}

pub(super) async fn describe_task_definition(
    raft: &RaftHandle,
    body: &str,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        task_definition: String,
    }
    let request: Request = parse("DescribeTaskDefinition", body)?;
    read(raft, |state| {
        let reference = TaskDefinitionRef::parse(&request.task_definition).map_err(invalid)?;
        let stored = match reference.revision {
            Some(_) => state.stored_task_definition(&request.task_definition)?,
            // A bare family describes the latest ACTIVE revision, as ECS does.
            None => state.stored_task_definition(&reference.family)?,
        };
        let definition: serde_json::Value =
            serde_json::from_str(stored.json().get()).map_err(|e| {
                crate::Error::Internal(format!("a stored task definition is undecodable: {e}"))
            })?;
        let tags = definition.get("tags").cloned().unwrap_or_else(|| json!([]));
        Ok(json!({ "taskDefinition": definition, "tags": tags }).into())
    })
    .await
}

pub(super) async fn list_task_definitions(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        family_prefix: Option<String>,
        status: Option<String>,
        sort: Option<String>,
        #[serde(flatten)]
        paging: Paging,
    }
    let request: Request = parse("ListTaskDefinitions", body)?;
    let status = match request.status.as_deref().unwrap_or("ACTIVE") {
        "ACTIVE" => TaskDefinitionStatus::Active,
        "INACTIVE" => TaskDefinitionStatus::Inactive,
        "DELETE_IN_PROGRESS" => TaskDefinitionStatus::DeleteInProgress,
        other => {
            return Err(invalid(format!(
                "status: must be ACTIVE, INACTIVE or DELETE_IN_PROGRESS, got {other:?}"
            )))
        }
    };
    read(raft, |state| {
        let prefix = request.family_prefix.clone().unwrap_or_default();
        let mut arns: Vec<String> = state
            .task_definitions
            .scan_prefix(&prefix)
            .filter(|(_, td)| td.status() == status)
            .filter_map(|(key, _)| {
                let (family, revision) = key.rsplit_once(':')?;
                let revision: i64 = revision.parse().ok()?;
                Some(model::arn(
                    "task-definition",
                    &format!("{family}:{revision}"),
                ))
            })
            .collect();
        if request.sort.as_deref() == Some("DESC") {
            arns.reverse();
        }
        Ok(request
            .paging
            .answer(
                "taskDefinitionArns",
                arns.iter().map(String::as_str).collect(),
            )?
            .into())
    })
    .await
}

fn family_revision(reference: &str) -> Result<(String, i64)> {
    let parsed = TaskDefinitionRef::parse(reference).map_err(invalid)?;
    let revision = parsed.revision.ok_or_else(|| {
        invalid(format!(
            "taskDefinition: {reference:?} needs a revision (family:revision)"
        ))
    })?;
    Ok((parsed.family, revision))
}

pub(super) async fn deregister_task_definition(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        task_definition: String,
    }
    let request: Request = parse("DeregisterTaskDefinition", body)?;
    let (family, revision) = family_revision(&request.task_definition)?;
    let command = Command::DeregisterTaskDefinition {
        family,
        revision,
        now_ms: now_ms(),
    };
    Ok(propose(raft, request_id, command).await?.into())
}

pub(super) async fn delete_task_definitions(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        task_definitions: Vec<String>,
    }
    let request: Request = parse("DeleteTaskDefinitions", body)?;
    check_count(
        "taskDefinitions",
        request.task_definitions.len(),
        limits::MAX_DELETE_TASK_DEFINITIONS,
        "DeleteTaskDefinitions",
    )?;
    let task_definitions = request
        .task_definitions
        .iter()
        .map(|r| family_revision(r))
        .collect::<Result<Vec<_>>>()?;
    Ok(propose(
        raft,
        request_id,
        Command::DeleteTaskDefinitions { task_definitions },
    )
    .await?
    .into())
}

/// The run-task request ECS documents (the fields orc implements).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RunTaskRequest {
    cluster: Option<String>,
    task_definition: String,
    count: Option<u64>,
    started_by: Option<String>,
    group: Option<String>,
    overrides: Option<Value>,
    #[serde(default)]
    placement_constraints: Vec<placement::PlacementConstraint>,
    #[serde(default)]
    placement_strategy: Vec<placement::PlacementStrategy>,
    /// orc's addition: return, per instance, why it was chosen or rejected.
    #[serde(default)]
    explain: bool,
}

pub(super) async fn run_task(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    let request: RunTaskRequest = parse("RunTask", body)?;
    let count = request.count.unwrap_or(1);
    if count == 0 || count > MAX_RUN_TASK_COUNT {
        return Err(invalid(format!(
            "count: must be between 1 and {MAX_RUN_TASK_COUNT}, got {count}"
        )));
    }
    placement::validate_strategies(&request.placement_strategy).map_err(invalid)?;
    placement::validate_constraints(&request.placement_constraints).map_err(invalid)?;
    let cluster = cluster_of(&request.cluster);
    raft.read_barrier().await?;
    let (launch, planned, unplaced, explanation) = raft.store().read(|state| -> Result<_> {
        state.active_cluster(&cluster)?;
        let definition = state.resolve_task_definition(&request.task_definition)?;
        let arn = definition.task_definition_arn.clone().unwrap_or_default();
        let resolved = match &request.overrides {
            Some(overrides) => {
                let parsed = taskdef::parse_overrides(&overrides.to_string())
                    .map_err(|e| invalid(format!("overrides.{e}")))?;
                taskdef::apply_overrides(&definition, &parsed)
                    .map_err(|e| invalid(format!("overrides.{e}")))?
            }
            None => definition,
        };
        let group = request
            .group
            .clone()
            .unwrap_or_else(|| format!("family:{}", resolved.family));
        for constraint in &resolved.placement_constraints {
            if let Some(expression) = &constraint.expression {
                placement::PlacementConstraint::from_parts("memberOf", Some(expression))
                    .map_err(invalid)?;
            }
        }
        let mut constraints = request.placement_constraints.clone();
        constraints.extend(scheduler::definition_constraints(&resolved));
        let strategies = if request.placement_strategy.is_empty() {
            placement::default_run_task_strategies()
        } else {
            request.placement_strategy.clone()
        };
        check_fits_some_instance(state, &cluster, &resolved)?;
        scheduler::platforms::check(state, &cluster, &resolved)?;
        let views = scheduler::cluster_views(state, &cluster);
        let task_demand = scheduler::task_demand(state, &resolved, &group);
        let outcome = placement::place(
            &task_demand,
            count as usize,
            &views,
            &strategies,
            &constraints,
            rand::random(),
        );
        let planned: Vec<PlannedTask> = outcome
            .placements
            .iter()
            .map(|instance_id| PlannedTask {
                task_id: format!("{:032x}", rand::random::<u128>()),
                instance_id: instance_id.clone(),
            })
            .collect();
        // A copy that fits nowhere stays visible as a PROVISIONING task with
        // its reason; the leader places it once room appears.
        let unplaced: Vec<UnplacedTask> = outcome
            .failures
            .iter()
            .map(|f| UnplacedTask {
                task_id: format!("{:032x}", rand::random::<u128>()),
                reason: format!("{} ({})", f.reason, f.detail),
            })
            .collect();
        let launch = TaskLaunch {
            cluster: cluster.clone(),
            task_definition_arn: arn,
            overrides: request.overrides.clone(),
            started_by: request.started_by.clone(),
            group,
            placement_strategy: request.placement_strategy.clone(),
            placement_constraints: request.placement_constraints.clone(),
        };
        Ok((launch, planned, unplaced, outcome.explanation))
    })?;
    let mut answer = propose(
        raft,
        request_id,
        Command::RunTask {
            launch,
            planned,
            unplaced,
            now_ms: now_ms(),
        },
    )
    .await?;
    if request.explain {
        answer["explanation"] = json!(explanation);
    }
    Ok(answer.into())
}

pub(super) async fn stop_task(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        task: String,
        reason: Option<String>,
    }
    let request: Request = parse("StopTask", body)?;
    let cluster = task_cluster(&request.cluster, &request.task)?;
    let command = Command::StopTask {
        cluster: cluster.into(),
        task_id: request.task.into(),
        reason: request
            .reason
            .unwrap_or_else(|| "Task stopped by user".to_string()),
        stop_code: stop_code::USER_INITIATED.to_string(),
        now_ms: now_ms(),
    };
    Ok(propose(raft, request_id, command).await?.into())
}

/// orc's addition: per instance, why a task was (or would be) placed there
/// or not, judged against the cluster as it is now with the task's own
/// strategies and constraints. For a task waiting in PROVISIONING it is the
/// very decision the leader's controller takes (`scheduler::provisioning`):
/// an instance said to be chosen is where the task goes on its next pass.
pub(super) async fn explain_task(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        task: String,
    }
    let request: Request = parse("ExplainTask", body)?;
    let cluster = task_cluster(&request.cluster, &request.task)?;
    read(raft, |state| {
        let task = state.task(&cluster, &request.task)?;
        let definition = state.task_definition_of(task)?;
        let demand = scheduler::task_demand(state, &definition, &task.group);
        let how = provisioning::task_placement(state, task, &definition);
        let waiting = provisioning::decide(state, &cluster, 0)
            .into_iter()
            .find(|decision| decision.task_id == task.id());
        let explanation = match waiting {
            Some(decision) => json!(decision.outcome.explanation),
            None => {
                let views: Vec<placement::InstanceView> = scheduler::cluster_views(state, &cluster)
                    .into_iter()
                    .filter(|v| Some(v.id.as_str()) != task.container_instance_id())
                    .collect();
                let outcome = placement::place(&demand, 1, &views, &how.strategies, &how.constraints, 0);
                let mut explanation = serde_json::to_value(&outcome.explanation).unwrap_or_default();
                if let (Some(list), Some(instance)) = (explanation.as_array_mut(), task.container_instance_id()) {
                    list.insert(0, json!({"instance_id": instance, "placed": 1, "verdict": "chosen: the task runs here"}));
                }
                explanation
            }
        };
        Ok(json!({
            "task": task,
            "needs": {"cpu": demand.cpu, "memoryMiB": demand.memory_mib,
                      "hostPorts": demand.static_ports.iter().map(|(p, proto)| format!("{p}/{proto}")).collect::<Vec<_>>()},
            "placementStrategy": how.strategies,
            "placementConstraints": how.constraints,
            "explanation": explanation,
        })
        .into())
    })
    .await
}

pub(super) async fn describe_tasks(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        tasks: Vec<String>,
    }
    let request: Request = parse("DescribeTasks", body)?;
    check_count(
        "tasks",
        request.tasks.len(),
        limits::MAX_DESCRIBE_TASKS,
        "DescribeTasks",
    )?;
    let cluster = cluster_of(&request.cluster);
    read(raft, |state| {
        state.active_cluster(&cluster)?;
        Ok(described(
            "tasks",
            &request.tasks,
            |id| Some(json!(state.task(&cluster, id).ok()?.shown())),
            str::to_string,
        )
        .into())
    })
    .await
}

pub(super) async fn list_tasks(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        container_instance: Option<String>,
        family: Option<String>,
        service_name: Option<String>,
        desired_status: Option<String>,
        started_by: Option<String>,
        #[serde(flatten)]
        paging: Paging,
    }
    let request: Request = parse("ListTasks", body)?;
    let cluster = cluster_of(&request.cluster);
    let desired = match request.desired_status.as_deref() {
        None => TaskStatus::Running,
        Some(text) => match TaskStatus::parse(text) {
            Some(status @ (TaskStatus::Running | TaskStatus::Stopped | TaskStatus::Pending)) => {
                status
            }
            _ => {
                return Err(invalid(format!(
                    "desiredStatus: must be RUNNING, PENDING or STOPPED, got {text:?}"
                )))
            }
        },
    };
    read(raft, |state| {
        state.active_cluster(&cluster)?;
        let instance = request.container_instance.as_deref().map(last_segment);
        let arns: Vec<&str> = state
            .tasks
            .scan_prefix(&format!("{cluster}/"))
            .map(|(_, task)| task)
            .filter(|task| match desired {
                TaskStatus::Pending => {
                    task.desired_status == TaskStatus::Running
                        && task.last_status < TaskStatus::Running
                }
                status => task.shown_desired_status() == status,
            })
            .filter(|task| instance.is_none_or(|id| task.container_instance_id() == Some(id)))
            .filter(|task| {
                request
                    .family
                    .as_deref()
                    .is_none_or(|f| family_of(task) == f)
            })
            .filter(|task| {
                request.service_name.as_deref().is_none_or(|s| {
                    task.group
                        == format!(
                            "service:{}",
                            model::cluster_name_from(s).rsplit('/').next().unwrap_or(s)
                        )
                })
            })
            .filter(|task| {
                request
                    .started_by
                    .as_deref()
                    .is_none_or(|s| task.started_by.as_deref() == Some(s))
            })
            .map(|task| task.task_arn.as_str())
            .collect();
        Ok(request.paging.answer("taskArns", arns)?.into())
    })
    .await
}

fn family_of(task: &Task) -> &str {
    let tail = last_segment(&task.task_definition_arn);
    tail.split(':').next().unwrap_or(tail)
}

/// A container instance as ECS describes it, with derived remaining resources.
pub fn instance_view(state: &State, instance: &ContainerInstance) -> Value {
    let usage = state.usage(&instance.cluster, instance.id());
    let registration = &instance.registration;
    let mut ports: Vec<String> = registration
        .reserved_ports
        .iter()
        .map(u16::to_string)
        .collect();
    let reserved: Vec<String> = ports.clone();
    ports.extend(usage.ports.iter().map(|(port, _)| port.to_string()));
    let tasks = state.assigned_tasks(&instance.cluster, instance.id());
    let running = tasks
        .iter()
        .filter(|t| t.last_status == TaskStatus::Running)
        .count();
    let resource =
        |name: &str, value: i64| json!({"name": name, "type": "INTEGER", "integerValue": value});
    let ports_resource = |values: &Vec<String>| json!({"name": "PORTS", "type": "STRINGSET", "stringSetValue": values});
    json!({
        "containerInstanceArn": instance.container_instance_arn,
        "ec2InstanceId": instance.ec2_instance_id,
        "status": instance.status,
        "agentConnected": instance.agent_connected,
        "registeredResources": [
            resource("CPU", registration.cpu),
            resource("MEMORY", registration.memory_mib),
            ports_resource(&reserved),
        ],
        "remainingResources": [
            resource("CPU", registration.cpu - usage.cpu),
            resource("MEMORY", registration.memory_mib - usage.memory_mib),
            ports_resource(&ports),
        ],
        "attributes": registration.attributes,
        "versionInfo": {"agentVersion": registration.agent_version, "dockerVersion": registration.docker_version},
        "runningTasksCount": running,
        "pendingTasksCount": tasks.len() - running,
        "registeredAt": instance.registered_at,
        "version": instance.version,
        "hostname": registration.hostname,
    })
}

pub(super) async fn list_container_instances(
    raft: &RaftHandle,
    body: &str,
) -> Result<ActionResult> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        status: Option<String>,
        #[serde(flatten)]
        paging: Paging,
    }
    let request: Request = parse("ListContainerInstances", body)?;
    let cluster = cluster_of(&request.cluster);
    read(raft, |state| {
        state.active_cluster(&cluster)?;
        let arns = super::ecs::arns_in_cluster(
            &state.container_instances,
            &cluster,
            |i| request.status.as_deref().is_none_or(|s| i.status == s),
            |i| i.container_instance_arn.as_str(),
        );
        Ok(request.paging.answer("containerInstanceArns", arns)?.into())
    })
    .await
}

pub(super) async fn describe_container_instances(
    raft: &RaftHandle,
    body: &str,
) -> Result<ActionResult> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        #[serde(default)]
        container_instances: Vec<String>,
    }
    let request: Request = parse("DescribeContainerInstances", body)?;
    check_count(
        "containerInstances",
        request.container_instances.len(),
        limits::MAX_DESCRIBE_CONTAINER_INSTANCES,
        "DescribeContainerInstances",
    )?;
    let cluster = cluster_of(&request.cluster);
    read(raft, |state| {
        let wanted: Vec<String> = if request.container_instances.is_empty() {
            state
                .container_instances
                .scan_prefix(&format!("{cluster}/"))
                .map(|(_, i)| i.id().to_string())
                .collect()
        } else {
            request.container_instances.clone()
        };
        Ok(described(
            "containerInstances",
            &wanted,
            |id| {
                Some(instance_view(
                    state,
                    state.container_instance(&cluster, id).ok()?,
                ))
            },
            str::to_string,
        )
        .into())
    })
    .await
}

pub(super) async fn update_container_instances_state(
    raft: &RaftHandle,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster: Option<String>,
        container_instances: Vec<String>,
        status: String,
    }
    let request: Request = parse("UpdateContainerInstancesState", body)?;
    let command = Command::UpdateContainerInstancesState {
        cluster: cluster_of(&request.cluster).into(),
        instance_ids: request
            .container_instances
            .into_iter()
            .map(Into::into)
            .collect(),
        status: request.status,
    };
    Ok(propose(raft, request_id, command).await?.into())
}
