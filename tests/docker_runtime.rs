//! DockerRuntime against the real Docker Engine.
//!
//! Nothing here pulls: images are made locally by `common/images.rs` from
//! Debian's busybox-static (`apt-get install busybox-static`). Every container
//! and network is labelled `orc.test=1`, named with a per-test random suffix,
//! and removed by a guard even when the test fails. Set
//! ORC_SKIP_DOCKER_TESTS=1 to skip these tests on a machine without Docker.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/docker.rs"]
mod docker;
#[path = "common/images.rs"]
mod images;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use cluster::{eventually, free_port};
use docker::{http_get, skip, suffix};
use orc::agent::docker::DockerRuntime;
use orc::agent::runtime::{
    ContainerSpec, ContainerState, HealthCheckSpec, HealthStatus, LogLine, LogStream, PortBinding,
    Protocol, PullBehavior, Runtime, RuntimeError, RuntimeEventKind, EXEC_FORMAT_MESSAGE,
};

const IMAGE: &str = "orc-test/busybox:1";
/// The same image under a registry nobody listens on (port 9, "discard").
const UNREACHABLE_IMAGE: &str = "127.0.0.1:9/orc-test/busybox:1";

/// Removes, on drop, every container and network the test made.
struct Cleanup {
    run: String,
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    fn new() -> Self {
        Self {
            run: suffix(),
            containers: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// A unique container name, registered for removal.
    fn name(&mut self, base: &str) -> String {
        let name = format!("orc-test-{base}-{}", self.run);
        self.containers.push(name.clone());
        name
    }

    /// A unique network name, registered for removal.
    fn network(&mut self, base: &str) -> String {
        let name = format!("orc-test-{base}-{}", self.run);
        self.networks.push(name.clone());
        name
    }

    /// Labels for everything this test makes.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("orc.test".to_string(), "1".to_string()),
            ("orc.test.run".to_string(), self.run.clone()),
        ])
    }

    /// Label filter matching only this test's objects.
    fn filter(&self) -> String {
        format!("orc.test.run={}", self.run)
    }

    fn spec(&mut self, base: &str) -> ContainerSpec {
        let mut spec = ContainerSpec::new(self.name(base), images::busybox_image(IMAGE));
        spec.labels = self.labels();
        spec.stop_timeout = Duration::from_secs(2);
        spec
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for n in &self.networks {
            let _ = Command::new("docker")
                .args(["network", "rm", n])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn runtime() -> DockerRuntime {
    DockerRuntime::connect()
        .await
        .unwrap_or_else(|e| panic!("these tests need a running Docker Engine: {e}"))
}

fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

async fn wait_exited(rt: &DockerRuntime, id: &str) -> orc::agent::runtime::ContainerStatus {
    eventually(Duration::from_secs(30), "the container to exit", || async {
        let st = rt.inspect_container(id).await.expect("inspect");
        st.state.is_terminal().then_some(st)
    })
    .await
}

#[tokio::test]
async fn info_reports_the_node() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let node = rt.info().await.unwrap();
    assert!(node.cpus > 0);
    assert!(node.memory_bytes > 0);
    assert!(
        ["amd64", "arm64", "arm/v7", "arm/v6"].contains(&node.architecture.as_str()),
        "{node:?}"
    );
    assert_eq!(node.os_type, "linux");
    assert!(!node.docker_version.is_empty());
}

#[tokio::test]
async fn web_container_serves_its_page_and_stops() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let port = free_port();
    let mut spec = guard.spec("web");
    spec.hostname = Some(format!("web-{}", guard.run));
    spec.port_bindings = vec![PortBinding {
        container_port: 80,
        host_port: port,
        protocol: Protocol::Tcp,
    }];
    spec.memory_limit_mib = Some(64);
    spec.cpu_shares = Some(256);
    spec.environment = vec![("GREETING".into(), "hi".into())];
    let id = rt.create_container(&spec).await.unwrap();
    rt.start_container(&id).await.unwrap();

    let page = eventually(Duration::from_secs(30), "the web page", || http_get(port)).await;
    assert!(page.starts_with("HTTP/1."), "{page}");
    assert!(
        page.contains(&format!("hello from web-{}", guard.run)),
        "{page}"
    );

    let st = rt.inspect_container(&spec.name).await.unwrap();
    assert_eq!(st.id, id);
    assert_eq!(st.name, spec.name);
    assert_eq!(st.state, ContainerState::Running);
    assert_eq!(st.exit_code, None);
    assert!(st.started_at.is_some());
    assert!(st.ip_address.is_some());
    assert!(
        st.host_ports.contains(&PortBinding {
            container_port: 80,
            host_port: port,
            protocol: Protocol::Tcp
        }),
        "{:?}",
        st.host_ports
    );

    let summaries = rt.list_containers(Some(&guard.filter())).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].state, ContainerState::Running);
    assert_eq!(
        summaries[0].labels.get("orc.test").map(String::as_str),
        Some("1")
    );

    // httpd as PID 1 ignores SIGTERM: the stop ends with SIGKILL after 1 s.
    rt.stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap();
    let st = rt.inspect_container(&id).await.unwrap();
    assert_eq!(st.state, ContainerState::Exited);
    let code = st.exit_code.expect("exit code after stop");
    assert!(code == 137 || code == 143, "exit code {code}");
    assert!(st.finished_at.is_some());
    // Stopping again is fine.
    rt.stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap();

    // Exited containers are still listed.
    let summaries = rt.list_containers(Some(&guard.filter())).await.unwrap();
    assert_eq!(summaries[0].state, ContainerState::Exited);

    rt.remove_container(&id).await.unwrap();
    assert!(matches!(
        rt.inspect_container(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
    // Removing twice is fine.
    rt.remove_container(&id).await.unwrap();
}

#[tokio::test]
async fn stop_sends_sigterm_first() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let mut spec = guard.spec("term");
    spec.command = sh("trap 'exit 0' TERM; while true; do sleep 0.1; done");
    let id = rt.create_container(&spec).await.unwrap();
    rt.start_container(&id).await.unwrap();
    eventually(Duration::from_secs(10), "the container to run", || async {
        (rt.inspect_container(&id).await.unwrap().state == ContainerState::Running).then_some(())
    })
    .await;
    let started = Instant::now();
    rt.stop_container(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop waited for the timeout"
    );
    let st = rt.inspect_container(&id).await.unwrap();
    assert_eq!(st.exit_code, Some(0));
}

#[tokio::test]
async fn exit_code_is_reported() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let mut spec = guard.spec("exit3");
    spec.command = sh("echo to-stdout; echo to-stderr >&2; exit 3");
    let id = rt.create_container(&spec).await.unwrap();
    assert_eq!(
        rt.inspect_container(&id).await.unwrap().state,
        ContainerState::Created
    );
    rt.start_container(&id).await.unwrap();
    let st = wait_exited(&rt, &id).await;
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.error, None);
    assert!(!st.oom_killed);

    let lines: Vec<LogLine> = rt
        .logs(&id, false, None, None)
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert!(lines.contains(&LogLine {
        stream: LogStream::Stdout,
        text: "to-stdout".into()
    }));
    assert!(lines.contains(&LogLine {
        stream: LogStream::Stderr,
        text: "to-stderr".into()
    }));
    let tail: Vec<_> = rt.logs(&id, true, None, Some(1)).collect().await;
    assert_eq!(tail.len(), 1, "{tail:?}");
}

