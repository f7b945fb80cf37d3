//! The services part of the state machine: create, update (new
//! deployments), delete, the controller's launches and plan results, and
//! the bookkeeping of failed launches that drives back-off and the circuit
//! breaker. Pure, like the rest of `apply`.

use serde_json::json;

use super::command::Outcome;
use super::ecs::{self, scoped_key, seconds, PlannedTask, TaskLaunch};
use super::state::State;
use crate::error::Refusal;
use crate::model::{
    self, stop_code, Deployment, DeploymentConfiguration, LoadBalancer, Service, ServiceEvent,
    Task, TaskStatus,
};
use crate::vocab::ids::last_segment;
use crate::Error;

/// How many events a service keeps.
pub const MAX_EVENTS: usize = 100;

/// What the controller decided for one service, applied in one command.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanResult {
    /// Tasks to stop with their reasons.
    pub stops: Vec<(String, String)>,
    /// (deployment id, rollout state, reason).
    pub deployment_changes: Vec<(String, String, String)>,
    /// Deployments without tasks.
    pub finished_deployments: Vec<String>,
    /// Start a rollback deployment with this task definition.
    pub rollback_to: Option<String>,
    /// Events to record.
    pub events: Vec<String>,
    /// The deleted service has no tasks left.
    pub inactive: bool,
    /// DEACTIVATING tasks whose load balancer targets finished draining:
    /// they stop now (desired STOPPED).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drained: Vec<String>,
    /// Tasks among `stops` whose targets failed their health checks: each
    /// counts as a failed launch of its deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_health_checks: Vec<String>,
}

impl State {
    /// A service by cluster and name (or ARN).
    pub fn service(&self, cluster: &str, name_or_arn: &str) -> Result<&Service, Error> {
        let name = last_segment(name_or_arn);
        self.services
            .get(&scoped_key(cluster, name))
            .ok_or_else(|| {
                Error::Refused(
                    Refusal::ServiceNotFound,
                    format!(
                    "service {name:?} not found in cluster {cluster:?} (see `orc list-services`)"
                ),
                )
            })
    }

    /// The tasks of a service (any status), by its group.
    pub fn service_tasks(&self, cluster: &str, service_name: &str) -> Vec<&Task> {
        let group = format!("service:{service_name}");
        self.tasks
            .scan_prefix(&format!("{cluster}/"))
            .map(|(_, t)| t)
            .filter(|t| t.group == group)
            .collect()
    }
}

/// How many task ids an event lists before it says how many more there are.
pub const EVENT_TASKS_LISTED: usize = 10;

/// Whether `text` would add nothing to the service's events at `now_ms`:
/// it is the newest event and less than a minute old (placement failures
/// repeat on every pass of the controller, which checks this before
/// proposing one again).
pub fn repeats_newest_event(service: &Service, text: &str, now_ms: u64) -> bool {
    service
        .events
        .first()
        .is_some_and(|newest| newest.message == text && seconds(now_ms) - newest.created_at < 60.0)
}

/// `(task a) (task b) …`, at most [`EVENT_TASKS_LISTED`] of them, then
/// "and N more": an event about hundreds of tasks stays one readable line.
pub fn listed_tasks(task_ids: &[String]) -> String {
    let mut text = task_ids
        .iter()
        .take(EVENT_TASKS_LISTED)
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ");
    if task_ids.len() > EVENT_TASKS_LISTED {
        text.push_str(&format!(
            " and {} more",
            task_ids.len() - EVENT_TASKS_LISTED
        ));
    }
    text
}

fn push_event(service: &mut Service, text: String, now_ms: u64) {
    if repeats_newest_event(service, &text, now_ms) {
        return;
    }
    service.events.insert(
        0,
        ServiceEvent {
            id: format!("{}-{}", service.service_name, now_ms),
            created_at: seconds(now_ms),
            message: text,
        },
    );
    service.events.truncate(MAX_EVENTS);
}

fn new_deployment(service: &mut Service, task_definition: &str, now_ms: u64) {
    service.next_deployment += 1;
    for deployment in service.deployments.iter_mut() {
        deployment.status = "ACTIVE".into();
    }
    let deployment = Deployment {
        id: format!("ecs-svc/{:019}", service.next_deployment),
        status: "PRIMARY".into(),
        task_definition: task_definition.to_string(),
        rollout_state: "IN_PROGRESS".into(),
        rollout_state_reason: "ECS deployment in progress.".into(),
        failed_tasks: 0,
        consecutive_failures: 0,
        last_failure_ms: 0,
        created_at: seconds(now_ms),
        updated_at: seconds(now_ms),
        load_balancers: Some(service.load_balancers.clone()),
    };
    service.deployments.insert(0, deployment);
    service.task_definition = task_definition.to_string();
}

