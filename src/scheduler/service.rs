//! The service reconciler: a pure function from (service, its tasks, the
//! instances) to a plan of starts, stops and deployment changes. The
//! leader's controller carries the plan out through Raft; the next tick
//! recomputes from scratch, so a lost or refused step is simply redone.
//!
//! Rules, as ECS documents them: a deployment starts new tasks up to
//! `maximumPercent` of the desired count and stops old ones only while
//! `minimumHealthyPercent` stay healthy; a new task counts once it is
//! RUNNING and, behind a load balancer, healthy or past the grace period;
//! the circuit breaker fails a deployment after max(10, min(200, ⌈desired/2⌉))
//! failed launches and rolls back when asked; crash loops back off
//! exponentially.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Service, Task, TaskStatus};
use crate::scheduler::placement::{InstanceStatus, InstanceView, PlacementConstraint};
use crate::scheduler::query::QuerySubject;
use crate::scheduler::targets::TargetStatus;

pub use crate::model::{backoff_ms, restart_delay_ms, BACKOFF_BASE_MS, BACKOFF_CAP_MS};

/// Tasks to start for a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// The deployment they belong to.
    pub deployment_id: String,
    /// Its task definition.
    pub task_definition: String,
    /// How many.
    pub count: usize,
    /// For DAEMON services: the one instance the task must go to.
    pub instance_id: Option<String>,
}

/// A change to one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentChange {
    /// Which deployment.
    pub deployment_id: String,
    /// New rollout state.
    pub rollout_state: String,
    /// Why.
    pub reason: String,
}

/// What the reconciler wants done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tasks to start.
    pub starts: Vec<Start>,
    /// Tasks to stop, with the reason.
    pub stops: Vec<(String, String)>,
    /// Rollout state changes.
    pub deployment_changes: Vec<DeploymentChange>,
    /// Deployments left with no tasks (they turn INACTIVE).
    pub finished_deployments: Vec<String>,
    /// Roll back: start a new deployment with this task definition.
    pub rollback_to: Option<String>,
    /// Events in ECS's wording.
    pub events: Vec<String>,
    /// The service (being deleted) has no tasks left: INACTIVE.
    pub inactive: bool,
    /// Tasks stopped because their targets failed their health checks
    /// (among `stops`): failed launches for the back-off and the circuit
    /// breaker, as ECS counts them.
    pub failed_health_checks: Vec<String>,
}

impl Plan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// The circuit breaker's failed-launch threshold for a desired count.
pub fn failure_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(10, 200)
}

/// A task the service counts: wanted RUNNING and not yet stopping (a
/// DEACTIVATING task is draining from its load balancer and is replaced).
fn is_live(task: &Task) -> bool {
    task.desired_status == TaskStatus::Running && task.last_status < TaskStatus::Deactivating
}

/// The health of each task's load balancer targets, by task ARN
/// (`scheduler::targets::task_target_health`).
pub type TargetHealthByTask = BTreeMap<String, TargetStatus>;

/// How long a task without a health check must have been RUNNING before a
/// deployment counts it as healthy. ECS counts it at once; orc waits a
/// little so a container that exits right after starting (a bad revision)
/// never replaces a good task. A passing health check counts at once.
pub const MIN_RUNNING_MS: u64 = 3_000;

/// Whether a task counts toward the healthy minimum. Behind a load
/// balancer, as ECS does: once its target is healthy in every target group
/// of the service (and its container health check, if any, is not failing).
pub fn is_healthy(
    service: &Service,
    task: &Task,
    targets: &TargetHealthByTask,
    now_ms: u64,
) -> bool {
    if task.last_status != TaskStatus::Running || task.health_status == "UNHEALTHY" {
        return false;
    }
    if !service.load_balancers_of(task).is_empty() {
        return targets.get(&task.task_arn) == Some(&TargetStatus::Healthy);
    }
    if task.health_status == "HEALTHY" {
        return true;
    }
    task.started_at
        .is_some_and(|started| (started * 1000.0) as u64 + MIN_RUNNING_MS <= now_ms)
}