#[tokio::test]
async fn health_check_turns_healthy() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let mut spec = guard.spec("health");
    spec.health_check = Some(HealthCheckSpec {
        test: vec![
            "CMD-SHELL".into(),
            "wget -qO- http://127.0.0.1/ | grep -q hello".into(),
        ],
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(3),
        retries: 3,
        start_period: Duration::from_secs(1),
    });
    let id = rt.create_container(&spec).await.unwrap();
    rt.start_container(&id).await.unwrap();
    let first = rt.inspect_container(&id).await.unwrap().health;
    assert!(
        matches!(first, HealthStatus::Starting | HealthStatus::Healthy),
        "{first:?}"
    );
    eventually(
        Duration::from_secs(30),
        "the container to be healthy",
        || async {
            let st = rt.inspect_container(&id).await.unwrap();
            assert_ne!(st.health, HealthStatus::Unhealthy);
            (st.health == HealthStatus::Healthy).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn containers_reach_each_other_by_name_on_a_user_network() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let net = guard.network("net");
    let labels = guard.labels();
    let id = rt.create_network(&net, None, None, &labels).await.unwrap();
    // Idempotent.
    assert_eq!(
        rt.create_network(&net, None, None, &labels).await.unwrap(),
        id
    );
    let listed = rt.list_networks(Some(&guard.filter())).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, net);
    assert!(listed[0].subnet.is_some());

    let mut web = guard.spec("web");
    web.network = Some(net.clone());
    web.network_aliases = vec!["web".into()];
    web.hostname = Some("webhost".into());
    let web_id = rt.create_container(&web).await.unwrap();
    rt.start_container(&web_id).await.unwrap();

    let mut client = guard.spec("client");
    client.network = Some(net.clone());
    client.command = sh(
        "i=0; while [ $i -lt 100 ]; do wget -qO- http://web/ && exit 0; i=$((i+1)); sleep 0.2; done; exit 1",
    );
    let client_id = rt.create_container(&client).await.unwrap();
    rt.start_container(&client_id).await.unwrap();
    let st = wait_exited(&rt, &client_id).await;
    let lines: Vec<String> = rt
        .logs(&client_id, false, None, None)
        .map(|l| l.unwrap().text)
        .collect()
        .await;
    assert_eq!(st.exit_code, Some(0), "client output: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("hello from webhost")),
        "{lines:?}"
    );

    rt.remove_container(&client_id).await.unwrap();
    rt.remove_container(&web_id).await.unwrap();
    rt.remove_network(&net).await.unwrap();
    assert!(rt
        .list_networks(Some(&guard.filter()))
        .await
        .unwrap()
        .is_empty());
    // Removing twice is fine.
    rt.remove_network(&net).await.unwrap();
}

