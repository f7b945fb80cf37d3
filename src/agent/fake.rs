//! [`FakeRuntime`]: an in-memory [`Runtime`] for simulations and scale tests.
//!
//! Containers "run" from start until they are stopped or told to exit with
//! [`FakeRuntime::exit_container`]. Every image can be pulled unless a failure
//! was injected with [`FakeRuntime::fail_pull`]. All state sits behind one
//! mutex in hash maps, so thousands of containers are cheap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

use crate::agent::runtime::{
    image_with_tag, labels_match, ContainerId, ContainerSpec, ContainerState, ContainerStatus,
    ContainerSummary, HealthStatus, LogLine, LogStream, NetworkInfo, NodeResources, Protocol,
    RegistryAuth, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind, RuntimeResult,
};

const EVENT_BUFFER: usize = 65_536;

struct FakeContainer {
    spec: ContainerSpec,
    status: ContainerStatus,
    logs: Vec<LogLine>,
}

#[derive(Default)]
struct State {
    node: Option<NodeResources>,
    images: HashSet<String>,
    pull_failures: HashMap<String, RuntimeError>,
    create_failures: HashMap<String, RuntimeError>,
    start_failures: HashMap<String, RuntimeError>,
    unavailable: bool,
    auto_healthy: bool,
    containers: HashMap<ContainerId, FakeContainer>,
    names: HashMap<String, ContainerId>,
    /// Host ports held by running containers.
    ports: HashMap<(u16, Protocol), ContainerId>,
    networks: HashMap<String, NetworkInfo>,
    next_id: u64,
    /// Containers ignore SIGTERM: a stop lasts its whole timeout and kills.
    ignore_sigterm: bool,
    /// Every stop's beginning and end, in order.
    stop_events: Vec<StopEvent>,
}

/// The beginning or the end of one `stop_container` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopEvent {
    Began(String),
    Ended(String),
}

