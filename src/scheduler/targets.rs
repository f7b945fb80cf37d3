//! Services behind target groups, as pure decisions: which RUNNING tasks of
//! a service the control plane registers as targets (the instance's
//! `orc.host-address` and the task's host port for the load balancer's
//! container port), which targets it deregisters because their task no
//! longer runs (a stopped task, or one the service is stopping, which stays
//! DEACTIVATING while its targets drain), when drained targets are removed,
//! and which DEACTIVATING tasks may stop at last. Also each task's target
//! health, which the service reconciler counts in deployments.
//!
//! Everything here reads the state and returns plain data; the leader's
//! controller turns a [`TargetPlan`] into commands. An idle cluster gets an
//! empty plan, so it writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::elbv2::{RegisteredTarget, TargetHealth};
use crate::model::{Service, Task, TaskStatus};
use crate::store::elbv2::{target_address, target_key};
use crate::store::State;

/// What the control plane should change about service targets now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetPlan {
    /// (target group ARN, targets to register).
    pub registrations: Vec<(String, Vec<RegisteredTarget>)>,
    /// (target group ARN, (id, port) of the targets to deregister).
    pub deregistrations: Vec<(String, Vec<(String, u16)>)>,
    /// Some draining target's deregistration delay has passed.
    pub remove_drained: bool,
    /// (cluster, service name, task ARN) of DEACTIVATING tasks with no
    /// target left: they may stop.
    pub drained_tasks: Vec<(String, String, String)>,
}

impl TargetPlan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        *self == TargetPlan::default()
    }
}

/// A task's targets, as a deployment counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetStatus {
    /// Every target group of the service has this task's target, healthy.
    Healthy,
    /// One of its targets failed its health checks.
    Unhealthy,
    /// Not registered everywhere yet, or still in its initial checks.
    Pending,
}

/// Whether a task is running as its service wants (the only tasks that are targets).
fn serves(task: &Task) -> bool {
    task.last_status == TaskStatus::Running && task.desired_status == TaskStatus::Running
}

/// The target a task is in a target group of type `target_type` for the
/// container port `container_port` of `container_name`: (id, port,
/// address), or `None` while it has no host port for it (or its instance no
/// host address).
pub fn task_target(
    state: &State,
    task: &Task,
    target_type: &str,
    container_name: &str,
    container_port: u16,
) -> Option<(String, u16, String)> {
    let instance_id = task.container_instance_id()?;
    let host_port = task
        .containers
        .iter()
        .find(|c| c.name == container_name)?
        .network_bindings
        .iter()
        .find(|b| b.container_port == container_port)?
        .host_port;
    // The instance's address, found through the instance itself.
    let address = target_address(state, "instance", instance_id, host_port).ok()?;
    let id = if target_type == "ip" {
        address.rsplit_once(':')?.0.to_string()
    } else {
        instance_id.to_string()
    };
    Some((id, host_port, address))
}

/// The health of each of `service`'s tasks' targets, by task ARN (tasks
/// with no target at all are absent). A task counts against the target
/// groups of the deployment that started it.
pub fn task_target_health(state: &State, service: &Service) -> BTreeMap<String, TargetStatus> {
    if !service.behind_load_balancer() {
        return BTreeMap::new();
    }
    // (task ARN, group ARN) → whether its target is healthy there, for
    // every group any deployment of the service uses.
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let groups: BTreeSet<&str> = service
        .all_load_balancers()
        .map(|lb| lb.target_group_arn.as_str())
        .collect();
    for group_arn in groups {
        let Ok((group_key, _)) = state.elbv2.target_group(group_arn) else {
            continue;
        };
        for (_, target) in state.elbv2.targets_of(&group_key) {
            let Some(task_arn) = &target.task_arn else {
                continue;
            };
            if target.draining_since_ms.is_some() {
                continue;
            }
            let entry = seen
                .entry((task_arn.as_str(), group_arn))
                .or_insert("initial");
            if *entry != "unhealthy" {
                *entry = match target.health.state.as_str() {
                    "healthy" => "healthy",
                    "unhealthy" => "unhealthy",
                    _ => *entry,
                };
            }
        }
    }
    let tasks: BTreeSet<&str> = seen.keys().map(|(task, _)| *task).collect();
    let cluster = crate::model::cluster_name_from(&service.cluster_arn);
    tasks
        .into_iter()
        .filter_map(|task_arn| {
            let task = state.task(&cluster, task_arn).ok()?;
            let wanted = service.load_balancers_of(task);
            let states: Vec<Option<&&str>> = wanted
                .iter()
                .map(|lb| seen.get(&(task_arn, lb.target_group_arn.as_str())))
                .collect();
            if states.iter().all(Option::is_none) {
                return None;
            }
            let status = if states.iter().any(|s| s == &Some(&"unhealthy")) {
                TargetStatus::Unhealthy
            } else if states.iter().all(|s| s == &Some(&"healthy")) {
                TargetStatus::Healthy
            } else {
                TargetStatus::Pending
            };
            Some((task_arn.to_string(), status))
        })
        .collect()
}

