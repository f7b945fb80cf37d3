//! The agent's brain: a pure function from "what the control plane assigned"
//! and "what the engine shows" to "what to do now".
//!
//! [`reconcile`] does no I/O. The worker observes the engine, calls it, hands
//! the [`Plan`]'s work to the executor (one sequential batch per task, the
//! batches of different tasks in parallel) and queues its reports. Because it
//! is level-triggered, a restarted agent needs no saved state: containers are
//! found by their labels ([`labels`]) and adopted, the host ports they hold are
//! read back from their `orc.ports` label and the subnets from their networks.
//!
//! Per assigned task:
//! * desired RUNNING: pull and create every missing container (ports
//!   allocated, task network created first for a multi-container task), then
//!   start the created ones in `dependsOn` order once their conditions hold;
//! * an essential container exited, a container failed to be pulled, created
//!   or started, or a dependency condition can no longer hold: stop the task
//!   on the agent's own (EssentialContainerExited / TaskFailedToStart);
//! * desired STOPPED (or stopping on its own): stop the running containers
//!   (dependents first), then report STOPPED with every exit code and remove
//!   the containers and the network;
//! * an essential container that was created and is gone (removed by hand,
//!   `docker rm -f`) stops the task (EssentialContainerExited, "Essential
//!   container in task was removed outside orc"); it is never recreated;
//! * containers and networks of tasks no longer assigned are stopped and
//!   removed, but only once a first assignment snapshot arrived;
//! * a stopped task's containers are kept for the task cleanup wait after
//!   they finished (ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION), so their output
//!   can still be read; its network goes at once (it holds a subnet).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::agent::network::{Subnet, SubnetPool};
use crate::agent::ports::{self, HostPort};
use crate::agent::runtime::{
    ContainerSpec, ContainerState, HealthCheckSpec, HealthStatus, PortBinding, Protocol,
};
use crate::model::{
    stop_code, Assignment, ContainerStateChange, NetworkBinding, TaskStateChange, TaskStatus,
};
use crate::taskdef::{ContainerDefinition, DependencyCondition, TaskDefinition};

/// The labels the agent puts on its containers and networks.
pub mod labels {
    /// "1" on everything the agent made.
    pub const MANAGED: &str = "orc.managed";
    pub const CLUSTER: &str = "orc.cluster";
    pub const TASK_ARN: &str = "orc.task-arn";
    pub const TASK_ID: &str = "orc.task-id";
    pub const CONTAINER_NAME: &str = "orc.container-name";
    pub const INSTANCE_ID: &str = "orc.instance-id";
    /// The host ports the container got ([`crate::agent::ports::encode`]).
    pub const PORTS: &str = "orc.ports";
    /// Seconds between SIGTERM and SIGKILL.
    pub const STOP_TIMEOUT: &str = "orc.stop-timeout";
    /// "1" when the container has a health check.
    pub const HEALTH_CHECK: &str = "orc.health-check";
}

/// ECS's task stopped reason when an essential container exits.
pub const ESSENTIAL_EXITED_REASON: &str = "Essential container in task exited";

/// The agent's view of one of its containers.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    /// The engine's name (`orc-<task-id>-<container>`).
    pub name: String,
    pub task_arn: String,
    /// The name from the container definition.
    pub container_name: String,
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub health: HealthStatus,
    /// The engine's error for the container, if any.
    pub error: Option<String>,
    pub oom_killed: bool,
    /// Host ports it holds (from its `orc.ports` label).
    pub host_ports: Vec<PortBinding>,
    pub stop_timeout: Duration,
    /// When the container finished (epoch ms), once it has.
    pub finished_at_ms: Option<u64>,
}

/// How long a killed container may still be on its way to removal.
pub const REMOVAL_GRACE_MS: u64 = 400;

/// The container reason of a container removed outside orc.
pub const CONTAINER_REMOVED_REASON: &str =
    "the container was removed outside orc (docker rm); orc does not recreate it";

/// One of the agent's task networks.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedNetwork {
    pub name: String,
    pub task_arn: String,
    pub subnet: Option<String>,
}

/// Why the agent stops a task on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopCause {
    /// `TaskFailedToStart` or `EssentialContainerExited`.
    pub stop_code: String,
    pub reason: String,
}

/// What the agent remembers between passes (lost on restart, by design:
/// everything here is either re-derived or harmless to forget).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// An assignment snapshot arrived since the agent started; until then
    /// nothing is treated as an orphan.
    pub have_snapshot: bool,
    /// Containers that failed to be pulled, created or started:
    /// task ARN → (container name, reason).
    pub failures: HashMap<String, (String, String)>,
    /// The last report queued per task (with `at_ms` zeroed).
    pub reported: HashMap<String, TaskStateChange>,
    /// Tasks reported STOPPED and cleaned up: never started again.
    pub finished: HashSet<String>,
    /// Subnets Docker refused (they overlap some other network).
    pub bad_subnets: BTreeSet<String>,
    /// Dynamic host ports found taken at a container's start (something
    /// else bound them after the probe): never handed out again.
    pub taken_ports: BTreeSet<HostPort>,
}

/// Work in flight (batches not finished yet): the reconciler leaves these
/// tasks alone and does not hand out their ports and subnets again.
#[derive(Clone, Debug, Default)]
pub struct Busy {
    pub tasks: HashSet<String>,
    pub ports: BTreeSet<HostPort>,
    pub subnets: BTreeSet<String>,
}

/// One step for the executor.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make the image available (per the pull behavior).
    EnsureImage {
        container_name: String,
        image: String,
    },
    CreateNetwork {
        name: String,
        subnet: Subnet,
        labels: BTreeMap<String, String>,
    },
    CreateContainer {
        container_name: String,
        spec: Box<ContainerSpec>,
    },
    /// `id` may be the engine's name of a container created earlier in the batch.
    StartContainer {
        container_name: String,
        id: String,
    },
    /// Stops of one task run in parallel, wave after wave: every stop of
    /// wave 0 (containers no running container depends on) at once, then
    /// wave 1 (what only wave 0 depended on), and so on, as ECS's agent
    /// stops dependents before what they depend on.
    StopContainer {
        container_name: String,
        id: String,
        timeout: Duration,
        wave: u32,
    },
    RemoveContainer {
        id: String,
    },
    RemoveNetwork {
        name: String,
    },
}

/// What [`reconcile`] decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Per task ARN, actions to run in order.
    pub work: BTreeMap<String, Vec<Action>>,
    /// State changes to send to the control plane.
    pub reports: Vec<TaskStateChange>,
}

/// Everything [`reconcile`] looks at.
pub struct Input<'a> {
    pub cluster: &'a str,
    pub instance_id: &'a str,
    pub assignments: &'a [Assignment],
    pub containers: &'a [ObservedContainer],
    pub networks: &'a [ObservedNetwork],
    pub memory: &'a Memory,
    pub busy: &'a Busy,
    pub subnet_pool: SubnetPool,
    /// Whether a dynamic port can be bound on the host.
    pub bindable: &'a dyn Fn(u16, Protocol) -> bool,
    pub now_ms: u64,
    /// How long a stopped task's containers are kept after they finished.
    pub cleanup_wait: Duration,
}

impl Input<'_> {
    /// Whether a stopped container's cleanup wait is over (a container that
    /// never ran, or whose end is unknown, goes at once).
    fn cleanup_due(&self, c: &ObservedContainer) -> bool {
        if running(c.state) || !started(c.state) {
            return true;
        }
        let wait = u64::try_from(self.cleanup_wait.as_millis()).unwrap_or(u64::MAX);
        c.finished_at_ms
            .is_none_or(|at| at.saturating_add(wait) <= self.now_ms)
    }
}