/// Whether a task failed its load balancer health checks after its
/// service's `healthCheckGracePeriodSeconds` (counted from its start): the
/// service replaces it, as ECS does.
pub fn failed_target_health(
    service: &Service,
    task: &Task,
    targets: &TargetHealthByTask,
    now_ms: u64,
) -> bool {
    let grace_ms = u64::from(service.health_check_grace_period_seconds) * 1000;
    task.last_status == TaskStatus::Running
        && targets.get(&task.task_arn) == Some(&TargetStatus::Unhealthy)
        && task
            .started_at
            .is_some_and(|started| (started * 1000.0) as u64 + grace_ms <= now_ms)
}

/// Stop order: tasks that are not running first, then the newest.
fn stop_order(mut tasks: Vec<&Task>) -> Vec<&Task> {
    tasks.sort_by(|a, b| {
        (a.last_status == TaskStatus::Running)
            .cmp(&(b.last_status == TaskStatus::Running))
            .then(b.created_at.total_cmp(&a.created_at))
            .then(a.task_arn.cmp(&b.task_arn))
    });
    tasks
}

fn message(service: &Service, text: &str) -> String {
    format!("(service {}) {text}", service.service_name)
}

/// Decides what to change for one service.
pub fn reconcile(
    service: &Service,
    tasks: &[&Task],
    instances: &[InstanceView],
    targets: &TargetHealthByTask,
    now_ms: u64,
) -> Plan {
    let mut plan = Plan::default();
    let mut live: Vec<&Task> = tasks.iter().copied().filter(|t| is_live(t)).collect();
    if service.status == "ACTIVE" {
        // Tasks whose targets failed their health checks past the grace
        // period are replaced.
        let (failed, kept): (Vec<&Task>, Vec<&Task>) = live
            .into_iter()
            .partition(|t| failed_target_health(service, t, targets, now_ms));
        live = kept;
        for task in failed {
            let groups: Vec<&str> = service
                .load_balancers_of(task)
                .iter()
                .map(|lb| lb.target_group_arn.as_str())
                .collect();
            let reason = format!(
                "Task failed ELB health checks in (target-group {})",
                groups.join(", ")
            );
            plan.events.push(message(
                service,
                &format!(
                    "(task {}) failed ELB health checks in (target-group {}).",
                    task.id(),
                    groups.join(", ")
                ),
            ));
            plan.stops.push((task.task_arn.clone(), reason));
            plan.failed_health_checks.push(task.task_arn.clone());
        }
    }
    if service.status != "ACTIVE" {
        for task in &live {
            plan.stops
                .push((task.task_arn.clone(), "Service is being deleted".into()));
        }
        plan.inactive =
            live.is_empty() && tasks.iter().all(|t| t.last_status == TaskStatus::Stopped);
        return plan;
    }
    let Some(primary) = service.deployments.first() else {
        return plan;
    };
    let status_of: BTreeMap<&str, InstanceStatus> = instances
        .iter()
        .map(|v| (v.id.as_str(), v.status))
        .collect();
    let on_leaving_instance = |task: &Task| {
        task.container_instance_id().is_some_and(|id| {
            status_of
                .get(id)
                .is_none_or(|status| *status != InstanceStatus::Active)
        })
    };
    if service.scheduling_strategy == "DAEMON" {
        reconcile_daemon(service, primary, &live, instances, &mut plan);
    } else {
        reconcile_replica(
            service,
            primary,
            &live,
            &on_leaving_instance,
            targets,
            now_ms,
            &mut plan,
        );
    }
    // Deployments that hold no tasks any more are done.
    let stopping: BTreeSet<&str> = plan.stops.iter().map(|(arn, _)| arn.as_str()).collect();
    for deployment in service.deployments.iter().skip(1) {
        let holds = live.iter().any(|t| {
            t.started_by.as_deref() == Some(deployment.id.as_str())
                && !stopping.contains(t.task_arn.as_str())
        });
        if !holds {
            plan.finished_deployments.push(deployment.id.clone());
        }
    }
    plan
}

