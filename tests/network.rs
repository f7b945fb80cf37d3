//! A real network (issue 16): the server and an agent run in two network
//! namespaces this test makes (`ip netns`), joined by a veth pair with
//! addresses in 10.213.0.0/16, so the TLS handshakes, the join token and the
//! agent's certificate cross a real interface, not loopback. Skipped, with
//! a message, where `ip netns` is not permitted. The namespaces (and with
//! them the veth pair) are removed when the test ends, however it ends.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::cluster::{eventually, wait_exit};

/// Two namespaces linked by a veth pair; removed on drop.
struct Namespaces {
    server: String,
    agent: String,
    server_ip: String,
    agent_ip: String,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn must(args: &[&str]) {
    let output = ip(args);
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Namespaces {
    /// Makes them, or `None` when this machine does not allow it.
    fn make() -> Option<Namespaces> {
        let id = std::process::id() % 50_000;
        let (server, agent) = (format!("orcs{id}"), format!("orca{id}"));
        let probe = ip(&["netns", "add", &server]);
        if !probe.status.success() {
            eprintln!(
                "SKIPPED: `ip netns add` is not permitted here ({}); run as root (or with CAP_SYS_ADMIN and CAP_NET_ADMIN) to run this test",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return None;
        }
        // A /30 of 10.213.0.0/16 of its own, so parallel runs do not meet.
        let subnet = id % 16_384;
        let base = (subnet * 4) as u32;
        let (a, b) = ((base >> 8) & 0xff, base & 0xff);
        let namespaces = Namespaces {
            server_ip: format!("10.213.{a}.{}", b + 1),
            agent_ip: format!("10.213.{a}.{}", b + 2),
            server,
            agent,
            children: Vec::new(),
        };
        must(&["netns", "add", &namespaces.agent]);
        let (veth_server, veth_agent) = (format!("vs{id}"), format!("va{id}"));
        must(&[
            "link",
            "add",
            &veth_server,
            "type",
            "veth",
            "peer",
            "name",
            &veth_agent,
        ]);
        for (veth, namespace, address) in [
            (&veth_server, &namespaces.server, &namespaces.server_ip),
            (&veth_agent, &namespaces.agent, &namespaces.agent_ip),
        ] {
            must(&["link", "set", veth, "netns", namespace]);
            must(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{address}/30"),
                "dev",
                veth,
            ]);
            must(&["-n", namespace, "link", "set", veth, "up"]);
            must(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        Some(namespaces)
    }

    /// `orc ARGS` inside `namespace`.
    fn orc(namespace: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace])
            .arg(env!("CARGO_BIN_EXE_orc"));
        command
    }

    fn spawn(&mut self, mut command: Command, log: &Path) {
        let log = std::fs::File::create(log).unwrap();
        let child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start orc in a namespace");
        self.children.push(child);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = wait_exit(child, Duration::from_secs(10));
        }
        // Deleting a namespace deletes the veth end in it, and so the pair.
        let _ = ip(&["netns", "del", &self.server]);
        let _ = ip(&["netns", "del", &self.agent]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_and_an_agent_in_two_network_namespaces_join_over_tls() {
    let Some(mut net) = Namespaces::make() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let endpoint = format!("{}:7400", net.server_ip);
    let server_dir = root.path().join("server");
    let mut server = Namespaces::orc(&net.server);
    server
        .args(["server", "--bootstrap", "--listen", &endpoint])
        .arg("--data-dir")
        .arg(&server_dir);
    net.spawn(server, &root.path().join("server.log"));
    let server_log = || std::fs::read_to_string(root.path().join("server.log")).unwrap_or_default();
    let admin = common::cluster::admin_credential(&server_dir);

    // The admin makes a token from the agent's side of the wire.
    let agent_namespace = net.agent.clone();
    let cli = |args: &[&str]| {
        let output = Namespaces::orc(&agent_namespace)
            .arg("--credentials")
            .arg(&admin)
            .args(["--endpoint", &endpoint, "--timeout", "60"])
            .args(args)
            .output()
            .expect("run orc in the agent's namespace");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, token, err) = cli(&["token", "create", "--role", "agent"]);
    assert!(ok, "token create across the veth: {err}\n{}", server_log());

    // A wrong token is refused across the wire too.
    let mut wrong = token.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let refused = Namespaces::orc(&net.agent)
        .args(["agent", "--server", &endpoint, "--token", &wrong])
        .arg("--data-dir")
        .arg(root.path().join("refused-agent"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("wrong secret"), "{stderr}");

    let mut agent = Namespaces::orc(&net.agent);
    agent
        .args(["agent", "--server", &endpoint, "--token", &token])
        .args(["--heartbeat-interval-ms", "500"])
        .arg("--data-dir")
        .arg(root.path().join("agent"))
        .env_remove("ORC_TOKEN");
    net.spawn(agent, &root.path().join("agent.log"));

    let instance = eventually(
        Duration::from_secs(60),
        "the agent in the other namespace to connect",
        || async {
            let (ok, out, _) = cli(&["describe-container-instances", "--output", "json"]);
            let answer: serde_json::Value = serde_json::from_str(&out).ok()?;
            let instance = answer["containerInstances"].as_array()?.first()?.clone();
            (ok && instance["agentConnected"] == true).then_some(instance)
        },
    )
    .await;
    eprintln!(
        "instance {} connected from {} to {endpoint}",
        instance["ec2InstanceId"], net.agent_ip
    );
    let log = server_log();
    assert!(
        log.contains(&format!("peer={}", net.agent_ip))
            && log.contains("issued a certificate to a joining node"),
        "the join came over the veth from {}:\n{log}",
        net.agent_ip
    );
    assert!(log.contains("refused a join"), "{log}");
    // The agent kept its certificate, 0600, for its restarts.
    let credential = root.path().join("agent").join("credential.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&credential).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
