//! What a user sees when the leader fails: real `orc server` processes on
//! loopback, the leader SIGKILLed or SIGSTOPped, and one plain client write
//! (a normal `Client::call`, no overlapping attempts) sent to a follower at
//! once. The write must complete well before the servers' 10 s request
//! time-out and be applied exactly once. Also: agent reports across a
//! leader change, a server whose disk fills, and `orc server recover`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{eventually, three_servers, TestServer};
use orc::client::Client;
use serde_json::{json, Value};

/// The longest a write sent during a leader change may take, as the issue
/// asks: the election (the first surviving follower stands after 1.1–1.2 s
/// with the default 1 s time-out; members' time-outs are staggered by rank,
/// so two followers never stand together and split the vote) plus the
/// retry at the new leader. Before the fix such a write took the 10 s
/// request time-out (10.06 s measured); how fast it is against etcd is the
/// control-plane bench's "user-visible failover" figure.
const FAILOVER_BUDGET: Duration = Duration::from_millis(2500);

/// The index of the leader among `servers`, as the servers report it.
async fn leader_of(servers: &[TestServer; 3]) -> usize {
    eventually(Duration::from_secs(20), "a leader", || async {
        for server in servers.iter() {
            if let Ok(status) = server.client().cluster_status(false).await {
                if let Some(index) = servers.iter().position(|s| {
                    !status.leader_address.is_empty() && s.address == status.leader_address
                }) {
                    return Some(index);
                }
            }
        }
        None
    })
    .await
}

/// A task definition family registered once gets revision 1; a write
/// applied twice would leave revision 2 as well.
fn register_body(family: &str) -> Value {
    json!({
        "family": family,
        "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 16}],
    })
}