fn reconcile_replica(
    service: &Service,
    primary: &crate::model::Deployment,
    live: &[&Task],
    on_leaving_instance: &dyn Fn(&Task) -> bool,
    targets: &TargetHealthByTask,
    now_ms: u64,
    plan: &mut Plan,
) {
    let desired = service.desired_count as usize;
    let config = &service.deployment_configuration;
    let max_total = (desired * config.maximum_percent as usize) / 100;
    let min_healthy = (desired * config.minimum_healthy_percent as usize).div_ceil(100);
    let (primary_tasks, others): (Vec<&Task>, Vec<&Task>) = live.iter().copied().partition(|t| {
        t.started_by.as_deref() == Some(primary.id.as_str()) && !on_leaving_instance(t)
    });

    // Scale in: too many primary tasks.
    let mut stopping_primary = 0;
    if primary_tasks.len() > desired {
        for task in stop_order(primary_tasks.clone())
            .into_iter()
            .take(primary_tasks.len() - desired)
        {
            plan.stops.push((
                task.task_arn.clone(),
                "Scaling activity initiated by deployment".into(),
            ));
            stopping_primary += 1;
        }
    }
    let primary_count = primary_tasks.len() - stopping_primary;

    // Start what the primary lacks, within maximumPercent.
    let breaker = &config.deployment_circuit_breaker;
    let failed = primary.rollout_state == "FAILED";
    let need = desired.saturating_sub(primary_count);
    let room = if others.is_empty() {
        need
    } else {
        max_total.saturating_sub(live.len() - stopping_primary)
    };
    let mut starting = need.min(room);
    if failed && breaker.enable {
        starting = 0;
    }
    if starting > 0 && primary.consecutive_failures > 0 {
        let wait_until = primary.last_failure_ms
            + restart_delay_ms(primary.consecutive_failures, service.desired_count);
        if now_ms < wait_until {
            starting = 0;
        }
    }
    if starting > 0 {
        plan.starts.push(Start {
            deployment_id: primary.id.clone(),
            task_definition: primary.task_definition.clone(),
            count: starting,
            instance_id: None,
        });
    }

    // Stop old tasks (older deployments, draining instances) while enough stay healthy.
    // A new task must prove itself (is_healthy); an old one that runs and is
    // not UNHEALTHY already serves, so it counts, however young it is.
    let serving =
        |task: &Task| task.last_status == TaskStatus::Running && task.health_status != "UNHEALTHY";
    let healthy_total = primary_tasks
        .iter()
        .filter(|t| is_healthy(service, t, targets, now_ms))
        .count()
        + others.iter().filter(|t| serving(t)).count();
    let mut may_stop_healthy = healthy_total.saturating_sub(min_healthy);
    for task in stop_order(others.clone()) {
        // A serving old task goes only while enough others keep serving.
        if serving(task) {
            if may_stop_healthy == 0 {
                continue;
            }
            may_stop_healthy -= 1;
        }
        let reason = if on_leaving_instance(task) {
            "Task stopped because its container instance is draining"
        } else {
            "Task stopped by a deployment of a new revision"
        };
        plan.stops.push((task.task_arn.clone(), reason.into()));
    }

    // Rollout progress.
    let primary_healthy = primary_tasks
        .iter()
        .filter(|t| is_healthy(service, t, targets, now_ms))
        .count();
    let old_left = others.len()
        > plan
            .stops
            .iter()
            .filter(|(arn, _)| others.iter().any(|t| &t.task_arn == arn))
            .count();
    if primary.rollout_state == "IN_PROGRESS" {
        if breaker.enable && primary.failed_tasks >= failure_threshold(service.desired_count) {
            plan.deployment_changes.push(DeploymentChange {
                deployment_id: primary.id.clone(),
                rollout_state: "FAILED".into(),
                reason: format!(
                    "ECS deployment circuit breaker: {} tasks failed to start.",
                    primary.failed_tasks
                ),
            });
            plan.events.push(message(
                service,
                &format!(
                    "(deployment {}) deployment failed: tasks failed to start.",
                    primary.id
                ),
            ));
            if breaker.rollback {
                match rollback_target(service, primary) {
                    Some(previous) => {
                        plan.events.push(message(
                            service,
                            &format!("(deployment {}) rolling back to {previous}.", primary.id),
                        ));
                        plan.rollback_to = Some(previous);
                    }
                    None => plan.events.push(message(
                        service,
                        &format!(
                            "(deployment {}) cannot roll back: no earlier deployment completed or was serving.",
                            primary.id
                        ),
                    )),
                }
            }
        } else if primary_healthy >= desired && primary_count == desired && !old_left {
            plan.deployment_changes.push(DeploymentChange {
                deployment_id: primary.id.clone(),
                rollout_state: "COMPLETED".into(),
                reason: "ECS deployment completed.".into(),
            });
            plan.events
                .push(message(service, "has reached a steady state."));
        }
    }
}

