//! [`DockerRuntime`]: the [`Runtime`] over a Docker Engine, through bollard.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, EventMessage,
    EventMessageTypeEnum, HealthConfig, HostConfig, HostConfigLogConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig, PortMap,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    ListNetworksOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::stream::{BoxStream, StreamExt};

use crate::agent::runtime::{
    image_with_tag, is_exec_format_error, normalize_architecture, ContainerId, ContainerSpec,
    ContainerState, ContainerStatus, ContainerSummary, HealthStatus, LogLine, LogStream,
    NetworkInfo, NodeResources, PortBinding, Protocol, RegistryAuth, Runtime, RuntimeError,
    RuntimeEvent, RuntimeEventKind, RuntimeResult, EXEC_FORMAT_MESSAGE,
};

/// Networks that Docker manages itself: no aliases, no creation.
const BUILTIN_NETWORKS: [&str; 4] = ["bridge", "host", "none", "default"];

/// A [`Runtime`] backed by the local Docker Engine.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects with the local defaults (DOCKER_HOST or the unix socket) and
    /// negotiates the API version, so older engines (e.g. 20.10, API 1.41) work.
    pub async fn connect() -> RuntimeResult<Self> {
        let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
        Self::from_client(docker).await
    }

    /// Negotiates the API version of an already configured client.
    pub async fn from_client(docker: Docker) -> RuntimeResult<Self> {
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        // Fail early, in plain words, when the daemon is not there.
        docker.ping().await.map_err(unavailable)?;
        Ok(Self { docker })
    }

    /// The underlying bollard client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

/// Any bollard error as "the daemon could not be reached".
fn unavailable(e: BollardError) -> RuntimeError {
    RuntimeError::Unavailable(e.to_string())
}

/// Errors that mean the daemon itself is unreachable.
fn connection_error(e: &BollardError) -> Option<RuntimeError> {
    match e {
        BollardError::SocketNotFoundError(_)
        | BollardError::HyperLegacyError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => Some(unavailable_ref(e)),
        _ => None,
    }
}

fn unavailable_ref(e: &BollardError) -> RuntimeError {
    RuntimeError::Unavailable(e.to_string())
}

/// (status code, message) of an error the daemon answered with.
fn server_error(e: &BollardError) -> Option<(u16, &str)> {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Some((*status_code, message.as_str())),
        _ => None,
    }
}

fn other(e: BollardError) -> RuntimeError {
    connection_error(&e).unwrap_or_else(|| RuntimeError::Other(message_of(&e)))
}

/// The daemon's own message when there is one, else the error's text.
fn message_of(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        e => e.to_string(),
    }
}

fn pull_error(image: &str, e: BollardError) -> RuntimeError {
    if let Some(err) = connection_error(&e) {
        return err;
    }
    classify_pull_message(image, &message_of(&e))
}

/// Turns a pull failure message into ImagePull or PlatformMismatch.
fn classify_pull_message(image: &str, message: &str) -> RuntimeError {
    // Docker: "no matching manifest for linux/arm64/v8 in the manifest list entries"
    let lower = message.to_ascii_lowercase();
    if let Some(pos) = lower.find("no matching manifest for ") {
        let rest = &message[pos + "no matching manifest for ".len()..];
        let platform = rest.split_whitespace().next().unwrap_or("this platform");
        let platform = platform.strip_suffix("/v8").unwrap_or(platform);
        return RuntimeError::PlatformMismatch {
            image: image.to_string(),
            platform: platform.to_string(),
        };
    }
    RuntimeError::ImagePull {
        image: image.to_string(),
        message: message.trim().trim_end_matches('.').to_string(),
    }
}

