//! The leader's control loops. They run only while this server leads: they
//! start when leadership is won and stop when it is lost. Each tick reads a
//! fresh view of the state, asks pure decision functions what should change
//! and proposes those changes through Raft (level-triggered: a missed tick
//! is repaired by the next one).
//!
//! It owns liveness ([`Liveness`]): the agent API records heartbeats in it
//! and the liveness loop reads them, and the target health checks
//! ([`health`]), which probe load balancer targets and propose only their
//! transitions.

pub mod health;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::raft::node::{RaftHandle, Role};
use crate::scheduler::{self, placement, provisioning, service, targets};
use crate::store::ecs::{PlannedTask, TaskLaunch};
use crate::store::elbv2::Elbv2Command;
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
                cluster: instance.cluster.clone().into(),
                instance_id: instance.id().to_string().into(),
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
        let targets = targets::task_target_health(state, service);
        let plan = service::reconcile(service, &tasks, &views, &targets, now_ms);
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
            drained: vec![],
            failed_health_checks: plan.failed_health_checks.clone(),
        };
        if result != PlanResult::default() {
            commands.push(Command::ServicePlan {
                cluster: cluster.clone().into(),
                service_name: service.service_name.clone().into(),
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
    constraints.extend(scheduler::definition_constraints(&definition));
    let strategies = if service.placement_strategy.is_empty() {
        placement::default_service_strategies()
    } else {
        service.placement_strategy.clone()
    };
    let candidates: Vec<placement::InstanceView> = match &start.instance_id {
        Some(id) => views.iter().filter(|v| &v.id == id).cloned().collect(),
        None => views.to_vec(),
    };
    let task_demand = scheduler::task_demand(state, &definition, &service.group());
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
    // Nothing placed and an event the service already shows (the same
    // failure, under a minute old): proposing it would change nothing but
    // the revision, which wakes this loop again at once.
    if planned.is_empty()
        && (event.is_empty()
            || crate::store::services::repeats_newest_event(service, &event, now_ms))
    {
        return None;
    }
    Some(Command::ServiceLaunch {
        service_name: service.service_name.clone().into(),
        launch: TaskLaunch {
            cluster: cluster.to_string(),
            task_definition_arn: start.task_definition.clone(),
            overrides: None,
            started_by: Some(start.deployment_id.clone()),
            group: service.group(),
            placement_strategy: vec![],
            placement_constraints: vec![],
        },
        planned,
        event,
        now_ms,
    })
}

/// The commands that keep services' targets in step with their tasks
/// (`scheduler::targets::decide`, pure): registrations of RUNNING tasks,
/// deregistrations of targets whose task stopped running, the removal of
/// drained targets and the stop of DEACTIVATING tasks whose targets are
/// gone. Empty on an idle cluster.
pub fn target_commands(state: &State, now_ms: u64) -> Vec<Command> {
    let plan = targets::decide(state, now_ms);
    let mut commands = Vec::new();
    for (target_group_arn, targets) in plan.deregistrations {
        commands.push(Command::Elbv2(Elbv2Command::DeregisterTargets {
            target_group_arn,
            targets,
            now_ms,
        }));
    }
    for (target_group_arn, targets) in plan.registrations {
        commands.push(Command::Elbv2(Elbv2Command::RegisterTargets {
            target_group_arn,
            targets,
            now_ms,
        }));
    }
    if plan.remove_drained {
        commands.push(Command::Elbv2(Elbv2Command::RemoveDrainedTargets {
            now_ms,
        }));
    }
    let mut drained: std::collections::BTreeMap<(String, String), Vec<String>> =
        std::collections::BTreeMap::new();
    for (cluster, service_name, task_arn) in plan.drained_tasks {
        drained
            .entry((cluster, service_name))
            .or_default()
            .push(task_arn);
    }
    for ((cluster, service_name), tasks) in drained {
        commands.push(Command::ServicePlan {
            cluster: cluster.into(),
            service_name: service_name.into(),
            plan: PlanResult {
                drained: tasks,
                ..PlanResult::default()
            },
            now_ms,
        });
    }
    commands
}

/// A cheap deterministic mix of a seed and an index (task ids must differ).
fn rand_like(seed: u64, index: usize) -> u64 {
    let mut x = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Placements for the tasks waiting in PROVISIONING (run-task copies that
/// fit nowhere when they were started) that fit somewhere now, oldest
/// first, each with its own run-task call's strategies and constraints
/// (`scheduler::provisioning`). Pure, like `service_commands`; the loop runs
/// it on every change, so a task stopping, an instance registering or
/// turning ACTIVE places the waiting tasks at once.
pub fn provisioning_commands(state: &State, seed: u64) -> Vec<Command> {
    let mut commands = Vec::new();
    for cluster in provisioning::clusters_with_waiting_tasks(state) {
        if !state.clusters.contains(cluster) {
            continue;
        }
        let planned: Vec<PlannedTask> = provisioning::decide(state, cluster, seed)
            .into_iter()
            .filter_map(|decision| {
                let instance_id = decision.outcome.placements.into_iter().next()?;
                Some(PlannedTask {
                    task_id: decision.task_id,
                    instance_id,
                })
            })
            .collect();
        if !planned.is_empty() {
            commands.push(Command::PlaceTasks {
                cluster: cluster.to_string().into(),
                planned,
            });
        }
    }
    commands
}

/// Forgets the tasks that stopped more than `keep` ago (ECS keeps stopped
/// tasks describable for an hour), or `None` when there are none. Pure.
pub fn prune_command(state: &State, now_ms: u64, keep: Duration) -> Option<Command> {
    let cutoff = now_ms.saturating_sub(keep.as_millis() as u64);
    let any = state.tasks.values().any(|t| {
        t.last_status == crate::model::TaskStatus::Stopped
            && t.stopped_at.is_some_and(|at| at * 1000.0 < cutoff as f64)
    });
    any.then_some(Command::PruneStoppedTasks {
        stopped_before_ms: cutoff,
    })
}

/// How long a placement of waiting tasks that apply refused as a whole is
/// not proposed again unchanged (the scheduler's view and apply's check
/// disagreeing would otherwise make a write per loop turn).
const REFUSED_PLACEMENT_PAUSE: Duration = Duration::from_secs(5);

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
        let mut refused_placement: Option<(Command, Instant)> = None;
        // The target health checks run beside these loops while leading.
        let health_checks = AbortOnDrop(tokio::spawn(health::run(raft.clone())));
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
            // Waiting tasks were asked for before anything this pass starts:
            // they take the room first.
            let placements = raft
                .store()
                .read(|state| provisioning_commands(state, seed));
            for command in placements {
                if refused_placement.as_ref().is_some_and(|(refused, at)| {
                    *refused == command && now.duration_since(*at) < REFUSED_PLACEMENT_PAUSE
                }) {
                    continue;
                }
                commands.push(command);
            }
            commands.extend(
                raft.store()
                    .read(|state| service_commands(state, now_ms(), seed)),
            );
            commands.extend(raft.store().read(|state| target_commands(state, now_ms())));
            if now.duration_since(last_prune) > Duration::from_secs(60) {
                last_prune = now;
                commands.extend(
                    raft.store()
                        .read(|state| prune_command(state, now_ms(), options.keep_stopped_tasks)),
                );
            }
            for command in commands {
                let placing =
                    matches!(command, Command::PlaceTasks { .. }).then(|| command.clone());
                let proposal = Proposal {
                    request_id: crate::vocab::ids::request_id(),
                    command,
                };
                match raft.propose(proposal).await {
                    Err(error) => {
                        tracing::debug!(%error, "a control-loop proposal failed; the next tick retries");
                        break;
                    }
                    Ok(answer) => {
                        // A placement that apply refused entirely is not
                        // proposed again unchanged for a while: each proposal
                        // moves the revision, which wakes this loop.
                        if let Some(command) = placing {
                            let none_placed =
                                answer["placed"].as_array().is_some_and(Vec::is_empty);
                            if none_placed {
                                tracing::warn!(
                                    ?command,
                                    "apply refused every placement of waiting tasks; pausing them"
                                );
                                refused_placement = Some((command, Instant::now()));
                            }
                        }
                    }
                }
            }
        }
        drop(health_checks);
        tracing::info!(
            node = raft.status().id,
            "no longer leading: control loops stopped"
        );
    }
}

/// Aborts a spawned loop when dropped (a leader-only loop ends with the
/// leadership, however the controller's loop ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// (cluster, container instance id).
type InstanceKey = (String, String);

/// When an instance was last heard, and from which agent session.
type Heard = (Instant, String);

/// When each instance last sent a heartbeat, as seen by this server, and
/// from which agent session. The controller owns liveness: the `AgentApi`
/// handlers record heartbeats here and the liveness loop reads them.
#[derive(Clone, Default)]
pub struct Liveness {
    seen: Arc<Mutex<HashMap<InstanceKey, Heard>>>,
}

impl Liveness {
    /// Records a heartbeat (or registration) of the agent `session` (empty
    /// from agents that send none).
    pub fn beat(&self, cluster: &str, instance_id: &str, session: &str) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (cluster.to_string(), instance_id.to_string()),
            (Instant::now(), session.to_string()),
        );
    }

    /// When the instance was last heard from, if ever by this server.
    pub fn last_seen(&self, cluster: &str, instance_id: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(cluster.to_string(), instance_id.to_string()))
            .map(|(at, _)| *at)
    }

    /// How long ago `session` was last heard for the instance, when the
    /// newest heartbeat this server heard for it came from that session.
    pub fn session_heard(
        &self,
        cluster: &str,
        instance_id: &str,
        session: &str,
    ) -> Option<std::time::Duration> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(cluster.to_string(), instance_id.to_string()))
            .filter(|(_, heard)| heard == session)
            .map(|(at, _)| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceRegistration, TaskStateChange, TaskStatus};
    use crate::store::ecs::{TaskLaunch, UnplacedTask};
    use crate::store::state::apply;

    /// A run-task launch of `big:1` in the default cluster, with no placement options.
    fn big_launch() -> TaskLaunch {
        TaskLaunch {
            cluster: "default".into(),
            task_definition_arn: "big:1".into(),
            overrides: None,
            started_by: None,
            group: "family:big".into(),
            placement_strategy: vec![],
            placement_constraints: vec![],
        }
    }

    /// Applies `command` as a fresh request; panics with the refusal.
    pub(super) fn propose(state: &mut State, command: Command) -> serde_json::Value {
        let proposal = Proposal {
            request_id: crate::vocab::ids::request_id(),
            command,
        };
        apply(state, &proposal).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A state whose control plane is initialized (one member).
    pub(super) fn initialized() -> State {
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
        state
    }

    #[test]
    fn a_task_that_fits_nowhere_waits_in_provisioning_and_is_placed_when_room_appears() {
        let mut state = initialized();
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
                agent_session: String::new(),
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
        let launch = big_launch();
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

    /// A state with the control plane, `instances` (id, zone, memory MiB)
    /// and the task definitions `big` (400 MiB) and `small` (100 MiB).
    fn cluster_with(instances: &[(&str, &str, i64)]) -> State {
        let mut state = initialized();
        for (id, zone, memory_mib) in instances {
            let registration = InstanceRegistration {
                hostname: id.to_string(),
                cpu: 4096,
                memory_mib: *memory_mib,
                reserved_ports: vec![],
                attributes: vec![crate::model::Attribute {
                    name: "zone".into(),
                    value: Some(zone.to_string()),
                }],
                agent_version: "t".into(),
                docker_version: "t".into(),
            };
            propose(
                &mut state,
                Command::RegisterContainerInstance {
                    cluster: "default".into(),
                    instance_id: id.to_string().into(),
                    registration,
                    now_ms: 1,
                    agent_session: String::new(),
                },
            );
        }
        for (family, memory) in [("big", 400), ("small", 100)] {
            let (definition, _) = crate::taskdef::parse_register_input(&format!(
                r#"{{"family": "{family}", "containerDefinitions": [{{"name": "c", "image": "x", "memory": {memory}}}]}}"#
            ))
            .unwrap();
            propose(
                &mut state,
                Command::RegisterTaskDefinition {
                    task_definition: definition,
                    now_ms: 1,
                },
            );
        }
        state
    }

    /// One run-task call at `now_ms`: `placed` goes where it says, `waiting`
    /// is created PROVISIONING, both with the call's strategies and constraints.
    #[allow(clippy::too_many_arguments)]
    fn run_task(
        state: &mut State,
        family: &str,
        placed: &[(&str, &str)],
        waiting: &[&str],
        strategies: Vec<placement::PlacementStrategy>,
        constraints: Vec<placement::PlacementConstraint>,
        now_ms: u64,
    ) {
        let launch = TaskLaunch {
            cluster: "default".into(),
            task_definition_arn: format!("{family}:1"),
            overrides: None,
            started_by: None,
            group: format!("family:{family}"),
            placement_strategy: strategies,
            placement_constraints: constraints,
        };
        let answer = propose(
            state,
            Command::RunTask {
                launch,
                planned: placed
                    .iter()
                    .map(|(task_id, instance_id)| PlannedTask {
                        task_id: task_id.to_string(),
                        instance_id: instance_id.to_string(),
                    })
                    .collect(),
                unplaced: waiting
                    .iter()
                    .map(|task_id| UnplacedTask {
                        task_id: task_id.to_string(),
                        reason: "RESOURCE:MEMORY".into(),
                    })
                    .collect(),
                now_ms,
            },
        );
        assert_eq!(
            answer["tasks"].as_array().unwrap().len(),
            placed.len() + waiting.len(),
            "{answer}"
        );
    }

    fn stop(state: &mut State, task_id: &str, instance_id: &str) {
        let change = TaskStateChange {
            task_arn: state.task("default", task_id).unwrap().task_arn.clone(),
            status: TaskStatus::Stopped,
            reason: None,
            stop_code: None,
            containers: vec![],
            health_status: "UNKNOWN".into(),
            at_ms: 100,
        };
        propose(
            state,
            Command::SubmitTaskStateChange {
                cluster: "default".into(),
                instance_id: instance_id.into(),
                change,
            },
        );
    }

    fn planned(commands: &[Command]) -> Vec<(String, String)> {
        commands
            .iter()
            .flat_map(|command| match command {
                Command::PlaceTasks { planned, .. } => planned.clone(),
                other => panic!("not a placement: {other:?}"),
            })
            .map(|p| (p.task_id, p.instance_id))
            .collect()
    }

    #[test]
    fn waiting_tasks_are_placed_oldest_first() {
        let mut state = cluster_with(&[("i-a", "a", 512)]);
        run_task(
            &mut state,
            "big",
            &[("holder", "i-a")],
            &[],
            vec![],
            vec![],
            2,
        );
        // The older task's id sorts last: the order is by age, not by id.
        run_task(&mut state, "big", &[], &["zz-old"], vec![], vec![], 3);
        run_task(&mut state, "big", &[], &["aa-young"], vec![], vec![], 4);
        assert!(provisioning_commands(&state, 1).is_empty(), "no room yet");
        let waiting: Vec<&str> = provisioning::waiting_tasks(&state, "default")
            .iter()
            .map(|t| t.id())
            .collect();
        assert_eq!(waiting, ["zz-old", "aa-young"]);

        stop(&mut state, "holder", "i-a");
        for seed in 0..16 {
            let commands = provisioning_commands(&state, seed);
            assert_eq!(
                planned(&commands),
                [("zz-old".to_string(), "i-a".to_string())],
                "seed {seed}"
            );
        }
        for command in provisioning_commands(&state, 0) {
            propose(&mut state, command);
        }
        assert_eq!(
            state.task("default", "zz-old").unwrap().last_status,
            TaskStatus::Pending
        );
        assert_eq!(
            state.task("default", "aa-young").unwrap().last_status,
            TaskStatus::Provisioning
        );
        assert_eq!(state.usage("default", "i-a").memory_mib, 400);
    }

    #[test]
    fn each_waiting_task_keeps_its_own_strategy_and_constraints() {
        let mut state = cluster_with(&[("i-a", "a", 1024), ("i-b", "b", 1024)]);
        // i-a has less memory left, so binpack(memory) prefers it.
        run_task(
            &mut state,
            "small",
            &[("filler", "i-a")],
            &[],
            vec![],
            vec![],
            2,
        );
        let in_zone_b =
            placement::PlacementConstraint::from_parts("memberOf", Some("attribute:zone == b"))
                .unwrap();
        run_task(
            &mut state,
            "small",
            &[],
            &["zoned"],
            vec![],
            vec![in_zone_b],
            3,
        );
        run_task(
            &mut state,
            "small",
            &[],
            &["packed"],
            vec![placement::PlacementStrategy::Binpack(
                placement::Field::Memory,
            )],
            vec![],
            4,
        );
        let stored = state.task("default", "zoned").unwrap();
        assert_eq!(stored.placement_constraints.len(), 1, "{stored:?}");
        assert!(stored.placement_strategy.is_empty());
        for seed in 0..32 {
            let placed = planned(&provisioning_commands(&state, seed));
            assert_eq!(
                placed,
                [
                    ("zoned".to_string(), "i-b".to_string()),
                    ("packed".to_string(), "i-a".to_string()),
                ],
                "seed {seed}"
            );
        }
    }

    fn create_service(state: &mut State, family: &str, desired_count: u32) {
        let service = crate::model::Service {
            service_arn: crate::model::arn("service", "default/web"),
            service_name: "web".into(),
            cluster_arn: crate::model::arn("cluster", "default"),
            status: "ACTIVE".into(),
            desired_count,
            task_definition: family.into(),
            deployment_configuration: Default::default(),
            placement_strategy: vec![],
            placement_constraints: vec![],
            load_balancers: vec![],
            health_check_grace_period_seconds: 0,
            scheduling_strategy: "REPLICA".into(),
            deployments: vec![],
            events: vec![],
            created_at: 0.0,
            next_deployment: 0,
            last_completed_task_definition: None,
        };
        propose(
            state,
            Command::CreateService {
                service: Box::new(service),
                now_ms: 1,
            },
        );
    }

    fn newest_event(state: &State) -> String {
        state.service("default", "web").unwrap().events[0]
            .message
            .clone()
    }

    #[test]
    fn a_service_that_does_not_fit_proposes_its_placement_failure_once_a_minute() {
        // Room for 3 of the 5 tasks of 100 MiB.
        let mut state = cluster_with(&[("i-a", "a", 350)]);
        create_service(&mut state, "small", 5);
        let first = service_commands(&state, 1_000, 7);
        assert_eq!(first.len(), 1, "{first:?}");
        for command in first {
            propose(&mut state, command);
        }
        assert_eq!(state.service_tasks("default", "web").len(), 3);
        assert!(
            newest_event(&state).contains("was unable to place a task"),
            "{}",
            newest_event(&state)
        );
        // Every later pass of the same minute: nothing to propose (each
        // proposal would wake the loop again: a write per loop turn).
        for now_ms in [1_020, 1_500, 30_000, 60_999] {
            let again = service_commands(&state, now_ms, 7);
            assert!(again.is_empty(), "at {now_ms} ms: {again:?}");
        }
        let a_minute_later = service_commands(&state, 61_000, 7);
        assert_eq!(
            a_minute_later.len(),
            1,
            "the event is refreshed once a minute"
        );
    }

    #[test]
    fn events_about_hundreds_of_tasks_name_ten_and_count_the_rest() {
        let mut state = cluster_with(&[("i-a", "a", 100_000)]);
        create_service(&mut state, "small", 373);
        for command in service_commands(&state, 1_000, 7) {
            propose(&mut state, command);
        }
        let started = newest_event(&state);
        assert!(
            started.starts_with("(service web) has started 373 tasks: (task ")
                && started.ends_with(" and 363 more."),
            "{started}"
        );
        assert_eq!(started.matches("(task ").count(), 10, "{started}");

        propose(
            &mut state,
            Command::UpdateService {
                cluster: "default".into(),
                service_name: "web".into(),
                update: crate::store::services::ServiceUpdate {
                    desired_count: Some(0),
                    ..Default::default()
                },
                now_ms: 2_000,
            },
        );
        for command in service_commands(&state, 2_000, 7) {
            propose(&mut state, command);
        }
        let events: Vec<String> = state
            .service("default", "web")
            .unwrap()
            .events
            .iter()
            .map(|e| e.message.clone())
            .collect();
        let stopped = events
            .iter()
            .find(|e| e.contains("has stopped"))
            .unwrap_or_else(|| panic!("no stop event: {events:?}"));
        assert!(
            stopped.starts_with("(service web) has stopped 373 running tasks: (task ")
                && stopped.ends_with(" and 363 more."),
            "{stopped}"
        );
        assert_eq!(stopped.matches("(task ").count(), 10, "{stopped}");
    }

    #[test]
    fn stopped_tasks_stay_describable_for_an_hour_then_are_forgotten() {
        let mut state = cluster_with(&[("i-a", "a", 1024)]);
        run_task(
            &mut state,
            "small",
            &[("done", "i-a"), ("alive", "i-a")],
            &[],
            vec![],
            vec![],
            2,
        );
        stop(&mut state, "done", "i-a"); // stopped at 100 ms
        let keep = ControllerOptions::default().keep_stopped_tasks;
        assert_eq!(keep, Duration::from_secs(3600));
        assert_eq!(
            prune_command(&state, 100 + 3_600_000, keep),
            None,
            "kept a full hour"
        );
        let command = prune_command(&state, 100 + 3_600_001, keep).expect("pruned after an hour");
        propose(&mut state, command);
        assert!(
            state.task("default", "done").is_err(),
            "the stopped task is forgotten"
        );
        assert!(
            state.task("default", "alive").is_ok(),
            "a live task is never pruned"
        );
        assert_eq!(prune_command(&state, 10_000_000, keep), None);
    }

    #[test]
    fn a_stale_placement_is_refused_on_apply_and_never_double_books() {
        let mut state = cluster_with(&[("i-a", "a", 512)]);
        run_task(
            &mut state,
            "big",
            &[("first", "i-a")],
            &[],
            vec![],
            vec![],
            2,
        );
        // Decided on a view from before `first`: apply sees the instance full.
        let launch = big_launch();
        let answer = propose(
            &mut state,
            Command::RunTask {
                launch,
                planned: vec![PlannedTask {
                    task_id: "stale".into(),
                    instance_id: "i-a".into(),
                }],
                unplaced: vec![],
                now_ms: 3,
            },
        );
        assert_eq!(answer["tasks"], serde_json::json!([]), "{answer}");
        assert_eq!(
            answer["failures"][0]["reason"], "RESOURCE:MEMORY",
            "{answer}"
        );
        assert!(state.task("default", "stale").is_err());
        // A stale placement of a waiting task is refused the same way.
        run_task(&mut state, "big", &[], &["waiting"], vec![], vec![], 4);
        let answer = propose(
            &mut state,
            Command::PlaceTasks {
                cluster: "default".into(),
                planned: vec![PlannedTask {
                    task_id: "waiting".into(),
                    instance_id: "i-a".into(),
                }],
            },
        );
        assert_eq!(answer["placed"], serde_json::json!([]), "{answer}");
        assert_eq!(
            state.task("default", "waiting").unwrap().last_status,
            TaskStatus::Provisioning
        );
        assert_eq!(state.usage("default", "i-a").memory_mib, 400, "booked once");
    }

    #[test]
    fn run_task_overrides_change_what_the_task_holds() {
        let mut state = cluster_with(&[("i-a", "a", 1024)]);
        let launch = TaskLaunch {
            cluster: "default".into(),
            task_definition_arn: "small:1".into(),
            overrides: Some(
                serde_json::json!({"containerOverrides": [{"name": "c", "memory": 300}]}),
            ),
            started_by: None,
            group: "family:small".into(),
            placement_strategy: vec![],
            placement_constraints: vec![],
        };
        propose(
            &mut state,
            Command::RunTask {
                launch,
                planned: vec![PlannedTask {
                    task_id: "bigger".into(),
                    instance_id: "i-a".into(),
                }],
                unplaced: vec![],
                now_ms: 2,
            },
        );
        let task = state.task("default", "bigger").unwrap();
        assert_eq!(task.memory, "300");
        assert_eq!(state.usage("default", "i-a").memory_mib, 300);
    }

    #[test]
    fn task_definition_revisions_deregister_and_delete_as_ecs_does() {
        let mut state = cluster_with(&[]);
        let (definition, _) = crate::taskdef::parse_register_input(
            r#"{"family": "small", "containerDefinitions": [{"name": "c", "image": "x", "memory": 50}]}"#,
        )
        .unwrap();
        let answer = propose(
            &mut state,
            Command::RegisterTaskDefinition {
                task_definition: definition,
                now_ms: 2,
            },
        );
        assert_eq!(answer["taskDefinition"]["revision"], 2);
        assert_eq!(
            state.resolve_task_definition("small").unwrap().revision,
            Some(2),
            "a bare family is its latest ACTIVE revision"
        );
        let delete = |revision| Command::DeleteTaskDefinitions {
            task_definitions: vec![("small".into(), revision), ("ghost".into(), 1)],
        };
        let answer = propose(&mut state, delete(2));
        assert_eq!(answer["taskDefinitions"], serde_json::json!([]));
        assert!(
            answer["failures"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("still in ACTIVE status"),
            "{answer}"
        );
        assert_eq!(answer["failures"][1]["reason"], "TASK_DEFINITION_NOT_FOUND");

        propose(
            &mut state,
            Command::DeregisterTaskDefinition {
                family: "small".into(),
                revision: 2,
                now_ms: 3,
            },
        );
        assert_eq!(
            state.resolve_task_definition("small").unwrap().revision,
            Some(1),
            "the deregistered revision is no longer the family's"
        );
        assert_eq!(
            state.resolve_task_definition("small:2").unwrap().status,
            Some(crate::taskdef::TaskDefinitionStatus::Inactive),
            "an INACTIVE revision is still described by its number"
        );
        let answer = propose(&mut state, delete(2));
        assert_eq!(
            answer["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS",
            "{answer}"
        );
    }

    #[test]
    fn a_task_status_only_moves_forward() {
        let mut state = cluster_with(&[("i-a", "a", 1024)]);
        run_task(&mut state, "small", &[("t", "i-a")], &[], vec![], vec![], 2);
        let report = |status| TaskStateChange {
            task_arn: crate::model::arn("task", "default/t"),
            status,
            reason: None,
            stop_code: None,
            containers: vec![],
            health_status: "UNKNOWN".into(),
            at_ms: 10,
        };
        let submit = |state: &mut State, status| {
            propose(
                state,
                Command::SubmitTaskStateChange {
                    cluster: "default".into(),
                    instance_id: "i-a".into(),
                    change: report(status),
                },
            )
        };
        submit(&mut state, TaskStatus::Running);
        let answer = submit(&mut state, TaskStatus::Pending);
        assert_eq!(answer["ignored"], "states only move forward", "{answer}");
        assert_eq!(
            state.task("default", "t").unwrap().last_status,
            TaskStatus::Running
        );
        let error = propose_error(
            &mut state,
            Command::SubmitTaskStateChange {
                cluster: "default".into(),
                instance_id: "i-other".into(),
                change: report(TaskStatus::Stopped),
            },
        );
        assert!(
            error.contains("not assigned to container instance i-other"),
            "{error}"
        );
        assert_eq!(
            state.task("default", "t").unwrap().last_status,
            TaskStatus::Running
        );
    }

    fn propose_error(state: &mut State, command: Command) -> String {
        apply(
            state,
            &Proposal {
                request_id: crate::vocab::ids::request_id(),
                command,
            },
        )
        .expect_err("the command is refused")
        .to_string()
    }

    /// A retry under one request id answers what the first attempt did,
    /// byte for byte, although only a receipt of it was kept and the rows
    /// it created changed since; once the rows are gone it says so.
    #[test]
    fn retried_registrations_and_run_tasks_answer_as_first_given_from_their_receipts() {
        let mut state = cluster_with(&[("i-a", "a", 512)]);
        let with_id = |state: &mut State, id: &str, command: Command| {
            apply(
                state,
                &Proposal {
                    request_id: id.into(),
                    command,
                },
            )
        };
        let (definition, _) = crate::taskdef::parse_register_input(
            r#"{"family": "web", "containerDefinitions": [{"name": "c", "image": "x", "memory": 400,
                "environment": [{"name": "A", "value": "1"}], "portMappings": [{"containerPort": 80}]}]}"#,
        )
        .unwrap();
        let register = Command::RegisterTaskDefinition {
            task_definition: definition,
            now_ms: 5,
        };
        let registered = with_id(&mut state, "register", register.clone()).unwrap();
        assert!(state.requests.get("register").unwrap().receipt.is_some());
        propose(
            &mut state,
            Command::DeregisterTaskDefinition {
                family: "web".into(),
                revision: 1,
                now_ms: 6,
            },
        );
        let again = with_id(&mut state, "register", register).unwrap();
        assert_eq!(again, registered);
        assert_eq!(again["taskDefinition"]["status"], "ACTIVE");

        let run = Command::RunTask {
            launch: TaskLaunch {
                cluster: "default".into(),
                task_definition_arn: "big:1".into(),
                overrides: None,
                started_by: Some("me".into()),
                group: "family:big".into(),
                placement_strategy: vec![],
                placement_constraints: vec![],
            },
            planned: vec![PlannedTask {
                task_id: "t1".into(),
                instance_id: "i-a".into(),
            }],
            unplaced: vec![UnplacedTask {
                task_id: "t0".into(),
                reason: "RESOURCE:MEMORY".into(),
            }],
            now_ms: 7,
        };
        let ran = with_id(&mut state, "run", run.clone()).unwrap();
        assert!(state.requests.get("run").unwrap().receipt.is_some());
        assert_eq!(ran["tasks"].as_array().unwrap().len(), 2, "{ran}");
        // t1 runs (with a runtime id, a binding, health) and stops; t0 is
        // placed once there is room, then stopped by a user.
        let report = |status, exit_code| TaskStateChange {
            task_arn: state.task("default", "t1").unwrap().task_arn.clone(),
            status,
            reason: Some("done".into()),
            stop_code: None,
            containers: vec![crate::model::ContainerStateChange {
                container_name: "c".into(),
                runtime_id: Some("abc".into()),
                status: "RUNNING".into(),
                exit_code,
                reason: None,
                network_bindings: vec![crate::model::NetworkBinding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: 80,
                    host_port: 32768,
                    protocol: "tcp".into(),
                }],
                health_status: "HEALTHY".into(),
            }],
            health_status: "HEALTHY".into(),
            at_ms: 8,
        };
        for change in [
            report(TaskStatus::Running, None),
            report(TaskStatus::Stopped, Some(0)),
        ] {
            propose(
                &mut state,
                Command::SubmitTaskStateChange {
                    cluster: "default".into(),
                    instance_id: "i-a".into(),
                    change,
                },
            );
        }
        for command in provisioning_commands(&state, 1) {
            propose(&mut state, command);
        }
        assert_eq!(
            state.task("default", "t0").unwrap().last_status,
            TaskStatus::Pending
        );
        propose(
            &mut state,
            Command::StopTask {
                cluster: "default".into(),
                task_id: "t0".into(),
                reason: "user".into(),
                stop_code: "UserInitiated".into(),
                now_ms: 9,
            },
        );
        let again = with_id(&mut state, "run", run.clone()).unwrap();
        assert_eq!(again, ran);
        assert_eq!(again["tasks"][0]["lastStatus"], "PENDING", "{again}");

        // Pruned: the request is still not applied twice, and says why.
        stop(&mut state, "t0", "i-a");
        propose(
            &mut state,
            Command::PruneStoppedTasks {
                stopped_before_ms: u64::MAX,
            },
        );
        let error = with_id(&mut state, "run", run).unwrap_err().to_string();
        assert!(error.contains("can no longer be given"), "{error}");
        assert!(state.task("default", "t1").is_err());
    }
}

