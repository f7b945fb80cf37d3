//! `orc agent` (`worker::run`) end to end against a control-plane double.
//!
//! The double is a tiny in-process `AgentApi` server that hands out the
//! assignments each test sets and records the agent's reports; it mimics
//! the real server's rules that matter to the agent (level-triggered
//! snapshots, backward status moves refused, STOPPED tasks dropped from the
//! snapshot). The scale test uses `FakeRuntime`; the others use the real
//! Docker Engine with the locally built busybox image (nothing is pulled).
//! Every Docker object carries the test's unique cluster label and is removed
//! by a guard even when the test fails. Set ORC_SKIP_DOCKER_TESTS=1 to skip
//! the Docker tests on a machine without Docker.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/docker.rs"]
mod docker;
#[path = "common/images.rs"]
mod images;

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use cluster::eventually;
use docker::{http_get, skip, suffix};
use orc::agent::config::AgentConfig;
use orc::agent::docker::DockerRuntime;
use orc::agent::fake::FakeRuntime;
use orc::agent::runtime::Runtime;
use orc::agent::worker;
use orc::model::{Assignment, TaskStateChange, TaskStatus};
use orc::wire::proto::agent_api_server::{AgentApi, AgentApiServer};
use orc::wire::proto::{
    Assignments, HeartbeatRequest, HeartbeatResponse, LogChunk, LogRequest,
    RegisterInstanceRequest, RegisterInstanceResponse, ReportAck, TaskStateReport,
    WatchAssignmentsRequest,
};

const IMAGE: &str = "orc-test/busybox:1";
const ARN: &str = "arn:orc:ecs:local:000000000000:task/";

// ------------------------------------------------------------ the double

#[derive(Default)]
struct PlaneState {
    tasks: BTreeMap<String, Assignment>,
    revision: u64,
    reports: Vec<TaskStateChange>,
    registrations: Vec<(String, String)>,
    next_instance: u64,
}

#[derive(Clone)]
struct Plane {
    state: Arc<Mutex<PlaneState>>,
    changed: watch::Sender<u64>,
}