/// ECS CreateService.
pub fn create_service(state: &mut State, service: &Service, now_ms: u64) -> Outcome {
    let cluster = model::cluster_name_from(&service.cluster_arn);
    state.active_cluster(&cluster)?;
    let key = scoped_key(&cluster, &service.service_name);
    if let Some(existing) = state.services.get(&key) {
        if existing.status != "INACTIVE" {
            return Err(Error::InvalidInput(format!(
                "creation of service was not idempotent: a service named {} already exists in cluster {cluster}",
                service.service_name
            )));
        }
    }
    let definition = state.resolve_task_definition(&service.task_definition)?;
    let arn = definition.task_definition_arn.clone().unwrap_or_default();
    let mut stored = service.clone();
    stored.deployments.clear();
    stored.events.clear();
    stored.created_at = seconds(now_ms);
    new_deployment(&mut stored, &arn, now_ms);
    state.services.insert(key, stored.clone());
    Ok(json!({ "service": stored }))
}

/// The changes `update-service` may carry.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceUpdate {
    /// New desired count.
    pub desired_count: Option<u32>,
    /// New task definition (a new deployment).
    pub task_definition: Option<String>,
    /// Start a new deployment even without changes.
    pub force_new_deployment: bool,
    /// New deployment configuration.
    pub deployment_configuration: Option<DeploymentConfiguration>,
    /// New health check grace period.
    pub health_check_grace_period_seconds: Option<u32>,
    /// New load balancers (checked by the API; a change starts a new
    /// deployment whose tasks register in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancers: Option<Vec<LoadBalancer>>,
}

/// ECS UpdateService.
pub fn update_service(
    state: &mut State,
    cluster: &str,
    name: &str,
    update: &ServiceUpdate,
    now_ms: u64,
) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let existing = state.service(&cluster, name)?;
    if existing.status != "ACTIVE" {
        return Err(Error::Refused(
            Refusal::ServiceNotActive,
            format!(
                "service {name} is {}: it cannot be updated",
                existing.status
            ),
        ));
    }
    let key = scoped_key(&cluster, &existing.service_name);
    let new_definition = match &update.task_definition {
        Some(reference) => Some(
            state
                .resolve_task_definition(reference)?
                .task_definition_arn
                .clone()
                .unwrap_or_default(),
        ),
        None => None,
    };
    let service = state.services.get_mut(&key).expect("checked above");
    if let Some(count) = update.desired_count {
        service.desired_count = count;
        // A new desired count restarts the rollout's bookkeeping so a steady state is announced again.
        if let Some(primary) = service.deployments.first_mut() {
            if primary.rollout_state == "COMPLETED" {
                primary.rollout_state = "IN_PROGRESS".into();
            }
            primary.consecutive_failures = 0;
        }
    }
    if let Some(config) = &update.deployment_configuration {
        service.deployment_configuration = config.clone();
    }
    if let Some(grace) = update.health_check_grace_period_seconds {
        service.health_check_grace_period_seconds = grace;
    }
    let changed_definition = new_definition
        .as_ref()
        .is_some_and(|arn| *arn != service.task_definition);
    let changed_load_balancers = update
        .load_balancers
        .as_ref()
        .is_some_and(|lbs| *lbs != service.load_balancers);
    if let Some(load_balancers) = &update.load_balancers {
        service.load_balancers = load_balancers.clone();
    }
    if changed_definition || changed_load_balancers || update.force_new_deployment {
        let arn = new_definition.unwrap_or_else(|| service.task_definition.clone());
        new_deployment(service, &arn, now_ms);
    }
    Ok(json!({ "service": service.clone() }))
}

/// ECS DeleteService: DRAINING until its tasks stopped, then INACTIVE.
pub fn delete_service(state: &mut State, cluster: &str, name: &str, force: bool) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let existing = state.service(&cluster, name)?;
    if existing.status == "INACTIVE" {
        return Err(Error::Refused(
            Refusal::ServiceNotActive,
            format!("service {name} is already deleted"),
        ));
    }
    if existing.desired_count > 0 && !force && existing.scheduling_strategy != "DAEMON" {
        return Err(Error::InvalidInput(format!(
            "the service cannot be stopped while it is scaled above 0: run `orc update-service --service {name} --desired-count 0` first, or pass --force"
        )));
    }
    let key = scoped_key(&cluster, &existing.service_name);
    let service = state.services.get_mut(&key).expect("checked above");
    service.status = "DRAINING".into();
    service.desired_count = 0;
    Ok(json!({ "service": service.clone() }))
}