#[cfg(test)]
mod target_tests {
    use super::*;
    use crate::model::elbv2::{TargetHealth, HOST_ADDRESS_ATTRIBUTE};
    use crate::model::{
        ContainerStateChange, InstanceRegistration, NetworkBinding, TaskStateChange, TaskStatus,
    };
    use crate::store::elbv2::tests::{lb, listener, tg};
    use crate::store::elbv2::TargetHealthChange;
    use crate::store::services::ServiceUpdate;

    use super::tests::{initialized, propose};

    fn propose_all(state: &mut State, commands: Vec<Command>) {
        for command in commands {
            propose(state, command);
        }
    }

    fn step(state: &mut State, decide: impl Fn(&State) -> Vec<Command>) {
        let commands = decide(state);
        propose_all(state, commands);
    }

    fn elbv2(state: &mut State, command: Elbv2Command) {
        propose(state, Command::Elbv2(command));
    }

    /// Creates target group `name` of type instance; returns its ARN.
    fn create_instance_group(state: &mut State, name: &str, id: &str) -> String {
        let mut group = tg(name, id);
        group.target_type = "instance".into();
        let arn = group.target_group_arn.clone();
        elbv2(
            state,
            Elbv2Command::CreateTargetGroup {
                target_group: Box::new(group),
            },
        );
        arn
    }