impl Plane {
    fn new() -> Plane {
        Plane {
            state: Arc::default(),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, s: &mut PlaneState) {
        s.revision += 1;
        let _ = self.changed.send(s.revision);
    }

    fn assign(&self, a: Assignment) {
        let mut s = self.lock();
        s.tasks.insert(a.task.task_arn.clone(), a);
        self.bump(&mut s);
    }

    fn stop(&self, arn: &str) {
        let mut s = self.lock();
        if let Some(a) = s.tasks.get_mut(arn) {
            a.task.desired_status = TaskStatus::Stopped;
        }
        self.bump(&mut s);
    }

    fn reports(&self, arn: &str) -> Vec<TaskStateChange> {
        self.lock()
            .reports
            .iter()
            .filter(|r| r.task_arn == arn)
            .cloned()
            .collect()
    }

    /// The newest report with `status` for the task, if one arrived.
    fn report(&self, arn: &str, status: TaskStatus) -> Option<TaskStateChange> {
        self.reports(arn)
            .into_iter()
            .rev()
            .find(|r| r.status == status)
    }

    async fn serve(&self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = AgentApiServer::new(self.clone());
        let handle = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        (address, handle)
    }
}

type AssignmentStream =
    Pin<Box<dyn futures::Stream<Item = Result<Assignments, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentApi for Plane {
    async fn register_container_instance(
        &self,
        request: Request<RegisterInstanceRequest>,
    ) -> Result<Response<RegisterInstanceResponse>, Status> {
        let r = request.into_inner();
        let mut s = self.lock();
        let id = if r.container_instance_id.is_empty() {
            s.next_instance += 1;
            format!("i-{}", s.next_instance)
        } else {
            r.container_instance_id
        };
        s.registrations.push((id.clone(), r.instance_json));
        Ok(Response::new(RegisterInstanceResponse {
            container_instance_arn: format!(
                "arn:orc:ecs:local:000000000000:container-instance/{}/{id}",
                r.cluster
            ),
            container_instance_id: id,
            instance_json: String::new(),
        }))
    }

    async fn heartbeat(
        &self,
        _request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(HeartbeatResponse {
            revision: self.lock().revision,
            servers: vec![],
            trust: String::new(),
        }))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(
        &self,
        request: Request<WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let mut after = request.into_inner().after_revision;
        let plane = self.clone();
        let mut changed = self.changed.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let msg = {
                    let s = plane.lock();
                    (s.revision > after || after == 0).then(|| Assignments {
                        revision: s.revision,
                        tasks_json: s
                            .tasks
                            .values()
                            .map(|a| serde_json::to_string(a).unwrap())
                            .collect(),
                    })
                };
                if let Some(msg) = msg {
                    after = msg.revision.max(1);
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type ServeLogsStream =
        Pin<Box<dyn futures::Stream<Item = Result<LogRequest, Status>> + Send + 'static>>;

    /// The double serves no logs (the real server's are tested end to end).
    async fn serve_logs(
        &self,
        _request: Request<tonic::Streaming<LogChunk>>,
    ) -> Result<Response<Self::ServeLogsStream>, Status> {
        Err(Status::unimplemented("the test double serves no logs"))
    }

    async fn get_registry_token(
        &self,
        _: Request<orc::wire::proto::RegistryTokenRequest>,
    ) -> Result<Response<orc::wire::proto::RegistryToken>, Status> {
        Ok(Response::new(orc::wire::proto::RegistryToken::default()))
    }

    async fn get_task_secrets(
        &self,
        _: Request<orc::wire::proto::TaskSecretsRequest>,
    ) -> Result<Response<orc::wire::proto::TaskSecrets>, Status> {
        // The fake plane's tasks reference no secrets.
        Ok(Response::new(orc::wire::proto::TaskSecrets::default()))
    }

    async fn report_task_state(
        &self,
        request: Request<TaskStateReport>,
    ) -> Result<Response<ReportAck>, Status> {
        let report: TaskStateChange = serde_json::from_str(&request.into_inner().report_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut s = self.lock();
        if let Some(a) = s.tasks.get_mut(&report.task_arn) {
            if report.status < a.task.last_status {
                return Err(Status::invalid_argument(format!(
                    "backward move {:?} -> {:?}",
                    a.task.last_status, report.status
                )));
            }
            a.task.last_status = report.status;
        }
        if report.status == TaskStatus::Stopped {
            s.tasks.remove(&report.task_arn);
        }
        s.reports.push(report);
        self.bump(&mut s);
        Ok(Response::new(ReportAck {
            revision: s.revision,
        }))
    }
}

// ------------------------------------------------------------ helpers

/// Docker tests run one at a time: agents in one process would race for
/// the same dynamic ports.
fn docker_lock() -> &'static tokio::sync::Mutex<()> {
    static LOCK: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// Removes, on drop, every container and network of the test's cluster.
struct Cleanup {
    cluster: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=orc.cluster={}", self.cluster);
        let ids = |args: &[&str]| -> Vec<String> {
            Command::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        for id in ids(&["ps", "-aq", "--filter", &filter]) {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for id in ids(&["network", "ls", "-q", "--filter", &filter]) {
            let _ = Command::new("docker")
                .args(["network", "rm", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The container ids of a cluster's containers (all states), sorted.
fn docker_ids(cluster: &str, extra: &str) -> Vec<String> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".into(),
        "--no-trunc".into(),
        "--filter".into(),
        format!("label=orc.cluster={cluster}"),
    ];
    if !extra.is_empty() {
        args.push("--filter".into());
        args.push(extra.into());
    }
    let out = Command::new("docker").args(&args).output().unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

fn docker_networks(cluster: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=orc.cluster={cluster}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn assignment(cluster: &str, id: &str, containers: serde_json::Value) -> Assignment {
    let task = json!({
        "taskArn": format!("{ARN}{cluster}/{id}"),
        "clusterArn": format!("arn:orc:ecs:local:000000000000:cluster/{cluster}"),
        "taskDefinitionArn": "arn:orc:ecs:local:000000000000:task-definition/t:1",
        "lastStatus": "PENDING",
        "desiredStatus": "RUNNING",
        "cpu": "0", "memory": "0", "containers": [], "group": "family:t",
        "version": 1, "launchType": "EC2", "healthStatus": "UNKNOWN", "createdAt": 0.0
    });
    Assignment {
        task: serde_json::from_value(task).unwrap(),
        task_definition: serde_json::from_value(
            json!({"family": "t", "containerDefinitions": containers}),
        )
        .unwrap(),
    }
}

fn arn(cluster: &str, id: &str) -> String {
    format!("{ARN}{cluster}/{id}")
}

/// A container definition of the test image, labelled `orc.test=1`.
fn container(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({
        "name": name,
        "image": IMAGE,
        "stopTimeout": 1,
        "dockerLabels": {"orc.test": "1"}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn config(server: &str, cluster: &str, data_dir: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(server, cluster, data_dir.to_path_buf());
    c.heartbeat_interval = Duration::from_millis(200);
    c.reconcile_interval = Duration::from_millis(250);
    c.max_backoff = Duration::from_millis(500);
    c
}

fn start_agent(config: AgentConfig, runtime: Arc<dyn Runtime>) -> tokio::task::JoinHandle<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "orc=info".into()),
        )
        .with_test_writer()
        .try_init();
    tokio::spawn(async move {
        worker::run(config, runtime, std::future::pending())
            .await
            .expect("the agent runs");
    })
}

async fn docker() -> Arc<dyn Runtime> {
    images::busybox_image(IMAGE);
    Arc::new(DockerRuntime::connect().await.expect("docker is reachable"))
}

// ------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_on_a_fake_runtime_all_reach_running() {
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::new());
    let mut cfg = config(&address, "scale", dir.path());
    cfg.probe_ports = false;
    let agent = start_agent(cfg, runtime.clone());
    let mut arns = Vec::new();
    {
        let mut s = plane.lock();
        for i in 0..100 {
            let defs = if i % 2 == 0 {
                json!([{"name": "web", "image": "app:1", "portMappings": [{"containerPort": 80}]}])
            } else {
                json!([
                    {"name": "db", "image": "db:1", "portMappings": [{"containerPort": 5432}]},
                    {"name": "web", "image": "app:1", "links": ["db"],
                     "portMappings": [{"containerPort": 80}],
                     "dependsOn": [{"containerName": "db", "condition": "START"}]}
                ])
            };
            let a = assignment("scale", &format!("task{i}"), defs);
            arns.push(a.task.task_arn.clone());
            s.tasks.insert(a.task.task_arn.clone(), a);
        }
        plane.bump(&mut s);
    }
    eventually(Duration::from_secs(20), "100 RUNNING reports", || async {
        arns.iter()
            .all(|a| plane.report(a, TaskStatus::Running).is_some())
            .then_some(())
    })
    .await;
    assert_eq!(runtime.running_count(), 150);
    // Every host port is distinct.
    let mut host_ports: Vec<u16> = arns
        .iter()
        .flat_map(|a| plane.report(a, TaskStatus::Running).unwrap().containers)
        .flat_map(|c| c.network_bindings)
        .map(|b| b.host_port)
        .collect();
    assert_eq!(host_ports.len(), 150);
    host_ports.sort();
    host_ports.dedup();
    assert_eq!(host_ports.len(), 150, "host ports collide");
    assert_eq!(runtime.list_networks(None).await.unwrap().len(), 50);
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_task_is_reachable_on_its_dynamic_host_port() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-web-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    plane.assign(assignment(
        &cluster,
        "web",
        json!([container(
            "web",
            json!({"portMappings": [{"containerPort": 80}]})
        )]),
    ));
    let task = arn(&cluster, "web");
    let running = eventually(Duration::from_secs(60), "the web task RUNNING", || async {
        plane.report(&task, TaskStatus::Running)
    })
    .await;
    let binding = &running.containers[0].network_bindings[0];
    assert_eq!(binding.container_port, 80);
    assert!((32768..=60999).contains(&binding.host_port), "{binding:?}");
    let port = binding.host_port;
    let page = eventually(Duration::from_secs(30), "the page", || async {
        http_get(port).await.filter(|b| b.contains("hello from"))
    })
    .await;
    assert!(page.contains("200"), "{page}");

    // Stop it: STOPPED is reported; the container is kept, exited, for the
    // task cleanup wait (an hour by default).
    plane.stop(&task);
    eventually(Duration::from_secs(30), "STOPPED", || async {
        plane.report(&task, TaskStatus::Stopped)
    })
    .await;
    assert_eq!(docker_ids(&cluster, "status=exited").len(), 1);
    assert!(docker_ids(&cluster, "status=running").is_empty());
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn essential_exit_stops_the_task_with_exit_codes() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-ess-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    plane.assign(assignment(
        &cluster,
        "ess",
        json!([
            container("main", json!({"command": ["sh", "-c", "sleep 2; exit 3"]})),
            container(
                "side",
                json!({"essential": false, "command": ["sleep", "600"]})
            )
        ]),
    ));
    let task = arn(&cluster, "ess");
    let stopped = eventually(Duration::from_secs(60), "STOPPED", || async {
        plane.report(&task, TaskStatus::Stopped)
    })
    .await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    let main = &stopped.containers[0];
    let side = &stopped.containers[1];
    assert_eq!(
        (main.container_name.as_str(), main.exit_code),
        ("main", Some(3))
    );
    assert_eq!(side.container_name, "side");
    assert!(
        matches!(side.exit_code, Some(137) | Some(143)),
        "the side container was stopped: {side:?}"
    );
    assert!(stopped.containers.iter().all(|c| c.status == "STOPPED"));
    assert!(plane.report(&task, TaskStatus::Running).is_some());
    // The network goes at once; the containers are kept for the cleanup
    // wait, their output readable.
    eventually(Duration::from_secs(30), "the network removed", || async {
        docker_networks(&cluster).is_empty().then_some(())
    })
    .await;
    assert_eq!(docker_ids(&cluster, "status=exited").len(), 2);
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_task_reach_each_other_by_name_and_link_alias() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-net-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    let probe = "for i in $(seq 1 100); do \
        wget -q -O - http://web/ | grep -q hello && wget -q -O - http://www/ | grep -q hello && exit 0; \
        sleep 0.2; done; exit 1";
    plane.assign(assignment(
        &cluster,
        "net",
        json!([
            container("web", json!({})),
            container(
                "client",
                json!({"essential": false, "links": ["web:www"],
                                       "command": ["sh", "-c", probe]})
            )
        ]),
    ));
    let task = arn(&cluster, "net");
    let report = eventually(Duration::from_secs(60), "the client to finish", || async {
        plane
            .reports(&task)
            .into_iter()
            .rev()
            .find(|r| r.containers[1].status == "STOPPED")
    })
    .await;
    assert_eq!(report.status, TaskStatus::Running, "{report:?}");
    assert_eq!(
        report.containers[1].exit_code,
        Some(0),
        "client could not reach web: {report:?}"
    );
    assert_eq!(report.containers[0].status, "RUNNING");
    assert_eq!(docker_networks(&cluster).len(), 1);
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_healthy_waits_for_the_health_check() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-hc-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    plane.assign(assignment(
        &cluster,
        "hc",
        json!([
            container("db", json!({
                "command": ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 600"],
                "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ready"], "interval": 1, "timeout": 1, "retries": 2}
            })),
            container("app", json!({
                "command": ["sleep", "600"],
                "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]
            }))
        ]),
    ));
    let task = arn(&cluster, "hc");
    let healthy = eventually(Duration::from_secs(60), "RUNNING and HEALTHY", || async {
        plane
            .reports(&task)
            .into_iter()
            .find(|r| r.status == TaskStatus::Running && r.health_status == "HEALTHY")
    })
    .await;
    assert_eq!(healthy.containers[0].health_status, "HEALTHY");
    assert_eq!(healthy.containers[1].status, "RUNNING");
    // app was not running before db was healthy.
    for r in plane.reports(&task) {
        if r.containers[1].status == "RUNNING" {
            assert_eq!(r.containers[0].health_status, "HEALTHY", "{r:?}");
        }
    }
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_containers_and_applies_stops_made_while_down() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-rs-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime.clone());
    plane.assign(assignment(
        &cluster,
        "keep",
        json!([
            container("web", json!({"portMappings": [{"containerPort": 80}]})),
            container("side", json!({"command": ["sleep", "600"]}))
        ]),
    ));
    plane.assign(assignment(
        &cluster,
        "gone",
        json!([container("web", json!({"command": ["sleep", "600"]}))]),
    ));
    let keep = arn(&cluster, "keep");
    let gone = arn(&cluster, "gone");
    eventually(Duration::from_secs(60), "both tasks RUNNING", || async {
        (plane.report(&keep, TaskStatus::Running).is_some()
            && plane.report(&gone, TaskStatus::Running).is_some())
        .then_some(())
    })
    .await;
    let port = plane.report(&keep, TaskStatus::Running).unwrap().containers[0].network_bindings[0]
        .host_port;
    let keep_ids = docker_ids(&cluster, &format!("label=orc.task-arn={keep}"));
    assert_eq!(keep_ids.len(), 2);

    // Kill the agent; stop one task while it is down.
    agent.abort();
    let _ = agent.await;
    plane.stop(&gone);
    let first_id = plane.lock().registrations[0].0.clone();

    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    let stopped = eventually(
        Duration::from_secs(60),
        "the stopped task STOPPED",
        || async { plane.report(&gone, TaskStatus::Stopped) },
    )
    .await;
    assert_eq!(stopped.containers[0].status, "STOPPED");
    assert_eq!(
        docker_ids(&cluster, &format!("label=orc.task-arn={gone}")).len(),
        1,
        "the stopped task's container is kept (exited) for the cleanup wait"
    );
    // The same instance, the same containers, no duplicates, the same port.
    let regs = plane.lock().registrations.clone();
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[1].0, first_id);
    assert_eq!(
        docker_ids(&cluster, &format!("label=orc.task-arn={keep}")),
        keep_ids
    );
    assert_eq!(docker_ids(&cluster, "status=running"), keep_ids);
    eventually(Duration::from_secs(30), "the kept page", || async {
        http_get(port).await.filter(|b| b.contains("hello from"))
    })
    .await;
    agent.abort();
}

/// A container that ignores SIGTERM: only the stop timeout's SIGKILL ends it.
fn deaf(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = container(
        name,
        json!({"command": ["sh", "-c", "trap '' TERM; sleep 1000 & wait; sleep 1000"]}),
    );
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Docker's FinishedAt of a container, in epoch milliseconds.
fn finished_at_ms(id: &str) -> u64 {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.FinishedAt}}", id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    orc::agent::runtime::parse_rfc3339_ms(&text)
        .unwrap_or_else(|| panic!("container {id} has no FinishedAt: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_in_flight_never_delay_a_new_task_on_a_fake_runtime() {
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::new());
    let mut cfg = config(&address, "lanes", dir.path());
    cfg.probe_ports = false;
    let agent = start_agent(cfg, runtime.clone());
    let mut arns = Vec::new();
    {
        let mut s = plane.lock();
        for i in 0..100 {
            let a = assignment(
                "lanes",
                &format!("old{i}"),
                json!([{"name": "web", "image": "app:1"}]),
            );
            arns.push(a.task.task_arn.clone());
            s.tasks.insert(a.task.task_arn.clone(), a);
        }
        plane.bump(&mut s);
    }
    eventually(Duration::from_secs(30), "100 RUNNING reports", || async {
        arns.iter()
            .all(|a| plane.report(a, TaskStatus::Running).is_some())
            .then_some(())
    })
    .await;
    // Every stop now lasts until released, like containers sitting out a
    // long stop timeout.
    runtime.hold_stops(true);
    {
        let mut s = plane.lock();
        for a in s.tasks.values_mut() {
            a.task.desired_status = TaskStatus::Stopped;
        }
        plane.bump(&mut s);
    }
    // All of them are stopping at once (no batch budget serialises them).
    eventually(Duration::from_secs(30), "100 stops in flight", || async {
        (runtime.stops_in_flight() == 100).then_some(())
    })
    .await;
    let new = assignment("lanes", "new", json!([{"name": "web", "image": "app:1"}]));
    let new_arn = new.task.task_arn.clone();
    plane.assign(new);
    eventually(Duration::from_secs(30), "the new task RUNNING", || async {
        plane.report(&new_arn, TaskStatus::Running)
    })
    .await;
    assert_eq!(
        runtime.stops_in_flight(),
        100,
        "the new task started while every stop was still in flight"
    );
    assert!(arns
        .iter()
        .all(|a| plane.report(a, TaskStatus::Stopped).is_none()));
    runtime.hold_stops(false);
    eventually(Duration::from_secs(30), "100 STOPPED reports", || async {
        arns.iter()
            .all(|a| plane.report(a, TaskStatus::Stopped).is_some())
            .then_some(())
    })
    .await;
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_sigterm_ignoring_containers_stop_together_before_what_they_depend_on() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-par-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    // Three apps depend on db; every container ignores SIGTERM, so each
    // stop lasts its whole 3 s stop timeout.
    let after_db = json!({"stopTimeout": 3,
        "dependsOn": [{"containerName": "db", "condition": "START"}]});
    plane.assign(assignment(
        &cluster,
        "par",
        json!([
            deaf("db", json!({"stopTimeout": 3})),
            deaf("app1", after_db.clone()),
            deaf("app2", after_db.clone()),
            deaf("app3", after_db)
        ]),
    ));
    let task = arn(&cluster, "par");
    eventually(Duration::from_secs(60), "RUNNING", || async {
        plane.report(&task, TaskStatus::Running)
    })
    .await;
    plane.stop(&task);
    let stopped = eventually(Duration::from_secs(60), "STOPPED", || async {
        plane.report(&task, TaskStatus::Stopped)
    })
    .await;
    // Docker's FinishedAt of each container (kept for the cleanup wait).
    let finished: BTreeMap<String, u64> = stopped
        .containers
        .iter()
        .map(|c| {
            let id = c.runtime_id.clone().expect("a runtime id");
            (c.container_name.clone(), finished_at_ms(&id))
        })
        .collect();
    let apps: Vec<u64> = ["app1", "app2", "app3"]
        .iter()
        .map(|n| finished[*n])
        .collect();
    let (first, last) = (*apps.iter().min().unwrap(), *apps.iter().max().unwrap());
    // A stop of a SIGTERM-ignoring container lasts at least its 3 s
    // timeout, so stops one after another would finish at least 3 s
    // apart: finishing closer than that, the three overlapped.
    assert!(
        last - first < 3000,
        "the apps' stops did not overlap: finished at {finished:?}"
    );
    // db waited for its dependents: its stop began after theirs ended.
    assert!(
        finished["db"] >= last + 2500,
        "db stopped before its dependents were gone: {finished:?}"
    );
    for c in &stopped.containers {
        assert_eq!(c.exit_code, Some(137), "killed after the timeout: {c:?}");
    }
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_starts_while_twenty_tasks_sit_out_their_stop_timeouts() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-lane-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    // More stopping tasks than the old per-task budget (16) let run.
    let arns: Vec<String> = (0..20)
        .map(|i| {
            let a = assignment(
                &cluster,
                &format!("old{i}"),
                json!([deaf("main", json!({"stopTimeout": 30}))]),
            );
            let arn = a.task.task_arn.clone();
            plane.assign(a);
            arn
        })
        .collect();
    eventually(Duration::from_secs(120), "20 tasks RUNNING", || async {
        arns.iter()
            .all(|a| plane.report(a, TaskStatus::Running).is_some())
            .then_some(())
    })
    .await;
    for a in &arns {
        plane.stop(a);
    }
    let new = assignment(&cluster, "new", json!([container("web", json!({}))]));
    let new_arn = new.task.task_arn.clone();
    plane.assign(new);
    eventually(Duration::from_secs(60), "the new task RUNNING", || async {
        plane.report(&new_arn, TaskStatus::Running)
    })
    .await;
    // Every old task ignores SIGTERM for 30 s: none has stopped yet, so the
    // new task started while all twenty stops were in flight.
    let stopped: Vec<&String> = arns
        .iter()
        .filter(|a| plane.report(a, TaskStatus::Stopped).is_some())
        .collect();
    assert!(
        stopped.is_empty(),
        "the new task waited for stops: {} had finished first",
        stopped.len()
    );
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_tasks_container_is_kept_for_the_cleanup_wait_then_removed() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-keep-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&address, &cluster, dir.path());
    cfg.task_cleanup_wait = Duration::from_secs(4);
    let agent = start_agent(cfg, runtime.clone());
    plane.assign(assignment(
        &cluster,
        "crash",
        json!([container(
            "main",
            json!({"command": ["sh", "-c", "echo the last words; exit 3"]})
        )]),
    ));
    let task = arn(&cluster, "crash");
    let stopped = eventually(Duration::from_secs(60), "STOPPED", || async {
        plane.report(&task, TaskStatus::Stopped)
    })
    .await;
    assert_eq!(stopped.containers[0].exit_code, Some(3));
    let id = stopped.containers[0].runtime_id.clone().unwrap();
    // Kept: its output is still there.
    use futures::StreamExt as _;
    let lines: Vec<String> = runtime
        .logs(&id, false, None, None)
        .filter_map(|l| async move { l.ok().map(|l| l.text) })
        .collect()
        .await;
    assert_eq!(lines, ["the last words"]);
    assert_eq!(docker_ids(&cluster, ""), vec![id]);
    // Removed once the wait is over.
    eventually(Duration::from_secs(30), "the container removed", || async {
        docker_ids(&cluster, "").is_empty().then_some(())
    })
    .await;
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_essential_container_removed_by_hand_stops_the_task_and_is_not_recreated() {
    if skip() {
        return;
    }
    let _serial = docker_lock().lock().await;
    let cluster = format!("agent-rm-{}", suffix());
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
    };
    let runtime = docker().await;
    let plane = Plane::new();
    let (address, _server) = plane.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(config(&address, &cluster, dir.path()), runtime);
    plane.assign(assignment(
        &cluster,
        "rm",
        json!([
            container("web", json!({})),
            container(
                "side",
                json!({"essential": false, "command": ["sleep", "600"]})
            )
        ]),
    ));
    let task = arn(&cluster, "rm");
    let running = eventually(Duration::from_secs(60), "RUNNING", || async {
        plane.report(&task, TaskStatus::Running)
    })
    .await;
    let web = running.containers[0].runtime_id.clone().unwrap();
    let out = Command::new("docker")
        .args(["rm", "-f", &web])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stopped = eventually(Duration::from_secs(60), "STOPPED", || async {
        plane.report(&task, TaskStatus::Stopped)
    })
    .await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task was removed outside orc")
    );
    assert!(
        stopped.containers[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("removed outside orc")),
        "{stopped:?}"
    );
    // No container named web came back; side was stopped.
    let names = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.State}}",
            "--filter",
            &format!("label=orc.cluster={cluster}"),
        ])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&names.stdout).to_string();
    assert!(!names.contains("-web "), "web was recreated: {names}");
    assert!(names.contains("-side exited"), "{names}");
    agent.abort();
}
