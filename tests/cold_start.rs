//! Cold start after a power cut (issue 17): three real `orc server`s and
//! three real agents on the real Docker Engine run a service; every orc
//! process is SIGKILLed at once (one container dies with the power too), and
//! all are started again in a shuffled order. The test checks that:
//! * while only one server is back, `orc cluster status` names the members
//!   it waits for;
//! * agents re-adopt their still-running containers (ids unchanged) rather
//!   than restarting them;
//! * the container that died with the power is replaced, the service is at
//!   its desired count, no task runs twice and no container is orphaned.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{TestAgent, DOCKER_PATIENCE};
use common::cluster::{call, eventually, patient_client, three_servers};
use common::images::busybox_image;
use orc::client::Client;
use rand::seq::SliceRandom as _;
use serde_json::json;

const IMAGE: &str = "orc-test/busybox:1";
const DESIRED: u64 = 3;

/// The service's running count, or None while no server accepts reads.
async fn running_count(addresses: &[String]) -> Option<u64> {
    for address in addresses {
        let mut client = Client::new(address).ok()?;
        client.retry_for = Duration::from_secs(1);
        if let Ok((answer, _)) = client
            .call("DescribeServices", json!({"services": ["web"]}))
            .await
        {
            return answer["services"][0]["runningCount"].as_u64();
        }
    }
    None
}