/// The task definition a failed deployment rolls back to: that of the last
/// deployment that COMPLETED, as ECS does; when none did (a revision pushed
/// before the previous rollout reached its steady state) or that is the
/// failed revision itself, the newest older deployment that did not fail,
/// which is the one that was serving before the failed one.
pub fn rollback_target(service: &Service, failed: &crate::model::Deployment) -> Option<String> {
    let differs = |definition: &String| *definition != failed.task_definition;
    service
        .last_completed_task_definition
        .clone()
        .filter(differs)
        .or_else(|| {
            service
                .deployments
                .iter()
                .filter(|d| d.id != failed.id && d.rollout_state != "FAILED")
                .map(|d| d.task_definition.clone())
                .find(differs)
        })
}

fn reconcile_daemon(
    service: &Service,
    primary: &crate::model::Deployment,
    live: &[&Task],
    instances: &[InstanceView],
    plan: &mut Plan,
) {
    let eligible: Vec<&InstanceView> = instances
        .iter()
        .filter(|v| v.status == InstanceStatus::Active)
        .filter(|v| {
            service.placement_constraints.iter().all(|c| match c {
                PlacementConstraint::MemberOf(expression) => expression.matches(&ViewSubject(v)),
                PlacementConstraint::DistinctInstance => true,
            })
        })
        .collect();
    let eligible_ids: BTreeSet<&str> = eligible.iter().map(|v| v.id.as_str()).collect();
    let mut per_instance: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in live {
        let instance = task.container_instance_id().unwrap_or_default();
        let current = task.started_by.as_deref() == Some(primary.id.as_str());
        if !eligible_ids.contains(instance) || !current {
            plan.stops.push((
                task.task_arn.clone(),
                "Task stopped by the daemon scheduler".into(),
            ));
        } else {
            per_instance.entry(instance).or_default().push(task);
        }
    }
    for (_, tasks) in per_instance.iter() {
        for extra in stop_order(tasks.clone())
            .into_iter()
            .take(tasks.len().saturating_sub(1))
        {
            plan.stops.push((
                extra.task_arn.clone(),
                "Task stopped by the daemon scheduler".into(),
            ));
        }
    }
    for instance in &eligible {
        if !per_instance.contains_key(instance.id.as_str()) {
            plan.starts.push(Start {
                deployment_id: primary.id.clone(),
                task_definition: primary.task_definition.clone(),
                count: 1,
                instance_id: Some(instance.id.clone()),
            });
        }
    }
    if primary.rollout_state == "IN_PROGRESS" && plan.starts.is_empty() && plan.stops.is_empty() {
        plan.deployment_changes.push(DeploymentChange {
            deployment_id: primary.id.clone(),
            rollout_state: "COMPLETED".into(),
            reason: "ECS deployment completed.".into(),
        });
        plan.events
            .push(message(service, "has reached a steady state."));
    }
}

/// Lets a constraint expression look at an instance view.
struct ViewSubject<'a>(&'a InstanceView);

