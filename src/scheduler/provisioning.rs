//! Placing tasks that wait in PROVISIONING: run-task copies that fit on no
//! instance when they were started. Pure, like the rest of the scheduler:
//! the leader's controller turns the decisions into a `PlaceTasks` command
//! and `orc explain-task` shows the same decision, so what it says is what
//! the controller does.
//!
//! Rules: the oldest waiting task chooses first (by creation time, then
//! id), each on the instances as earlier choices of the same pass left
//! them; each task is placed with the strategies and constraints of its own
//! run-task call plus its task definition's constraints (a service task
//! with those of its service).

use crate::model::{Task, TaskStatus};
use crate::store::State;

use super::placement::{self, PlacementConstraint, PlacementOutcome, PlacementStrategy};

/// How one task is to be placed: its strategies and constraints.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskPlacement {
    /// Successive tie-breakers.
    pub strategies: Vec<PlacementStrategy>,
    /// All must hold.
    pub constraints: Vec<PlacementConstraint>,
}

/// The strategies and constraints a task is placed with: its run-task
/// call's (ECS's run-task default, random, when it gave none) or its
/// service's, plus the `memberOf` constraints of its task definition.
pub fn task_placement(
    state: &State,
    task: &Task,
    definition: &crate::taskdef::TaskDefinition,
) -> TaskPlacement {
    let service = task
        .group
        .strip_prefix("service:")
        .and_then(|name| state.service(&task.cluster_name(), name).ok());
    let (mut constraints, strategies) = match service {
        Some(service) => (
            service.placement_constraints.clone(),
            if service.placement_strategy.is_empty() {
                placement::default_service_strategies()
            } else {
                service.placement_strategy.clone()
            },
        ),
        None => (
            task.placement_constraints.clone(),
            if task.placement_strategy.is_empty() {
                placement::default_run_task_strategies()
            } else {
                task.placement_strategy.clone()
            },
        ),
    };
    constraints.extend(super::definition_constraints(definition));
    TaskPlacement {
        strategies,
        constraints,
    }
}

/// One waiting task and what placing it now gives.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The task's id.
    pub task_id: String,
    /// Where it goes (`placements` has one instance) or why it still
    /// fits nowhere, with a verdict per instance.
    pub outcome: PlacementOutcome,
}

/// Whether `task` waits in PROVISIONING for room.
fn is_waiting(task: &Task) -> bool {
    task.last_status == TaskStatus::Provisioning
        && task.desired_status == TaskStatus::Running
        && task.container_instance_arn.is_none()
}

/// The clusters with a task waiting in PROVISIONING, in one pass over the
/// tasks (the controller asks on every change; most of the time none waits,
/// and a cluster-by-cluster look cost a lookup per cluster even then).
pub fn clusters_with_waiting_tasks(state: &State) -> std::collections::BTreeSet<&str> {
    state
        .tasks
        .iter()
        .filter(|(_, task)| is_waiting(task))
        .filter_map(|(key, _)| key.split_once('/').map(|(cluster, _)| cluster))
        .collect()
}

/// The tasks of `cluster` waiting in PROVISIONING, oldest first.
pub fn waiting_tasks<'a>(state: &'a State, cluster: &str) -> Vec<&'a Task> {
    let mut waiting: Vec<&Task> = state
        .tasks
        .scan_prefix(&format!("{cluster}/"))
        .map(|(_, task)| task)
        .filter(|task| is_waiting(task))
        .collect();
    waiting.sort_by(|a, b| {
        a.created_at
            .total_cmp(&b.created_at)
            .then_with(|| a.id().cmp(b.id()))
    });
    waiting
}

/// Decides, oldest first, where each waiting task of `cluster` goes now;
/// each decision sees the room the earlier ones took. Random strategies
/// draw from `seed`.
pub fn decide(state: &State, cluster: &str, seed: u64) -> Vec<Decision> {
    let waiting = waiting_tasks(state, cluster);
    if waiting.is_empty() {
        return Vec::new();
    }
    let mut views = super::cluster_views(state, cluster);
    let mut decisions = Vec::with_capacity(waiting.len());
    for (i, task) in waiting.into_iter().enumerate() {
        let Ok(definition) = state.task_definition_of(task) else {
            continue;
        };
        let demand = super::task_demand(state, &definition, &task.group);
        let how = task_placement(state, task, &definition);
        let outcome = placement::place(
            &demand,
            1,
            &views,
            &how.strategies,
            &how.constraints,
            seed ^ i as u64,
        );
        if let Some(instance_id) = outcome.placements.first() {
            if let Some(view) = views.iter_mut().find(|v| &v.id == instance_id) {
                super::take_room(view, &demand);
            }
        }
        decisions.push(Decision {
            task_id: task.id().to_string(),
            outcome,
        });
    }
    decisions
}