/// The controller starts tasks for a deployment (placement re-checked by `ecs::run_task`).
pub fn launch(
    state: &mut State,
    service_name: &str,
    launch: &TaskLaunch,
    planned: &[PlannedTask],
    event: &str,
    now_ms: u64,
) -> Outcome {
    let cluster = model::cluster_name_from(&launch.cluster);
    let outcome = ecs::run_task(state, launch, planned, &[], now_ms)?;
    if let Some(service) = state.services.get_mut(&scoped_key(&cluster, service_name)) {
        let started: Vec<String> = outcome["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["taskArn"].as_str())
            .map(|arn| last_segment(arn).to_string())
            .collect();
        if !started.is_empty() {
            let text = format!(
                "(service {service_name}) has started {} tasks: {}.",
                started.len(),
                listed_tasks(&started)
            );
            push_event(service, text, now_ms);
        }
        if !event.is_empty() {
            push_event(service, event.to_string(), now_ms);
        }
    }
    Ok(outcome)
}

/// The controller records the rest of a plan: stops, rollout states, events.
pub fn apply_plan(
    state: &mut State,
    cluster: &str,
    service_name: &str,
    plan: &PlanResult,
    now_ms: u64,
) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let key = scoped_key(&cluster, service_name);
    state.service(&cluster, service_name)?;
    let mut stopped = Vec::new();
    let mut deactivated = Vec::new();
    for (task_arn, reason) in &plan.stops {
        let (live, drains) = state
            .task(&cluster, task_arn)
            .map(|t| {
                (
                    t.desired_status == TaskStatus::Running
                        && t.last_status < TaskStatus::Deactivating,
                    drains_first(state, &cluster, t),
                )
            })
            .unwrap_or((false, false));
        if drains {
            // ECS's order behind a load balancer: DEACTIVATING while the
            // targets drain (the controller deregisters them), then STOPPING.
            deactivate(
                state,
                &cluster,
                task_arn,
                reason,
                stop_code::SERVICE_SCHEDULER_INITIATED,
                now_ms,
            );
            deactivated.push(last_segment(task_arn).to_string());
        } else if live {
            ecs::stop_task(
                state,
                &cluster,
                task_arn,
                reason,
                stop_code::SERVICE_SCHEDULER_INITIATED,
                now_ms,
            )?;
            stopped.push(last_segment(task_arn).to_string());
        }
    }
    for task_arn in &plan.failed_health_checks {
        let key = scoped_key(&cluster, last_segment(task_arn));
        if stopped
            .iter()
            .chain(&deactivated)
            .any(|id| key.ends_with(&format!("/{id}")))
        {
            record_failed_launch(state, &key, now_ms);
        }
    }
    for task_arn in &plan.drained {
        let deactivating = state.task(&cluster, task_arn).is_ok_and(|t| {
            t.last_status == TaskStatus::Deactivating && t.desired_status == TaskStatus::Running
        });
        if deactivating {
            // The reason and code given when the drain began.
            let (reason, code) = state
                .task(&cluster, task_arn)
                .map(|t| {
                    (
                        t.stopped_reason.clone().unwrap_or_default(),
                        t.stop_code
                            .clone()
                            .unwrap_or_else(|| stop_code::SERVICE_SCHEDULER_INITIATED.into()),
                    )
                })
                .unwrap_or_default();
            ecs::stop_task(state, &cluster, task_arn, &reason, &code, now_ms)?;
        }
    }
    let service = state.services.get_mut(&key).expect("checked above");
    if !deactivated.is_empty() {
        let text = format!(
            "(service {service_name}) has begun draining connections on {} tasks: {}.",
            deactivated.len(),
            listed_tasks(&deactivated)
        );
        push_event(service, text, now_ms);
    }
    if !stopped.is_empty() {
        let text = format!(
            "(service {service_name}) has stopped {} running tasks: {}.",
            stopped.len(),
            listed_tasks(&stopped)
        );
        push_event(service, text, now_ms);
    }
    for (deployment_id, rollout_state, reason) in &plan.deployment_changes {
        let mut completed_definition = None;
        if let Some(deployment) = service
            .deployments
            .iter_mut()
            .find(|d| &d.id == deployment_id)
        {
            if deployment.rollout_state != *rollout_state {
                deployment.rollout_state = rollout_state.clone();
                deployment.rollout_state_reason = reason.clone();
                deployment.updated_at = seconds(now_ms);
                if rollout_state == "COMPLETED" {
                    deployment.consecutive_failures = 0;
                    completed_definition = Some(deployment.task_definition.clone());
                }
            }
        }
        if let Some(definition) = completed_definition {
            service.last_completed_task_definition = Some(definition);
        }
    }
    service
        .deployments
        .retain(|d| d.status == "PRIMARY" || !plan.finished_deployments.contains(&d.id));
    for event in &plan.events {
        push_event(service, event.clone(), now_ms);
    }
    if let Some(previous) = &plan.rollback_to {
        new_deployment(service, previous, now_ms);
    }
    if plan.inactive {
        service.status = "INACTIVE".into();
    }
    Ok(json!({ "service": service.clone() }))
}

