//! The agent's main loop (`orc agent`): an ECS container instance.
//!
//! [`run`] registers the instance (reusing the id saved in the data dir),
//! then runs side by side until `shutdown`:
//! * heartbeats every `heartbeat_interval`;
//! * the assignment watch: a server stream of every task assigned to this
//!   instance, resent whole on each change; when it breaks the agent
//!   reconnects with backoff and resumes after the last revision seen, and
//!   meanwhile keeps reconciling against the last snapshot it has;
//! * the engine's event stream, which only wakes the reconciler up;
//! * the reconciler: observe the engine, [`reconcile`], hand each task's
//!   actions to the [`Executor`] (tasks in parallel), queue the reports;
//! * the reporter: sends queued task state changes, retrying with backoff
//!   (the newest report per task replaces an unsent older one).
//!
//! Shutting down leaves every container running, as the ECS agent does: a
//! restarted agent adopts them by their labels.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::agent::config::AgentConfig;
use crate::agent::executor::{Executor, Lanes, Outcome};
use crate::agent::ports;
use crate::agent::reconcile::{
    labels, reconcile, Action, Busy, Input, Memory, ObservedContainer, ObservedNetwork,
};
use crate::agent::runtime::{
    normalize_architecture, parse_rfc3339_ms, ContainerState, ContainerStatus, NodeResources,
    Runtime,
};
use crate::model::{Assignment, Attribute, InstanceRegistration, TaskStateChange, TaskStatus};
use crate::vocab::ids::last_segment;
use crate::vocab::time::now_ms;
use crate::wire::proto::agent_api_client::AgentApiClient;
use crate::wire::proto::{
    HeartbeatRequest, RegisterInstanceRequest, TaskStateReport, WatchAssignmentsRequest,
};
use crate::wire::status::from_status;
use crate::wire::{AGENT_SESSION_LEASE, LIVE_AGENT_REFUSAL};
use crate::{Error, Result};

/// Host ports ECS reserves on every instance.
pub const RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

/// The file in the data dir that remembers the instance.
pub const STATE_FILE: &str = "agent.json";

/// What the data dir remembers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedInstance {
    pub cluster: String,
    pub container_instance_id: String,
    pub container_instance_arn: String,
}

/// Reads `agent.json`; None when the dir is new.
pub fn load_instance(data_dir: &Path) -> Result<Option<SavedInstance>> {
    let path = data_dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is corrupt ({e}): remove it to register as a new container instance",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::InvalidInput(format!(
            "cannot read {}: {e}: check the permissions of --data-dir",
            path.display()
        ))),
    }
}

fn save_instance(data_dir: &Path, saved: &SavedInstance) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::InvalidInput(format!(
            "cannot write to the agent data dir {}: {e}: check --data-dir",
            data_dir.display()
        ))
    };
    std::fs::create_dir_all(data_dir).map_err(fail)?;
    let tmp = data_dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(saved).expect("serializable");
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, data_dir.join(STATE_FILE)).map_err(fail)
}

/// The address this machine reaches its servers from: where the load
/// balancer's proxies (on the servers and other agents) reach the host
/// ports of its tasks. Found by connecting a UDP socket (no packet is
/// sent); `--attribute orc.host-address=IP` overrides it.
pub fn host_address(servers: &[String]) -> Option<String> {
    use std::net::ToSocketAddrs as _;
    servers.iter().find_map(|server| {
        let target = server.to_socket_addrs().ok()?.next()?;
        let local = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = std::net::UdpSocket::bind(local).ok()?;
        socket.connect(target).ok()?;
        Some(socket.local_addr().ok()?.ip().to_string())
    })
}

/// What the agent registers: resources from the engine, ECS's built-in
/// attributes, then the custom ones (which win on equal names).
pub fn registration(config: &AgentConfig, node: &NodeResources) -> InstanceRegistration {
    // The engine reports the userland's architecture (a 32-bit Raspberry Pi
    // OS on a 64-bit kernel is arm/v7), which is what images must match.
    let arch = if node.architecture.is_empty() {
        normalize_architecture(std::env::consts::ARCH)
    } else {
        normalize_architecture(&node.architecture)
    };
    let hostname = if node.hostname.is_empty() {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    } else {
        node.hostname.clone()
    };
    let mut attrs: BTreeMap<String, String> = BTreeMap::from([
        ("ecs.cpu-architecture".to_string(), arch),
        ("ecs.os-type".to_string(), "linux".to_string()),
        ("ecs.instance-type".to_string(), "pi".to_string()),
        ("orc.hostname".to_string(), hostname.clone()),
    ]);
    if let Some(address) = host_address(&config.servers) {
        attrs.insert(
            crate::model::elbv2::HOST_ADDRESS_ATTRIBUTE.to_string(),
            address,
        );
    }
    for (k, v) in &config.attributes {
        attrs.insert(k.clone(), v.clone());
    }
    let memory_mib = i64::try_from(node.memory_bytes / (1024 * 1024)).unwrap_or(i64::MAX);
    InstanceRegistration {
        hostname,
        cpu: 1024 * i64::from(node.cpus),
        memory_mib: memory_mib
            .saturating_sub(i64::try_from(config.reserved_memory_mib).unwrap_or(i64::MAX))
            .max(0),
        reserved_ports: RESERVED_PORTS.to_vec(),
        attributes: attrs
            .into_iter()
            .map(|(name, value)| Attribute {
                name,
                value: Some(value),
            })
            .collect(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        docker_version: node.docker_version.clone(),
    }
}

/// Doubling pause, capped.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
    fn pause(&mut self) -> Duration {
        let p = self.next;
        self.next = (self.next * 2).min(self.max);
        p
    }
}