    /// One instance with a host address, task definition `web:1` (port 80,
    /// dynamic host port), target group `web` (type instance) behind a
    /// listener, and service `web` of `desired` tasks behind it.
    fn lab(desired: u32) -> (State, String) {
        let mut state = initialized();
        let registration = InstanceRegistration {
            hostname: "pi".into(),
            cpu: 4096,
            memory_mib: 4096,
            reserved_ports: vec![],
            attributes: vec![crate::model::Attribute {
                name: HOST_ADDRESS_ATTRIBUTE.into(),
                value: Some("10.0.0.7".into()),
            }],
            agent_version: "t".into(),
            docker_version: "t".into(),
        };
        propose(
            &mut state,
            Command::RegisterContainerInstance {
                cluster: "default".into(),
                instance_id: "i-a".into(),
                registration,
                now_ms: 1,
                agent_session: String::new(),
            },
        );
        let (definition, _) = crate::taskdef::parse_register_input(
            r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "x", "memory": 64,
                "portMappings": [{"containerPort": 80, "hostPort": 0}]}]}"#,
        )
        .unwrap();
        propose(
            &mut state,
            Command::RegisterTaskDefinition {
                task_definition: definition,
                now_ms: 1,
            },
        );
        let group_arn = create_instance_group(&mut state, "web", "00000000000000aa");
        let balancer = lb("web", "00000000000000bb");
        let lb_arn = balancer.load_balancer_arn.clone();
        elbv2(
            &mut state,
            Elbv2Command::CreateLoadBalancer {
                load_balancer: balancer,
            },
        );
        elbv2(
            &mut state,
            Elbv2Command::CreateListener {
                listener: listener(&lb_arn, "00000000000000cc", 8080, &group_arn),
            },
        );
        let service = crate::model::Service {
            service_arn: crate::model::arn("service", "default/web"),
            service_name: "web".into(),
            cluster_arn: crate::model::arn("cluster", "default"),
            status: "ACTIVE".into(),
            desired_count: desired,
            task_definition: "web:1".into(),
            deployment_configuration: Default::default(),
            placement_strategy: vec![],
            placement_constraints: vec![],
            load_balancers: vec![crate::model::LoadBalancer {
                target_group_arn: group_arn.clone(),
                container_name: "web".into(),
                container_port: 80,
            }],
            health_check_grace_period_seconds: 0,
            scheduling_strategy: "REPLICA".into(),
            deployments: vec![],
            events: vec![],
            created_at: 0.0,
            next_deployment: 0,
            last_completed_task_definition: None,
        };
        propose(
            &mut state,
            Command::CreateService {
                service: Box::new(service),
                now_ms: 1,
            },
        );
        (state, group_arn)
    }

    /// [`lab`] with the service's tasks launched at 1 s, RUNNING at 2 s and
    /// registered with the target group (their health still initial).
    fn lab_registered(desired: u32) -> (State, String) {
        let (mut state, group_arn) = lab(desired);
        step(&mut state, |s| service_commands(s, 1_000, 7));
        run_pending(&mut state, 2_000);
        step(&mut state, |s| target_commands(s, 2_000));
        (state, group_arn)
    }

    /// The agent reports every PENDING task of the service RUNNING, each on
    /// its own host port from 32768.
    fn run_pending(state: &mut State, now_ms: u64) {
        let pending: Vec<String> = state
            .service_tasks("default", "web")
            .iter()
            .filter(|t| t.last_status == TaskStatus::Pending)
            .map(|t| t.task_arn.clone())
            .collect();
        let used = state.elbv2.targets.len() as u16 + 10 * state.tasks.len() as u16;
        for (i, task_arn) in pending.into_iter().enumerate() {
            let change = TaskStateChange {
                task_arn,
                status: TaskStatus::Running,
                reason: None,
                stop_code: None,
                containers: vec![ContainerStateChange {
                    container_name: "web".into(),
                    runtime_id: Some("c".into()),
                    status: "RUNNING".into(),
                    exit_code: None,
                    reason: None,
                    network_bindings: vec![NetworkBinding {
                        bind_ip: "0.0.0.0".into(),
                        container_port: 80,
                        host_port: 32768 + used + i as u16,
                        protocol: "tcp".into(),
                    }],
                    health_status: "UNKNOWN".into(),
                }],
                health_status: "UNKNOWN".into(),
                at_ms: now_ms,
            };
            propose(
                state,
                Command::SubmitTaskStateChange {
                    cluster: "default".into(),
                    instance_id: "i-a".into(),
                    change,
                },
            );
        }
    }

    fn statuses(state: &State) -> Vec<(TaskStatus, TaskStatus)> {
        let mut all: Vec<_> = state
            .service_tasks("default", "web")
            .iter()
            .map(|t| (t.last_status, t.desired_status))
            .collect();
        all.sort();
        all
    }

    fn set_all(state: &mut State, group_arn: &str, health: TargetHealth) {
        let changes = state
            .elbv2
            .targets
            .values()
            .filter(|t| t.draining_since_ms.is_none())
            .map(|t| TargetHealthChange {
                id: t.id.clone(),
                port: t.port,
                health: health.clone(),
            })
            .collect();
        elbv2(
            state,
            Elbv2Command::SetTargetHealth {
                target_group_arn: group_arn.into(),
                changes,
            },
        );
    }

    #[test]
    fn running_tasks_become_targets_and_a_deployment_waits_for_their_health() {
        let (mut state, group_arn) = lab(2);
        step(&mut state, |s| service_commands(s, 1_000, 7));
        assert!(
            target_commands(&state, 1_000).is_empty(),
            "nothing runs yet"
        );
        run_pending(&mut state, 2_000);
        let register = target_commands(&state, 2_000);
        assert_eq!(register.len(), 1, "{register:?}");
        propose_all(&mut state, register);
        let targets: Vec<_> = state.elbv2.targets.values().cloned().collect();
        assert_eq!(targets.len(), 2);
        for target in &targets {
            assert_eq!(target.id, "i-a");
            assert!(target.address.starts_with("10.0.0.7:"), "{target:?}");
            assert!(target.task_arn.is_some());
            assert_eq!(target.health.state, "initial");
        }
        assert!(
            target_commands(&state, 2_500).is_empty(),
            "registered targets are not proposed again"
        );
        // Long past MIN_RUNNING_MS, the deployment still waits for healthy targets.
        let waiting = service_commands(&state, 60_000, 7);
        assert!(waiting.is_empty(), "{waiting:?}");
        set_all(&mut state, &group_arn, TargetHealth::healthy());
        step(&mut state, |s| service_commands(s, 60_000, 7));
        let service = state.service("default", "web").unwrap();
        assert_eq!(service.deployments[0].rollout_state, "COMPLETED");
        assert!(service_commands(&state, 61_000, 7).is_empty());
        assert!(
            target_commands(&state, 61_000).is_empty(),
            "an idle service writes nothing"
        );
    }

    /// The targets of the group `group_arn`: (task ARN, health state, draining).
    fn group_targets(state: &State, group_arn: &str) -> Vec<(String, String, bool)> {
        let (key, _) = state.elbv2.target_group(group_arn).unwrap();
        state
            .elbv2
            .targets_of(&key)
            .map(|(_, t)| {
                (
                    t.task_arn.clone().unwrap_or_default(),
                    t.health.state.clone(),
                    t.draining_since_ms.is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn new_load_balancers_start_a_deployment_whose_tasks_register_in_the_new_group() {
        let (mut state, web_arn) = lab_registered(2);
        set_all(&mut state, &web_arn, TargetHealth::healthy());
        step(&mut state, |s| service_commands(s, 3_000, 7));
        let old_tasks: std::collections::BTreeSet<String> = state
            .service_tasks("default", "web")
            .iter()
            .map(|t| t.task_arn.clone())
            .collect();
        assert_eq!(old_tasks.len(), 2);

        let api_arn = create_instance_group(&mut state, "api", "00000000000000dd");
        let moved = vec![crate::model::LoadBalancer {
            target_group_arn: api_arn.clone(),
            container_name: "web".into(),
            container_port: 80,
        }];
        propose(
            &mut state,
            Command::UpdateService {
                cluster: "default".into(),
                service_name: "web".into(),
                update: ServiceUpdate {
                    load_balancers: Some(moved.clone()),
                    ..Default::default()
                },
                now_ms: 10_000,
            },
        );
        let service = state.service("default", "web").unwrap();
        assert_eq!(service.load_balancers, moved);
        assert_eq!(service.deployments.len(), 2, "a new deployment started");
        assert_eq!(service.deployments[0].status, "PRIMARY");
        assert_eq!(service.deployments[0].load_balancers.as_ref(), Some(&moved));

        // The new deployment's tasks start, run and register in the new group only.
        step(&mut state, |s| service_commands(s, 10_000, 7));
        run_pending(&mut state, 11_000);
        step(&mut state, |s| target_commands(s, 11_000));
        let in_api = group_targets(&state, &api_arn);
        assert_eq!(in_api.len(), 2, "{in_api:?}");
        assert!(
            in_api.iter().all(|(task, _, _)| !old_tasks.contains(task)),
            "{in_api:?}"
        );
        let in_web = group_targets(&state, &web_arn);
        assert_eq!(in_web.len(), 2, "{in_web:?}");
        assert!(in_web
            .iter()
            .all(|(task, state, draining)| old_tasks.contains(task)
                && state == "healthy"
                && !draining));

        // Once they are healthy there, the old tasks drain out of the old group.
        let (api_key, _) = state.elbv2.target_group(&api_arn).unwrap();
        let changes = state
            .elbv2
            .targets_of(&api_key)
            .map(|(_, t)| TargetHealthChange {
                id: t.id.clone(),
                port: t.port,
                health: TargetHealth::healthy(),
            })
            .collect();
        elbv2(
            &mut state,
            Elbv2Command::SetTargetHealth {
                target_group_arn: api_arn.clone(),
                changes,
            },
        );
        let steps = [12_000, 12_100, 12_200, 12_300];
        for now_ms in steps {
            step(&mut state, |s| service_commands(s, now_ms, 7));
            step(&mut state, |s| target_commands(s, now_ms));
        }
        let in_web = group_targets(&state, &web_arn);
        assert!(
            !in_web.is_empty() && in_web.iter().all(|(_, _, draining)| *draining),
            "{in_web:?}"
        );
        assert!(group_targets(&state, &api_arn)
            .iter()
            .all(|(task, state, draining)| !old_tasks.contains(task)
                && state == "healthy"
                && !draining));
    }

    #[test]
    fn a_scaled_in_task_drains_as_deactivating_then_stops() {
        let (mut state, group_arn) = lab_registered(2);
        set_all(&mut state, &group_arn, TargetHealth::healthy());
        step(&mut state, |s| service_commands(s, 3_000, 7));

        propose(
            &mut state,
            Command::UpdateService {
                cluster: "default".into(),
                service_name: "web".into(),
                update: ServiceUpdate {
                    desired_count: Some(1),
                    ..Default::default()
                },
                now_ms: 10_000,
            },
        );
        step(&mut state, |s| service_commands(s, 10_000, 7));
        assert_eq!(
            statuses(&state),
            [
                (TaskStatus::Running, TaskStatus::Running),
                (TaskStatus::Deactivating, TaskStatus::Running)
            ],
            "the task keeps running while its target drains"
        );
        assert!(
            service_commands(&state, 10_100, 7).is_empty(),
            "no replacement"
        );
        let deregister = target_commands(&state, 10_100);
        assert!(
            matches!(
                deregister.as_slice(),
                [Command::Elbv2(Elbv2Command::DeregisterTargets { targets, .. })] if targets.len() == 1
            ),
            "{deregister:?}"
        );
        propose_all(&mut state, deregister);
        let draining = state
            .elbv2
            .targets
            .values()
            .filter(|t| t.health.state == "draining")
            .count();
        assert_eq!(draining, 1);
        for now_ms in [10_200, 15_000, 20_099] {
            assert!(
                target_commands(&state, now_ms).is_empty(),
                "nothing to write while it drains ({now_ms} ms)"
            );
        }
        // The group's deregistration delay (10 s) has passed.
        let remove = target_commands(&state, 20_100);
        assert_eq!(remove.len(), 1, "{remove:?}");
        propose_all(&mut state, remove);
        assert_eq!(state.elbv2.targets.len(), 1);
        let stop = target_commands(&state, 20_200);
        assert_eq!(stop.len(), 1, "{stop:?}");
        propose_all(&mut state, stop);
        assert_eq!(
            statuses(&state),
            [
                (TaskStatus::Running, TaskStatus::Running),
                (TaskStatus::Deactivating, TaskStatus::Stopped)
            ]
        );
        let stopped = state
            .service_tasks("default", "web")
            .into_iter()
            .find(|t| t.desired_status == TaskStatus::Stopped)
            .unwrap();
        assert_eq!(
            stopped.stop_code.as_deref(),
            Some(crate::model::stop_code::SERVICE_SCHEDULER_INITIATED)
        );
        assert!(target_commands(&state, 20_300).is_empty());
        let events: Vec<&str> = state
            .service("default", "web")
            .unwrap()
            .events
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        assert!(
            events
                .iter()
                .any(|e| e.contains("has begun draining connections on 1 tasks")),
            "{events:?}"
        );
    }

    #[test]
    fn a_task_whose_target_fails_its_checks_is_replaced_after_the_grace_period() {
        let (mut state, group_arn) = lab_registered(1);
        set_all(
            &mut state,
            &group_arn,
            TargetHealth::unhealthy(
                "Target.ResponseCodeMismatch",
                "Health checks failed with these codes: [500]",
            ),
        );
        propose(
            &mut state,
            Command::UpdateService {
                cluster: "default".into(),
                service_name: "web".into(),
                update: ServiceUpdate {
                    health_check_grace_period_seconds: Some(30),
                    ..Default::default()
                },
                now_ms: 3_000,
            },
        );
        assert!(
            service_commands(&state, 31_000, 7).is_empty(),
            "within the grace period an unhealthy target is tolerated"
        );
        let replace = service_commands(&state, 32_500, 7);
        propose_all(&mut state, replace);
        let statuses = statuses(&state);
        assert!(
            statuses.contains(&(TaskStatus::Deactivating, TaskStatus::Running))
                && statuses.contains(&(TaskStatus::Pending, TaskStatus::Running)),
            "the failing task drains and a replacement starts: {statuses:?}"
        );
        let service = state.service("default", "web").unwrap();
        assert!(
            service
                .events
                .iter()
                .any(|e| e.message.contains("failed ELB health checks")),
            "{:?}",
            service.events
        );
        assert_eq!(
            service.deployments[0].failed_tasks, 1,
            "a task that failed its health checks counts toward the circuit breaker"
        );
    }

    #[test]
    fn stop_task_on_a_service_task_behind_a_target_group_drains_it_first() {
        let (mut state, _) = lab_registered(1);
        let task_arn = state.service_tasks("default", "web")[0].task_arn.clone();
        let answer = propose(
            &mut state,
            Command::StopTask {
                cluster: "default".into(),
                task_id: task_arn.clone().into(),
                reason: "by hand".into(),
                stop_code: crate::model::stop_code::USER_INITIATED.into(),
                now_ms: 3_000,
            },
        );
        assert_eq!(answer["task"]["lastStatus"], "DEACTIVATING", "{answer}");
        assert_eq!(
            answer["task"]["desiredStatus"], "STOPPED",
            "shown as ECS shows it: {answer}"
        );
        assert_eq!(
            state.task("default", &task_arn).unwrap().desired_status,
            TaskStatus::Running,
            "stored RUNNING while it drains"
        );
        step(&mut state, |s| target_commands(s, 3_100));
        step(&mut state, |s| target_commands(s, 13_100));
        assert!(state.elbv2.targets.is_empty());
        step(&mut state, |s| target_commands(s, 13_200));
        let task = state.task("default", &task_arn).unwrap();
        assert_eq!(task.desired_status, TaskStatus::Stopped);
        assert_eq!(
            task.stop_code.as_deref(),
            Some(crate::model::stop_code::USER_INITIATED)
        );
        assert_eq!(task.stopped_reason.as_deref(), Some("by hand"));
    }

    #[test]
    fn a_stopped_task_leaves_its_target_group() {
        let (mut state, _) = lab_registered(1);
        let task_arn = state.service_tasks("default", "web")[0].task_arn.clone();
        // Its container exited (the agent stops the task on its own).
        let change = TaskStateChange {
            task_arn,
            status: TaskStatus::Stopped,
            reason: Some("Essential container in task exited".into()),
            stop_code: None,
            containers: vec![],
            health_status: "UNKNOWN".into(),
            at_ms: 3_000,
        };
        propose(
            &mut state,
            Command::SubmitTaskStateChange {
                cluster: "default".into(),
                instance_id: "i-a".into(),
                change,
            },
        );
        let leave = target_commands(&state, 3_100);
        assert!(
            matches!(
                leave.as_slice(),
                [Command::Elbv2(Elbv2Command::DeregisterTargets { .. })]
            ),
            "{leave:?}"
        );
        propose_all(&mut state, leave);
        assert_eq!(
            state.elbv2.targets.values().next().unwrap().health.state,
            "draining"
        );
    }
}
