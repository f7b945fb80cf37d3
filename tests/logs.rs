//! `orc logs` through the control plane: the agent of the task's instance
//! reads the output from its engine and any server passes it on (a server
//! without the agent's session asks its peers). Every command here runs
//! against a server's address and never reads the local Docker itself.
//! Images are built locally; nothing is pulled.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::cluster::{eventually, three_servers, wait_instance_connected};
use common::images::busybox_image;
use common::orc::TestOrc;
use serde_json::json;

const IMAGE: &str = "orc-test/busybox:1";

/// Runs `orc logs ARGS` against `endpoint`; returns (success, stdout, stderr).
fn logs(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("logs")
        .args(args)
        .env("ORC_ENDPOINT", endpoint)
        .output()
        .expect("run orc logs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// `orc logs --follow` as a child whose lines arrive on a channel.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(endpoint: &str, task: &str) -> Follow {
        let mut child = Command::new(env!("CARGO_BIN_EXE_orc"))
            .args(["logs", task, "--follow"])
            .env("ORC_ENDPOINT", endpoint)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run orc logs --follow");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines }
    }

    /// Waits for a line equal to `want`, failing after `limit`.
    fn expect(&self, want: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line {want:?} within {limit:?}; got {seen:?}"),
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_tasks_output_is_read_through_the_server_after_it_stopped() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let definition = orc
        .register(json!({"family": "crash", "containerDefinitions": [{
            "name": "app", "image": image, "memory": 16,
            "command": ["sh", "-c", "echo starting up; echo something broke >&2; exit 3"]
        }]}))
        .await;
    let id = orc.run_task(&definition).await;
    let task = orc.wait_task(&id, "STOPPED").await;
    assert_eq!(task["containers"][0]["exitCode"], 3, "{task}");

    let (ok, out, err) = logs(&orc.server.address, &[&id]);
    assert!(ok, "orc logs failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"starting up"), "{out}");
    assert!(lines.contains(&"something broke"), "{out}");

    // --since takes durations and times.
    let (ok, out, err) = logs(&orc.server.address, &[&id, "--since", "1h"]);
    assert!(ok && out.contains("starting up"), "{out}{err}");
    let (ok, out, err) = logs(
        &orc.server.address,
        &[&id, "--since", "2999-01-01T00:00:00Z"],
    );
    assert!(ok && out.is_empty(), "nothing is that recent: {out}{err}");
    let (ok, _, err) = logs(&orc.server.address, &[&id, "--since", "yesterday"]);
    assert!(!ok && err.contains("write it like 10m"), "{err}");
    let (ok, _, err) = logs(&orc.server.address, &[&id, "--container", "nope"]);
    assert!(!ok && err.contains("no container named"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_lines_written_after_it_started() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let definition = orc
        .register(json!({"family": "talk", "containerDefinitions": [{
            "name": "app", "image": image, "memory": 16, "stopTimeout": 2,
            "command": ["sh", "-c",
                "echo ready; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo after go; sleep 600"]
        }]}))
        .await;
    let id = orc.run_task(&definition).await;
    let task = orc.wait_task(&id, "RUNNING").await;
    let follow = Follow::start(&orc.server.address, &id);
    follow.expect("ready", Duration::from_secs(30));
    // Only now is the next line written.
    let container = task["containers"][0]["runtimeId"].as_str().unwrap();
    let touched = Command::new("docker")
        .args(["exec", container, "touch", "/tmp/go"])
        .output()
        .unwrap();
    assert!(touched.status.success(), "{touched:?}");
    follow.expect("after go", Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_of_three_serves_the_logs_of_an_agent_connected_to_one() {
    let image = busybox_image(IMAGE);
    let root = tempfile::tempdir().unwrap();
    let servers = three_servers(root.path(), &[]).await;
    let agent_dir = root.path().join("agent");
    let agent = Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(["agent", "--server", &servers[0].address])
        .args(["--heartbeat-interval-ms", "500"])
        .arg("--data-dir")
        .arg(&agent_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = AgentGuard {
        child: agent,
        dir: agent_dir,
    };
    let client = servers[0].client();
    wait_instance_connected(&client).await;
    let (answer, _) = client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "hello", "containerDefinitions": [{
                "name": "app", "image": image, "memory": 16,
                "command": ["sh", "-c", "echo hello from the lab; exit 0"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(answer["taskDefinition"]["revision"], 1);
    let (answer, _) = client
        .call("RunTask", json!({"taskDefinition": "hello"}))
        .await
        .unwrap();
    let arn = answer["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let id = arn.rsplit('/').next().unwrap().to_string();
    eventually(Duration::from_secs(60), "the task STOPPED", || async {
        let (answer, _) = client
            .call("DescribeTasks", json!({"tasks": [id]}))
            .await
            .ok()?;
        (answer["tasks"][0]["lastStatus"] == "STOPPED").then_some(())
    })
    .await;
    // The agent's session is on one server; each of the three answers.
    let holders = servers
        .iter()
        .filter(|s| s.log_text().contains("agent log session opened"))
        .count();
    assert_eq!(holders, 1, "one server holds the session, two ask it");
    for server in &servers {
        let out = eventually(
            Duration::from_secs(20),
            &format!("the logs through {}", server.address),
            || async {
                let (ok, out, _) = logs(&server.address, &[&id]);
                ok.then_some(out)
            },
        )
        .await;
        assert_eq!(
            out.trim(),
            "hello from the lab",
            "through {}",
            server.address
        );
    }
}

/// Kills the agent and removes its containers, by its instance-id label.
struct AgentGuard {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Ok(text) = std::fs::read_to_string(self.dir.join("agent.json")) else {
            return;
        };
        let saved: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let Some(id) = saved["containerInstanceId"].as_str() else {
            return;
        };
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=orc.instance-id={id}"),
            ])
            .output()
            .unwrap();
        for container in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
    }
}
