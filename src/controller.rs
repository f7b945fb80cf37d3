//! The leader's control loops. They run only while this server leads: they
//! start when leadership is won and stop when it is lost. Each tick reads a
//! fresh view of the state, asks pure decision functions what should change
//! and proposes those changes through Raft (level-triggered: a missed tick
//! is repaired by the next one).
//!
//! It owns liveness ([`Liveness`]): the agent API records heartbeats in it
//! and the liveness loop reads them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::raft::node::{RaftHandle, Role};
use crate::scheduler::{self, placement, service};
use crate::store::ecs::{PlannedTask, TaskLaunch};
use crate::store::services::PlanResult;
use crate::store::{Command, Proposal, State};
use crate::vocab::time::now_ms;

/// Timing of the control loops.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// How often the loops look at the state.
    pub interval: Duration,
    /// How long an instance may go without a heartbeat before it is DISCONNECTED.
    pub heartbeat_grace: Duration,
    /// How long stopped tasks stay describable.
    pub keep_stopped_tasks: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            interval: Duration::from_millis(500),
            heartbeat_grace: Duration::from_secs(10),
            keep_stopped_tasks: Duration::from_secs(3600),
        }
    }
}

/// Which instances changed connectivity. `last_seen` says when this leader
/// last heard each instance; an instance never heard since this server
/// became leader counts from `leader_since`, so a new leader gives every
/// agent a full grace period.
pub fn connectivity_changes(
    state: &State,
    last_seen: impl Fn(&str, &str) -> Option<Instant>,
    leader_since: Instant,
    now: Instant,
    grace: Duration,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for instance in state.container_instances.values() {
        if instance.status == "INACTIVE" {
            continue;
        }
        let seen = last_seen(&instance.cluster, instance.id())
            .map_or(leader_since, |seen| seen.max(leader_since));
        let alive = now.saturating_duration_since(seen) <= grace;
        if alive != instance.agent_connected {
            commands.push(Command::SetInstanceConnected {
                cluster: instance.cluster.clone(),
                instance_id: instance.id().to_string(),
                connected: alive,
            });
        }
    }
    commands
}

/// Everything the service reconciler wants proposed right now, for every
/// service: pure in the state, the time and the seed, so the simulation
/// drives exactly what the leader runs.
pub fn service_commands(state: &State, now_ms: u64, seed: u64) -> Vec<Command> {
    let mut commands = Vec::new();
    for (key, service) in state.services.iter() {
        if service.status == "INACTIVE" {
            continue;
        }
        let cluster = crate::model::cluster_name_from(&service.cluster_arn);
        let tasks = state.service_tasks(&cluster, &service.service_name);
        let views = scheduler::cluster_views(state, &cluster);
        let plan = service::reconcile(service, &tasks, &views, now_ms);
        if plan.is_empty() {
            continue;
        }
        let result = PlanResult {
            stops: plan.stops.clone(),
            deployment_changes: plan
                .deployment_changes
                .iter()
                .map(|c| {
                    (
                        c.deployment_id.clone(),
                        c.rollout_state.clone(),
                        c.reason.clone(),
                    )
                })
                .collect(),
            finished_deployments: plan.finished_deployments.clone(),
            rollback_to: plan.rollback_to.clone(),
            events: plan.events.clone(),
            inactive: plan.inactive,
        };
        if result != PlanResult::default() {
            commands.push(Command::ServicePlan {
                cluster: cluster.clone(),
                service_name: service.service_name.clone(),
                plan: result,
                now_ms,
            });
        }
        let service_seed = seed
            ^ key
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        for start in &plan.starts {
            if let Some(command) = launch_command(
                state,
                service,
                &cluster,
                start,
                &views,
                now_ms,
                service_seed,
            ) {
                commands.push(command);
            }
        }
    }
    commands
}