/// Task id -> last status, for the service's tasks (running and stopped).
async fn tasks(client: &Client) -> BTreeMap<String, String> {
    let mut arns = vec![];
    for status in ["RUNNING", "STOPPED"] {
        let answer = call(
            client,
            "ListTasks",
            json!({"serviceName": "web", "desiredStatus": status}),
        )
        .await;
        arns.extend(answer["taskArns"].as_array().unwrap().iter().cloned());
    }
    if arns.is_empty() {
        return BTreeMap::new();
    }
    let answer = call(client, "DescribeTasks", json!({"tasks": arns})).await;
    answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let arn = t["taskArn"].as_str().unwrap();
            (
                arn.rsplit('/').next().unwrap().to_string(),
                t["lastStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Running container id -> its task id, over the agents' containers.
fn running_containers(agents: &[TestAgent]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for agent in agents {
        let Some(instance) = agent.instance_id() else {
            continue;
        };
        let output = Command::new("docker")
            .args([
                "ps",
                "--no-trunc",
                "--filter",
                &format!("label=orc.instance-id={instance}"),
                "--format",
                "{{.ID}} {{.Label \"orc.task-id\"}}",
            ])
            .output()
            .expect("run docker ps");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some((id, task)) = line.split_once(' ') {
                found.insert(id.to_string(), task.to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_killed_and_restarted_in_any_order_comes_back_without_restarts() {
    let image = busybox_image(IMAGE);
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path(), &[]).await;
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    let all: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let mut agents: Vec<TestAgent> = (1..=3)
        .map(|i| TestAgent::start(root.path(), &format!("agent{i}"), &all))
        .collect();
    let control = patient_client(&addresses[0]);
    eventually(
        Duration::from_secs(60),
        "three agents to connect",
        || async {
            let answer = call(&control, "DescribeContainerInstances", json!({})).await;
            let connected = answer["containerInstances"]
                .as_array()?
                .iter()
                .filter(|i| i["agentConnected"] == true)
                .count();
            (connected == 3).then_some(())
        },
    )
    .await;
    call(
        &control,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 16, "stopTimeout": 2,
        }]}),
    )
    .await;
    call(
        &control,
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": DESIRED}),
    )
    .await;
    eventually(DOCKER_PATIENCE, "the service to run its tasks", || async {
        (running_count(&addresses).await == Some(DESIRED)).then_some(())
    })
    .await;
    let before = running_containers(&agents);
    assert_eq!(before.len(), DESIRED as usize, "{before:?}");
    let tasks_before = tasks(&control).await;
    let member_ids: Vec<(u64, String)> = control
        .cluster_status(true)
        .await
        .unwrap()
        .members
        .iter()
        .map(|m| (m.id, m.address.clone()))
        .collect();

    // The power strip goes off: every orc process dies at once, and one
    // container dies with it (its Pi's Docker did not keep it).
    for server in servers.iter_mut() {
        server.kill();
    }
    for agent in agents.iter_mut() {
        agent.kill();
    }
    let (dead_container, dead_task) = before
        .iter()
        .next()
        .map(|(c, t)| (c.clone(), t.clone()))
        .unwrap();
    let removed = Command::new("docker")
        .args(["rm", "-f", &dead_container])
        .output()
        .expect("run docker rm");
    assert!(removed.status.success(), "{removed:?}");

    // Everyone comes back, in a shuffled order.
    #[derive(Clone, Copy, Debug)]
    enum Member {
        Server(usize),
        Agent(usize),
    }
    let mut order: Vec<Member> = (0..3)
        .map(Member::Server)
        .chain((0..3).map(Member::Agent))
        .collect();
    order.shuffle(&mut rand::thread_rng());
    eprintln!("restart order: {order:?}");
    let started = Instant::now();
    let mut servers_up = 0;
    for member in &order {
        match *member {
            Member::Server(i) => {
                servers[i].restart();
                servers_up += 1;
                if servers_up == 1 {
                    // Alone, it cannot elect a leader: it says whom it waits for.
                    servers[i].wait_ready().await;
                    // Named by id always, and by address once known (a
                    // server whose checkpoint predates its peers' joins
                    // learns their addresses when they call it).
                    let others: Vec<String> = member_ids
                        .iter()
                        .filter(|(_, a)| *a != addresses[i])
                        .map(|(id, _)| format!("server {id}"))
                        .collect();
                    let message = eventually(
                        Duration::from_secs(20),
                        "cluster status to name the missing members",
                        || async {
                            let output = Command::new(env!("CARGO_BIN_EXE_orc"))
                                .args(["--endpoint", &addresses[i], "--timeout", "5"])
                                .args(["cluster", "status"])
                                .output()
                                .expect("run orc cluster status");
                            let text = String::from_utf8_lossy(&output.stderr).to_string();
                            (!output.status.success()
                                && others.iter().all(|o| text.contains(o.as_str())))
                            .then_some(text)
                        },
                    )
                    .await;
                    eprintln!("with one server back, `orc cluster status` says: {message}");
                    assert!(
                        message.contains("waiting for a quorum (2 of 3 voters, 1 answering)"),
                        "{message}"
                    );
                }
            }
            Member::Agent(i) => agents[i].spawn(),
        }
    }

    // Settled: the service at its count, as many containers as RUNNING
    // tasks, each container a RUNNING task's (nothing orphaned).
    let (after, tasks_after) = eventually(
        Duration::from_secs(120),
        "the service to be back at its desired count with every container a running task's",
        || async {
            if running_count(&addresses).await != Some(DESIRED) {
                return None;
            }
            let after = running_containers(&agents);
            let tasks_after = tasks(&patient_client(&addresses[0])).await;
            let running = tasks_after.values().filter(|s| *s == "RUNNING").count();
            let all_running = after
                .values()
                .all(|t| tasks_after.get(t).map(String::as_str) == Some("RUNNING"));
            (after.len() == DESIRED as usize && running == DESIRED as usize && all_running)
                .then_some((after, tasks_after))
        },
    )
    .await;
    eprintln!(
        "cold start: the cluster accepts writes and the service runs {DESIRED} tasks {:.1}s after the restarts began",
        started.elapsed().as_secs_f64()
    );
    // Writes are accepted.
    call(
        &patient_client(&addresses[0]),
        "UpdateService",
        json!({"service": "web", "desiredCount": DESIRED}),
    )
    .await;

    // The survivors were adopted, not restarted: same container ids.
    for (container, task) in &before {
        if *container != dead_container {
            assert_eq!(
                after.get(container),
                Some(task),
                "container {container} of task {task} was not re-adopted: {after:?}"
            );
        }
    }
    // No task runs twice, and every running container is a RUNNING task's.
    let mut per_task: BTreeMap<&String, usize> = BTreeMap::new();
    for task in after.values() {
        *per_task.entry(task).or_default() += 1;
        assert_eq!(
            tasks_after.get(task).map(String::as_str),
            Some("RUNNING"),
            "container of task {task} is orphaned: {tasks_after:?}"
        );
    }
    assert!(
        per_task.values().all(|n| *n == 1),
        "a task runs twice: {per_task:?}"
    );
    // The task whose container died was replaced by a new one.
    assert!(
        !after.values().any(|t| *t == dead_task),
        "the dead task still has a container: {after:?}"
    );
    assert_ne!(
        tasks_after.get(&dead_task).map(String::as_str),
        Some("RUNNING")
    );
    let new_tasks: Vec<&String> = tasks_after
        .iter()
        .filter(|(id, status)| *status == "RUNNING" && !tasks_before.contains_key(*id))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(new_tasks.len(), 1, "{tasks_before:?} -> {tasks_after:?}");
}