impl QuerySubject for ViewSubject<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.0.attributes.get(name).map(String::as_str)
    }

    fn instance_id(&self) -> &str {
        &self.0.id
    }

    fn running_tasks_count(&self) -> u32 {
        self.0.running_tasks_count
    }

    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0.tasks_by_group.keys().any(|group| f(group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Deployment, DeploymentCircuitBreaker, DeploymentConfiguration};
    use std::collections::BTreeMap as Map;

    /// The plan for `service` and `tasks` on one ACTIVE instance "a" at 10 s.
    fn reconcile_on_one_active_instance(service: &Service, tasks: &[&Task]) -> Plan {
        reconcile(
            service,
            tasks,
            &[view("a", InstanceStatus::Active)],
            &TargetHealthByTask::new(),
            10_000,
        )
    }

    fn deployment(id: &str, status: &str, definition: &str) -> Deployment {
        Deployment {
            id: id.into(),
            status: status.into(),
            task_definition: definition.into(),
            rollout_state: "IN_PROGRESS".into(),
            rollout_state_reason: String::new(),
            failed_tasks: 0,
            consecutive_failures: 0,
            last_failure_ms: 0,
            created_at: 0.0,
            updated_at: 0.0,
            load_balancers: None,
        }
    }

    fn service(desired: u32, min: u32, max: u32, deployments: Vec<Deployment>) -> Service {
        Service {
            service_arn: "arn:svc/web".into(),
            service_name: "web".into(),
            cluster_arn: "arn:cluster/default".into(),
            status: "ACTIVE".into(),
            desired_count: desired,
            task_definition: deployments[0].task_definition.clone(),
            deployment_configuration: DeploymentConfiguration {
                maximum_percent: max,
                minimum_healthy_percent: min,
                deployment_circuit_breaker: DeploymentCircuitBreaker::default(),
            },
            placement_strategy: vec![],
            placement_constraints: vec![],
            load_balancers: vec![],
            health_check_grace_period_seconds: 0,
            scheduling_strategy: "REPLICA".into(),
            deployments,
            events: vec![],
            created_at: 0.0,
            next_deployment: 2,
            last_completed_task_definition: Some("web:1".into()),
        }
    }

    fn task(id: &str, deployment: &str, status: TaskStatus, instance: &str) -> Task {
        serde_json::from_value(serde_json::json!({
            "taskArn": format!("arn:task/default/{id}"),
            "clusterArn": "arn:cluster/default",
            "taskDefinitionArn": "web:1",
            "containerInstanceArn": format!("arn:container-instance/default/{instance}"),
            "lastStatus": status,
            "desiredStatus": "RUNNING",
            "cpu": "0", "memory": "0", "containers": [],
            "startedBy": deployment, "group": "service:web", "version": 1,
            "launchType": "EC2", "healthStatus": "UNKNOWN", "createdAt": 1.0,
            "startedAt": 1.0,
        }))
        .unwrap()
    }

    fn view(id: &str, status: InstanceStatus) -> InstanceView {
        InstanceView {
            id: id.into(),
            status,
            attributes: Map::new(),
            remaining_cpu: 4096,
            remaining_memory_mib: 4096,
            used_ports: Default::default(),
            tasks_by_group: Map::new(),
            running_tasks_count: 0,
        }
    }

    #[test]
    fn a_new_service_starts_its_desired_count() {
        let service = service(3, 100, 200, vec![deployment("d2", "PRIMARY", "web:1")]);
        let plan = reconcile(
            &service,
            &[],
            &[view("a", InstanceStatus::Active)],
            &TargetHealthByTask::new(),
            0,
        );
        assert_eq!(plan.starts.len(), 1);
        assert_eq!(plan.starts[0].count, 3);
        assert!(plan.stops.is_empty());
    }

    #[test]
    fn rolling_deployment_respects_minimum_healthy_and_maximum_percent() {
        // desired 4, min 50% (2 healthy), max 150% (6 in total): 4 old running.
        let service = service(
            4,
            50,
            150,
            vec![
                deployment("d2", "PRIMARY", "web:2"),
                deployment("d1", "ACTIVE", "web:1"),
            ],
        );
        let old: Vec<Task> = (0..4)
            .map(|i| task(&format!("o{i}"), "d1", TaskStatus::Running, "a"))
            .collect();
        let refs: Vec<&Task> = old.iter().collect();
        let plan = reconcile_on_one_active_instance(&service, &refs);
        assert_eq!(plan.starts[0].count, 2, "only 2 more fit under 150%");
        assert_eq!(plan.stops.len(), 2, "2 old may go while 2 stay healthy");
        assert!(plan.deployment_changes.is_empty());
    }

    #[test]
    fn a_completed_rollout_reaches_a_steady_state() {
        let service = service(2, 100, 200, vec![deployment("d2", "PRIMARY", "web:2")]);
        let tasks: Vec<Task> = (0..2)
            .map(|i| task(&format!("n{i}"), "d2", TaskStatus::Running, "a"))
            .collect();
        let refs: Vec<&Task> = tasks.iter().collect();
        let plan = reconcile_on_one_active_instance(&service, &refs);
        assert!(plan.starts.is_empty() && plan.stops.is_empty());
        assert_eq!(plan.deployment_changes[0].rollout_state, "COMPLETED");
        assert_eq!(
            plan.events,
            vec!["(service web) has reached a steady state.".to_string()]
        );
    }

    #[test]
    fn the_circuit_breaker_fails_and_rolls_back() {
        let mut primary = deployment("d2", "PRIMARY", "web:2");
        primary.failed_tasks = failure_threshold(2);
        let mut service = service(
            2,
            100,
            200,
            vec![primary, deployment("d1", "ACTIVE", "web:1")],
        );
        service.deployment_configuration.deployment_circuit_breaker = DeploymentCircuitBreaker {
            enable: true,
            rollback: true,
        };
        let old: Vec<Task> = (0..2)
            .map(|i| task(&format!("o{i}"), "d1", TaskStatus::Running, "a"))
            .collect();
        let refs: Vec<&Task> = old.iter().collect();
        let plan = reconcile_on_one_active_instance(&service, &refs);
        assert_eq!(plan.deployment_changes[0].rollout_state, "FAILED");
        assert_eq!(plan.rollback_to.as_deref(), Some("web:1"));
        assert!(
            plan.stops.is_empty(),
            "old tasks stay while the new ones are not healthy"
        );
        assert_eq!(failure_threshold(2), 10);
        assert_eq!(failure_threshold(100), 50);
        assert_eq!(failure_threshold(1000), 200);
    }

    #[test]
    fn a_failed_deployment_rolls_back_to_the_last_completed_or_else_the_serving_one() {
        // (last completed revision, older deployments as (revision, rollout state),
        //  the revision rolled back to).
        type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            // ECS's rule: the last deployment that completed.
            (Some("web:1"), vec![("web:1", "COMPLETED")], Some("web:1")),
            (Some("web:1"), vec![("web:2", "IN_PROGRESS")], Some("web:1")),
            // Issue 12: the crash revision was pushed while the first rollout
            // was still IN_PROGRESS, so nothing ever completed: roll back to
            // the deployment that was serving.
            (None, vec![("web:1", "IN_PROGRESS")], Some("web:1")),
            (
                None,
                vec![("web:3", "FAILED"), ("web:1", "IN_PROGRESS")],
                Some("web:1"),
            ),
            // The last completed revision is the failed one itself.
            (
                Some("crash:1"),
                vec![("web:2", "IN_PROGRESS")],
                Some("web:2"),
            ),
            // Nothing to roll back to: the rollback deployment of crash:1's own
            // revision failed, or the service never ran anything else.
            (None, vec![("crash:1", "IN_PROGRESS")], None),
            (None, vec![("web:3", "FAILED")], None),
            (None, vec![], None),
        ];
        for (last_completed, older, expected) in cases {
            let mut failed = deployment("d9", "PRIMARY", "crash:1");
            failed.failed_tasks = failure_threshold(2);
            let mut deployments = vec![failed];
            for (i, (definition, rollout_state)) in older.iter().enumerate() {
                let mut d = deployment(&format!("d{}", 8 - i), "ACTIVE", definition);
                d.rollout_state = rollout_state.to_string();
                deployments.push(d);
            }
            let mut service = service(2, 50, 200, deployments);
            service.last_completed_task_definition = last_completed.map(str::to_string);
            service.deployment_configuration.deployment_circuit_breaker =
                DeploymentCircuitBreaker {
                    enable: true,
                    rollback: true,
                };
            let serving: Vec<Task> = older
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    task(
                        &format!("o{i}"),
                        &format!("d{}", 8 - i),
                        TaskStatus::Running,
                        "a",
                    )
                })
                .collect();
            let refs: Vec<&Task> = serving.iter().collect();
            let plan = reconcile_on_one_active_instance(&service, &refs);
            let case = format!("last completed {last_completed:?}, older {older:?}");
            assert_eq!(plan.deployment_changes[0].rollout_state, "FAILED", "{case}");
            assert_eq!(plan.rollback_to.as_deref(), expected, "{case}");
            let said = plan.events.join("\n");
            match expected {
                Some(target) => assert!(
                    said.contains(&format!("rolling back to {target}.")),
                    "{case}: {said}"
                ),
                None => assert!(said.contains("cannot roll back"), "{case}: {said}"),
            }
        }
    }

    #[test]
    fn crash_loops_back_off() {
        let mut primary = deployment("d2", "PRIMARY", "web:2");
        primary.consecutive_failures = 4;
        primary.last_failure_ms = 10_000;
        let service = service(1, 100, 200, vec![primary]);
        let waiting = reconcile(
            &service,
            &[],
            &[view("a", InstanceStatus::Active)],
            &TargetHealthByTask::new(),
            10_000 + backoff_ms(4) - 1,
        );
        assert!(waiting.starts.is_empty());
        let ready = reconcile(
            &service,
            &[],
            &[view("a", InstanceStatus::Active)],
            &TargetHealthByTask::new(),
            10_000 + backoff_ms(4),
        );
        assert_eq!(ready.starts[0].count, 1);
        assert_eq!(backoff_ms(1), 250);
        assert_eq!(backoff_ms(4), 2_000);
        assert_eq!(backoff_ms(30), BACKOFF_CAP_MS);
        assert_eq!(
            restart_delay_ms(4, 4),
            250,
            "four failures of a service of four are one round"
        );
        assert_eq!(restart_delay_ms(8, 4), 500);
    }

    #[test]
    fn draining_moves_tasks_while_keeping_the_minimum() {
        let service = service(2, 50, 200, vec![deployment("d1", "PRIMARY", "web:1")]);
        let tasks = [
            task("t0", "d1", TaskStatus::Running, "a"),
            task("t1", "d1", TaskStatus::Running, "a"),
        ];
        let refs: Vec<&Task> = tasks.iter().collect();
        let instances = [
            view("a", InstanceStatus::Draining),
            view("b", InstanceStatus::Active),
        ];
        let plan = reconcile(
            &service,
            &refs,
            &instances,
            &TargetHealthByTask::new(),
            10_000,
        );
        assert_eq!(plan.starts[0].count, 2, "replacements start elsewhere");
        assert_eq!(
            plan.stops.len(),
            1,
            "one may stop now, one must stay for 50% healthy"
        );
    }

    #[test]
    fn daemon_runs_one_task_per_active_instance() {
        let mut service = service(0, 100, 200, vec![deployment("d1", "PRIMARY", "web:1")]);
        service.scheduling_strategy = "DAEMON".into();
        let tasks = [
            task("t0", "d1", TaskStatus::Running, "a"),
            task("t1", "d1", TaskStatus::Running, "gone"),
        ];
        let refs: Vec<&Task> = tasks.iter().collect();
        let instances = [
            view("a", InstanceStatus::Active),
            view("b", InstanceStatus::Active),
            view("c", InstanceStatus::Draining),
        ];
        let plan = reconcile(&service, &refs, &instances, &TargetHealthByTask::new(), 0);
        assert_eq!(plan.starts.len(), 1);
        assert_eq!(plan.starts[0].instance_id.as_deref(), Some("b"));
        assert_eq!(plan.stops.len(), 1, "the task on an unknown instance stops");
    }
}