impl State {
    fn resolve(&self, id_or_name: &str) -> RuntimeResult<ContainerId> {
        if self.containers.contains_key(id_or_name) {
            return Ok(id_or_name.to_string());
        }
        self.names
            .get(id_or_name.trim_start_matches('/'))
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id_or_name.to_string()))
    }

    fn check(&self) -> RuntimeResult<()> {
        if self.unavailable {
            Err(RuntimeError::Unavailable(
                "fake runtime set unavailable".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn release_ports(&mut self, id: &str) {
        self.ports.retain(|_, holder| holder != id);
    }
}

/// An in-memory container engine.
pub struct FakeRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<RuntimeEvent>,
    pulls: AtomicU64,
    /// While true, stops wait (see [`FakeRuntime::hold_stops`]).
    stops_held: tokio::sync::watch::Sender<bool>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3339 (UTC, second precision) for a time.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::vocab::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

impl FakeRuntime {
    /// A fake node: 4 cpus, 4 GiB, arm64, hostname "fake-node".
    pub fn new() -> Self {
        Self::with_node(NodeResources {
            cpus: 4,
            memory_bytes: 4 << 30,
            architecture: "arm64".into(),
            os_type: "linux".into(),
            kernel_version: "6.1.0-fake".into(),
            docker_version: "fake".into(),
            hostname: "fake-node".into(),
        })
    }

    pub fn with_node(node: NodeResources) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            state: Mutex::new(State {
                node: Some(node),
                ..Default::default()
            }),
            events,
            pulls: AtomicU64::new(0),
            stops_held: tokio::sync::watch::channel(false).0,
        }
    }

    /// While `held`, every stop waits (as behind containers that take their
    /// time to exit) until released.
    pub fn hold_stops(&self, held: bool) {
        self.stops_held.send_replace(held);
    }

    /// When true, containers ignore SIGTERM: a stop waits out its whole
    /// timeout (tokio time, so a paused clock makes it instant) and the
    /// container is killed (exit code 137).
    pub fn set_ignore_sigterm(&self, ignore: bool) {
        self.lock().ignore_sigterm = ignore;
    }

    /// Every stop's beginning and end so far, in order.
    pub fn stop_events(&self) -> Vec<StopEvent> {
        self.lock().stop_events.clone()
    }

    /// Stops begun and not ended.
    pub fn stops_in_flight(&self) -> usize {
        let s = self.lock();
        let began = s
            .stop_events
            .iter()
            .filter(|e| matches!(e, StopEvent::Began(_)))
            .count();
        began - (s.stop_events.len() - began)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, container: &FakeContainer, kind: RuntimeEventKind) {
        // No receiver is fine.
        let _ = self.events.send(RuntimeEvent {
            container_id: container.status.id.clone(),
            kind,
            labels: container.spec.labels.clone(),
        });
    }

    /// Puts an image in the local store, as if pulled earlier.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image_with_tag(image));
    }

    pub fn remove_image(&self, image: &str) {
        self.lock().images.remove(&image_with_tag(image));
    }

    /// Makes every pull of `image` fail with an ImagePull error.
    pub fn fail_pull(&self, image: &str, message: &str) {
        self.fail_pull_with(
            image,
            RuntimeError::ImagePull {
                image: image.to_string(),
                message: message.to_string(),
            },
        );
    }

    /// Makes every pull of `image` fail with `error` (e.g. PlatformMismatch).
    pub fn fail_pull_with(&self, image: &str, error: RuntimeError) {
        self.lock()
            .pull_failures
            .insert(image_with_tag(image), error);
    }

    /// Makes every create of a container from `image` fail with `error`.
    pub fn fail_create(&self, image: &str, error: RuntimeError) {
        self.lock()
            .create_failures
            .insert(image_with_tag(image), error);
    }

    /// Makes every start of a container from `image` fail with `error`
    /// (e.g. `RuntimeError::ExecFormat`).
    pub fn fail_start(&self, image: &str, error: RuntimeError) {
        self.lock()
            .start_failures
            .insert(image_with_tag(image), error);
    }

    /// Removes every injected pull, create and start failure.
    pub fn clear_failures(&self) {
        let mut s = self.lock();
        s.pull_failures.clear();
        s.create_failures.clear();
        s.start_failures.clear();
    }

    /// While true, every call fails with `RuntimeError::Unavailable`.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// When true, containers with a health check become Healthy as they start.
    pub fn set_auto_healthy(&self, auto: bool) {
        self.lock().auto_healthy = auto;
    }

    /// How many pulls were attempted.
    pub fn pull_count(&self) -> u64 {
        self.pulls.load(Ordering::Relaxed)
    }

    /// Makes a running container exit with `exit_code`.
    pub fn exit_container(&self, id: &str, exit_code: i64) -> RuntimeResult<()> {
        self.finish(id, exit_code, false)
    }

    /// Makes a running container die of an out-of-memory kill (exit code 137).
    pub fn oom_kill(&self, id: &str) -> RuntimeResult<()> {
        self.finish(id, 137, true)
    }

    fn finish(&self, id: &str, exit_code: i64, oom: bool) -> RuntimeResult<()> {
        let mut s = self.lock();
        let id = s.resolve(id)?;
        let c = s.containers.get_mut(&id).expect("resolved");
        if c.status.state != ContainerState::Running {
            return Ok(());
        }
        c.status.state = ContainerState::Exited;
        c.status.exit_code = Some(exit_code);
        c.status.oom_killed = oom;
        c.status.finished_at = Some(now());
        if oom {
            self.emit(c, RuntimeEventKind::Oom);
        }
        self.emit(c, RuntimeEventKind::Die { exit_code });
        s.release_ports(&id);
        Ok(())
    }

    /// Sets a container's health and emits a health event when it changes.
    pub fn set_health(&self, id: &str, health: HealthStatus) -> RuntimeResult<()> {
        let mut s = self.lock();
        let id = s.resolve(id)?;
        let c = s.containers.get_mut(&id).expect("resolved");
        if c.status.health != health {
            c.status.health = health;
            self.emit(c, RuntimeEventKind::HealthStatus(health));
        }
        Ok(())
    }

    pub fn mark_healthy(&self, id: &str) -> RuntimeResult<()> {
        self.set_health(id, HealthStatus::Healthy)
    }

    /// Appends a line to a container's output.
    pub fn push_log(&self, id: &str, stream: LogStream, text: &str) -> RuntimeResult<()> {
        let mut s = self.lock();
        let id = s.resolve(id)?;
        s.containers
            .get_mut(&id)
            .expect("resolved")
            .logs
            .push(LogLine {
                stream,
                text: text.to_string(),
            });
        Ok(())
    }

    /// The spec a container was created with.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        let s = self.lock();
        let id = s.resolve(id).ok()?;
        s.containers.get(&id).map(|c| c.spec.clone())
    }

    /// How many containers exist / are running.
    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

    pub fn running_count(&self) -> usize {
        self.lock()
            .containers
            .values()
            .filter(|c| c.status.state == ContainerState::Running)
            .count()
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn info(&self) -> RuntimeResult<NodeResources> {
        let s = self.lock();
        s.check()?;
        Ok(s.node.clone().expect("node set in constructor"))
    }

    async fn image_present(&self, image: &str) -> RuntimeResult<bool> {
        let s = self.lock();
        s.check()?;
        Ok(s.images.contains(&image_with_tag(image)))
    }

    async fn pull_image(&self, image: &str, _auth: Option<&RegistryAuth>) -> RuntimeResult<()> {
        let mut s = self.lock();
        s.check()?;
        self.pulls.fetch_add(1, Ordering::Relaxed);
        let key = image_with_tag(image);
        if let Some(e) = s.pull_failures.get(&key) {
            return Err(e.clone());
        }
        s.images.insert(key);
        Ok(())
    }

    async fn create_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> RuntimeResult<String> {
        let mut s = self.lock();
        s.check()?;
        if let Some(n) = s.networks.get(name) {
            return Ok(n.id.clone());
        }
        s.next_id += 1;
        let id = format!("{:064x}", s.next_id);
        s.networks.insert(
            name.to_string(),
            NetworkInfo {
                id: id.clone(),
                name: name.to_string(),
                subnet: subnet.map(str::to_string),
                gateway: gateway.map(str::to_string),
                labels: labels.clone(),
            },
        );
        Ok(id)
    }

    async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        let mut s = self.lock();
        s.check()?;
        s.networks.remove(name);
        Ok(())
    }

    async fn list_networks(&self, label: Option<&str>) -> RuntimeResult<Vec<NetworkInfo>> {
        let s = self.lock();
        s.check()?;
        Ok(s.networks
            .values()
            .filter(|n| labels_match(&n.labels, label))
            .cloned()
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<ContainerId> {
        let mut s = self.lock();
        s.check()?;
        let image = image_with_tag(&spec.image);
        if let Some(e) = s.create_failures.get(&image) {
            return Err(e.clone());
        }
        if !s.images.contains(&image) {
            return Err(RuntimeError::ImagePull {
                image: spec.image.clone(),
                message: format!("no such image: {}", spec.image),
            });
        }
        if let Some(net) = &spec.network {
            if !matches!(net.as_str(), "bridge" | "host" | "none") && !s.networks.contains_key(net)
            {
                return Err(RuntimeError::CreateContainer(format!(
                    "network {net} not found"
                )));
            }
        }
        s.next_id += 1;
        let id = format!("{:064x}", s.next_id);
        let name = if spec.name.is_empty() {
            format!("fake_{}", s.next_id)
        } else {
            spec.name.clone()
        };
        if s.names.contains_key(&name) {
            return Err(RuntimeError::CreateContainer(format!(
                "conflict: the container name \"/{name}\" is already in use"
            )));
        }
        let status = ContainerStatus {
            id: id.clone(),
            name: name.clone(),
            state: ContainerState::Created,
            exit_code: None,
            error: None,
            oom_killed: false,
            health: HealthStatus::None,
            started_at: None,
            finished_at: None,
            host_ports: Vec::new(),
            ip_address: None,
        };
        s.names.insert(name, id.clone());
        s.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                status,
                logs: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> RuntimeResult<()> {
        let mut s = self.lock();
        s.check()?;
        let id = s.resolve(id)?;
        let (image, ports, state, has_health) = {
            let c = &s.containers[&id];
            (
                image_with_tag(&c.spec.image),
                c.spec.port_bindings.clone(),
                c.status.state,
                c.spec.health_check.is_some(),
            )
        };
        if state == ContainerState::Running {
            return Ok(());
        }
        if let Some(e) = s.start_failures.get(&image).cloned() {
            let c = s.containers.get_mut(&id).expect("resolved");
            c.status.error = Some(e.to_string());
            return Err(e);
        }
        for p in &ports {
            if let Some(holder) = s.ports.get(&(p.host_port, p.protocol)) {
                if holder != &id {
                    return Err(RuntimeError::StartContainer(format!(
                        "driver failed programming external connectivity: bind for 0.0.0.0:{} failed: port is already allocated",
                        p.host_port
                    )));
                }
            }
        }
        for p in &ports {
            s.ports.insert((p.host_port, p.protocol), id.clone());
        }
        let auto_healthy = s.auto_healthy;
        let ip = format!(
            "172.17.{}.{}",
            (s.next_id >> 8) & 0xff,
            (s.next_id & 0xff).max(2)
        );
        let c = s.containers.get_mut(&id).expect("resolved");
        c.status.state = ContainerState::Running;
        c.status.exit_code = None;
        c.status.error = None;
        c.status.oom_killed = false;
        c.status.started_at = Some(now());
        c.status.finished_at = None;
        c.status.host_ports = ports;
        c.status.ip_address = Some(ip);
        c.status.health = if has_health {
            HealthStatus::Starting
        } else {
            HealthStatus::None
        };
        self.emit(c, RuntimeEventKind::Start);
        if has_health && auto_healthy {
            c.status.health = HealthStatus::Healthy;
            self.emit(c, RuntimeEventKind::HealthStatus(HealthStatus::Healthy));
        }
        Ok(())
    }

    /// Stops at once: the fake's processes honour SIGTERM and exit with 0,
    /// unless stops are held or SIGTERM is ignored.
    async fn stop_container(&self, id: &str, timeout: Duration) -> RuntimeResult<()> {
        let (name, ignore) = {
            let mut s = self.lock();
            s.check()?;
            let id = s.resolve(id)?;
            let name = s.containers[&id].status.name.clone();
            s.stop_events.push(StopEvent::Began(name.clone()));
            (name, s.ignore_sigterm)
        };
        let mut held = self.stops_held.subscribe();
        let _ = held.wait_for(|held| !held).await;
        if ignore {
            tokio::time::sleep(timeout).await;
        }
        let result = self.finish(id, if ignore { 137 } else { 0 }, false);
        self.lock().stop_events.push(StopEvent::Ended(name));
        result
    }

    async fn remove_container(&self, id: &str) -> RuntimeResult<()> {
        let mut s = self.lock();
        s.check()?;
        let Ok(id) = s.resolve(id) else {
            return Ok(());
        };
        if let Some(c) = s.containers.remove(&id) {
            if c.status.state == ContainerState::Running {
                let exit_code = 137;
                self.emit(&c, RuntimeEventKind::Die { exit_code });
            }
            s.names.remove(&c.status.name);
        }
        s.release_ports(&id);
        Ok(())
    }

    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerStatus> {
        let s = self.lock();
        s.check()?;
        let id = s.resolve(id)?;
        Ok(s.containers[&id].status.clone())
    }

    async fn list_containers(&self, label: Option<&str>) -> RuntimeResult<Vec<ContainerSummary>> {
        let s = self.lock();
        s.check()?;
        Ok(s.containers
            .values()
            .filter(|c| labels_match(&c.spec.labels, label))
            .map(|c| ContainerSummary {
                id: c.status.id.clone(),
                name: c.status.name.clone(),
                labels: c.spec.labels.clone(),
                state: c.status.state,
            })
            .collect())
    }

    /// The lines pushed so far (`since` is ignored; `follow` does not wait
    /// for new lines).
    fn logs(
        &self,
        id: &str,
        _follow: bool,
        _since: Option<i64>,
        tail: Option<u64>,
    ) -> BoxStream<'static, RuntimeResult<LogLine>> {
        let s = self.lock();
        let lines: Vec<RuntimeResult<LogLine>> = match s.check().and_then(|_| s.resolve(id)) {
            Err(e) => vec![Err(e)],
            Ok(id) => {
                let logs = &s.containers[&id].logs;
                let skip = tail.map_or(0, |t| logs.len().saturating_sub(t as usize));
                logs[skip..].iter().cloned().map(Ok).collect()
            }
        };
        stream::iter(lines).boxed()
    }

    fn events(&self, label: Option<&str>) -> BoxStream<'static, RuntimeResult<RuntimeEvent>> {
        let rx = self.events.subscribe();
        let label = label.map(str::to_string);
        stream::unfold(rx, move |mut rx| {
            let label = label.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) if labels_match(&ev.labels, label.as_deref()) => {
                            return Some((Ok(ev), rx))
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "fake runtime event stream lagged");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::{PortBinding, PullBehavior};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29T12:34:56Z"
        );
    }

    fn spec(name: &str) -> ContainerSpec {
        let mut s = ContainerSpec::new(name, "app:1");
        s.labels.insert("orc.task".into(), "t1".into());
        s
    }

    #[tokio::test]
    async fn lifecycle_and_events() {
        let rt = FakeRuntime::new();
        let mut events = rt.events(Some("orc.task=t1"));
        rt.ensure_image("app:1", PullBehavior::Default, None)
            .await
            .unwrap();
        let id = rt.create_container(&spec("a")).await.unwrap();
        rt.start_container(&id).await.unwrap();
        assert_eq!(
            rt.inspect_container("a").await.unwrap().state,
            ContainerState::Running
        );
        rt.exit_container(&id, 3).unwrap();
        let st = rt.inspect_container(&id).await.unwrap();
        assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(3)));
        assert_eq!(
            events.next().await.unwrap().unwrap().kind,
            RuntimeEventKind::Start
        );
        assert_eq!(
            events.next().await.unwrap().unwrap().kind,
            RuntimeEventKind::Die { exit_code: 3 }
        );
        rt.remove_container(&id).await.unwrap();
        assert!(rt.inspect_container(&id).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn pull_behaviors() {
        let rt = FakeRuntime::new();
        rt.add_image("cached:1");
        rt.fail_pull("cached:1", "registry unreachable");
        rt.fail_pull("missing:1", "registry unreachable");
        rt.ensure_image("cached:1", PullBehavior::Default, None)
            .await
            .unwrap();
        let e = rt
            .ensure_image("cached:1", PullBehavior::Always, None)
            .await
            .unwrap_err();
        assert!(matches!(e, RuntimeError::ImagePull { .. }));
        let before = rt.pull_count();
        rt.ensure_image("cached:1", PullBehavior::Once, None)
            .await
            .unwrap();
        rt.ensure_image("cached:1", PullBehavior::PreferCached, None)
            .await
            .unwrap();
        assert_eq!(rt.pull_count(), before);
        assert!(rt
            .ensure_image("missing:1", PullBehavior::Default, None)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn thousands_of_containers_and_port_conflicts() {
        let rt = FakeRuntime::new();
        rt.add_image("app:1");
        for i in 0..5000u32 {
            let mut s = spec(&format!("c{i}"));
            s.port_bindings.push(PortBinding {
                container_port: 80,
                host_port: 10_000 + (i % 20_000) as u16,
                protocol: Protocol::Tcp,
            });
            let id = rt.create_container(&s).await.unwrap();
            rt.start_container(&id).await.unwrap();
        }
        assert_eq!(rt.running_count(), 5000);
        assert_eq!(
            rt.list_containers(Some("orc.task")).await.unwrap().len(),
            5000
        );
        let mut s = spec("dup-port");
        s.port_bindings.push(PortBinding {
            container_port: 80,
            host_port: 10_000,
            protocol: Protocol::Tcp,
        });
        let id = rt.create_container(&s).await.unwrap();
        assert!(matches!(
            rt.start_container(&id).await,
            Err(RuntimeError::StartContainer(_))
        ));
        rt.stop_container("c0", Duration::from_secs(1))
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();
    }

    #[tokio::test]
    async fn health_and_injected_start_failure() {
        let rt = FakeRuntime::new();
        rt.add_image("app:1");
        rt.add_image("armonly:1");
        rt.fail_start(
            "armonly:1",
            RuntimeError::ExecFormat {
                detail: "exec /app: exec format error".into(),
            },
        );
        let mut s = spec("h");
        s.health_check = Some(Default::default());
        let id = rt.create_container(&s).await.unwrap();
        rt.start_container(&id).await.unwrap();
        assert_eq!(
            rt.inspect_container(&id).await.unwrap().health,
            HealthStatus::Starting
        );
        rt.mark_healthy(&id).unwrap();
        assert_eq!(
            rt.inspect_container(&id).await.unwrap().health,
            HealthStatus::Healthy
        );
        let id = rt
            .create_container(&ContainerSpec::new("x", "armonly:1"))
            .await
            .unwrap();
        let e = rt.start_container(&id).await.unwrap_err();
        assert!(e.to_string().contains("another CPU architecture"));
    }
}
