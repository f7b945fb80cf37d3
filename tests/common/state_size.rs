//! A large, realistic control-plane state built through the real gRPC API:
//! task-definition revisions of about 2 KB each, and stopped tasks reported
//! by a fake agent (a container instance registered through `AgentApi`
//! whose "containers" exit at once: it reports each task STOPPED with exit
//! code 0). Used by `tests/memory_limit.rs` and `benches/state_size.rs`.
#![allow(dead_code)]

use std::time::Duration;

use futures::stream::{self, StreamExt as _};
use orc::client::Client;
use orc::wire::proto::agent_api_client::AgentApiClient;
use orc::wire::proto::{HeartbeatRequest, RegisterInstanceRequest, TaskStateReport};
use serde_json::{json, Value};

/// Requests in flight at once while building.
const PARALLEL: usize = 16;

/// A task definition of about 2 KB of JSON: two containers with
/// environment, ports, a health check, log configuration and labels.
pub fn realistic_definition(family: &str, revision: usize) -> Value {
    let environment: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("SETTING_{i:02}"), "value": format!("value-{revision}-{i}-abcdefgh")}))
        .collect();
    json!({
        "family": family,
        "containerDefinitions": [
            {
                "name": "web",
                "image": format!("registry.lab:5000/classroom/web:{revision}"),
                "cpu": 128,
                "memory": 64,
                "essential": true,
                "portMappings": [{"containerPort": 80, "protocol": "tcp"}, {"containerPort": 443}],
                "environment": environment,
                "command": ["sh", "-c", "exec httpd -f -p 80 -h /www"],
                "healthCheck": {"command": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"], "interval": 10, "retries": 3},
                "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
                "dockerLabels": {"lab": "networks", "group": format!("g{}", revision % 7)},
            },
            {
                "name": "sidecar",
                "image": "registry.lab:5000/classroom/metrics:1",
                "memory": 16,
                "essential": false,
                "environment": [{"name": "TARGET", "value": "http://web/"}],
                "dependsOn": [{"containerName": "web", "condition": "START"}],
            }
        ],
        "tags": [{"key": "course", "value": "systems"}],
    })
}

/// Registers `revisions` revisions spread over `families` families.
pub async fn register_definitions(client: &Client, families: usize, revisions: usize) {
    stream::iter(0..revisions)
        .for_each_concurrent(PARALLEL, |i| {
            let client = client.clone();
            async move {
                let family = format!("course-{:03}", i % families);
                client
                    .call("RegisterTaskDefinition", realistic_definition(&family, i))
                    .await
                    .unwrap_or_else(|e| panic!("registering revision {i}: {e}"));
            }
        })
        .await;
}

/// A container instance registered through `AgentApi`, with no Docker
/// behind it.
pub struct FakeAgent {
    api: AgentApiClient<tonic::transport::Channel>,
    /// Its container instance id.
    pub instance_id: String,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    /// Registers an instance with `cpu` units and `memory_mib` in `default`
    /// and keeps it connected with heartbeats.
    pub async fn register(address: &str, cpu: i64, memory_mib: i64) -> FakeAgent {
        FakeAgent::register_as(address, cpu, memory_mib, "arm64").await
    }

    /// As [`FakeAgent::register`], for a machine of `architecture`
    /// (`ecs.cpu-architecture`: `arm64`, `arm/v7`, `amd64`).
    pub async fn register_as(
        address: &str,
        cpu: i64,
        memory_mib: i64,
        architecture: &str,
    ) -> FakeAgent {
        let mut api = AgentApiClient::new(orc::wire::channel(address).expect("channel"));
        let registration = json!({
            "hostname": "fake-pi", "cpu": cpu, "memoryMib": memory_mib,
            "attributes": [{"name": "ecs.cpu-architecture", "value": architecture}],
            "agentVersion": "fake", "dockerVersion": "fake",
        });
        // The first leader creates the default cluster just after it is elected.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let instance_id = loop {
            let registered = api
                .register_container_instance(RegisterInstanceRequest {
                    cluster: "default".into(),
                    container_instance_id: String::new(),
                    instance_json: registration.to_string(),
                    agent_session: String::new(),
                })
                .await;
            match registered {
                Ok(answer) => break answer.into_inner().container_instance_id,
                Err(status) if std::time::Instant::now() < deadline => {
                    let _ = status;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("register the fake container instance: {status}"),
            }
        };
        let mut beating = api.clone();
        let id = instance_id.clone();
        let heartbeats = tokio::spawn(async move {
            loop {
                let _ = beating
                    .heartbeat(HeartbeatRequest {
                        cluster: "default".into(),
                        container_instance_id: id.clone(),
                        running_task_ids: vec![],
                        agent_session: String::new(),
                    })
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        FakeAgent {
            api,
            instance_id,
            heartbeats,
        }
    }

    /// Reports a task STOPPED: its essential container exited with code 0.
    pub async fn report_stopped(&self, task_arn: &str, containers: &[&str]) {
        let containers: Vec<Value> = containers
            .iter()
            .map(|name| json!({"containerName": name, "status": "STOPPED", "exitCode": 0, "healthStatus": "UNKNOWN"}))
            .collect();
        let change = json!({
            "taskArn": task_arn, "status": "STOPPED",
            "reason": "Essential container in task exited",
            "stopCode": "EssentialContainerExited",
            "containers": containers, "atMs": 1_800_000_000_000u64,
        });
        self.api
            .clone()
            .report_task_state(TaskStateReport {
                cluster: "default".into(),
                container_instance_id: self.instance_id.clone(),
                report_json: change.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("reporting {task_arn} stopped: {e}"));
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

/// Runs `tasks` tasks of `task_definition` (10 per RunTask call, ECS's
/// limit) on the fake agent's instance and reports each STOPPED.
pub async fn run_and_stop_tasks(
    client: &Client,
    agent: &FakeAgent,
    task_definition: &str,
    tasks: usize,
) {
    stream::iter(0..tasks.div_ceil(10))
        .for_each_concurrent(PARALLEL, |call| {
            let client = client.clone();
            async move {
                let count = (tasks - call * 10).min(10);
                let (answer, _) = client
                    .call(
                        "RunTask",
                        json!({"taskDefinition": task_definition, "count": count}),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("run-task call {call}: {e}"));
                let arns: Vec<String> = answer["tasks"]
                    .as_array()
                    .expect("tasks in the RunTask answer")
                    .iter()
                    .map(|task| task["taskArn"].as_str().expect("taskArn").to_string())
                    .collect();
                assert_eq!(arns.len(), count, "every task placed: {answer}");
                for arn in arns {
                    agent.report_stopped(&arn, &["web", "sidecar"]).await;
                }
            }
        })
        .await;
}

/// Builds the state of the benchmark: `revisions` task-definition
/// revisions and `tasks` stopped tasks, at the server at `address`.
pub async fn build(address: &str, revisions: usize, tasks: usize) {
    let mut client = Client::new(address).expect("client");
    client.retry_for = Duration::from_secs(30);
    register_definitions(&client, 100.min(revisions.max(1)), revisions).await;
    let agent = FakeAgent::register(address, 1 << 20, 1 << 30).await;
    run_and_stop_tasks(&client, &agent, "course-000", tasks).await;
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