/// The engine's name of a task's container: `orc-<task-id>-<name>`, with
/// characters Docker refuses replaced by `-`.
pub fn container_name(task_id: &str, name: &str) -> String {
    sanitize(&format!("orc-{task_id}-{name}"))
}

/// The name of a task's network: `orc-<task-id>`.
pub fn network_name(task_id: &str) -> String {
    sanitize(&format!("orc-{task_id}"))
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn started(state: ContainerState) -> bool {
    !matches!(state, ContainerState::Created)
}

fn running(state: ContainerState) -> bool {
    matches!(
        state,
        ContainerState::Running | ContainerState::Restarting | ContainerState::Paused
    )
}

/// Decides what to do. Pure: same input, same plan.
pub fn reconcile(input: &Input<'_>) -> Plan {
    let mut plan = Plan::default();

    // Ports and subnets already taken: by every container and network the
    // agent has, by batches in flight, by static ports of assigned tasks.
    let mut used_ports: BTreeSet<HostPort> = input.busy.ports.clone();
    // A container that ended holds no port (Docker released it), though it
    // is kept for its cleanup wait.
    for c in input.containers.iter().filter(|c| !c.state.is_terminal()) {
        used_ports.extend(c.host_ports.iter().map(|b| (b.host_port, b.protocol)));
    }
    for a in input.assignments {
        for (p, proto) in a.task_definition.static_host_ports() {
            used_ports.insert((p, proto));
        }
    }
    used_ports.extend(input.memory.taken_ports.iter().copied());
    let mut used_subnets: BTreeSet<String> = input.busy.subnets.clone();
    used_subnets.extend(input.memory.bad_subnets.iter().cloned());
    used_subnets.extend(input.networks.iter().filter_map(|n| n.subnet.clone()));

    let mut by_task: HashMap<&str, Vec<&ObservedContainer>> = HashMap::new();
    for c in input.containers {
        by_task.entry(c.task_arn.as_str()).or_default().push(c);
    }
    let mut assigned: HashSet<&str> = HashSet::new();

    for a in input.assignments {
        let arn = a.task.task_arn.as_str();
        if !assigned.insert(arn) || input.busy.tasks.contains(arn) {
            continue;
        }
        let observed = by_task.get(arn).cloned().unwrap_or_default();
        let network = input.networks.iter().find(|n| n.task_arn == arn);
        let mut ctx = TaskCtx {
            input,
            a,
            observed: &observed,
            network,
            used_ports: &mut used_ports,
            used_subnets: &mut used_subnets,
        };
        let (actions, report) = ctx.plan();
        if !actions.is_empty() {
            plan.work.insert(arn.to_string(), actions);
        }
        if let Some(r) = report {
            plan.reports.push(r);
        }
    }

    if input.memory.have_snapshot {
        // Orphans: containers and networks of tasks nobody assigns anymore.
        let mut orphans: BTreeMap<&str, Vec<Action>> = BTreeMap::new();
        for c in input.containers {
            if assigned.contains(c.task_arn.as_str()) || input.busy.tasks.contains(&c.task_arn) {
                continue;
            }
            if running(c.state) {
                // Stopped now, removed once its cleanup wait is over.
                orphans
                    .entry(c.task_arn.as_str())
                    .or_default()
                    .push(Action::StopContainer {
                        container_name: c.container_name.clone(),
                        id: c.id.clone(),
                        timeout: c.stop_timeout,
                        wave: 0,
                    });
            } else if input.cleanup_due(c) {
                orphans
                    .entry(c.task_arn.as_str())
                    .or_default()
                    .push(Action::RemoveContainer { id: c.id.clone() });
            }
        }
        for n in input.networks {
            if assigned.contains(n.task_arn.as_str()) || input.busy.tasks.contains(&n.task_arn) {
                continue;
            }
            orphans
                .entry(n.task_arn.as_str())
                .or_default()
                .push(Action::RemoveNetwork {
                    name: n.name.clone(),
                });
        }
        for (arn, work) in orphans {
            plan.work.insert(arn.to_string(), work);
        }
    }
    plan
}

struct TaskCtx<'a, 'b> {
    input: &'a Input<'a>,
    a: &'a Assignment,
    observed: &'b [&'a ObservedContainer],
    network: Option<&'a ObservedNetwork>,
    used_ports: &'b mut BTreeSet<HostPort>,
    used_subnets: &'b mut BTreeSet<String>,
}

