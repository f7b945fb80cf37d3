//! `orc up`, the README's "run it" command, as a newcomer runs it: one
//! process holding a control-plane server and an agent on the local Docker
//! Engine. It registers this machine as a container instance, stops cleanly
//! on SIGTERM, and started again from its data dir it keeps what was
//! written and comes back as the same container instance.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::cluster::{eventually, free_port, trust_cluster, wait_exit};
use orc::client::Client;

/// A running `orc up`; killed on drop if a test failed before stopping it.
struct Up {
    child: Child,
    log: std::path::PathBuf,
}

impl Up {
    fn start(data_dir: &Path, address: &str, log: &Path) -> Up {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_orc"))
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(address)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start orc up");
        Up {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Sends SIGTERM and waits (with a deadline) for a clean exit.
    fn stop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this test started.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "could not signal orc up");
        let status = wait_exit(&mut self.child, Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "orc up did not stop within 30 s of SIGTERM; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        });
        assert!(
            status.success(),
            "orc up exited with {status} on SIGTERM; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn arns(answer: &Value, field: &str) -> Vec<String> {
    answer[field]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|arn| arn.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container instances of the default cluster, once there is one.
async fn wait_instances(client: &Client) -> Vec<String> {
    eventually(
        Duration::from_secs(60),
        "orc up's container instance",
        || async {
            let (answer, _) = client
                .call("ListContainerInstances", json!({"cluster": "default"}))
                .await
                .ok()?;
            let instances = arns(&answer, "containerInstanceArns");
            (!instances.is_empty()).then_some(instances)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orc_up_runs_a_server_and_an_agent_and_keeps_its_state_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let log = root.path().join("up.log");
    let address = format!("127.0.0.1:{}", free_port());
    let mut up = Up::start(&data_dir, &address, &log);
    // orc up wrote an admin credential: this test and its CLIs use it.
    trust_cluster(&data_dir.join("server"), &address);
    let mut client = Client::new(&address).unwrap();
    client.retry_for = Duration::from_secs(5);

    let instances = wait_instances(&client).await;
    assert_eq!(
        instances.len(),
        1,
        "one machine, one instance: {instances:?}"
    );
    client
        .call("CreateCluster", json!({"clusterName": "lab"}))
        .await
        .unwrap();
    up.stop();

    let mut again = Up::start(&data_dir, &address, &log);
    let after_restart = wait_instances(&client).await;
    assert_eq!(
        after_restart, instances,
        "the restarted agent is the same container instance"
    );
    let (clusters, _) = client.call("ListClusters", json!({})).await.unwrap();
    assert!(
        arns(&clusters, "clusterArns")
            .iter()
            .any(|arn| arn.ends_with("cluster/lab")),
        "the cluster written before the restart is kept: {clusters}"
    );
    again.stop();
}
