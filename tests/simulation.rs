//! A deterministic simulation of a big cluster: 500 container instances
//! whose agents run containers in the fake runtime, 50 services with 5,000
//! tasks, driven by the same pure functions the leader runs (`apply`,
//! `controller::service_commands`, `controller::connectivity_changes`).
//! Then 10% of the instances die: every service must return to its desired
//! count on live instances, no instance over capacity, no task twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use orc::agent::fake::FakeRuntime;
use orc::agent::runtime::{ContainerSpec, Runtime};
use orc::controller::{connectivity_changes, service_commands};
use orc::model::{Attribute, InstanceRegistration, Service, TaskStateChange, TaskStatus};
use orc::store::state::apply;
use orc::store::{Command, Proposal, State};

const INSTANCES: usize = 500;
const SERVICES: usize = 50;
const PER_SERVICE: u32 = 100;

struct Simulation {
    state: State,
    now_ms: u64,
    next_request: u64,
    runtimes: Vec<FakeRuntime>,
    dead: BTreeSet<usize>,
    /// Container id per task arn, per instance index.
    containers: Vec<BTreeMap<String, String>>,
}

impl Simulation {
    fn propose(&mut self, command: Command) -> serde_json::Value {
        self.next_request += 1;
        let proposal = Proposal {
            request_id: format!("sim-{}", self.next_request),
            command,
        };
        apply(&mut self.state, &proposal).unwrap_or_else(|e| panic!("command failed: {e}"))
    }

    fn instance_id(index: usize) -> String {
        format!("i-{index:05}")
    }

    /// What every live agent does in one round: run assigned tasks, stop unwanted ones, report.
    async fn agents_round(&mut self) {
        for index in 0..INSTANCES {
            if self.dead.contains(&index) {
                continue;
            }
            let id = Simulation::instance_id(index);
            let tasks: Vec<_> = self
                .state
                .assigned_tasks("default", &id)
                .into_iter()
                .cloned()
                .collect();
            let mut reports = Vec::new();
            for task in tasks {
                let runtime = &self.runtimes[index];
                if task.desired_status == TaskStatus::Running
                    && task.last_status < TaskStatus::Running
                {
                    let spec = ContainerSpec::new(format!("orc-{}", task.id()), "sim/web:1");
                    let container = runtime.create_container(&spec).await.expect("fake create");
                    runtime
                        .start_container(&container)
                        .await
                        .expect("fake start");
                    self.containers[index].insert(task.task_arn.clone(), container);
                    reports.push((task.task_arn.clone(), TaskStatus::Running));
                } else if task.desired_status == TaskStatus::Stopped
                    && task.last_status != TaskStatus::Stopped
                {
                    if let Some(container) = self.containers[index].remove(&task.task_arn) {
                        runtime
                            .stop_container(&container, Duration::from_secs(30))
                            .await
                            .expect("fake stop");
                        runtime
                            .remove_container(&container)
                            .await
                            .expect("fake remove");
                    }
                    reports.push((task.task_arn.clone(), TaskStatus::Stopped));
                }
            }
            for (task_arn, status) in reports {
                let change = TaskStateChange {
                    task_arn,
                    status,
                    reason: None,
                    stop_code: None,
                    containers: vec![],
                    health_status: "UNKNOWN".into(),
                    at_ms: self.now_ms,
                };
                self.propose(Command::SubmitTaskStateChange {
                    cluster: "default".into(),
                    instance_id: id.clone().into(),
                    change,
                });
            }
        }
    }

    /// One leader tick: connectivity, then the service reconciler.
    fn leader_round(
        &mut self,
        leader_since: Instant,
        seen: &BTreeMap<String, Instant>,
        now: Instant,
    ) {
        let connectivity = connectivity_changes(
            &self.state,
            |_, id| seen.get(id).copied(),
            leader_since,
            now,
            Duration::from_secs(10),
        );
        for command in connectivity {
            self.propose(command);
        }
        let commands = service_commands(&self.state, self.now_ms, 42 + self.now_ms);
        for command in commands {
            self.propose(command);
        }
    }