/// Whether stopping `task` goes through DEACTIVATING first, as ECS's does
/// behind a load balancer: a RUNNING task its service still wants, of a
/// service with target groups.
pub fn drains_first(state: &State, cluster: &str, task: &Task) -> bool {
    task.last_status == TaskStatus::Running
        && task.desired_status == TaskStatus::Running
        && task
            .group
            .strip_prefix("service:")
            .and_then(|name| state.service(cluster, name).ok())
            .is_some_and(|service| !service.load_balancers_of(task).is_empty())
}

/// ECS StopTask: a RUNNING task of a service behind a load balancer is
/// deregistered first (DEACTIVATING while its targets drain, then
/// STOPPING), as ECS does; any other task is stopped at once.
pub fn stop_task(
    state: &mut State,
    cluster: &str,
    task_id: &str,
    reason: &str,
    code: &str,
    now_ms: u64,
) -> Outcome {
    let cluster = model::cluster_name_from(cluster);
    let task = state.task(&cluster, task_id)?;
    if !drains_first(state, &cluster, task) {
        return ecs::stop_task(state, &cluster, task_id, reason, code, now_ms);
    }
    let task_arn = task.task_arn.clone();
    deactivate(state, &cluster, &task_arn, reason, code, now_ms);
    Ok(json!({ "task": state.task(&cluster, task_id).ok().map(Task::shown) }))
}

/// Moves a RUNNING task of a service behind a load balancer to
/// DEACTIVATING: it keeps running (desired RUNNING) while the controller
/// deregisters its targets and they drain; the stop reason and code are
/// recorded now, as ECS shows them during the drain.
fn deactivate(
    state: &mut State,
    cluster: &str,
    task_arn: &str,
    reason: &str,
    code: &str,
    now_ms: u64,
) {
    let key = scoped_key(cluster, last_segment(task_arn));
    if let Some(task) = state.tasks.get_mut(&key) {
        task.last_status = TaskStatus::Deactivating;
        task.stop_code = Some(code.to_string());
        task.stopped_reason = Some(reason.to_string());
        task.stopping_at = Some(seconds(now_ms));
        task.version += 1;
    }
}

/// Called when a service's task reached STOPPED on its own (its essential
/// container exited or it failed to start): counts a failed launch.
pub fn record_failed_launch(state: &mut State, task_key: &str, at_ms: u64) {
    let Some(task) = state.tasks.get(task_key) else {
        return;
    };
    let Some(name) = task.group.strip_prefix("service:") else {
        return;
    };
    let service_key = scoped_key(&task.cluster_name(), name);
    let deployment_id = task.started_by.clone().unwrap_or_default();
    let task_id = task.id().to_string();
    let reason = task.stopped_reason.clone().unwrap_or_default();
    if let Some(service) = state.services.get_mut(&service_key) {
        if let Some(deployment) = service
            .deployments
            .iter_mut()
            .find(|d| d.id == deployment_id)
        {
            deployment.failed_tasks += 1;
            deployment.consecutive_failures += 1;
            deployment.last_failure_ms = at_ms;
            let failures = deployment.consecutive_failures;
            let desired = service.desired_count;
            if failures > 1 {
                let delay = crate::model::restart_delay_ms(failures, desired);
                let text = format!(
                    "(service {name}) (task {task_id}) failed: {reason}. The service is restarting tasks with a back-off of {:.1} s after {failures} consecutive failures.",
                    delay as f64 / 1000.0
                );
                push_event(service, text, at_ms);
            } else if reason == crate::model::stop_code::ESSENTIAL_CONTAINER_REMOVED_REASON {
                // A first failure is usually not worth an event, but a
                // container removed by hand is: someone should know.
                let text = format!(
                    "(service {name}) (task {task_id}) stopped: {reason}. The service replaces it."
                );
                push_event(service, text, at_ms);
            }
        }
    }
}
