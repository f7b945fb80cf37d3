//! A server with a large state comes up under a Pi's kind of memory limit.
//!
//! The state (task-definition revisions of about 2 KB and stopped tasks,
//! `common::state_size`) is built by a server on the host; then the same
//! binary restarts from that data dir inside a container with
//! `docker run --memory` (the orc binary and its shared libraries are
//! bind-mounted into the locally built busybox image; nothing is pulled),
//! and must answer with its state, not be OOM-killed. The issue's
//! reproduction: a 24 MB definition made every start need 2 GB.
//!
//! Knobs: ORC_TEST_REVISIONS and ORC_TEST_TASKS (2000 each: a debug build
//! fills 10,000 of each slowly; `bench/state-size.sh` measures those), and
//! ORC_TEST_MEMORY (the limit, 256m: a quarter of a 1 GiB Pi; 96m OOM-kills this debug build with 2,000 of each, see README "Limits").

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{eventually, free_port, TestServer};
use serde_json::json;

fn knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `-v` flags mounting the binary and every shared library it loads.
fn binary_mounts(binary: &str) -> Vec<String> {
    let ldd = Command::new("ldd").arg(binary).output().expect("run ldd");
    let mut mounts = vec![format!("{binary}:/orc:ro")];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|path| path.starts_with('/'));
        if let Some(path) = path {
            mounts.push(format!("{path}:{path}:ro"));
        }
    }
    mounts
}

/// Removes the container on drop, also when the test fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[tokio::test]
async fn a_server_with_a_large_state_starts_under_a_memory_limit() {
    let revisions: usize = knob("ORC_TEST_REVISIONS", "2000").parse().unwrap();
    let tasks: usize = knob("ORC_TEST_TASKS", "2000").parse().unwrap();
    let memory = knob("ORC_TEST_MEMORY", "256m");
    let image = common::images::busybox_image("orc-test/busybox:1");

    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    common::state_size::build(&server.address, revisions, tasks).await;
    server.kill();

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let name = format!("orc-memory-limit-{port}");
    let mut run = Command::new("docker");
    run.args(["run", "-d", "--name", &name, "--network", "host"])
        .args(["--memory", &memory, "--memory-swap", &memory]);
    for mount in binary_mounts(env!("CARGO_BIN_EXE_orc")) {
        run.args(["-v", &mount]);
    }
    run.arg("-v")
        .arg(format!("{}:/data", server.data_dir.display()))
        .arg(&image)
        .args([
            "/orc",
            "server",
            "--data-dir",
            "/data",
            "--listen",
            &address,
        ]);
    let started = run.output().expect("run docker");
    assert!(
        started.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let _container = Container(name.clone());

    let newest = format!("course-{:03}", (revisions - 1) % 100);
    let mut client = orc::client::Client::new(&address).unwrap();
    client.retry_for = Duration::from_millis(0);
    let inspect = |field: &str| {
        let out = Command::new("docker")
            .args(["inspect", "--format", field, &name])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let answer = eventually(
        Duration::from_secs(60),
        "the server in the container to serve its state",
        || async {
            assert_ne!(
                inspect("{{.State.OOMKilled}}"),
                "true",
                "the server was OOM-killed under --memory {memory}; its log:\n{}",
                String::from_utf8_lossy(
                    &Command::new("docker")
                        .args(["logs", &name])
                        .output()
                        .unwrap()
                        .stderr
                )
            );
            client
                .call("DescribeTaskDefinition", json!({"taskDefinition": newest}))
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(answer.0["taskDefinition"]["family"], json!(newest));
    let (listed, _) = client
        .call("ListTasks", json!({"desiredStatus": "STOPPED"}))
        .await
        .unwrap();
    assert!(
        !listed["taskArns"].as_array().unwrap().is_empty(),
        "the stopped tasks came back: {listed}"
    );
    assert_eq!(inspect("{{.State.Running}}"), "true");
    assert_eq!(inspect("{{.State.OOMKilled}}"), "false");
}