#[tokio::test]
async fn network_with_subnet_and_gateway() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let net = guard.network("subnet");
    let third = u8::from_str_radix(&guard.run[..2], 16).unwrap();
    let subnet = format!("172.29.{third}.0/24");
    let gateway = format!("172.29.{third}.1");
    rt.create_network(&net, Some(&subnet), Some(&gateway), &guard.labels())
        .await
        .unwrap();
    let listed = rt.list_networks(Some(&guard.filter())).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].subnet.as_deref(), Some(subnet.as_str()));
    assert_eq!(listed[0].gateway.as_deref(), Some(gateway.as_str()));
    assert_eq!(
        listed[0].labels.get("orc.test").map(String::as_str),
        Some("1")
    );
}

#[tokio::test]
async fn ensure_image_follows_the_pull_behavior() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let cached = images::busybox_image(UNREACHABLE_IMAGE);
    assert!(rt.image_present(&cached).await.unwrap());

    // Default: the pull fails (nobody listens on port 9) but the cache serves.
    rt.ensure_image(&cached, PullBehavior::Default, None)
        .await
        .unwrap();
    rt.ensure_image(&cached, PullBehavior::Once, None)
        .await
        .unwrap();
    rt.ensure_image(&cached, PullBehavior::PreferCached, None)
        .await
        .unwrap();
    match rt.ensure_image(&cached, PullBehavior::Always, None).await {
        Err(e @ RuntimeError::ImagePull { .. }) => {
            assert!(
                e.to_string().starts_with("CannotPullContainerError: "),
                "{e}"
            );
        }
        other => panic!("expected ImagePull, got {other:?}"),
    }

    let missing = format!("127.0.0.1:9/orc-test/missing:{}", suffix());
    assert!(!rt.image_present(&missing).await.unwrap());
    for behavior in [PullBehavior::Default, PullBehavior::PreferCached] {
        match rt.ensure_image(&missing, behavior, None).await {
            Err(RuntimeError::ImagePull { image, .. }) => assert_eq!(image, missing),
            other => panic!("expected ImagePull, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn creating_from_a_missing_image_is_an_image_error() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let mut spec = guard.spec("noimage");
    spec.image = format!("127.0.0.1:9/orc-test/missing:{}", suffix());
    match rt.create_container(&spec).await {
        Err(RuntimeError::ImagePull { image, .. }) => assert_eq!(image, spec.image),
        other => panic!("expected ImagePull, got {other:?}"),
    }
    assert!(matches!(
        rt.start_container(&format!("orc-test-nothing-{}", guard.run))
            .await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn exec_format_error_is_reported_in_plain_words() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let mut spec = guard.spec("execfmt");
    spec.entry_point = Some(vec!["/bin/notelf".into()]);
    spec.command = Some(vec![]);
    let id = rt.create_container(&spec).await.unwrap();
    match rt.start_container(&id).await {
        // Older runc fails the start itself.
        Err(e) => assert!(matches!(e, RuntimeError::ExecFormat { .. }), "{e}"),
        Ok(()) => {
            let st = wait_exited(&rt, &id).await;
            assert_ne!(st.exit_code, Some(0));
            assert_eq!(st.error.as_deref(), Some(EXEC_FORMAT_MESSAGE));
        }
    }
}

#[tokio::test]
async fn events_deliver_start_and_die_with_the_exit_code() {
    if skip() {
        return;
    }
    let rt = runtime().await;
    let mut guard = Cleanup::new();
    let mut events = rt.events(Some(&guard.filter()));
    let mut spec = guard.spec("events");
    spec.command = sh("sleep 0.5; exit 7");
    let id = rt.create_container(&spec).await.unwrap();
    rt.start_container(&id).await.unwrap();

    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kinds
        .iter()
        .any(|k| matches!(k, RuntimeEventKind::Die { .. }))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, events.next())
            .await
            .expect("timed out waiting for the die event")
            .expect("event stream ended")
            .expect("event error");
        assert_eq!(ev.container_id, id);
        assert_eq!(ev.labels.get("orc.test").map(String::as_str), Some("1"));
        kinds.push(ev.kind);
    }
    assert_eq!(
        kinds,
        vec![
            RuntimeEventKind::Start,
            RuntimeEventKind::Die { exit_code: 7 }
        ]
    );
}