/// The agent's connection to the control plane: the server it talks to now,
/// and every server it knows of (those configured, then each member's
/// address the control plane names in heartbeat answers). When a call finds
/// its server unreachable, frozen or without a leader, the agent moves to
/// the next server in the list; every loop then uses the new one.
#[derive(Clone)]
struct Conn {
    state: Arc<Mutex<ConnState>>,
    /// Bumped on every move, so a stream on the old server is re-opened.
    moved: watch::Sender<u64>,
}

struct ConnState {
    /// The certificate every new connection presents.
    identity: crate::tls::SharedIdentity,
    /// The addresses given with `--server`, kept as fallbacks.
    configured: Vec<String>,
    /// Every known server: the members' addresses, then configured extras.
    servers: Vec<String>,
    /// The server in use.
    current: String,
    /// Bumped on every move; a failure seen on an older one moves nothing.
    generation: u64,
    client: AgentApiClient<Channel>,
}

impl Conn {
    fn new(servers: &[String], identity: crate::tls::SharedIdentity) -> Result<Conn> {
        let first = servers
            .first()
            .ok_or_else(|| Error::InvalidInput("no control-plane address was given".into()))?;
        let state = ConnState {
            configured: servers.to_vec(),
            servers: servers.to_vec(),
            current: first.clone(),
            generation: 0,
            client: Self::make(first, &identity)?,
            identity,
        };
        Ok(Conn {
            state: Arc::new(Mutex::new(state)),
            moved: watch::channel(0).0,
        })
    }

    fn make(
        server: &str,
        identity: &crate::tls::SharedIdentity,
    ) -> Result<AgentApiClient<Channel>> {
        Ok(
            AgentApiClient::new(crate::wire::channel::channel_following(server, identity)?)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client for the server in use, and the generation it belongs to.
    fn client(&self) -> (u64, AgentApiClient<Channel>) {
        let state = self.lock();
        (state.generation, state.client.clone())
    }

    /// The server in use.
    fn server(&self) -> String {
        self.lock().current.clone()
    }

    /// Remembers the control plane's members (from a heartbeat answer).
    fn learn(&self, members: &[String]) {
        if members.is_empty() {
            return;
        }
        let mut state = self.lock();
        let mut servers: Vec<String> = members.to_vec();
        for configured in &state.configured {
            if !servers.contains(configured) {
                servers.push(configured.clone());
            }
        }
        if servers != state.servers {
            tracing::info!(servers = %servers.join(","), "control-plane servers");
            state.servers = servers;
        }
    }

    /// Calls `call` on the server in use, for at most `timeout`; a failure
    /// that says the server is gone (or frozen) moves to the next server.
    async fn call<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T>
    where
        F: FnOnce(AgentApiClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let (generation, client) = self.client();
        match tokio::time::timeout(timeout, call(client)).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(self.failed(generation, status)),
            Err(_) => Err(self.failed(
                generation,
                tonic::Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )),
            )),
        }
    }

    /// Our error for a failed call made on `generation`'s server; follows a
    /// leader hint, and moves to the next known server when this one cannot
    /// serve (unreachable, frozen, or cut off from the leader).
    fn failed(&self, generation: u64, status: tonic::Status) -> Error {
        let error = from_status(status);
        let mut state = self.lock();
        if state.generation != generation {
            return error;
        }
        let target = match &error {
            Error::NotLeader {
                leader_address: Some(leader),
            } if *leader != state.current => Some(leader.clone()),
            Error::NotLeader { .. } | Error::Unavailable(_) | Error::Internal(_) => {
                let at = state.servers.iter().position(|s| *s == state.current);
                let next = match at {
                    Some(i) => state.servers[(i + 1) % state.servers.len()].clone(),
                    None => state.servers[0].clone(),
                };
                (next != state.current).then_some(next)
            }
            _ => None,
        };
        if let Some(target) = target {
            match Self::make(&target, &state.identity) {
                Ok(client) => {
                    tracing::warn!(from = %state.current, to = %target, %error, "moving to another control-plane server");
                    state.current = target;
                    state.client = client;
                    state.generation += 1;
                    let generation = state.generation;
                    drop(state);
                    self.moved.send_replace(generation);
                }
                Err(e) => {
                    tracing::warn!(server = %target, error = %e, "cannot use this server address")
                }
            }
        }
        error
    }
}