fn nanos(d: Duration) -> Option<i64> {
    if d.is_zero() {
        None
    } else {
        Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

const MIB: i64 = 1024 * 1024;

fn port_key(p: &PortBinding) -> String {
    format!("{}/{}", p.container_port, p.protocol)
}

/// Builds Docker's create body for a spec.
pub fn container_config(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed: HashMap<String, HashMap<(), ()>> = HashMap::new();
    let mut bindings: PortMap = HashMap::new();
    for p in &spec.port_bindings {
        exposed.insert(port_key(p), HashMap::new());
        let entry = bindings
            .entry(port_key(p))
            .or_insert_with(|| Some(Vec::new()));
        if let Some(v) = entry {
            v.push(bollard::models::PortBinding {
                host_ip: None,
                host_port: Some(p.host_port.to_string()),
            });
        }
    }

    let user_network = spec
        .network
        .as_deref()
        .filter(|n| !BUILTIN_NETWORKS.contains(n));

    let networking_config = user_network.map(|net| {
        let mut endpoint = EndpointSettings::default();
        if !spec.network_aliases.is_empty() {
            endpoint.aliases = Some(spec.network_aliases.clone());
        }
        if !spec.links.is_empty() {
            endpoint.links = Some(spec.links.clone());
        }
        NetworkingConfig {
            endpoints_config: Some(HashMap::from([(net.to_string(), endpoint)])),
        }
    });

    let host_config = HostConfig {
        cpu_shares: spec.cpu_shares.filter(|c| *c > 0),
        memory: spec.memory_limit_mib.filter(|m| *m > 0).map(|m| m * MIB),
        memory_reservation: spec
            .memory_reservation_mib
            .filter(|m| *m > 0)
            .map(|m| m * MIB),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode: spec.network.clone(),
        links: (user_network.is_none() && !spec.links.is_empty()).then(|| spec.links.clone()),
        log_config: Some(HostConfigLogConfig {
            typ: Some(
                spec.log_driver
                    .clone()
                    .unwrap_or_else(|| "json-file".to_string()),
            ),
            config: (!spec.log_options.is_empty()).then(|| {
                spec.log_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
        }),
        privileged: spec.privileged.then_some(true),
        readonly_rootfs: spec.readonly_root_filesystem.then_some(true),
        extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
        ..Default::default()
    };

    let healthcheck = spec.health_check.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: Some(i64::from(h.retries)),
        start_period: nanos(h.start_period),
        start_interval: None,
    });

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: spec.hostname.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_directory.clone(),
        env: (!spec.environment.is_empty()).then(|| {
            spec.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        }),
        cmd: spec.command.clone(),
        entrypoint: spec.entry_point.clone(),
        labels: (!spec.labels.is_empty()).then(|| {
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_timeout: (!spec.stop_timeout.is_zero())
            .then(|| i64::try_from(spec.stop_timeout.as_secs()).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

fn label_filters(kind: &str, label: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if let Some(l) = label {
        filters.insert("label".to_string(), vec![l.to_string()]);
    }
    if !kind.is_empty() {
        filters.insert("type".to_string(), vec![kind.to_string()]);
    }
    filters
}

fn host_ports(ports: Option<&PortMap>) -> Vec<PortBinding> {
    let mut out = BTreeSet::new();
    for (key, bindings) in ports.into_iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let (Ok(container_port), Ok(protocol)) = (port.parse::<u16>(), proto.parse::<Protocol>())
        else {
            continue;
        };
        for b in bindings.iter().flatten() {
            if let Some(Ok(host_port)) = b.host_port.as_deref().map(str::parse::<u16>) {
                out.insert(PortBinding {
                    container_port,
                    host_port,
                    protocol,
                });
            }
        }
    }
    out.into_iter().collect()
}

fn status_from_inspect(r: ContainerInspectResponse) -> ContainerStatus {
    let state = r.state.unwrap_or_default();
    let kind = match state.status {
        Some(s) => ContainerState::from_docker(s.as_ref()),
        None => None,
    }
    .unwrap_or(if state.running == Some(true) {
        ContainerState::Running
    } else {
        ContainerState::Created
    });
    let error = state.error.filter(|e| !e.is_empty()).map(|e| {
        if is_exec_format_error(&e) {
            EXEC_FORMAT_MESSAGE.to_string()
        } else {
            e
        }
    });
    let settings = r.network_settings.unwrap_or_default();
    let ip_address = settings
        .ip_address
        .clone()
        .filter(|ip| !ip.is_empty())
        .or_else(|| {
            settings
                .networks
                .iter()
                .flatten()
                .filter_map(|(_, ep)| ep.ip_address.clone())
                .find(|ip| !ip.is_empty())
        });
    let zero_time = |t: Option<String>| t.filter(|t| !t.starts_with("0001-01-01"));
    ContainerStatus {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        state: kind,
        exit_code: if kind.is_terminal() {
            state.exit_code
        } else {
            None
        },
        error,
        oom_killed: state.oom_killed.unwrap_or(false),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| HealthStatus::from_docker(s.as_ref()))
            .unwrap_or_default(),
        started_at: zero_time(state.started_at),
        finished_at: zero_time(state.finished_at),
        host_ports: host_ports(settings.ports.as_ref()),
        ip_address,
    }
}

fn log_line(out: LogOutput) -> Option<LogLine> {
    let (stream, bytes) = match out {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (LogStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (LogStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Some(LogLine {
        stream,
        text: text.to_string(),
    })
}

fn event_from_message(m: EventMessage) -> Option<RuntimeEvent> {
    if m.typ.is_some_and(|t| t != EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let action = m.action?;
    let actor = m.actor?;
    let container_id = actor.id?;
    let mut attributes = actor.attributes.unwrap_or_default();
    let kind = match action.as_str() {
        "start" => RuntimeEventKind::Start,
        "die" => RuntimeEventKind::Die {
            exit_code: attributes
                .get("exitCode")
                .and_then(|c| c.parse().ok())
                .unwrap_or(-1),
        },
        "oom" => RuntimeEventKind::Oom,
        a if a.starts_with("health_status") => {
            let status = a.split_once(':').map(|(_, s)| s).unwrap_or("");
            RuntimeEventKind::HealthStatus(HealthStatus::from_docker(status))
        }
        _ => return None,
    };
    // Docker mixes container labels with a few attributes of its own.
    for k in ["exitCode", "image", "name", "signal", "execDuration"] {
        attributes.remove(k);
    }
    Some(RuntimeEvent {
        container_id,
        kind,
        labels: attributes.into_iter().collect(),
    })
}

impl DockerRuntime {
    /// For a failed, exited container without a daemon error: the exec format
    /// error is only in its output (runc prints "exec /x: exec format error").
    async fn exec_format_in_logs(&self, id: &str) -> bool {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: "5".to_string(),
            ..Default::default()
        };
        let mut logs = self.docker.logs(id, Some(opts));
        while let Some(item) = logs.next().await {
            match item {
                Ok(out) => {
                    if is_exec_format_error(&out.to_string()) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn info(&self) -> RuntimeResult<NodeResources> {
        let info = self.docker.info().await.map_err(other)?;
        Ok(NodeResources {
            cpus: info.ncpu.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            memory_bytes: info
                .mem_total
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or(0),
            architecture: normalize_architecture(info.architecture.as_deref().unwrap_or("")),
            os_type: info.os_type.unwrap_or_else(|| "linux".into()),
            kernel_version: info.kernel_version.unwrap_or_default(),
            docker_version: info.server_version.unwrap_or_default(),
            hostname: info.name.unwrap_or_default(),
        })
    }

    async fn image_present(&self, image: &str) -> RuntimeResult<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if server_error(&e).is_some_and(|(c, _)| c == 404) => Ok(false),
            Err(e) => Err(other(e)),
        }
    }

    async fn pull_image(&self, image: &str, auth: Option<&RegistryAuth>) -> RuntimeResult<()> {
        let opts = CreateImageOptions {
            from_image: Some(image_with_tag(image)),
            ..Default::default()
        };
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: (!a.server.is_empty()).then(|| a.server.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(opts), None, credentials);
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error.filter(|e| !e.is_empty()) {
                        return Err(classify_pull_message(image, &err));
                    }
                }
                Err(e) => return Err(pull_error(image, e)),
            }
        }
        Ok(())
    }

    async fn create_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> RuntimeResult<String> {
        // API 1.41 does not refuse duplicate names by default: look first.
        let opts = ListNetworksOptions {
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![name.to_string()],
            )])),
        };
        let existing = self.docker.list_networks(Some(opts)).await.map_err(other)?;
        if let Some(n) = existing
            .into_iter()
            .find(|n| n.name.as_deref() == Some(name))
        {
            return Ok(n.id.unwrap_or_default());
        }
        let ipam = subnet.map(|s| Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(s.to_string()),
                gateway: gateway.map(str::to_string),
                ..Default::default()
            }]),
            options: None,
        });
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            ipam,
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        let created =
            self.docker
                .create_network(req)
                .await
                .map_err(|e| match connection_error(&e) {
                    Some(err) => err,
                    None => RuntimeError::Other(format!(
                        "cannot create network {name}: {}",
                        message_of(&e)
                    )),
                })?;
        Ok(created.id)
    }

    async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if server_error(&e).is_some_and(|(c, _)| c == 404) => Ok(()),
            Err(e) => Err(match connection_error(&e) {
                Some(err) => err,
                None => {
                    RuntimeError::Other(format!("cannot remove network {name}: {}", message_of(&e)))
                }
            }),
        }
    }

    async fn list_networks(&self, label: Option<&str>) -> RuntimeResult<Vec<NetworkInfo>> {
        let opts = ListNetworksOptions {
            filters: Some(label_filters("", label)),
        };
        let nets = self.docker.list_networks(Some(opts)).await.map_err(other)?;
        Ok(nets
            .into_iter()
            .map(|n| {
                let cfg = n
                    .ipam
                    .and_then(|i| i.config)
                    .and_then(|c| c.into_iter().next());
                NetworkInfo {
                    id: n.id.unwrap_or_default(),
                    name: n.name.unwrap_or_default(),
                    subnet: cfg.as_ref().and_then(|c| c.subnet.clone()),
                    gateway: cfg.and_then(|c| c.gateway),
                    labels: n.labels.unwrap_or_default().into_iter().collect(),
                }
            })
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<ContainerId> {
        let opts = CreateContainerOptions {
            name: (!spec.name.is_empty()).then(|| spec.name.clone()),
            ..Default::default()
        };
        match self
            .docker
            .create_container(Some(opts), container_config(spec))
            .await
        {
            Ok(r) => {
                for w in r.warnings.iter().filter(|w| !w.is_empty()) {
                    tracing::warn!(container = %spec.name, warning = %w, "docker warning on create");
                }
                Ok(r.id)
            }
            Err(e) => Err(match (connection_error(&e), server_error(&e)) {
                (Some(err), _) => err,
                (None, Some((404, msg))) if msg.to_ascii_lowercase().contains("image") => {
                    RuntimeError::ImagePull {
                        image: spec.image.clone(),
                        message: msg.trim().to_string(),
                    }
                }
                _ => RuntimeError::CreateContainer(message_of(&e)),
            }),
        }
    }

    async fn start_container(&self, id: &str) -> RuntimeResult<()> {
        match self
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(match (connection_error(&e), server_error(&e)) {
                (Some(err), _) => err,
                (None, Some((404, _))) => RuntimeError::NotFound(id.to_string()),
                _ => {
                    let msg = message_of(&e);
                    if is_exec_format_error(&msg) {
                        RuntimeError::ExecFormat { detail: msg }
                    } else {
                        RuntimeError::StartContainer(msg)
                    }
                }
            }),
        }
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> RuntimeResult<()> {
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(secs),
            signal: None,
        };
        // The request lasts as long as the grace period: give the client more.
        let client_timeout = self.docker.timeout().max(timeout + Duration::from_secs(30));
        let docker = self.docker.clone().with_timeout(client_timeout);
        match docker.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(match (connection_error(&e), server_error(&e)) {
                (Some(err), _) => err,
                (None, Some((304, _))) => return Ok(()),
                (None, Some((404, _))) => RuntimeError::NotFound(id.to_string()),
                _ => RuntimeError::Other(format!("cannot stop container {id}: {}", message_of(&e))),
            }),
        }
    }

    async fn remove_container(&self, id: &str) -> RuntimeResult<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => match (connection_error(&e), server_error(&e)) {
                (Some(err), _) => Err(err),
                (None, Some((404, _))) => Ok(()),
                // Already being removed by someone else.
                (None, Some((409, msg))) if msg.contains("already in progress") => Ok(()),
                _ => Err(RuntimeError::Other(format!(
                    "cannot remove container {id}: {}",
                    message_of(&e)
                ))),
            },
        }
    }

    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerStatus> {
        let r = match self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Err(match (connection_error(&e), server_error(&e)) {
                    (Some(err), _) => err,
                    (None, Some((404, _))) => RuntimeError::NotFound(id.to_string()),
                    _ => other(e),
                })
            }
        };
        let mut status = status_from_inspect(r);
        if status.state == ContainerState::Exited
            && status.exit_code.is_some_and(|c| c != 0)
            && status.error.is_none()
            && self.exec_format_in_logs(&status.id).await
        {
            status.error = Some(EXEC_FORMAT_MESSAGE.to_string());
        }
        Ok(status)
    }

    async fn list_containers(&self, label: Option<&str>) -> RuntimeResult<Vec<ContainerSummary>> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(label_filters("", label)),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(other)?;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state: c
                    .state
                    .and_then(|s| ContainerState::from_docker(s.as_ref()))
                    .unwrap_or(ContainerState::Dead),
            })
            .collect())
    }

    fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<i64>,
        tail: Option<u64>,
    ) -> BoxStream<'static, RuntimeResult<LogLine>> {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            since: since
                .map(|s| i32::try_from(s.max(0)).unwrap_or(i32::MAX))
                .unwrap_or(0),
            tail: tail.map_or_else(|| "all".to_string(), |t| t.to_string()),
            ..Default::default()
        };
        let id = id.to_string();
        self.docker
            .logs(&id, Some(opts))
            .filter_map(move |item| {
                let id = id.clone();
                async move {
                    match item {
                        Ok(out) => log_line(out).map(Ok),
                        Err(e) => Some(Err(match (connection_error(&e), server_error(&e)) {
                            (Some(err), _) => err,
                            (None, Some((404, _))) => RuntimeError::NotFound(id),
                            _ => other(e),
                        })),
                    }
                }
            })
            .boxed()
    }

    fn events(&self, label: Option<&str>) -> BoxStream<'static, RuntimeResult<RuntimeEvent>> {
        let mut filters = label_filters("container", label);
        filters.insert(
            "event".to_string(),
            ["start", "die", "oom", "health_status"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        // The request is only sent when the stream is first polled: ask for
        // events since now so none between this call and that poll is lost.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let opts = EventsOptions {
            since: Some(format!("{}.{:09}", now.as_secs(), now.subsec_nanos())),
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .events(Some(opts))
            .filter_map(|item| async move {
                match item {
                    Ok(m) => event_from_message(m).map(Ok),
                    Err(e) => Some(Err(other(e))),
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::HealthCheckSpec;

    #[test]
    fn spec_maps_to_docker_config() {
        let mut spec = ContainerSpec::new("web", "busybox:1");
        spec.cpu_shares = Some(512);
        spec.memory_limit_mib = Some(128);
        spec.memory_reservation_mib = Some(64);
        spec.port_bindings = vec![PortBinding {
            container_port: 80,
            host_port: 8080,
            protocol: Protocol::Tcp,
        }];
        spec.network = Some("orc-net".into());
        spec.network_aliases = vec!["web".into()];
        spec.environment = vec![("A".into(), "1".into())];
        spec.health_check = Some(HealthCheckSpec {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Duration::from_secs(2),
            ..Default::default()
        });
        let c = container_config(&spec);
        let hc = c.host_config.as_ref().unwrap();
        assert_eq!(hc.cpu_shares, Some(512));
        assert_eq!(hc.memory, Some(128 * MIB));
        assert_eq!(hc.memory_reservation, Some(64 * MIB));
        assert_eq!(hc.network_mode.as_deref(), Some("orc-net"));
        assert_eq!(
            hc.log_config.as_ref().unwrap().typ.as_deref(),
            Some("json-file")
        );
        let pb = hc.port_bindings.as_ref().unwrap();
        assert_eq!(
            pb["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("8080")
        );
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert_eq!(c.env, Some(vec!["A=1".to_string()]));
        assert_eq!(c.stop_timeout, Some(30));
        let h = c.healthcheck.unwrap();
        assert_eq!(h.interval, Some(2_000_000_000));
        assert_eq!(h.retries, Some(3));
        let ep = &c.networking_config.unwrap().endpoints_config.unwrap()["orc-net"];
        assert_eq!(ep.aliases, Some(vec!["web".to_string()]));
    }

    #[tokio::test]
    async fn an_unreachable_daemon_is_unavailable() {
        // A path that exists but is no socket: connecting fails.
        let file = tempfile::NamedTempFile::new().unwrap();
        let docker = Docker::connect_with_unix(
            file.path().to_str().unwrap(),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let e = DockerRuntime::from_client(docker).await.unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(
            e.to_string().contains("check that docker is running"),
            "{e}"
        );
    }

    #[test]
    fn pull_messages_are_classified() {
        let e = classify_pull_message(
            "img",
            "no matching manifest for linux/arm64/v8 in the manifest list entries",
        );
        assert_eq!(
            e.to_string(),
            "CannotPullContainerError: image img has no variant for linux/arm64"
        );
        let e = classify_pull_message("img", "connection refused");
        assert!(matches!(e, RuntimeError::ImagePull { .. }));
    }
}
