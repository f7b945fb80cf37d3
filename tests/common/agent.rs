//! A real `orc agent` process pointed at any list of servers, for tests that
//! run their own control plane (several servers, copied data dirs). Its
//! containers and networks are removed on drop, by its instance-id label.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// One `orc agent` process.
pub struct TestAgent {
    pub data_dir: PathBuf,
    pub log: PathBuf,
    servers: Vec<String>,
    child: Option<Child>,
}

impl TestAgent {
    /// Starts an agent with `--server` for each address (heartbeats every
    /// 500 ms), its data dir and log under `root/name`.
    pub fn start(root: &Path, name: &str, servers: &[&str]) -> TestAgent {
        let mut agent = TestAgent {
            data_dir: root.join(name),
            log: root.join(format!("{name}.log")),
            servers: servers.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        agent.spawn();
        agent
    }

    /// Starts (or restarts) the process.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the agent log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_orc"));
        command.arg("agent");
        for server in &self.servers {
            command.args(["--server", server]);
        }
        let child = command
            .args(["--heartbeat-interval-ms", "500"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start orc agent");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, once the process ended by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The captured log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The container instance id from the data dir, once registered.
    pub fn instance_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data_dir.join("agent.json")).ok()?;
        let saved: Value = serde_json::from_str(&text).ok()?;
        saved["containerInstanceId"].as_str().map(str::to_string)
    }

    /// Ids of this instance's containers (running or not).
    pub fn containers(&self) -> Vec<String> {
        let Some(id) = self.instance_id() else {
            return vec![];
        };
        docker_ids(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=orc.instance-id={id}"),
        ])
    }
}

/// The ids `docker ARGS` prints, one a line, sorted.
pub fn docker_ids(args: &[&str]) -> Vec<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    let mut ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    ids.sort();
    ids
}

/// Removes every container and network labelled with `instance_id`.
pub fn remove_instance_containers(instance_id: &str) {
    let label = format!("label=orc.instance-id={instance_id}");
    let containers = docker_ids(&["ps", "-aq", "--filter", &label]);
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&containers)
            .output();
    }
    let networks = docker_ids(&["network", "ls", "-q", "--filter", &label]);
    if !networks.is_empty() {
        let _ = Command::new("docker")
            .args(["network", "rm"])
            .args(&networks)
            .output();
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
        if let Some(id) = self.instance_id() {
            remove_instance_containers(&id);
        }
    }
}

/// How long to wait for slow Docker operations on a loaded machine.
pub const DOCKER_PATIENCE: Duration = Duration::from_secs(90);