fn launch_command(
    state: &State,
    service: &crate::model::Service,
    cluster: &str,
    start: &service::Start,
    views: &[placement::InstanceView],
    now_ms: u64,
    seed: u64,
) -> Option<Command> {
    let definition = state.resolve_task_definition(&start.task_definition).ok()?;
    let mut constraints = service.placement_constraints.clone();
    constraints.extend(scheduler::definition_constraints(definition));
    let strategies = if service.placement_strategy.is_empty() {
        placement::default_service_strategies()
    } else {
        service.placement_strategy.clone()
    };
    let candidates: Vec<placement::InstanceView> = match &start.instance_id {
        Some(id) => views.iter().filter(|v| &v.id == id).cloned().collect(),
        None => views.to_vec(),
    };
    let task_demand = scheduler::task_demand(definition, &service.group());
    let outcome = placement::place(
        &task_demand,
        start.count,
        &candidates,
        &strategies,
        &constraints,
        seed,
    );
    let event = match outcome.failures.first() {
        Some(failure) => format!(
            "(service {}) was unable to place a task because no container instance met all of its requirements. Reason: {}. {}",
            service.service_name, failure.reason, failure.detail
        ),
        None => String::new(),
    };
    let planned: Vec<PlannedTask> = outcome
        .placements
        .iter()
        .enumerate()
        .map(|(i, instance_id)| PlannedTask {
            task_id: format!(
                "{:016x}{:016x}",
                seed.wrapping_add(now_ms),
                (now_ms << 8) ^ i as u64 ^ rand_like(seed, i)
            ),
            instance_id: instance_id.clone(),
        })
        .collect();
    if planned.is_empty() && event.is_empty() {
        return None;
    }
    Some(Command::ServiceLaunch {
        service_name: service.service_name.clone(),
        launch: TaskLaunch {
            cluster: cluster.to_string(),
            task_definition_arn: start.task_definition.clone(),
            overrides: None,
            started_by: Some(start.deployment_id.clone()),
            group: service.group(),
        },
        planned,
        event,
        now_ms,
    })
}