impl<'a> TaskCtx<'a, '_> {
    fn arn(&self) -> &'a str {
        &self.a.task.task_arn
    }

    fn td(&self) -> &'a TaskDefinition {
        &self.a.task_definition
    }

    /// The container to go by for each name (a running one first), and the
    /// duplicates to remove.
    fn by_name(&self) -> (HashMap<&'a str, &'a ObservedContainer>, Vec<Action>) {
        let mut map: HashMap<&str, &ObservedContainer> = HashMap::new();
        let mut extra = Vec::new();
        for c in self.observed {
            match map.get(c.container_name.as_str()) {
                Some(prev) if running(prev.state) || !running(c.state) => {
                    extra.push(Action::RemoveContainer { id: c.id.clone() })
                }
                Some(prev) => {
                    extra.push(Action::RemoveContainer {
                        id: prev.id.clone(),
                    });
                    map.insert(c.container_name.as_str(), c);
                }
                None => {
                    map.insert(c.container_name.as_str(), c);
                }
            }
        }
        (map, extra)
    }

    /// The engine id a container of the task had, when it was created once
    /// (known to the control plane or in the agent's last report) and is
    /// gone now: removed outside orc.
    fn vanished(&self, by_name: &HashMap<&str, &ObservedContainer>, name: &str) -> Option<String> {
        if by_name.contains_key(name) {
            return None;
        }
        let reported = self
            .input
            .memory
            .reported
            .get(self.arn())
            .and_then(|r| r.containers.iter().find(|c| c.container_name == name))
            .and_then(|c| c.runtime_id.clone());
        reported.or_else(|| {
            self.a
                .task
                .containers
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.runtime_id.clone())
        })
    }

    fn plan(&mut self) -> (Vec<Action>, Option<TaskStateChange>) {
        let memory = self.input.memory;
        let arn = self.arn();
        if self.a.task.last_status == TaskStatus::Stopped || memory.finished.contains(arn) {
            return (self.cleanup(), None);
        }
        let (by_name, mut actions) = self.by_name();
        // A stop the control plane asked for carries its own stop code; the
        // exits it causes are no cause of ours.
        let stopping_wanted = self.a.task.desired_status == TaskStatus::Stopped;
        let mut cause = if stopping_wanted {
            None
        } else {
            self.stop_cause(&by_name)
        };
        if cause.is_none() && !stopping_wanted {
            match self.start(&by_name) {
                Ok(mut start) => {
                    actions.append(&mut start);
                    return (actions, self.report(&by_name, None, false));
                }
                Err(c) => cause = Some(c),
            }
        }
        // Stopping: every running container at once, except that a
        // container others depend on waits for those dependents (reverse
        // `dependsOn` order, in waves).
        let order = self.td().start_order();
        let defs = &self.td().container_definitions;
        let mut waves: HashMap<&str, u32> = HashMap::new();
        let mut to_stop = Vec::new();
        for &i in order.iter().rev() {
            let def = &defs[i];
            let Some(c) = by_name.get(def.name.as_str()) else {
                continue;
            };
            if !running(c.state) {
                continue;
            }
            // Dependents come earlier in the reversed start order, so their
            // waves are known here.
            let wave = defs
                .iter()
                .filter(|d| {
                    d.depends_on
                        .iter()
                        .any(|dep| dep.container_name == def.name)
                })
                .filter_map(|d| waves.get(d.name.as_str()))
                .map(|w| w + 1)
                .max()
                .unwrap_or(0);
            waves.insert(def.name.as_str(), wave);
            to_stop.push(Action::StopContainer {
                container_name: def.name.clone(),
                id: c.id.clone(),
                timeout: c.stop_timeout,
                wave,
            });
        }
        // Containers the definition no longer names.
        for c in self.observed {
            if running(c.state) && self.td().container(&c.container_name).is_none() {
                to_stop.push(Action::StopContainer {
                    container_name: c.container_name.clone(),
                    id: c.id.clone(),
                    timeout: c.stop_timeout,
                    wave: 0,
                });
            }
        }
        to_stop.sort_by_key(|a| match a {
            Action::StopContainer { wave, .. } => *wave,
            _ => 0,
        });
        if !to_stop.is_empty() {
            actions.append(&mut to_stop);
            return (actions, None);
        }
        // Everything has stopped: report (with the exit codes), then clean up.
        let report = self.report(&by_name, cause.as_ref(), true);
        (self.cleanup(), report)
    }

    fn cleanup(&self) -> Vec<Action> {
        let mut actions: Vec<Action> = self
            .observed
            .iter()
            .filter(|c| self.input.cleanup_due(c))
            .map(|c| Action::RemoveContainer { id: c.id.clone() })
            .collect();
        if let Some(n) = self.network {
            actions.push(Action::RemoveNetwork {
                name: n.name.clone(),
            });
        }
        actions
    }

    /// `docker rm -f` kills a container (exit code 137) and removes it a
    /// moment later: a container killed within [`REMOVAL_GRACE_MS`] may be
    /// on its way out, so its exit is not yet taken for the cause (the
    /// worker looks again 500 ms after the engine's `die` event).
    fn maybe_being_removed(&self, c: &ObservedContainer) -> bool {
        let killed = c.state == ContainerState::Dead || (c.exit_code == Some(137) && !c.oom_killed);
        killed
            && c.finished_at_ms
                .is_some_and(|at| self.input.now_ms < at.saturating_add(REMOVAL_GRACE_MS))
    }

    /// Why the task must stop although it is wanted running, if it must.
    fn stop_cause(&self, by_name: &HashMap<&str, &ObservedContainer>) -> Option<StopCause> {
        if let Some((_, reason)) = self.input.memory.failures.get(self.arn()) {
            return Some(StopCause {
                stop_code: stop_code::TASK_FAILED_TO_START.into(),
                reason: reason.clone(),
            });
        }
        for def in &self.td().container_definitions {
            if def.is_essential() && self.vanished(by_name, &def.name).is_some() {
                return Some(StopCause {
                    stop_code: stop_code::ESSENTIAL_CONTAINER_EXITED.into(),
                    reason: stop_code::ESSENTIAL_CONTAINER_REMOVED_REASON.into(),
                });
            }
        }
        for def in &self.td().container_definitions {
            if let Some(c) = by_name.get(def.name.as_str()) {
                if def.is_essential() && c.state.is_terminal() && !self.maybe_being_removed(c) {
                    return Some(StopCause {
                        stop_code: stop_code::ESSENTIAL_CONTAINER_EXITED.into(),
                        reason: ESSENTIAL_EXITED_REASON.into(),
                    });
                }
            }
        }
        // Dependency conditions that can never hold for a container not started yet.
        for def in &self.td().container_definitions {
            if by_name
                .get(def.name.as_str())
                .is_some_and(|c| started(c.state))
            {
                continue;
            }
            for dep in &def.depends_on {
                let Some(d) = by_name.get(dep.container_name.as_str()) else {
                    continue;
                };
                if !d.state.is_terminal() {
                    continue;
                }
                let broken = match dep.condition {
                    DependencyCondition::Success => d.exit_code != Some(0),
                    DependencyCondition::Healthy => true,
                    DependencyCondition::Start | DependencyCondition::Complete => false,
                };
                if broken {
                    return Some(StopCause {
                        stop_code: stop_code::TASK_FAILED_TO_START.into(),
                        reason: format!(
                            "CannotStartContainerError: container {} depends on {} being {} but it exited with code {}",
                            def.name,
                            dep.container_name,
                            dep.condition,
                            d.exit_code.map_or("unknown".to_string(), |c| c.to_string())
                        ),
                    });
                }
            }
        }
        None
    }

    /// Pull, create and start what is missing. Err: the task cannot start.
    fn start(
        &mut self,
        by_name: &HashMap<&str, &ObservedContainer>,
    ) -> Result<Vec<Action>, StopCause> {
        let td = self.td();
        let task = &self.a.task;
        let mut actions = Vec::new();
        let multi = td.container_definitions.len() > 1;
        let net_name = network_name(task.id());
        let network = if multi {
            if self.network.is_none() {
                let subnet = self.input.subnet_pool.allocate(self.used_subnets).ok_or_else(|| {
                    StopCause {
                        stop_code: stop_code::TASK_FAILED_TO_START.into(),
                        reason: format!(
                            "CannotCreateContainerError: no free subnet left in the subnet pool {}; give the agent a larger --subnet-pool",
                            self.input.subnet_pool
                        ),
                    }
                })?;
                self.used_subnets.insert(subnet.cidr.clone());
                actions.push(Action::CreateNetwork {
                    name: net_name.clone(),
                    subnet,
                    labels: BTreeMap::from([
                        (labels::MANAGED.to_string(), "1".to_string()),
                        (labels::CLUSTER.to_string(), self.input.cluster.to_string()),
                        (labels::TASK_ARN.to_string(), task.task_arn.clone()),
                        (labels::TASK_ID.to_string(), task.id().to_string()),
                        (
                            labels::INSTANCE_ID.to_string(),
                            self.input.instance_id.to_string(),
                        ),
                    ]),
                });
            }
            Some(net_name.as_str())
        } else {
            None
        };

        // ECS links become aliases on the task network: "db:database" on
        // container web gives container db the alias "database".
        let mut aliases: HashMap<&str, Vec<String>> = HashMap::new();
        for def in &td.container_definitions {
            for link in &def.links {
                let (target, alias) = link.split_once(':').unwrap_or((link, link));
                aliases.entry(target).or_default().push(alias.to_string());
            }
        }

        // Create what is missing.
        let mut created: HashSet<&str> = HashSet::new();
        let mut pulled: HashSet<&str> = HashSet::new();
        for &i in &td.start_order() {
            let def = &td.container_definitions[i];
            // A container removed outside orc is not made again.
            if by_name.contains_key(def.name.as_str())
                || self.vanished(by_name, &def.name).is_some()
            {
                continue;
            }
            if pulled.insert(def.image.as_str()) {
                actions.push(Action::EnsureImage {
                    container_name: def.name.clone(),
                    image: def.image.clone(),
                });
            }
            let bindings = self.bind_ports(def)?;
            let mut net_aliases = Vec::new();
            if network.is_some() {
                net_aliases.push(def.name.clone());
                for alias in aliases.get(def.name.as_str()).into_iter().flatten() {
                    if !net_aliases.contains(alias) {
                        net_aliases.push(alias.clone());
                    }
                }
            }
            let spec = container_spec(
                self.input.cluster,
                self.input.instance_id,
                self.a,
                def,
                network,
                net_aliases,
                bindings,
            );
            actions.push(Action::CreateContainer {
                container_name: def.name.clone(),
                spec: Box::new(spec),
            });
            created.insert(def.name.as_str());
        }

        // Start the created ones whose dependencies hold, in start order.
        let mut starting: HashSet<&str> = HashSet::new();
        for &i in &td.start_order() {
            let def = &td.container_definitions[i];
            let state = by_name.get(def.name.as_str()).map(|c| c.state);
            let waiting = match state {
                Some(ContainerState::Created) => true,
                None => created.contains(def.name.as_str()),
                Some(_) => false,
            };
            if !waiting {
                continue;
            }
            let ready = def.depends_on.iter().all(|dep| {
                let d = by_name.get(dep.container_name.as_str());
                match dep.condition {
                    DependencyCondition::Start => {
                        starting.contains(dep.container_name.as_str())
                            || d.is_some_and(|d| started(d.state))
                    }
                    DependencyCondition::Complete => d.is_some_and(|d| d.state.is_terminal()),
                    DependencyCondition::Success => {
                        d.is_some_and(|d| d.state.is_terminal() && d.exit_code == Some(0))
                    }
                    DependencyCondition::Healthy => {
                        d.is_some_and(|d| running(d.state) && d.health == HealthStatus::Healthy)
                    }
                }
            });
            if ready {
                starting.insert(def.name.as_str());
                actions.push(Action::StartContainer {
                    container_name: def.name.clone(),
                    id: by_name
                        .get(def.name.as_str())
                        .map_or_else(|| container_name(task.id(), &def.name), |c| c.id.clone()),
                });
            }
        }
        Ok(actions)
    }

    fn bind_ports(&mut self, def: &ContainerDefinition) -> Result<Vec<PortBinding>, StopCause> {
        let mut out = Vec::new();
        for pm in &def.port_mappings {
            let Some(container_port) = pm.container_port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let protocol = pm.protocol;
            let host_port = match pm.static_host_port() {
                Some(p) => p,
                None => {
                    let p = ports::allocate(self.used_ports, protocol, self.input.bindable)
                        .ok_or_else(|| StopCause {
                            stop_code: stop_code::TASK_FAILED_TO_START.into(),
                            reason: format!(
                                "CannotStartContainerError: no free host port left in {}-{} for container {}",
                                ports::DYNAMIC_RANGE.start(),
                                ports::DYNAMIC_RANGE.end(),
                                def.name
                            ),
                        })?;
                    self.used_ports.insert((p, protocol));
                    p
                }
            };
            out.push(PortBinding {
                container_port,
                host_port,
                protocol,
            });
        }
        Ok(out)
    }

    /// The report to send, if the task's state changed since the last one.
    fn report(
        &self,
        by_name: &HashMap<&str, &ObservedContainer>,
        cause: Option<&StopCause>,
        stopped: bool,
    ) -> Option<TaskStateChange> {
        let td = self.td();
        let failure = self.input.memory.failures.get(self.arn());
        let status = if stopped {
            TaskStatus::Stopped
        } else {
            let all_started = td.container_definitions.iter().all(|d| {
                by_name
                    .get(d.name.as_str())
                    .is_some_and(|c| started(c.state))
                    || self.vanished(by_name, &d.name).is_some()
            });
            let any_running = by_name.values().any(|c| running(c.state));
            if all_started {
                TaskStatus::Running
            } else if any_running {
                TaskStatus::Activating
            } else {
                TaskStatus::Pending
            }
        };
        let containers: Vec<ContainerStateChange> = td
            .container_definitions
            .iter()
            .map(|def| {
                let c = by_name.get(def.name.as_str());
                let vanished = self.vanished(by_name, &def.name);
                let mut reason = failure
                    .filter(|(name, _)| *name == def.name)
                    .map(|(_, r)| r.clone());
                if reason.is_none() && vanished.is_some() {
                    reason = Some(CONTAINER_REMOVED_REASON.to_string());
                }
                if reason.is_none() {
                    reason = c.and_then(|c| {
                        if c.oom_killed {
                            Some("OutOfMemoryError: container killed due to memory usage".into())
                        } else {
                            c.error.clone()
                        }
                    });
                }
                let cstatus = match c.map(|c| c.state) {
                    _ if stopped || vanished.is_some() => "STOPPED",
                    Some(s) if s.is_terminal() => "STOPPED",
                    Some(s) if running(s) => "RUNNING",
                    _ => "PENDING",
                };
                let health = match c {
                    Some(c) if def.health_check.is_some() && running(c.state) => {
                        health_word(c.health)
                    }
                    _ => "UNKNOWN",
                };
                ContainerStateChange {
                    container_name: def.name.clone(),
                    runtime_id: c.map(|c| c.id.clone()).or(vanished),
                    status: cstatus.to_string(),
                    exit_code: c.and_then(|c| c.exit_code),
                    reason,
                    network_bindings: c
                        .map(|c| {
                            c.host_ports
                                .iter()
                                .map(|b| NetworkBinding {
                                    bind_ip: "0.0.0.0".into(),
                                    container_port: b.container_port,
                                    host_port: b.host_port,
                                    protocol: b.protocol.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    health_status: health.to_string(),
                }
            })
            .collect();
        // Task health: from the essential containers that have a health check.
        let checked: Vec<&str> = td
            .container_definitions
            .iter()
            .zip(&containers)
            .filter(|(d, _)| d.is_essential() && d.health_check.is_some())
            .map(|(_, c)| c.health_status.as_str())
            .collect();
        let health_status = if checked.is_empty() {
            "UNKNOWN"
        } else if checked.contains(&"UNHEALTHY") {
            "UNHEALTHY"
        } else if checked.iter().all(|h| *h == "HEALTHY") {
            "HEALTHY"
        } else {
            "UNKNOWN"
        };
        let report = TaskStateChange {
            task_arn: self.arn().to_string(),
            status,
            reason: cause.map(|c| c.reason.clone()),
            stop_code: cause.map(|c| c.stop_code.clone()),
            containers,
            health_status: health_status.to_string(),
            at_ms: 0,
        };
        // Never move backwards, never repeat ourselves.
        let mut floor = self.a.task.last_status;
        let last = self.input.memory.reported.get(self.arn());
        if let Some(last) = last {
            floor = floor.max(last.status);
        }
        if status < floor || last == Some(&report) {
            return None;
        }
        Some(TaskStateChange {
            at_ms: self.input.now_ms,
            ..report
        })
    }
}

fn health_word(h: HealthStatus) -> &'static str {
    match h {
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::Starting | HealthStatus::None => "UNKNOWN",
    }
}

/// The engine spec for one container of a task.
pub fn container_spec(
    cluster: &str,
    instance_id: &str,
    a: &Assignment,
    def: &ContainerDefinition,
    network: Option<&str>,
    network_aliases: Vec<String>,
    port_bindings: Vec<PortBinding>,
) -> ContainerSpec {
    let task = &a.task;
    let mut spec = ContainerSpec::new(container_name(task.id(), &def.name), def.image.clone());
    spec.labels = def.docker_labels.clone();
    for (k, v) in [
        (labels::MANAGED, "1".to_string()),
        (labels::CLUSTER, cluster.to_string()),
        (labels::TASK_ARN, task.task_arn.clone()),
        (labels::TASK_ID, task.id().to_string()),
        (labels::CONTAINER_NAME, def.name.clone()),
        (labels::INSTANCE_ID, instance_id.to_string()),
        (labels::PORTS, ports::encode(&port_bindings)),
        (
            labels::STOP_TIMEOUT,
            def.stop_timeout_secs().max(0).to_string(),
        ),
    ] {
        spec.labels.insert(k.to_string(), v);
    }
    if def.health_check.is_some() {
        spec.labels
            .insert(labels::HEALTH_CHECK.to_string(), "1".to_string());
    }
    spec.environment = def
        .environment
        .iter()
        .map(|kv| (kv.name.clone(), kv.value.clone()))
        .collect();
    spec.secret_variables = def.secrets.iter().map(|s| s.name.clone()).collect();
    spec.command = (!def.command.is_empty()).then(|| def.command.clone());
    spec.entry_point = (!def.entry_point.is_empty()).then(|| def.entry_point.clone());
    spec.working_directory = def.working_directory.clone();
    spec.user = def.user.clone();
    spec.hostname = def.hostname.clone();
    // Docker's minimum is 2 shares; ECS gives 2 when cpu is 0 or absent.
    spec.cpu_shares = Some(def.cpu.unwrap_or(0).max(2));
    spec.memory_limit_mib = def.memory.filter(|m| *m > 0);
    spec.memory_reservation_mib = def.memory_reservation.filter(|m| *m > 0);
    spec.port_bindings = port_bindings;
    spec.network = network.map(str::to_string);
    spec.network_aliases = network_aliases;
    spec.health_check = def.health_check.as_ref().map(|h| HealthCheckSpec {
        test: h.command.clone(),
        interval: secs(h.interval_secs()),
        timeout: secs(h.timeout_secs()),
        retries: u32::try_from(h.retries_count().max(0)).unwrap_or(u32::MAX),
        start_period: secs(h.start_period_secs()),
    });
    spec.stop_timeout = secs(def.stop_timeout_secs());
    if let Some(log) = &def.log_configuration {
        if !log.log_driver.is_empty() {
            spec.log_driver = Some(log.log_driver.clone());
        }
        spec.log_options = log.options.clone();
    }
    spec.privileged = def.privileged.unwrap_or(false);
    spec.readonly_root_filesystem = def.readonly_root_filesystem.unwrap_or(false);
    spec.extra_hosts = def
        .extra_hosts
        .iter()
        .map(|h| format!("{}:{}", h.hostname, h.ip_address))
        .collect();
    spec
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:orc:ecs:local:000000000000:task/default/";

    fn assignment(id: &str, desired: TaskStatus, containers: serde_json::Value) -> Assignment {
        let task = json!({
            "taskArn": format!("{ARN}{id}"),
            "clusterArn": "arn:orc:ecs:local:000000000000:cluster/default",
            "taskDefinitionArn": "arn:orc:ecs:local:000000000000:task-definition/web:1",
            "lastStatus": "PENDING",
            "desiredStatus": desired,
            "cpu": "0", "memory": "0", "containers": [], "group": "family:web",
            "version": 1, "launchType": "EC2", "healthStatus": "UNKNOWN", "createdAt": 0.0
        });
        Assignment {
            task: serde_json::from_value(task).unwrap(),
            task_definition: serde_json::from_value(
                json!({"family": "web", "containerDefinitions": containers}),
            )
            .unwrap(),
        }
    }

    fn web(id: &str) -> Assignment {
        assignment(
            id,
            TaskStatus::Running,
            json!([{"name": "web", "image": "app:1", "portMappings": [{"containerPort": 80}]}]),
        )
    }

    fn observed(task: &str, name: &str, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: format!("id-{task}-{name}"),
            name: container_name(task, name),
            task_arn: format!("{ARN}{task}"),
            container_name: name.into(),
            state,
            exit_code: state.is_terminal().then_some(0),
            health: HealthStatus::None,
            error: None,
            oom_killed: false,
            host_ports: Vec::new(),
            stop_timeout: Duration::from_secs(30),
            finished_at_ms: None,
        }
    }

    struct World {
        assignments: Vec<Assignment>,
        containers: Vec<ObservedContainer>,
        networks: Vec<ObservedNetwork>,
        memory: Memory,
        busy: Busy,
        now_ms: u64,
        cleanup_wait: Duration,
    }

    impl World {
        fn new(assignments: Vec<Assignment>) -> World {
            World {
                assignments,
                containers: Vec::new(),
                networks: Vec::new(),
                memory: Memory {
                    have_snapshot: true,
                    ..Default::default()
                },
                busy: Busy::default(),
                now_ms: 7,
                cleanup_wait: Duration::ZERO,
            }
        }

        fn plan(&self) -> Plan {
            self.plan_with(&|_, _| true)
        }

        fn plan_with(&self, bindable: &dyn Fn(u16, Protocol) -> bool) -> Plan {
            reconcile(&Input {
                cluster: "default",
                instance_id: "i-1",
                assignments: &self.assignments,
                containers: &self.containers,
                networks: &self.networks,
                memory: &self.memory,
                busy: &self.busy,
                subnet_pool: SubnetPool::default(),
                bindable,
                now_ms: self.now_ms,
                cleanup_wait: self.cleanup_wait,
            })
        }
    }

    fn work(plan: &Plan, task: &str) -> Vec<Action> {
        plan.work
            .get(&format!("{ARN}{task}"))
            .cloned()
            .unwrap_or_default()
    }

    /// A compact view of actions: "pull app:1", "create web", "start web"...
    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::EnsureImage { image, .. } => format!("pull {image}"),
                Action::CreateNetwork { name, .. } => format!("network {name}"),
                Action::CreateContainer { container_name, .. } => {
                    format!("create {container_name}")
                }
                Action::StartContainer { container_name, .. } => format!("start {container_name}"),
                Action::StopContainer { container_name, .. } => format!("stop {container_name}"),
                Action::RemoveContainer { id } => format!("remove {id}"),
                Action::RemoveNetwork { name } => format!("rmnet {name}"),
            })
            .collect()
    }

    fn specs(actions: &[Action]) -> Vec<&ContainerSpec> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateContainer { spec, .. } => Some(spec.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dynamic_port_found_taken_at_a_start_is_not_handed_out_again() {
        let mut w = World::new(vec![web("t1")]);
        w.memory.taken_ports.insert((32768, Protocol::Tcp));
        let plan = w.plan();
        let spec = specs(&plan.work[&format!("{ARN}t1")])[0].clone();
        assert_eq!(spec.port_bindings[0].host_port, 32769);
    }

    #[test]
    fn new_single_container_task_is_pulled_created_started_and_reported_pending() {
        let w = World::new(vec![web("t1")]);
        let plan = w.plan();
        assert_eq!(
            names(&work(&plan, "t1")),
            ["pull app:1", "create web", "start web"]
        );
        let spec = specs(&plan.work[&format!("{ARN}t1")])[0].clone();
        assert_eq!(spec.name, "orc-t1-web");
        assert_eq!(
            spec.network, None,
            "a single container uses the default bridge"
        );
        assert_eq!(spec.labels[labels::TASK_ARN], format!("{ARN}t1"));
        assert_eq!(spec.labels[labels::CONTAINER_NAME], "web");
        assert_eq!(spec.labels[labels::INSTANCE_ID], "i-1");
        assert_eq!(spec.labels[labels::MANAGED], "1");
        assert_eq!(spec.cpu_shares, Some(2));
        assert_eq!(spec.port_bindings[0].host_port, 32768);
        assert_eq!(spec.labels[labels::PORTS], "80/tcp=32768");
        assert_eq!(plan.reports.len(), 1);
        assert_eq!(plan.reports[0].status, TaskStatus::Pending);
        assert_eq!(plan.reports[0].at_ms, 7);
    }

    #[test]
    fn adopted_containers_are_not_created_again() {
        let mut w = World::new(vec![web("t1")]);
        let mut c = observed("t1", "web", ContainerState::Running);
        c.host_ports = ports::decode("80/tcp=32768");
        w.containers.push(c);
        let plan = w.plan();
        assert!(plan.work.is_empty(), "{:?}", plan.work);
        assert_eq!(plan.reports[0].status, TaskStatus::Running);
        assert_eq!(
            plan.reports[0].containers[0].network_bindings[0].host_port,
            32768
        );
        // Once reported, the same state is not reported again.
        let mut remembered = plan.reports[0].clone();
        remembered.at_ms = 0;
        w.memory
            .reported
            .insert(remembered.task_arn.clone(), remembered);
        assert!(w.plan().reports.is_empty());
    }

    #[test]
    fn orphans_are_removed_only_after_a_snapshot() {
        let mut w = World::new(vec![]);
        w.containers
            .push(observed("gone", "web", ContainerState::Running));
        w.containers
            .push(observed("gone", "db", ContainerState::Exited));
        w.networks.push(ObservedNetwork {
            name: "orc-gone".into(),
            task_arn: format!("{ARN}gone"),
            subnet: Some("10.231.0.0/28".into()),
        });
        assert_eq!(
            names(&work(&w.plan(), "gone")),
            ["stop web", "remove id-gone-db", "rmnet orc-gone"],
            "a running orphan is stopped now and removed after its cleanup wait"
        );
        w.memory.have_snapshot = false;
        assert!(
            w.plan().work.is_empty(),
            "nothing is an orphan before the first snapshot"
        );
    }

    #[test]
    fn depends_on_each_condition() {
        let defs = |cond: &str| {
            json!([
                {"name": "db", "image": "db:1", "essential": false,
                 "healthCheck": {"command": ["CMD", "true"]}},
                {"name": "app", "image": "app:1",
                 "dependsOn": [{"containerName": "db", "condition": cond}]}
            ])
        };
        // START: both start in the same pass, db first.
        let w = World::new(vec![assignment("t1", TaskStatus::Running, defs("START"))]);
        assert_eq!(
            names(&work(&w.plan(), "t1")),
            [
                "network orc-t1",
                "pull db:1",
                "create db",
                "pull app:1",
                "create app",
                "start db",
                "start app"
            ]
        );
        for (cond, db_state, exit, health, starts_app) in [
            (
                "COMPLETE",
                ContainerState::Running,
                None,
                HealthStatus::None,
                false,
            ),
            (
                "COMPLETE",
                ContainerState::Exited,
                Some(1),
                HealthStatus::None,
                true,
            ),
            (
                "SUCCESS",
                ContainerState::Running,
                None,
                HealthStatus::None,
                false,
            ),
            (
                "SUCCESS",
                ContainerState::Exited,
                Some(0),
                HealthStatus::None,
                true,
            ),
            (
                "HEALTHY",
                ContainerState::Running,
                None,
                HealthStatus::Starting,
                false,
            ),
            (
                "HEALTHY",
                ContainerState::Running,
                None,
                HealthStatus::Healthy,
                true,
            ),
        ] {
            let mut w = World::new(vec![assignment("t1", TaskStatus::Running, defs(cond))]);
            w.networks.push(ObservedNetwork {
                name: "orc-t1".into(),
                task_arn: format!("{ARN}t1"),
                subnet: Some("10.231.0.0/28".into()),
            });
            let mut db = observed("t1", "db", db_state);
            db.exit_code = exit;
            db.health = health;
            w.containers.push(db);
            w.containers
                .push(observed("t1", "app", ContainerState::Created));
            let expected: Vec<String> = if starts_app {
                vec!["start app".into()]
            } else {
                vec![]
            };
            assert_eq!(
                names(&work(&w.plan(), "t1")),
                expected,
                "{cond} {db_state:?} {health:?}"
            );
        }
        // SUCCESS can no longer hold: the task fails to start.
        let mut w = World::new(vec![assignment("t1", TaskStatus::Running, defs("SUCCESS"))]);
        let mut db = observed("t1", "db", ContainerState::Exited);
        db.exit_code = Some(2);
        w.containers.push(db);
        w.containers
            .push(observed("t1", "app", ContainerState::Created));
        let plan = w.plan();
        assert_eq!(
            names(&work(&plan, "t1")),
            ["remove id-t1-db", "remove id-t1-app"]
        );
        assert_eq!(plan.reports[0].status, TaskStatus::Stopped);
        assert_eq!(
            plan.reports[0].stop_code.as_deref(),
            Some("TaskFailedToStart")
        );
        assert!(plan.reports[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("code 2"));
    }

    #[test]
    fn essential_exit_stops_the_others_then_reports_and_cleans_up() {
        let defs = json!([
            {"name": "main", "image": "app:1"},
            {"name": "side", "image": "app:1", "essential": false, "stopTimeout": 5}
        ]);
        let mut w = World::new(vec![assignment("t1", TaskStatus::Running, defs)]);
        let mut main = observed("t1", "main", ContainerState::Exited);
        main.exit_code = Some(3);
        w.containers.push(main);
        let mut side = observed("t1", "side", ContainerState::Running);
        side.stop_timeout = Duration::from_secs(5);
        w.containers.push(side);
        w.networks.push(ObservedNetwork {
            name: "orc-t1".into(),
            task_arn: format!("{ARN}t1"),
            subnet: None,
        });
        let plan = w.plan();
        assert_eq!(names(&work(&plan, "t1")), ["stop side"]);
        assert!(matches!(
            &work(&plan, "t1")[0],
            Action::StopContainer { timeout, .. } if *timeout == Duration::from_secs(5)
        ));
        assert!(
            plan.reports.is_empty(),
            "no report until everything stopped"
        );

        w.containers[1].state = ContainerState::Exited;
        w.containers[1].exit_code = Some(143);
        let plan = w.plan();
        assert_eq!(
            names(&work(&plan, "t1")),
            ["remove id-t1-main", "remove id-t1-side", "rmnet orc-t1"]
        );
        let r = &plan.reports[0];
        assert_eq!(r.status, TaskStatus::Stopped);
        assert_eq!(r.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(r.reason.as_deref(), Some(ESSENTIAL_EXITED_REASON));
        assert_eq!(r.containers[0].exit_code, Some(3));
        assert_eq!(r.containers[1].exit_code, Some(143));
        assert!(r.containers.iter().all(|c| c.status == "STOPPED"));

        // Reported and cleaned: never started again while still assigned.
        w.memory.finished.insert(format!("{ARN}t1"));
        w.containers.clear();
        w.networks.clear();
        let plan = w.plan();
        assert!(plan.work.is_empty() && plan.reports.is_empty());
    }

    #[test]
    fn non_essential_exit_is_only_reported() {
        let defs = json!([
            {"name": "main", "image": "app:1"},
            {"name": "init", "image": "app:1", "essential": false}
        ]);
        let mut w = World::new(vec![assignment("t1", TaskStatus::Running, defs)]);
        w.networks.push(ObservedNetwork {
            name: "orc-t1".into(),
            task_arn: format!("{ARN}t1"),
            subnet: None,
        });
        w.containers
            .push(observed("t1", "main", ContainerState::Running));
        let mut init = observed("t1", "init", ContainerState::Exited);
        init.exit_code = Some(1);
        w.containers.push(init);
        let plan = w.plan();
        assert!(plan.work.is_empty());
        assert_eq!(plan.reports[0].status, TaskStatus::Running);
        assert_eq!(plan.reports[0].containers[1].status, "STOPPED");
        assert_eq!(plan.reports[0].containers[1].exit_code, Some(1));
    }

    #[test]
    fn desired_stopped_stops_then_removes() {
        let mut w = World::new(vec![assignment(
            "t1",
            TaskStatus::Stopped,
            json!([{"name": "web", "image": "app:1"}]),
        )]);
        w.containers
            .push(observed("t1", "web", ContainerState::Running));
        assert_eq!(names(&work(&w.plan(), "t1")), ["stop web"]);
        w.containers[0].state = ContainerState::Exited;
        w.containers[0].exit_code = Some(0);
        let plan = w.plan();
        assert_eq!(names(&work(&plan, "t1")), ["remove id-t1-web"]);
        assert_eq!(plan.reports[0].status, TaskStatus::Stopped);
        assert_eq!(
            plan.reports[0].stop_code, None,
            "the control plane set its own stop code"
        );
        assert_eq!(plan.reports[0].containers[0].exit_code, Some(0));
    }

    /// (container, wave) of each stop, in plan order.
    fn waves(actions: &[Action]) -> Vec<(String, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StopContainer {
                    container_name,
                    wave,
                    ..
                } => Some((container_name.clone(), *wave)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stop_stops_every_container_at_once_in_reverse_depends_on_waves() {
        // web depends on db, worker on web; cache and log depend on nothing
        // and nothing depends on them; proxy depends on db but has exited.
        let defs = json!([
            {"name": "db", "image": "app:1"},
            {"name": "cache", "image": "app:1"},
            {"name": "web", "image": "app:1",
             "dependsOn": [{"containerName": "db", "condition": "START"}]},
            {"name": "worker", "image": "app:1",
             "dependsOn": [{"containerName": "web", "condition": "START"}]},
            {"name": "proxy", "image": "app:1", "essential": false,
             "dependsOn": [{"containerName": "db", "condition": "START"}]},
            {"name": "log", "image": "app:1"}
        ]);
        let mut w = World::new(vec![assignment("t1", TaskStatus::Stopped, defs)]);
        for name in ["db", "cache", "web", "worker", "log"] {
            w.containers
                .push(observed("t1", name, ContainerState::Running));
        }
        w.containers
            .push(observed("t1", "proxy", ContainerState::Exited));
        let mut got = waves(&work(&w.plan(), "t1"));
        got.sort();
        assert_eq!(
            got,
            [
                ("cache".to_string(), 0),
                ("db".to_string(), 2),
                ("log".to_string(), 0),
                ("web".to_string(), 1),
                ("worker".to_string(), 0),
            ]
        );
        // The plan lists the waves in order, so the executor can run a run
        // of stops wave after wave.
        let order: Vec<u32> = waves(&work(&w.plan(), "t1"))
            .iter()
            .map(|(_, w)| *w)
            .collect();
        assert!(order.windows(2).all(|p| p[0] <= p[1]), "{order:?}");

        // Once its dependents are gone, db is in the first wave.
        w.containers.retain(|c| c.container_name == "db");
        assert_eq!(waves(&work(&w.plan(), "t1")), [("db".to_string(), 0)]);
    }

    #[test]
    fn a_stopped_tasks_containers_are_kept_for_the_cleanup_wait() {
        let mut w = World::new(vec![assignment(
            "t1",
            TaskStatus::Stopped,
            json!([{"name": "web", "image": "app:1"}, {"name": "side", "image": "app:1"}]),
        )]);
        w.cleanup_wait = Duration::from_secs(3600);
        w.now_ms = 10_000_000;
        for name in ["web", "side"] {
            let mut c = observed("t1", name, ContainerState::Exited);
            c.finished_at_ms = Some(w.now_ms - 1000);
            c.host_ports = ports::decode("80/tcp=32768");
            w.containers.push(c);
        }
        w.networks.push(ObservedNetwork {
            name: "orc-t1".into(),
            task_arn: format!("{ARN}t1"),
            subnet: Some("10.231.0.0/28".into()),
        });
        let plan = w.plan();
        assert_eq!(plan.reports[0].status, TaskStatus::Stopped);
        // The network goes (it holds a subnet), the containers stay.
        assert_eq!(names(&work(&plan, "t1")), ["rmnet orc-t1"]);
        // An exited container holds no port: a new task may get it.
        let mut other = World::new(vec![web("t2")]);
        other.containers = w.containers.clone();
        let spec = specs(&other.plan().work[&format!("{ARN}t2")])[0].clone();
        assert_eq!(spec.port_bindings[0].host_port, 32768);
        // An hour after they finished, they are removed; so are orphans'.
        w.now_ms += 3600 * 1000;
        assert_eq!(
            names(&work(&w.plan(), "t1")),
            ["remove id-t1-web", "remove id-t1-side", "rmnet orc-t1"]
        );
        w.assignments.clear();
        assert_eq!(
            names(&work(&w.plan(), "t1")),
            ["remove id-t1-web", "remove id-t1-side", "rmnet orc-t1"]
        );
        w.now_ms -= 2000;
        assert_eq!(names(&work(&w.plan(), "t1")), ["rmnet orc-t1"]);
    }

    #[test]
    fn an_essential_container_removed_by_hand_stops_the_task_and_is_not_recreated() {
        let defs = json!([
            {"name": "web", "image": "app:1"},
            {"name": "side", "image": "app:1", "essential": false}
        ]);
        let mut a = assignment("t1", TaskStatus::Running, defs);
        a.task.last_status = TaskStatus::Running;
        let mut w = World::new(vec![a]);
        w.containers
            .push(observed("t1", "web", ContainerState::Running));
        w.containers
            .push(observed("t1", "side", ContainerState::Running));
        w.networks.push(ObservedNetwork {
            name: "orc-t1".into(),
            task_arn: format!("{ARN}t1"),
            subnet: None,
        });
        let running = w.plan().reports[0].clone();
        assert_eq!(running.status, TaskStatus::Running);
        let mut remembered = running.clone();
        remembered.at_ms = 0;
        w.memory.reported.insert(format!("{ARN}t1"), remembered);

        // `docker rm -f` of web: side is stopped, web is not made again.
        w.containers.retain(|c| c.container_name != "web");
        let plan = w.plan();
        assert_eq!(names(&work(&plan, "t1")), ["stop side"]);
        w.containers[0].state = ContainerState::Exited;
        let plan = w.plan();
        let r = &plan.reports[0];
        assert_eq!(r.status, TaskStatus::Stopped);
        assert_eq!(r.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert_eq!(
            r.reason.as_deref(),
            Some(stop_code::ESSENTIAL_CONTAINER_REMOVED_REASON)
        );
        assert_eq!(r.containers[0].status, "STOPPED");
        assert_eq!(
            r.containers[0].reason.as_deref(),
            Some(CONTAINER_REMOVED_REASON)
        );
        assert_eq!(r.containers[0].runtime_id.as_deref(), Some("id-t1-web"));

        // A restarted agent knows it from the control plane's copy.
        let mut w2 = World::new(w.assignments.clone());
        w2.assignments[0].task.containers = serde_json::from_value(json!([{
            "containerArn": "x", "taskArn": format!("{ARN}t1"), "name": "web",
            "image": "app:1", "runtimeId": "id-t1-web", "lastStatus": "RUNNING", "essential": true,
            "healthStatus": "UNKNOWN"
        }]))
        .unwrap();
        w2.containers = w.containers.clone();
        w2.networks = w.networks.clone();
        let plan = w2.plan();
        assert!(
            !names(&work(&plan, "t1")).contains(&"create web".to_string()),
            "{:?}",
            plan.work
        );
        assert_eq!(
            plan.reports[0].reason.as_deref(),
            Some(stop_code::ESSENTIAL_CONTAINER_REMOVED_REASON)
        );
    }

    #[test]
    fn a_killed_essential_container_is_given_a_moment_to_be_removed() {
        let mut w = World::new(vec![web("t1")]);
        w.now_ms = 1_000_000;
        let mut c = observed("t1", "web", ContainerState::Exited);
        c.exit_code = Some(137);
        c.finished_at_ms = Some(w.now_ms - 100);
        w.containers.push(c);
        let plan = w.plan();
        assert!(
            plan.work.is_empty() && plan.reports.iter().all(|r| r.status != TaskStatus::Stopped)
        );
        // Still there after the grace: an exit like any other.
        w.now_ms += REMOVAL_GRACE_MS;
        let plan = w.plan();
        assert_eq!(plan.reports[0].status, TaskStatus::Stopped);
        assert_eq!(
            plan.reports[0].reason.as_deref(),
            Some(ESSENTIAL_EXITED_REASON)
        );
        // A crash (not a kill) is acted on at once.
        w.now_ms -= REMOVAL_GRACE_MS;
        w.containers[0].exit_code = Some(3);
        assert_eq!(w.plan().reports[0].status, TaskStatus::Stopped);
    }

    #[test]
    fn a_task_whose_start_failed_is_stopped_with_the_reason() {
        let mut w = World::new(vec![web("t1")]);
        w.memory.failures.insert(
            format!("{ARN}t1"),
            (
                "web".into(),
                "CannotPullContainerError: app:1: denied".into(),
            ),
        );
        let plan = w.plan();
        assert!(plan.work.is_empty());
        let r = &plan.reports[0];
        assert_eq!(r.status, TaskStatus::Stopped);
        assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
        assert_eq!(
            r.reason.as_deref(),
            Some("CannotPullContainerError: app:1: denied")
        );
        assert_eq!(r.containers[0].reason, r.reason);
    }

    #[test]
    fn static_and_dynamic_ports_never_collide() {
        let static_task = assignment(
            "s1",
            TaskStatus::Running,
            json!([{"name": "web", "image": "app:1",
                    "portMappings": [{"containerPort": 80, "hostPort": 32770}]}]),
        );
        let mut w = World::new(vec![
            web("t1"),
            web("t2"),
            static_task,
            web("t3"),
            web("t4"),
        ]);
        // An adopted container holds 32768; 32769 is held by something else on the host;
        // a batch in flight holds 32771.
        let mut c = observed("t1", "web", ContainerState::Running);
        c.host_ports = ports::decode("80/tcp=32768");
        w.containers.push(c);
        w.busy.ports.insert((32771, Protocol::Tcp));
        let plan = w.plan_with(&|p, _| p != 32769);
        let port = |t: &str| specs(&plan.work[&format!("{ARN}{t}")])[0].port_bindings[0].host_port;
        assert_eq!(port("t2"), 32772);
        assert_eq!(port("s1"), 32770);
        assert_eq!(port("t3"), 32773);
        assert_eq!(port("t4"), 32774);
        assert!(!plan.work.contains_key(&format!("{ARN}t1")));
    }

    #[test]
    fn multi_container_task_gets_a_network_with_aliases_from_names_and_links() {
        let defs = json!([
            {"name": "db", "image": "db:1"},
            {"name": "web", "image": "app:1", "links": ["db:database"],
             "cpu": 256, "memory": 128, "memoryReservation": 64,
             "environment": [{"name": "A", "value": "1"}],
             "dockerLabels": {"orc.test": "1"},
             "extraHosts": [{"hostname": "h", "ipAddress": "10.0.0.9"}]}
        ]);
        let mut w = World::new(vec![assignment("t1", TaskStatus::Running, defs.clone())]);
        w.networks.push(ObservedNetwork {
            name: "orc-other".into(),
            task_arn: format!("{ARN}other"),
            subnet: Some("10.231.0.0/28".into()),
        });
        w.assignments
            .push(assignment("other", TaskStatus::Running, defs));
        w.busy.tasks.insert(format!("{ARN}other"));
        let plan = w.plan();
        let actions = work(&plan, "t1");
        match &actions[0] {
            Action::CreateNetwork {
                name,
                subnet,
                labels: l,
            } => {
                assert_eq!(name, "orc-t1");
                assert_eq!(subnet.cidr, "10.231.0.16/28", "the used subnet is skipped");
                assert_eq!(l[labels::TASK_ARN], format!("{ARN}t1"));
            }
            other => panic!("expected a network first, got {other:?}"),
        }
        let specs = specs(&actions);
        assert_eq!(specs[0].network.as_deref(), Some("orc-t1"));
        assert_eq!(specs[0].network_aliases, ["db", "database"]);
        assert_eq!(specs[1].network_aliases, ["web"]);
        assert_eq!(specs[1].cpu_shares, Some(256));
        assert_eq!(specs[1].memory_limit_mib, Some(128));
        assert_eq!(specs[1].memory_reservation_mib, Some(64));
        assert_eq!(specs[1].environment, [("A".to_string(), "1".to_string())]);
        assert_eq!(specs[1].labels["orc.test"], "1");
        assert_eq!(specs[1].extra_hosts, ["h:10.0.0.9"]);
        assert!(
            !plan.work.contains_key(&format!("{ARN}other")),
            "busy tasks are left alone"
        );
    }

    #[test]
    fn never_reports_backwards_and_reports_health() {
        let mut a = assignment(
            "t1",
            TaskStatus::Running,
            json!([{"name": "web", "image": "app:1", "healthCheck": {"command": ["CMD", "true"]}}]),
        );
        a.task.last_status = TaskStatus::Running;
        let mut w = World::new(vec![a]);
        // Restarted agent recreating a container that vanished: PENDING < RUNNING, no report.
        let plan = w.plan();
        assert_eq!(
            names(&work(&plan, "t1")),
            ["pull app:1", "create web", "start web"]
        );
        assert!(plan.reports.is_empty());
        let mut c = observed("t1", "web", ContainerState::Running);
        c.health = HealthStatus::Starting;
        w.containers.push(c);
        let r = w.plan().reports.remove(0);
        assert_eq!(
            (r.status, r.health_status.as_str()),
            (TaskStatus::Running, "UNKNOWN")
        );
        w.containers[0].health = HealthStatus::Healthy;
        let r = w.plan().reports.remove(0);
        assert_eq!(r.health_status, "HEALTHY");
        assert_eq!(r.containers[0].health_status, "HEALTHY");
        w.containers[0].health = HealthStatus::Unhealthy;
        assert_eq!(w.plan().reports[0].health_status, "UNHEALTHY");
    }

    #[test]
    fn duplicates_are_removed_keeping_the_running_one() {
        let mut w = World::new(vec![web("t1")]);
        let mut dup = observed("t1", "web", ContainerState::Exited);
        dup.id = "old".into();
        w.containers.push(dup);
        w.containers
            .push(observed("t1", "web", ContainerState::Running));
        assert_eq!(names(&work(&w.plan(), "t1")), ["remove old"]);
    }

    #[test]
    fn stopped_tasks_in_the_snapshot_are_only_cleaned_up() {
        let mut a = web("t1");
        a.task.last_status = TaskStatus::Stopped;
        let mut w = World::new(vec![a]);
        assert!(w.plan().work.is_empty());
        w.containers
            .push(observed("t1", "web", ContainerState::Exited));
        assert_eq!(names(&work(&w.plan(), "t1")), ["remove id-t1-web"]);
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(container_name("abc", "my web/1"), "orc-abc-my-web-1");
        assert_eq!(network_name("abc"), "orc-abc");
    }
}
