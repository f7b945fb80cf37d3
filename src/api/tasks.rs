//! ECS verbs about task definitions, container instances and tasks. Like
//! `api::ecs`, each takes the ECS request body and returns the ECS response
//! body; run-task decides placement here (a pure call on this server's view)
//! and `apply` re-checks it against capacity when it commits.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{cluster_of, described, parse, propose, read_linearizable as read, ActionResult};
use crate::model::{self, stop_code, ContainerInstance, Task, TaskStatus};
use crate::raft::node::RaftHandle;
use crate::scheduler::{self, placement, provisioning};
use crate::store::ecs::{PlannedTask, TaskLaunch, UnplacedTask};
use crate::store::{Command, State};
use crate::taskdef::{self, TaskDefinitionRef, TaskDefinitionStatus};
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
    let (definition, warnings) = taskdef::parse_register_input(body).map_err(invalid)?;
    taskdef::validate(&definition).map_err(invalid)?;
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
        warnings: warnings.iter().map(ToString::to_string).collect(),
    })
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
        let definition = match reference.revision {
            Some(_) => state.resolve_task_definition(&request.task_definition)?,
            // A bare family describes the latest ACTIVE revision, as ECS does.
            None => state.resolve_task_definition(&reference.family)?,
        };
        Ok(json!({ "taskDefinition": definition, "tags": definition.tags }).into())
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
        let mut arns: Vec<&str> = state
            .task_definitions
            .scan_prefix(&prefix)
            .map(|(_, td)| td)
            .filter(|td| td.status == Some(status))
            .filter_map(|td| td.task_definition_arn.as_deref())
            .collect();
        if request.sort.as_deref() == Some("DESC") {
            arns.reverse();
        }
        Ok(json!({ "taskDefinitionArns": arns }).into())
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
                taskdef::apply_overrides(definition, &parsed)
                    .map_err(|e| invalid(format!("overrides.{e}")))?
            }
            None => definition.clone(),
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
        let views = scheduler::cluster_views(state, &cluster);
        let task_demand = scheduler::task_demand(&resolved, &group);
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
    let cluster = cluster_of(&request.cluster);
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
    let cluster = cluster_of(&request.cluster);
    read(raft, |state| {
        let task = state.task(&cluster, &request.task)?;
        let definition = state.task_definition_of(task)?;
        let demand = scheduler::task_demand(&definition, &task.group);
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
    let cluster = cluster_of(&request.cluster);
    read(raft, |state| {
        Ok(described(
            "tasks",
            &request.tasks,
            |id| Some(json!(state.task(&cluster, id).ok()?)),
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
        let instance = request
            .container_instance
            .as_deref()
            .map(|i| i.rsplit('/').next().unwrap_or(i));
        let arns: Vec<&str> = state
            .tasks
            .scan_prefix(&format!("{cluster}/"))
            .map(|(_, task)| task)
            .filter(|task| match desired {
                TaskStatus::Pending => {
                    task.desired_status == TaskStatus::Running
                        && task.last_status < TaskStatus::Running
                }
                status => task.desired_status == status,
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
        Ok(json!({ "taskArns": arns }).into())
    })
    .await
}

fn family_of(task: &Task) -> &str {
    let tail = task
        .task_definition_arn
        .rsplit('/')
        .next()
        .unwrap_or(&task.task_definition_arn);
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
    }
    let request: Request = parse("ListContainerInstances", body)?;
    let cluster = cluster_of(&request.cluster);
    read(raft, |state| {
        state.active_cluster(&cluster)?;
        let arns: Vec<&str> = state
            .container_instances
            .scan_prefix(&format!("{cluster}/"))
            .map(|(_, i)| i)
            .filter(|i| request.status.as_deref().is_none_or(|s| i.status == s))
            .map(|i| i.container_instance_arn.as_str())
            .collect();
        Ok(json!({ "containerInstanceArns": arns }).into())
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