/// Decides the target changes for every service behind a target group.
pub fn decide(state: &State, now_ms: u64) -> TargetPlan {
    let mut plan = TargetPlan::default();
    let elb = &state.elbv2;
    if elb.targets.is_empty()
        && state
            .services
            .values()
            .all(|s| !s.behind_load_balancer() || s.status == "INACTIVE")
    {
        return plan;
    }

    // Registrations: RUNNING tasks of services behind target groups.
    let mut registrations: BTreeMap<String, Vec<RegisteredTarget>> = BTreeMap::new();
    for service in state.services.values() {
        if !service.behind_load_balancer() || service.status == "INACTIVE" {
            continue;
        }
        let cluster = crate::model::cluster_name_from(&service.cluster_arn);
        let tasks = state.service_tasks(&cluster, &service.service_name);
        for task in tasks.iter().filter(|t| serves(t)) {
            // A task registers in its own deployment's groups.
            for lb in service.load_balancers_of(task) {
                let Ok((group_key, record)) = elb.target_group(&lb.target_group_arn) else {
                    continue;
                };
                let Some((id, port, address)) = task_target(
                    state,
                    task,
                    &record.group.target_type,
                    &lb.container_name,
                    lb.container_port,
                ) else {
                    continue;
                };
                let registered = elb
                    .targets
                    .get(&target_key(&group_key, &id, port))
                    .is_some_and(|t| {
                        t.draining_since_ms.is_none()
                            && t.task_arn.as_deref() == Some(task.task_arn.as_str())
                    });
                if !registered {
                    registrations
                        .entry(lb.target_group_arn.clone())
                        .or_default()
                        .push(RegisteredTarget {
                            id,
                            port,
                            address,
                            health: TargetHealth::initial(),
                            registered_ms: now_ms,
                            draining_since_ms: None,
                            task_arn: Some(task.task_arn.clone()),
                        });
                }
            }
        }
    }
    plan.registrations = registrations.into_iter().collect();

    // Deregistrations and drains, over the targets tasks registered.
    let tasks_by_arn: BTreeMap<&str, &Task> = elb
        .targets
        .values()
        .filter_map(|t| t.task_arn.as_deref())
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .filter_map(|arn| {
            let cluster = arn.rsplit('/').nth(1)?;
            state.task(cluster, arn).ok().map(|task| (arn, task))
        })
        .collect();
    let mut deregistrations: BTreeMap<String, Vec<(String, u16)>> = BTreeMap::new();
    let mut with_targets: BTreeSet<&str> = BTreeSet::new();
    for (key, target) in elb.targets.iter() {
        let group_key = key.rsplitn(3, '/').nth(2).unwrap_or_default();
        let Some(record) = elb.target_groups.get(group_key) else {
            continue;
        };
        if let Some(since) = target.draining_since_ms {
            let delay = u64::from(record.deregistration_delay_seconds()) * 1000;
            if now_ms.saturating_sub(since) >= delay {
                plan.remove_drained = true;
            }
        }
        let Some(task_arn) = target.task_arn.as_deref() else {
            continue;
        };
        with_targets.insert(task_arn);
        let task_serves = tasks_by_arn.get(task_arn).is_some_and(|t| serves(t));
        if !task_serves && target.draining_since_ms.is_none() {
            deregistrations
                .entry(record.group.target_group_arn.clone())
                .or_default()
                .push((target.id.clone(), target.port));
        }
    }
    plan.deregistrations = deregistrations.into_iter().collect();

    // DEACTIVATING tasks whose targets are gone stop now.
    for task in state.tasks.values() {
        if task.last_status == TaskStatus::Deactivating
            && task.desired_status == TaskStatus::Running
            && !with_targets.contains(task.task_arn.as_str())
        {
            let service_name = task.group.strip_prefix("service:").unwrap_or(&task.group);
            plan.drained_tasks.push((
                task.cluster_name(),
                service_name.to_string(),
                task.task_arn.clone(),
            ));
        }
    }
    plan
}
