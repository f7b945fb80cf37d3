//! A control plane plus a real `orc agent` on the local Docker Engine, for
//! end-to-end tests. Everything the agent started is removed on drop, by
//! the agent's instance-id label, even when the test failed.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::cluster::{eventually, TestServer};
use orc::client::Client;

/// One `orc server` and one `orc agent`.
pub struct TestOrc {
    pub server: TestServer,
    pub agent_dir: PathBuf,
    agent: Option<Child>,
    agent_log: PathBuf,
    pub root: tempfile::TempDir,
}

impl TestOrc {
    /// Starts a one-server control plane and an agent; waits for the instance.
    pub async fn start() -> TestOrc {
        Self::start_with(&[]).await
    }

    /// Like `start`, with extra server flags kept across restarts
    /// (`--insecure`: plain text, and the agent connects so too).
    pub async fn start_with(tuning: &[&str]) -> TestOrc {
        let root = tempfile::tempdir().unwrap();
        let server = TestServer::start(root.path(), "server", &["--bootstrap"], tuning);
        server.wait_ready().await;
        let mut orc = TestOrc {
            server,
            agent_dir: root.path().join("agent"),
            agent: None,
            agent_log: root.path().join("agent.log"),
            root,
        };
        orc.start_agent();
        orc.wait_instance_connected().await;
        orc
    }

    /// Starts (or restarts) the agent process.
    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.agent_log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_orc"))
            .args([
                "agent",
                "--server",
                &self.server.address,
                "--heartbeat-interval-ms",
                "500",
            ])
            .arg("--data-dir")
            .arg(&self.agent_dir)
            .args(self.server.insecure.then_some("--insecure"))
            .env("RUST_LOG", "info,orc::agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start orc agent");
        self.agent = Some(child);
    }

    /// SIGKILL the agent.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    /// The agent's container instance id (from its data dir).
    pub fn instance_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.agent_dir.join("agent.json")).ok()?;
        let saved: Value = serde_json::from_str(&text).ok()?;
        saved["container_instance_id"]
            .as_str()
            .or(saved["containerInstanceId"].as_str())
            .map(str::to_string)
    }

    /// A client with a generous retry window.
    pub fn client(&self) -> Client {
        super::cluster::patient_client(&self.server.address)
    }

    /// Calls an ECS action, panicking with the error.
    pub async fn call(&self, action: &str, body: Value) -> Value {
        super::cluster::call(&self.client(), action, body).await
    }

    /// Runs `orc` with the endpoint set; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_orc"))
            .args(args)
            .env("ORC_ENDPOINT", &self.server.address)
            .output()
            .expect("run orc");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    }

    /// Waits until the instance is registered and connected.
    pub async fn wait_instance_connected(&self) {
        super::cluster::wait_instance_connected(&self.client()).await;
    }

    /// Registers a task definition document; returns `family:revision`.
    pub async fn register(&self, document: Value) -> String {
        let answer = self.call("RegisterTaskDefinition", document).await;
        format!(
            "{}:{}",
            answer["taskDefinition"]["family"].as_str().unwrap(),
            answer["taskDefinition"]["revision"]
        )
    }

    /// Runs one task; returns its id.
    pub async fn run_task(&self, definition: &str) -> String {
        let answer = self
            .call("RunTask", json!({"taskDefinition": definition}))
            .await;
        let arn = answer["tasks"][0]["taskArn"]
            .as_str()
            .unwrap_or_else(|| panic!("run-task placed nothing: {answer}"));
        arn.rsplit('/').next().unwrap().to_string()
    }

    /// Describes one task.
    pub async fn task(&self, id: &str) -> Value {
        let answer = self.call("DescribeTasks", json!({"tasks": [id]})).await;
        answer["tasks"][0].clone()
    }

    /// Waits until the task's lastStatus is `status`; returns the task.
    pub async fn wait_task(&self, id: &str, status: &str) -> Value {
        eventually(
            Duration::from_secs(60),
            &format!(
                "task {id} to be {status}; the agent's log:\n{}\nthe server's log:\n{}",
                self.agent_log(),
                self.server.log_text()
            ),
            || async {
                let task = self.task(id).await;
                (task["lastStatus"] == status).then_some(task)
            },
        )
        .await
    }

    /// Docker containers this agent manages (ids), running or not.
    pub fn containers(&self) -> Vec<String> {
        let Some(id) = self.instance_id() else {
            return vec![];
        };
        super::agent::docker_ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=orc.instance-id={id}"),
        ])
    }

    /// Running containers of this agent.
    pub fn running_containers(&self) -> Vec<String> {
        let Some(id) = self.instance_id() else {
            return vec![];
        };
        super::agent::docker_ids(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=orc.instance-id={id}"),
        ])
    }
}

impl Drop for TestOrc {
    fn drop(&mut self) {
        self.kill_agent();
        self.server.kill();
        if let Some(id) = self.instance_id() {
            super::agent::remove_instance_containers(&id);
        }
    }
}