/// Every revision of `family` that exists, read at `server` (linearizable).
async fn revisions(server: &TestServer, family: &str) -> Vec<String> {
    let (answer, _) = server
        .client()
        .call_all_pages("ListTaskDefinitions", json!({ "familyPrefix": family }))
        .await
        .unwrap_or_else(|e| panic!("list on {} failed: {e}", server.address));
    answer["taskDefinitionArns"]
        .as_array()
        .expect("taskDefinitionArns")
        .iter()
        .map(|arn| {
            arn.as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Fails the leader with `fail`, then at once sends one write to a
/// follower and checks it completes within the budget, applied once.
async fn write_during_leader_failure(fail: impl FnOnce(&mut TestServer)) {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path(), &[]).await;
    let leader = leader_of(&servers).await;
    let follower = (leader + 1) % 3;
    // A first write through the follower: the forwarding path is warm, as
    // it is for an agent or a CLI that has been talking to it.
    servers[follower]
        .client()
        .call("RegisterTaskDefinition", register_body("warm"))
        .await
        .expect("a write before the failure");

    let client = Client::new(&servers[follower].address).unwrap();
    fail(&mut servers[leader]);
    let started = Instant::now();
    let answer = client
        .call("RegisterTaskDefinition", register_body("during-failover"))
        .await;
    let took = started.elapsed();
    eprintln!("the write sent during the leader change was answered after {took:?}");
    let (answer, _) = answer.unwrap_or_else(|e| panic!("the write failed after {took:?}: {e}"));
    assert_eq!(
        answer["taskDefinition"]["revision"], 1,
        "unexpected answer {answer}"
    );
    assert!(
        took < FAILOVER_BUDGET,
        "a write sent to a follower during the leader change took {took:?} (budget {FAILOVER_BUDGET:?})"
    );
    // Applied exactly once: one revision of the family, on every live server.
    for (index, server) in servers.iter().enumerate() {
        if index == leader {
            continue;
        }
        assert_eq!(
            revisions(server, "during-failover").await,
            vec!["during-failover:1".to_string()],
            "the write was not applied exactly once on {}",
            server.address
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_right_after_the_leader_is_killed_completes_promptly_once() {
    write_during_leader_failure(|leader| leader.kill()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_while_the_leader_is_paused_completes_promptly_once() {
    write_during_leader_failure(|leader| leader.signal("STOP")).await;
}

// ---------------------------------------------------------------- full disk

/// A tmpfs of `size` mounted at `path` for one test; unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts it; panics with the reason when mounting is not permitted
    /// (the test needs root, as the container it runs in has).
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "cannot mount a {size} tmpfs at {} (this test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A task definition of about 60 KiB (a long environment value; ECS allows 64).
fn bulky_body(n: usize) -> Value {
    json!({
        "family": format!("bulky-{n}"),
        "containerDefinitions": [{
            "name": "c", "image": "busybox", "memory": 16,
            "environment": [{"name": "PAD", "value": "x".repeat(60 * 1024)}],
        }],
    })
}

/// The failure this server reports about itself, if any (its local view).
async fn own_failure(server: &TestServer) -> Option<(String, String)> {
    let mut client = server.client();
    client.retry_for = Duration::ZERO;
    let status = tokio::time::timeout(Duration::from_secs(2), client.cluster_status(false))
        .await
        .ok()?
        .ok()?;
    let me = status
        .members
        .iter()
        .find(|m| m.id == status.answering_node_id)?;
    (!me.failure.is_empty()).then(|| (me.role.clone(), me.failure.clone()))
}

/// Checks what a server whose disk is full shows and does: it stops
/// claiming health, refuses a write at once naming its data dir and the
/// error, and exits non-zero (for systemd to restart it).
async fn check_failed_server(server: &mut TestServer) {
    let (role, failure) = own_failure(server)
        .await
        .expect("the server reports its failure");
    assert_eq!(role, "failed", "cluster status --local shows role {role}");
    let data_dir = server.data_dir.display().to_string();
    assert!(
        failure.contains(&data_dir) && failure.contains("No space left on device"),
        "the failure names neither the data dir nor the error: {failure}"
    );
    let mut client = server.client();
    client.retry_for = Duration::ZERO;
    let started = Instant::now();
    let refused = client
        .call("RegisterTaskDefinition", register_body("after-failure"))
        .await
        .expect_err("a write to a server whose storage failed must be refused");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "the refusal took {took:?}");
    let refused = refused.to_string();
    assert!(
        refused.contains(&data_dir) && refused.contains("No space left on device"),
        "the refusal names neither the data dir nor the error: {refused}"
    );
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the failed server exits");
    assert!(
        !status.success(),
        "the failed server exited with {status}: it must exit non-zero so systemd restarts it"
    );
    let log = server.log_text();
    assert!(
        !log.contains("was removed from the control plane"),
        "the failed server claims it was removed:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_stops_claiming_health_and_the_others_carry_on() {
    let root = tempfile::tempdir().unwrap();
    let first = TestServer::start(root.path(), "s1", &["--bootstrap"], &[]);
    first.wait_ready().await;
    let disk = SmallDisk::mount(&root.path().join("s2"), "6m");
    let join = ["--join", first.address.as_str()];
    let mut second = TestServer::start(root.path(), "s2", &join, &[]);
    let third = TestServer::start(root.path(), "s3", &join, &[]);
    common::cluster::wait_voters(&first, 3).await;

    // Fill s2's disk through the leader until s2 reports its failure.
    let mut n = 0;
    eventually(
        Duration::from_secs(120),
        "s2 to report its full disk",
        || {
            n += 1;
            let body = bulky_body(n);
            let first = &first;
            let second = &second;
            async move {
                if let Some(failure) = own_failure(second).await {
                    return Some(failure);
                }
                first
                    .client()
                    .call("RegisterTaskDefinition", body)
                    .await
                    .expect("a write through the healthy servers");
                None
            }
        },
    )
    .await;
    check_failed_server(&mut second).await;

    // The other two carry on: writes and linearizable reads succeed.
    let (answer, _) = third
        .client()
        .call("RegisterTaskDefinition", register_body("carry-on"))
        .await
        .expect("a write after s2 failed");
    assert_eq!(answer["taskDefinition"]["revision"], 1);
    assert_eq!(
        revisions(&first, "carry-on").await,
        vec!["carry-on:1".to_string()]
    );
    drop(second);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_whose_disk_fills_exits_non_zero_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&root.path().join("s1"), "8m");
    let mut server = TestServer::start(root.path(), "s1", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let mut n = 0;
    eventually(
        Duration::from_secs(120),
        "the full disk to be reported",
        || {
            n += 1;
            let body = bulky_body(n);
            let server = &server;
            async move {
                if let Some(failure) = own_failure(server).await {
                    return Some(failure);
                }
                let mut client = server.client();
                client.retry_for = Duration::ZERO;
                // The write that meets the full disk is refused; the next
                // round sees the failure.
                let _ = client.call("RegisterTaskDefinition", body).await;
                None
            }
        },
    )
    .await;
    check_failed_server(&mut server).await;
    drop(disk);
}

// ---------------------------------------------------------------- recover

/// Runs the orc CLI; returns (success, stdout, stderr).
fn orc_cli(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orc"))
        .args(args)
        .output()
        .expect("run orc");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_lost_its_quorum_for_good_is_recovered_from_one_server() {
    let root = tempfile::tempdir().unwrap();
    let mut first = TestServer::start(root.path(), "s1", &["--bootstrap"], &[]);
    first.wait_ready().await;
    let mut second = TestServer::start(root.path(), "s2", &["--join", first.address.as_str()], &[]);
    common::cluster::wait_voters(&first, 2).await;
    // Growing to 2 voters warns that they tolerate no failure.
    eventually(Duration::from_secs(10), "the 2-voter warning", || async {
        first
            .log_text()
            .contains("2 voters, which tolerate no failure")
            .then_some(())
    })
    .await;
    let status = first.client().cluster_status(true).await.unwrap();
    let lost = status
        .members
        .iter()
        .find(|m| m.id != status.answering_node_id)
        .expect("the joiner")
        .id;
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    for family in &before {
        first
            .client()
            .call("RegisterTaskDefinition", register_body(family))
            .await
            .expect("a write with both servers up");
    }

    // The joiner's board dies for good: no quorum. Stop the survivor too
    // (recovery works on a stopped server's data dir).
    second.kill();
    first.kill();
    let data_dir = first.data_dir.display().to_string();
    let (ok, stdout, stderr) = orc_cli(&["server", "recover", "--data-dir", &data_dir]);
    assert!(ok, "orc server recover failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "discarded member: server {lost} at {}",
            second.address
        )),
        "recover does not say it discarded server {lost}:\n{stdout}"
    );
    assert!(stdout.contains("kept the whole log"), "{stdout}");

    first.restart();
    first.wait_ready().await;
    let (answer, _) = first
        .client()
        .call("RegisterTaskDefinition", register_body("after-recovery"))
        .await
        .expect("a write after recovery");
    assert_eq!(answer["taskDefinition"]["revision"], 1);
    for family in &before {
        assert_eq!(
            revisions(&first, family).await,
            vec![format!("{family}:1")],
            "an acknowledged write was lost or doubled by the recovery"
        );
    }
    let status = first.client().cluster_status(true).await.unwrap();
    assert_eq!(
        status.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![status.answering_node_id],
        "the recovered control plane has other members"
    );
}

// ---------------------------------------------------------------- agents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_and_heartbeats_through_a_follower_survive_a_leader_change() {
    use orc::wire::proto::agent_api_client::AgentApiClient;
    use orc::wire::proto::{HeartbeatRequest, RegisterInstanceRequest, TaskStateReport};

    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path(), &[]).await;
    let leader = leader_of(&servers).await;
    let follower = (leader + 1) % 3;
    let third = (leader + 2) % 3;
    // A fake agent (the gRPC calls a real one makes) on the follower.
    let mut agent = AgentApiClient::new(orc::wire::channel(&servers[follower].address).unwrap());
    let registration = json!({
        "hostname": "fake-pi", "cpu": 4096, "memoryMib": 4096,
        "agentVersion": "test", "dockerVersion": "none",
    });
    let instance_id = agent
        .register_container_instance(RegisterInstanceRequest {
            cluster: "default".into(),
            container_instance_id: String::new(),
            instance_json: registration.to_string(),
            agent_session: String::new(),
        })
        .await
        .expect("register the fake instance")
        .into_inner()
        .container_instance_id;
    let heartbeat = HeartbeatRequest {
        cluster: "default".into(),
        container_instance_id: instance_id.clone(),
        running_task_ids: Vec::new(),
        agent_session: String::new(),
    };
    let beating = {
        let mut agent = agent.clone();
        let heartbeat = heartbeat.clone();
        tokio::spawn(async move {
            loop {
                let _ = agent.heartbeat(heartbeat.clone()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let client = servers[follower].client();
    client
        .call("RegisterTaskDefinition", register_body("reported"))
        .await
        .expect("register a task definition");
    let (answer, _) = client
        .call("RunTask", json!({"taskDefinition": "reported", "count": 3}))
        .await
        .expect("run tasks on the fake instance");
    let tasks: Vec<String> = answer["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tasks.len(), 3, "RunTask answered {answer}");

    // The leader dies; the agent reports each task RUNNING through its
    // follower at once, one after the other, as the agent does.
    servers[leader].kill();
    for task in &tasks {
        let report = json!({"taskArn": task, "status": "RUNNING", "containers": [], "atMs": 1});
        let started = Instant::now();
        let answered = tokio::time::timeout(
            FAILOVER_BUDGET,
            agent.report_task_state(TaskStateReport {
                cluster: "default".into(),
                container_instance_id: instance_id.clone(),
                report_json: report.to_string(),
            }),
        )
        .await;
        match answered {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => panic!("a report during the leader change failed: {status:?}"),
            Err(_) => panic!(
                "a report during the leader change was not answered within {FAILOVER_BUDGET:?} (sent {:?} after the kill)",
                started.elapsed()
            ),
        }
    }
    // No report lost: every task is RUNNING, on both live servers.
    for server in [&servers[follower], &servers[third]] {
        let (answer, _) = server
            .client()
            .call("DescribeTasks", json!({ "tasks": tasks }))
            .await
            .expect("describe the tasks");
        for task in answer["tasks"].as_array().unwrap() {
            assert_eq!(task["lastStatus"], "RUNNING", "a report was lost: {task}");
        }
    }
    // The election alone disconnects nobody: for a few seconds under the
    // new leader, the instance stays connected.
    let watched_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watched_until {
        let (answer, _) = servers[third]
            .client()
            .call(
                "DescribeContainerInstances",
                json!({ "containerInstances": [instance_id] }),
            )
            .await
            .expect("describe the instance");
        let instance = &answer["containerInstances"][0];
        assert_eq!(
            instance["agentConnected"], true,
            "the instance was marked disconnected by the election: {instance}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    beating.abort();
}