/// A cheap deterministic mix of a seed and an index (task ids must differ).
fn rand_like(seed: u64, index: usize) -> u64 {
    let mut x = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Placements for PROVISIONING tasks (run-task copies that fit nowhere when
/// they were started) that fit somewhere now. Pure, like `service_commands`.
pub fn provisioning_commands(state: &State, seed: u64) -> Vec<Command> {
    let mut waiting: std::collections::BTreeMap<String, Vec<&crate::model::Task>> =
        Default::default();
    for task in state.tasks.values() {
        if task.last_status == crate::model::TaskStatus::Provisioning
            && task.desired_status == crate::model::TaskStatus::Running
        {
            waiting.entry(task.cluster_name()).or_default().push(task);
        }
    }
    let mut commands = Vec::new();
    for (cluster, tasks) in waiting {
        let mut views = scheduler::cluster_views(state, &cluster);
        let mut planned = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            let Ok(definition) = state.task_definition_of(task) else {
                continue;
            };
            let demand = scheduler::task_demand(&definition, &task.group);
            let constraints = scheduler::definition_constraints(&definition);
            let outcome = placement::place(
                &demand,
                1,
                &views,
                &placement::default_run_task_strategies(),
                &constraints,
                seed ^ i as u64,
            );
            if let Some(instance_id) = outcome.placements.first() {
                if let Some(view) = views.iter_mut().find(|v| &v.id == instance_id) {
                    scheduler::take_room(view, &demand);
                }
                planned.push(PlannedTask {
                    task_id: task.id().to_string(),
                    instance_id: instance_id.clone(),
                });
            }
        }
        if !planned.is_empty() {
            commands.push(Command::PlaceTasks { cluster, planned });
        }
    }
    commands
}

/// Runs the leader loops for the life of the server.
pub async fn run(raft: RaftHandle, liveness: Liveness, options: ControllerOptions) {
    let mut status = raft.watch_status();
    loop {
        if status.wait_for(|s| s.role == Role::Leader).await.is_err() {
            return;
        }
        let leader_since = Instant::now();
        tracing::info!(node = raft.status().id, "leading: control loops started");
        let mut ticker = tokio::time::interval(options.interval);
        let mut revisions = raft.store().subscribe();
        let mut last_prune = Instant::now();
        while raft.status().role == Role::Leader {
            // Level-triggered: any change wakes the loop, the ticker repairs anything missed.
            tokio::select! {
                _ = ticker.tick() => {}
                changed = status.changed() => if changed.is_err() { return },
                changed = revisions.changed() => if changed.is_err() { return },
            }
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
            revisions.borrow_and_update();
            if raft.status().role != Role::Leader {
                break;
            }
            let now = Instant::now();
            let mut commands = raft.store().read(|state| {
                connectivity_changes(
                    state,
                    |cluster, id| liveness.last_seen(cluster, id),
                    leader_since,
                    now,
                    options.heartbeat_grace,
                )
            });
            let seed: u64 = rand::random();
            commands.extend(
                raft.store()
                    .read(|state| service_commands(state, now_ms(), seed)),
            );
            if now.duration_since(last_prune) > Duration::from_secs(60) {
                last_prune = now;
                let cutoff = now_ms().saturating_sub(options.keep_stopped_tasks.as_millis() as u64);
                let any = raft.store().read(|state| {
                    state.tasks.values().any(|t| {
                        t.last_status == crate::model::TaskStatus::Stopped
                            && t.stopped_at.is_some_and(|at| at * 1000.0 < cutoff as f64)
                    })
                });
                if any {
                    commands.push(Command::PruneStoppedTasks {
                        stopped_before_ms: cutoff,
                    });
                }
            }
            for command in commands {
                let proposal = Proposal {
                    request_id: crate::vocab::ids::request_id(),
                    command,
                };
                if let Err(error) = raft.propose(proposal).await {
                    tracing::debug!(%error, "a control-loop proposal failed; the next tick retries");
                    break;
                }
            }
        }
        tracing::info!(
            node = raft.status().id,
            "no longer leading: control loops stopped"
        );
    }
}

/// When each instance last sent a heartbeat, as seen by this server. The
/// controller owns liveness: the `AgentApi` handlers record heartbeats here
/// and the liveness loop reads them.
#[derive(Clone, Default)]
pub struct Liveness {
    seen: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl Liveness {
    /// Records a heartbeat.
    pub fn beat(&self, cluster: &str, instance_id: &str) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (cluster.to_string(), instance_id.to_string()),
            Instant::now(),
        );
    }

    /// When the instance was last heard from, if ever by this server.
    pub fn last_seen(&self, cluster: &str, instance_id: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(cluster.to_string(), instance_id.to_string()))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceRegistration, TaskStateChange, TaskStatus};
    use crate::store::ecs::{TaskLaunch, UnplacedTask};
    use crate::store::state::apply;

    fn propose(state: &mut State, command: Command) -> serde_json::Value {
        let request_id = crate::vocab::ids::request_id();
        apply(
            state,
            &Proposal {
                request_id,
                command,
            },
        )
        .expect("command applies")
    }

    #[test]
    fn a_task_that_fits_nowhere_waits_in_provisioning_and_is_placed_when_room_appears() {
        let mut state = State::default();
        propose(
            &mut state,
            Command::InitControlPlane {
                control_plane_id: "cp".into(),
                first_member_id: 1,
                first_member_address: "a".into(),
                now_ms: 1,
            },
        );
        let registration = InstanceRegistration {
            hostname: "pi".into(),
            cpu: 1024,
            memory_mib: 512,
            reserved_ports: vec![],
            attributes: vec![],
            agent_version: "t".into(),
            docker_version: "t".into(),
        };
        propose(
            &mut state,
            Command::RegisterContainerInstance {
                cluster: "default".into(),
                instance_id: "i-1".into(),
                registration,
                now_ms: 1,
            },
        );
        let (definition, _) = crate::taskdef::parse_register_input(
            r#"{"family": "big", "containerDefinitions": [{"name": "c", "image": "x", "memory": 400}]}"#,
        )
        .unwrap();
        propose(
            &mut state,
            Command::RegisterTaskDefinition {
                task_definition: definition,
                now_ms: 1,
            },
        );
        let launch = TaskLaunch {
            cluster: "default".into(),
            task_definition_arn: "big:1".into(),
            overrides: None,
            started_by: None,
            group: "family:big".into(),
        };
        let answer = propose(
            &mut state,
            Command::RunTask {
                launch,
                planned: vec![PlannedTask {
                    task_id: "first".into(),
                    instance_id: "i-1".into(),
                }],
                unplaced: vec![UnplacedTask {
                    task_id: "second".into(),
                    reason: "RESOURCE:MEMORY (1 instance)".into(),
                }],
                now_ms: 2,
            },
        );
        assert_eq!(answer["tasks"].as_array().unwrap().len(), 2);
        assert_eq!(
            answer["failures"][0]["reason"],
            "RESOURCE:MEMORY (1 instance)"
        );
        let second = state.task("default", "second").unwrap();
        assert_eq!(second.last_status, TaskStatus::Provisioning);
        assert_eq!(
            second.placement_reason.as_deref(),
            Some("RESOURCE:MEMORY (1 instance)")
        );
        assert!(
            provisioning_commands(&state, 7).is_empty(),
            "no room while the first task holds 400 of 512 MiB"
        );

        // The first task stops: its memory is free and the waiting task is placed.
        let change = TaskStateChange {
            task_arn: state.task("default", "first").unwrap().task_arn.clone(),
            status: TaskStatus::Stopped,
            reason: None,
            stop_code: None,
            containers: vec![],
            health_status: "UNKNOWN".into(),
            at_ms: 3,
        };
        propose(
            &mut state,
            Command::SubmitTaskStateChange {
                cluster: "default".into(),
                instance_id: "i-1".into(),
                change,
            },
        );
        let commands = provisioning_commands(&state, 7);
        assert_eq!(commands.len(), 1);
        for command in commands {
            propose(&mut state, command);
        }
        let second = state.task("default", "second").unwrap();
        assert_eq!(second.last_status, TaskStatus::Pending);
        assert_eq!(second.container_instance_id(), Some("i-1"));
        assert!(second.placement_reason.is_none());
        assert_eq!(state.usage("default", "i-1").memory_mib, 400);
    }
}