    fn stable(&self) -> bool {
        self.state.services.values().all(|service| {
            let tasks = self.state.service_tasks("default", &service.service_name);
            let running = tasks
                .iter()
                .filter(|t| {
                    t.desired_status == TaskStatus::Running && t.last_status == TaskStatus::Running
                })
                .count();
            let live = tasks
                .iter()
                .filter(|t| t.desired_status == TaskStatus::Running)
                .count();
            running == service.desired_count as usize
                && live == running
                && service.deployments.len() == 1
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_instances_fifty_services_survive_losing_ten_percent() {
    let mut sim = Simulation {
        state: State::default(),
        now_ms: 1_000_000,
        next_request: 0,
        runtimes: (0..INSTANCES).map(|_| FakeRuntime::new()).collect(),
        dead: BTreeSet::new(),
        containers: vec![BTreeMap::new(); INSTANCES],
    };
    for runtime in &sim.runtimes {
        runtime.add_image("sim/web:1");
    }
    sim.propose(Command::InitControlPlane {
        control_plane_id: "sim".into(),
        first_member_id: 1,
        first_member_address: "127.0.0.1:1".into(),
        now_ms: sim.now_ms,
    });
    for index in 0..INSTANCES {
        let registration = InstanceRegistration {
            hostname: format!("pi-{index}"),
            cpu: 4096,
            memory_mib: 2048,
            reserved_ports: vec![22],
            attributes: vec![
                Attribute {
                    name: "ecs.cpu-architecture".into(),
                    value: Some("arm64".into()),
                },
                Attribute {
                    name: "ecs.availability-zone".into(),
                    value: Some(format!("rack-{}", index % 5)),
                },
            ],
            agent_version: "sim".into(),
            docker_version: "sim".into(),
        };
        sim.propose(Command::RegisterContainerInstance {
            cluster: "default".into(),
            instance_id: Simulation::instance_id(index).into(),
            registration,
            now_ms: sim.now_ms,
            agent_session: String::new(),
        });
    }
    for s in 0..SERVICES {
        let definition = orc::taskdef::parse_register_input(&format!(
            r#"{{"family": "svc-{s}", "containerDefinitions": [{{"name": "web", "image": "sim/web:1", "cpu": 64, "memory": 96}}]}}"#
        ))
        .unwrap()
        .0;
        sim.propose(Command::RegisterTaskDefinition {
            task_definition: definition,
            now_ms: sim.now_ms,
        });
        let service: Service = serde_json::from_value(serde_json::json!({
            "serviceArn": format!("arn:orc:ecs:local:000000000000:service/default/svc-{s}"),
            "serviceName": format!("svc-{s}"),
            "clusterArn": "arn:orc:ecs:local:000000000000:cluster/default",
            "status": "ACTIVE",
            "desiredCount": PER_SERVICE,
            "taskDefinition": format!("svc-{s}"),
            "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 50},
            "schedulingStrategy": "REPLICA",
            "deployments": [],
            "events": [],
            "createdAt": 0.0,
            "nextDeployment": 0,
        }))
        .unwrap();
        sim.propose(Command::CreateService {
            service: Box::new(service),
            now_ms: sim.now_ms,
        });
    }

    let leader_since = Instant::now();
    let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
    let mut rounds = 0;
    while !sim.stable() {
        rounds += 1;
        assert!(
            rounds < 50,
            "the cluster did not reach its desired counts in 50 rounds"
        );
        let now = Instant::now();
        for index in 0..INSTANCES {
            seen.insert(Simulation::instance_id(index), now);
        }
        sim.leader_round(leader_since, &seen, now);
        sim.agents_round().await;
        sim.now_ms += 500;
    }
    let total: usize = sim.runtimes.iter().map(|r| r.running_count()).sum();
    assert_eq!(
        total,
        SERVICES * PER_SERVICE as usize,
        "every task runs exactly once"
    );

    // Kill 10% of the instances: they stop heartbeating and their agents stop.
    for index in (0..INSTANCES).step_by(10) {
        sim.dead.insert(index);
    }
    let killed_at = Instant::now();
    let after_grace = killed_at + Duration::from_secs(11);
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 50, "the cluster did not recover in 50 rounds");
        for index in 0..INSTANCES {
            if !sim.dead.contains(&index) {
                seen.insert(Simulation::instance_id(index), after_grace);
            } else {
                seen.insert(Simulation::instance_id(index), killed_at);
            }
        }
        sim.leader_round(leader_since, &seen, after_grace);
        sim.agents_round().await;
        sim.now_ms += 500;
        if sim.stable() {
            break;
        }
    }

    // Every service is back at its desired count, on live instances only.
    let dead_ids: BTreeSet<String> = sim
        .dead
        .iter()
        .map(|i| Simulation::instance_id(*i))
        .collect();
    for service in sim.state.services.values() {
        let live: Vec<_> = sim
            .state
            .service_tasks("default", &service.service_name)
            .into_iter()
            .filter(|t| t.desired_status == TaskStatus::Running)
            .collect();
        assert_eq!(
            live.len(),
            PER_SERVICE as usize,
            "{} is not at its desired count",
            service.service_name
        );
        for task in live {
            let instance = task.container_instance_id().unwrap();
            assert!(
                !dead_ids.contains(instance),
                "task {} is on dead instance {instance}",
                task.id()
            );
        }
    }
    // No instance over its capacity.
    for instance in sim.state.container_instances.values() {
        let usage = sim.state.usage("default", instance.id());
        assert!(
            usage.cpu <= instance.registration.cpu,
            "{} is over its CPU",
            instance.id()
        );
        assert!(
            usage.memory_mib <= instance.registration.memory_mib,
            "{} is over its memory",
            instance.id()
        );
    }
    // No task runs twice: on live instances, one running container per live task.
    let running_live: usize = sim
        .runtimes
        .iter()
        .enumerate()
        .filter(|(index, _)| !sim.dead.contains(index))
        .map(|(_, runtime)| runtime.running_count())
        .sum();
    assert_eq!(
        running_live,
        SERVICES * PER_SERVICE as usize,
        "a task runs twice or not at all"
    );
    let mut arns = BTreeSet::new();
    for (index, containers) in sim.containers.iter().enumerate() {
        if sim.dead.contains(&index) {
            continue;
        }
        for arn in containers.keys() {
            assert!(
                arns.insert(arn.clone()),
                "task {arn} has containers on two live instances"
            );
        }
    }
}