/// Reports waiting to be sent: the newest per task.
#[derive(Default)]
struct ReportQueue {
    pending: Mutex<BTreeMap<String, TaskStateChange>>,
    notify: Notify,
}

impl ReportQueue {
    fn push(&self, report: TaskStateChange) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(report.task_arn.clone(), report);
        self.notify.notify_one();
    }
}

struct Shared {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    conn: Conn,
    instance_id: String,
    /// This process's random agent session (see `RegisterInstanceRequest`).
    session: String,
    reports: ReportQueue,
    running_task_ids: Mutex<Vec<String>>,
    wake: Notify,
    /// The trust the control plane's heartbeat answers name (a CA rotation
    /// makes the renewal loop renew).
    trust: watch::Sender<String>,
}

/// Runs the agent until `shutdown` completes. Containers are left running.
///
/// Fails only when the configuration or the data dir is unusable; an
/// unreachable control plane or engine is waited for.
pub async fn run(
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    tokio::select! {
        r = run_inner(config, runtime) => r,
        () = shutdown => {
            tracing::info!("agent stopping; containers keep running");
            Ok(())
        }
    }
}

async fn run_inner(config: AgentConfig, runtime: Arc<dyn Runtime>) -> Result<()> {
    let saved = load_instance(&config.data_dir)?;
    if let Some(s) = &saved {
        if s.cluster != config.cluster {
            return Err(Error::InvalidInput(format!(
                "the agent data dir {} belongs to container instance {} of cluster {:?}: pass --cluster {} or another --data-dir",
                config.data_dir.display(),
                s.container_instance_id,
                s.cluster,
                s.cluster
            )));
        }
    }
    let conn = Conn::new(&config.servers, config.identity.clone())?;
    // The instance the agent's certificate names is the one it registers.
    let certified_instance = config
        .identity
        .get()
        .and_then(|tls| match tls.identity.clone() {
            Some(crate::vocab::principal::Principal::Agent { instance }) => Some(instance),
            _ => None,
        });
    let (trust, trust_seen) = watch::channel(String::new());
    if certified_instance.is_some() {
        let server_conn = conn.clone();
        tokio::spawn(crate::agent::identity::renew_loop(
            config.data_dir.clone(),
            config.identity.clone(),
            move || server_conn.server(),
            trust_seen,
        ));
    }
    let mut backoff = Backoff::new(config.max_backoff);

    // The engine's description of the node.
    let node = loop {
        match runtime.info().await {
            Ok(node) => break node,
            Err(e) => {
                tracing::warn!(error = %e, "cannot describe the node; retrying");
                tokio::time::sleep(backoff.pause()).await;
            }
        }
    };
    let reg = registration(&config, &node);
    let instance_json = serde_json::to_string(&reg).expect("serializable");
    // This process's session: the control plane lets one live agent own an
    // instance id, and tells a restart (the old session went quiet) from a
    // copy of the data dir (the old session still heartbeats).
    let session = format!("{:032x}", rand::random::<u128>());

    // Register (or re-register with the saved id).
    backoff.reset();
    let mut warned = false;
    let mut refused_since: Option<std::time::Instant> = None;
    let response = loop {
        let request = RegisterInstanceRequest {
            cluster: config.cluster.clone(),
            container_instance_id: certified_instance.clone().unwrap_or_else(|| {
                saved
                    .as_ref()
                    .map(|s| s.container_instance_id.clone())
                    .unwrap_or_default()
            }),
            instance_json: instance_json.clone(),
            agent_session: session.clone(),
        };
        let answer = conn
            .call(PROPOSAL_TIMEOUT, |mut client| async move {
                client.register_container_instance(request).await
            })
            .await;
        match answer {
            Ok(r) => break r,
            Err(Error::Conflict(message)) if message.contains(LIVE_AGENT_REFUSAL) => {
                let since = *refused_since.get_or_insert_with(|| {
                    tracing::warn!(error = %message, "another agent holds this container instance; waiting for its heartbeats to stop (an agent restarted after a crash waits here a few seconds)");
                    std::time::Instant::now()
                });
                if since.elapsed() > CLONE_WAIT {
                    return Err(Error::Conflict(format!(
                        "the control plane refused to register this agent: {message}; {}",
                        copied_data_dir_hint(&config.data_dir)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) if !e.is_retryable() => {
                return Err(Error::InvalidInput(format!(
                    "the control plane at {} refused to register this instance: {e}",
                    conn.server()
                )));
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(server = %conn.server(), error = %e, "cannot register yet; retrying until the control plane answers");
                    warned = true;
                }
                tokio::time::sleep(backoff.pause()).await;
            }
        }
    };
    let saved = SavedInstance {
        cluster: config.cluster.clone(),
        container_instance_id: response.container_instance_id.clone(),
        container_instance_arn: response.container_instance_arn.clone(),
    };
    save_instance(&config.data_dir, &saved)?;
    tracing::info!(instance = %saved.container_instance_id, cluster = %config.cluster, arn = %saved.container_instance_arn, server = %conn.server(), "registered");

    let shared = Arc::new(Shared {
        config,
        runtime,
        conn,
        instance_id: saved.container_instance_id,
        session,
        reports: ReportQueue::default(),
        running_task_ids: Mutex::new(Vec::new()),
        wake: Notify::new(),
        trust,
    });
    let (assign_tx, assign_rx) = watch::channel::<Option<Arc<Vec<Assignment>>>>(None);
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    tasks.spawn(heartbeat_loop(shared.clone()));
    tasks.spawn(forever(watch_loop(shared.clone(), assign_tx)));
    tasks.spawn(forever(events_loop(shared.clone())));
    tasks.spawn(forever(report_loop(shared.clone())));
    tasks.spawn(forever(reconcile_loop(shared.clone(), assign_rx)));
    tasks.spawn(forever(crate::agent::logs::serve(
        shared.runtime.clone(),
        shared.config.cluster.clone(),
        shared.instance_id.clone(),
        {
            let shared = shared.clone();
            move || shared.conn.client().1
        },
        shared.config.max_backoff,
    )));
    // The loops run until the agent must stop (another agent took the
    // instance over); dropping the set (on shutdown) aborts them.
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_panic() => {
                return Err(Error::Internal(format!("an agent loop panicked: {e}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// How long a registration or a task report may take on one server.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(9);

/// How long a registration refused because another agent is live is
/// retried: longer than the lease a crashed predecessor's session keeps, so
/// only a second running agent (a copied data dir) is refused for good.
const CLONE_WAIT: Duration = Duration::from_secs(2 * AGENT_SESSION_LEASE.as_secs());

/// What to do about a data dir another running agent also uses.
fn copied_data_dir_hint(data_dir: &Path) -> String {
    format!(
        "the agent data dir {} was probably copied from another machine (an SD card image) whose agent is running: to register this machine as a new container instance, delete {} (or start it with an empty --data-dir); if both agents run on one machine, stop one",
        data_dir.display(),
        data_dir.join(STATE_FILE).display()
    )
}

async fn forever(loop_future: impl Future<Output = ()>) -> Result<()> {
    loop_future.await;
    Ok(())
}

async fn heartbeat_loop(shared: Arc<Shared>) -> Result<()> {
    let mut reachable = true;
    let mut failures = 0usize;
    loop {
        let ids = shared
            .running_task_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let request = HeartbeatRequest {
            cluster: shared.config.cluster.clone(),
            container_instance_id: shared.instance_id.clone(),
            running_task_ids: ids,
            agent_session: shared.session.clone(),
        };
        let answer = shared
            .conn
            .call(shared.config.call_timeout, |mut client| async move {
                client.heartbeat(request).await
            })
            .await;
        let pause = match answer {
            Ok(answer) => {
                shared.conn.learn(&answer.servers);
                shared.trust.send_if_modified(|seen| {
                    let changed = *seen != answer.trust;
                    if changed {
                        seen.clone_from(&answer.trust);
                    }
                    changed
                });
                if !reachable {
                    tracing::info!(server = %shared.conn.server(), "the control plane answers heartbeats again");
                }
                reachable = true;
                failures = 0;
                shared.config.heartbeat_interval
            }
            Err(Error::Conflict(message)) => {
                return Err(Error::Conflict(format!(
                    "this agent stops: {message}; {}",
                    copied_data_dir_hint(&shared.config.data_dir)
                )));
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(error = %e, "heartbeat failed; trying the next server (containers keep running)");
                }
                reachable = false;
                failures += 1;
                // Try every known server at once before waiting a whole
                // interval: the heartbeat grace is only a few intervals.
                let known = shared.conn.lock().servers.len();
                if failures < known {
                    Duration::from_millis(50)
                } else {
                    failures = 0;
                    shared.config.heartbeat_interval
                }
            }
        };
        tokio::time::sleep(pause).await;
    }
}

async fn watch_loop(shared: Arc<Shared>, tx: watch::Sender<Option<Arc<Vec<Assignment>>>>) {
    let mut after = 0u64;
    let mut backoff = Backoff::new(shared.config.max_backoff);
    loop {
        let mut moved = shared.conn.moved.subscribe();
        let request = WatchAssignmentsRequest {
            cluster: shared.config.cluster.clone(),
            container_instance_id: shared.instance_id.clone(),
            after_revision: after,
        };
        let (generation, mut client) = shared.conn.client();
        let opened = tokio::time::timeout(
            shared.config.call_timeout,
            client.watch_assignments(request),
        )
        .await;
        match opened {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        _ = moved.changed() => {
                            tracing::info!(server = %shared.conn.server(), "re-opening the assignment stream on another server");
                            backoff.reset();
                            break;
                        }
                    };
                    match message {
                        Ok(Some(msg)) => {
                            backoff.reset();
                            after = after.max(msg.revision);
                            let mut list = Vec::with_capacity(msg.tasks_json.len());
                            for json in &msg.tasks_json {
                                match serde_json::from_str::<Assignment>(json) {
                                    Ok(a) => list.push(a),
                                    Err(e) => {
                                        tracing::error!(error = %e, "ignoring an assignment the agent cannot read; is the agent older than the server?")
                                    }
                                }
                            }
                            tracing::debug!(
                                revision = msg.revision,
                                tasks = list.len(),
                                "assignments"
                            );
                            let _ = tx.send(Some(Arc::new(list)));
                        }
                        Ok(None) => {
                            let e = shared.conn.failed(
                                generation,
                                tonic::Status::unavailable(
                                    "the server ended the assignment stream",
                                ),
                            );
                            tracing::info!(error = %e, "the assignment stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            let e = shared.conn.failed(generation, status);
                            tracing::warn!(error = %e, "the assignment stream broke; reconnecting");
                            break;
                        }
                    }
                }
            }
            Ok(Err(status)) => {
                let e = shared.conn.failed(generation, status);
                tracing::debug!(error = %e, "cannot watch assignments yet");
            }
            Err(_) => {
                let e = shared.conn.failed(
                    generation,
                    tonic::Status::deadline_exceeded("the assignment stream did not open in time"),
                );
                tracing::debug!(error = %e, "cannot watch assignments yet");
            }
        }
        tokio::time::sleep(backoff.pause()).await;
    }
}

async fn events_loop(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(shared.config.max_backoff);
    let filter = format!("{}=1", labels::MANAGED);
    loop {
        let mut events = shared.runtime.events(Some(&filter));
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => {
                    backoff.reset();
                    shared.wake.notify_one();
                    // Docker sends `die` a moment before its container list
                    // says "exited": look again shortly so an exit is acted
                    // on in milliseconds, not at the next reconcile tick.
                    let later = shared.clone();
                    tokio::spawn(async move {
                        for pause in [50, 200, 500] {
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            later.wake.notify_one();
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "engine event stream failed");
                    break;
                }
            }
        }
        shared.wake.notify_one();
        tokio::time::sleep(backoff.pause()).await;
    }
}

/// Asks the control plane for a pull-only token for the cluster registry
/// (`AgentApi.GetRegistryToken`), for the engine to pull `orc.local/`
/// images with; without one the pull goes without a credential.
fn registry_auth(shared: Arc<Shared>) -> super::executor::RegistryAuthSource {
    Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            let request = crate::wire::proto::RegistryTokenRequest {
                container_instance_id: shared.instance_id.clone(),
            };
            let answer = shared
                .conn
                .call(PROPOSAL_TIMEOUT, |mut client| async move {
                    client.get_registry_token(request).await
                })
                .await;
            match answer {
                Ok(answer) if !answer.token.is_empty() => Some(super::runtime::RegistryAuth {
                    username: "AWS".into(),
                    password: answer.token,
                    server: shared.conn.server(),
                }),
                Ok(_) => None,
                Err(error) => {
                    tracing::debug!(%error, "no registry token; pulling without one");
                    None
                }
            }
        })
    })
}

/// Asks the control plane for a task's secrets (`AgentApi.GetTaskSecrets`)
/// when one of its containers is created. A control plane that cannot
/// answer now makes the start retry; a refusal fails the task's start.
fn task_secrets(shared: Arc<Shared>) -> super::executor::SecretSource {
    Arc::new(move |task_arn: String| {
        let shared = shared.clone();
        Box::pin(async move {
            let request = crate::wire::proto::TaskSecretsRequest {
                cluster: shared.config.cluster.clone(),
                container_instance_id: shared.instance_id.clone(),
                task_arn,
            };
            let answer = shared
                .conn
                .call(PROPOSAL_TIMEOUT, |mut client| async move {
                    client.get_task_secrets(request).await
                })
                .await;
            match answer {
                Ok(answer) => Ok(answer
                    .secrets
                    .into_iter()
                    .map(|s| (s.container, s.name, s.value))
                    .collect()),
                Err(e) if e.is_retryable() => Err(super::runtime::RuntimeError::Unavailable(
                    format!("cannot receive the task's secrets from the control plane: {e}"),
                )),
                Err(e) => Err(super::runtime::RuntimeError::CreateContainer(format!(
                    "the control plane refused the task's secrets: {e}"
                ))),
            }
        })
    })
}

async fn report_loop(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(shared.config.max_backoff);
    loop {
        let batch = std::mem::take(
            &mut *shared
                .reports
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut failed = false;
        for (arn, report) in batch {
            if failed {
                requeue(&shared, arn, report);
                continue;
            }
            let request = TaskStateReport {
                cluster: shared.config.cluster.clone(),
                container_instance_id: shared.instance_id.clone(),
                report_json: serde_json::to_string(&report).expect("serializable"),
            };
            let sent = shared
                .conn
                .call(PROPOSAL_TIMEOUT, |mut client| async move {
                    client.report_task_state(request).await
                })
                .await;
            match sent {
                Ok(_) => {
                    tracing::info!(task = %arn, status = report.status.as_str(), health = %report.health_status, "reported");
                }
                Err(e) => {
                    if e.is_retryable() {
                        tracing::debug!(task = %arn, error = %e, "report not delivered; will retry");
                        requeue(&shared, arn, report);
                        failed = true;
                    } else {
                        tracing::warn!(task = %arn, status = report.status.as_str(), error = %e, "the control plane refused a report");
                    }
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff.pause()).await;
        } else {
            backoff.reset();
            let empty = shared
                .reports
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if empty {
                shared.reports.notify.notified().await;
            }
        }
    }
}

/// Puts a report back unless a newer one for the task was queued meanwhile.
fn requeue(shared: &Shared, arn: String, report: TaskStateChange) {
    shared
        .reports
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(arn)
        .or_insert(report);
}

/// Lists the agent's containers and networks of this cluster; inspects a
/// container when its state changed or it has a health check to follow.
async fn observe(
    shared: &Shared,
    cache: &mut HashMap<String, ContainerStatus>,
) -> crate::agent::runtime::RuntimeResult<(Vec<ObservedContainer>, Vec<ObservedNetwork>)> {
    let rt = &shared.runtime;
    let cluster = shared.config.cluster.as_str();
    let filter = format!("{}=1", labels::MANAGED);
    // Containers and networks of this cluster are ours unless another
    // instance's label says otherwise: another agent may share this Docker
    // Engine (two instances on one machine).
    let ours = |tags: &BTreeMap<String, String>| {
        tags.get(labels::CLUSTER).map(String::as_str) == Some(cluster)
            && tags
                .get(labels::INSTANCE_ID)
                .is_none_or(|id| *id == shared.instance_id)
    };
    let list: Vec<_> = rt
        .list_containers(Some(&filter))
        .await?
        .into_iter()
        .filter(|s| ours(&s.labels))
        .collect();
    let stale: Vec<String> = list
        .iter()
        .filter(|s| match cache.get(&s.id) {
            None => true,
            Some(c) => {
                c.state != s.state
                    || (s.state == ContainerState::Running
                        && s.labels.contains_key(labels::HEALTH_CHECK))
            }
        })
        .map(|s| s.id.clone())
        .collect();
    let inspected: Vec<_> = futures::stream::iter(stale)
        .map(|id| async move { (id.clone(), rt.inspect_container(&id).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    for (id, r) in inspected {
        match r {
            Ok(status) => {
                cache.insert(id, status);
            }
            Err(e) if e.is_not_found() => {
                cache.remove(&id);
            }
            Err(e) => return Err(e),
        }
    }
    let ids: HashSet<&str> = list.iter().map(|s| s.id.as_str()).collect();
    cache.retain(|id, _| ids.contains(id.as_str()));
    let containers = list
        .iter()
        .filter_map(|s| {
            let st = cache.get(&s.id)?;
            Some(ObservedContainer {
                id: s.id.clone(),
                name: s.name.clone(),
                task_arn: s.labels.get(labels::TASK_ARN).cloned().unwrap_or_default(),
                container_name: s
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default(),
                state: st.state,
                exit_code: st.exit_code,
                health: st.health,
                error: st.error.clone(),
                oom_killed: st.oom_killed,
                host_ports: s
                    .labels
                    .get(labels::PORTS)
                    .map(|l| ports::decode(l))
                    .unwrap_or_default(),
                stop_timeout: Duration::from_secs(
                    s.labels
                        .get(labels::STOP_TIMEOUT)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(30),
                ),
                finished_at_ms: st.finished_at.as_deref().and_then(parse_rfc3339_ms),
            })
        })
        .collect();
    let networks = rt
        .list_networks(Some(&filter))
        .await?
        .into_iter()
        .filter(|n| ours(&n.labels))
        .map(|n| ObservedNetwork {
            task_arn: n.labels.get(labels::TASK_ARN).cloned().unwrap_or_default(),
            name: n.name,
            subnet: n.subnet,
        })
        .collect();
    Ok((containers, networks))
}

async fn reconcile_loop(
    shared: Arc<Shared>,
    mut assign_rx: watch::Receiver<Option<Arc<Vec<Assignment>>>>,
) {
    let config = &shared.config;
    let executor = Executor::with_lanes(
        shared.runtime.clone(),
        config.image_pull_behavior,
        Lanes::new(config.parallel_tasks, config.parallel_stops),
    )
    .with_registry({
        let conn = shared.conn.clone();
        Arc::new(move || conn.server())
    })
    .with_secrets(task_secrets(shared.clone()))
    .with_registry_auth(registry_auth(shared.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
    let mut memory = Memory::default();
    let mut busy = Busy::default();
    // What each batch in flight holds back: its ports and subnets.
    let mut held: HashMap<String, (Vec<ports::HostPort>, Vec<String>)> = HashMap::new();
    let mut assignments: Arc<Vec<Assignment>> = Arc::new(Vec::new());
    let mut cache = HashMap::new();
    let mut engine_down = false;
    let mut snapshot_arrived = false;
    let mut backoff = Backoff::new(config.max_backoff);
    let probe = config.probe_ports;
    let bindable = move |port: u16, proto| !probe || ports::can_bind(port, proto);

    loop {
        // Results of finished batches.
        while let Ok(outcome) = done_rx.try_recv() {
            apply_outcome(&mut memory, &mut busy, &mut held, outcome);
        }
        // Snapshot from the control plane.
        if std::mem::take(&mut snapshot_arrived) || assign_rx.has_changed().unwrap_or(false) {
            if let Some(list) = assign_rx.borrow_and_update().clone() {
                let arns: HashSet<&str> = list.iter().map(|a| a.task.task_arn.as_str()).collect();
                memory.failures.retain(|k, _| arns.contains(k.as_str()));
                memory.reported.retain(|k, _| arns.contains(k.as_str()));
                memory.finished.retain(|k| arns.contains(k.as_str()));
                memory.have_snapshot = true;
                assignments = list;
            }
        }

        let mut wait = config.reconcile_interval;
        match observe(&shared, &mut cache).await {
            Err(e) => {
                if !engine_down {
                    tracing::warn!(error = %e, "cannot observe containers; retrying");
                }
                engine_down = true;
                wait = backoff.pause();
            }
            Ok((containers, networks)) => {
                if engine_down {
                    tracing::info!("the container engine answers again; re-reporting every task");
                    memory.reported.clear();
                    engine_down = false;
                }
                backoff.reset();
                let plan = reconcile(&Input {
                    cluster: &config.cluster,
                    instance_id: &shared.instance_id,
                    assignments: &assignments,
                    containers: &containers,
                    networks: &networks,
                    memory: &memory,
                    busy: &busy,
                    subnet_pool: config.subnet_pool,
                    bindable: &bindable,
                    now_ms: now_ms(),
                    cleanup_wait: config.task_cleanup_wait,
                });
                for report in plan.reports {
                    let mut remembered = report.clone();
                    remembered.at_ms = 0;
                    if report.status == TaskStatus::Stopped {
                        memory.finished.insert(report.task_arn.clone());
                    }
                    memory.reported.insert(report.task_arn.clone(), remembered);
                    shared.reports.push(report);
                }
                for (arn, actions) in plan.work {
                    let mut hold = (Vec::new(), Vec::new());
                    for a in &actions {
                        match a {
                            Action::CreateContainer { spec, .. } => hold.0.extend(
                                spec.port_bindings.iter().map(|b| (b.host_port, b.protocol)),
                            ),
                            Action::CreateNetwork { subnet, .. } => {
                                hold.1.push(subnet.cidr.clone())
                            }
                            _ => {}
                        }
                    }
                    busy.ports.extend(hold.0.iter().copied());
                    busy.subnets.extend(hold.1.iter().cloned());
                    busy.tasks.insert(arn.clone());
                    held.insert(arn.clone(), hold);
                    let executor = executor.clone();
                    let done = done_tx.clone();
                    let shared = shared.clone();
                    // The executor's lanes bound the engine operations.
                    let span = tracing::debug_span!(
                        "task_work",
                        cluster = %shared.config.cluster,
                        instance = %shared.instance_id,
                    );
                    tokio::spawn(
                        async move {
                            let outcome = executor.run_batch(&arn, &actions).await;
                            let _ = done.send(outcome);
                            shared.wake.notify_one();
                        }
                        .instrument(span),
                    );
                }
                let mut running: Vec<String> = containers
                    .iter()
                    .filter(|c| c.state == ContainerState::Running)
                    .map(|c| last_segment(&c.task_arn).to_string())
                    .collect();
                running.sort();
                running.dedup();
                *shared
                    .running_task_ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = running;
            }
        }

        tokio::select! {
            r = assign_rx.changed() => {
                if r.is_err() {
                    // The watch loop is gone: the agent is shutting down.
                    return;
                }
                snapshot_arrived = true;
            }
            Some(outcome) = done_rx.recv() => {
                apply_outcome(&mut memory, &mut busy, &mut held, outcome);
            }
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn apply_outcome(
    memory: &mut Memory,
    busy: &mut Busy,
    held: &mut HashMap<String, (Vec<ports::HostPort>, Vec<String>)>,
    outcome: Outcome,
) {
    busy.tasks.remove(&outcome.task_arn);
    if let Some((ports, subnets)) = held.remove(&outcome.task_arn) {
        for p in ports {
            busy.ports.remove(&p);
        }
        for s in subnets {
            busy.subnets.remove(&s);
        }
    }
    if let Some(failure) = outcome.failure {
        memory
            .failures
            .entry(outcome.task_arn.clone())
            .or_insert(failure);
    }
    if let Some(subnet) = outcome.bad_subnet {
        memory.bad_subnets.insert(subnet);
    }
    if let Some(port) = outcome.taken_port {
        memory.taken_ports.insert(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeResources {
        NodeResources {
            cpus: 4,
            memory_bytes: 8 << 30,
            architecture: "arm/v7".into(),
            os_type: "linux".into(),
            kernel_version: "6.6.0-v8+".into(),
            docker_version: "27.0.1".into(),
            hostname: "pi-1".into(),
        }
    }

    #[test]
    fn registration_reports_resources_and_attributes() {
        let mut config = AgentConfig::new("x:1", "default", "/tmp/none".into());
        config.reserved_memory_mib = 192;
        config.attributes = vec![
            ("ecs.availability-zone".into(), "shelf-1".into()),
            ("ecs.instance-type".into(), "pi5".into()),
        ];
        let r = registration(&config, &node());
        assert_eq!(r.cpu, 4096);
        assert_eq!(r.memory_mib, 8192 - 192);
        assert_eq!(r.reserved_ports, vec![22, 2375, 2376, 51678, 51679]);
        assert_eq!(r.hostname, "pi-1");
        assert_eq!(r.docker_version, "27.0.1");
        let get = |n: &str| {
            r.attributes
                .iter()
                .find(|a| a.name == n)
                .and_then(|a| a.value.clone())
        };
        // The engine's (userland's) architecture wins over the kernel's.
        assert_eq!(get("ecs.cpu-architecture").as_deref(), Some("arm/v7"));
        assert_eq!(get("ecs.os-type").as_deref(), Some("linux"));
        assert_eq!(get("ecs.instance-type").as_deref(), Some("pi5"));
        assert_eq!(get("ecs.availability-zone").as_deref(), Some("shelf-1"));
        assert_eq!(get("orc.hostname").as_deref(), Some("pi-1"));
        assert_eq!(r.agent_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn saved_instance_round_trips_and_corruption_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_instance(dir.path()).unwrap(), None);
        let s = SavedInstance {
            cluster: "lab".into(),
            container_instance_id: "abc".into(),
            container_instance_arn: "arn:x".into(),
        };
        save_instance(&dir.path().join("sub"), &s).unwrap();
        assert_eq!(load_instance(&dir.path().join("sub")).unwrap(), Some(s));
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let e = load_instance(dir.path()).unwrap_err().to_string();
        assert!(e.contains("remove it"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let p: Vec<_> = (0..5).map(|_| b.pause().as_millis()).collect();
        assert_eq!(p, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.pause().as_millis(), 100);
    }
}
