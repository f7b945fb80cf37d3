//! An agent's connection to the control plane through failures (issue 11,
//! items 2 and 8), with real `orc server`s and real agents on the real
//! Docker Engine:
//! * an agent whose server is SIGKILLed moves to another server: its
//!   instance never turns DISCONNECTED and its service's tasks are neither
//!   replaced nor restarted;
//! * a second agent started on a copy of a running agent's data dir is
//!   refused with a sentence that names the copied data dir, while the
//!   original agent (and a restart of it after a crash) keeps its instance.

mod common;

use std::time::{Duration, Instant};

use common::agent::{TestAgent, DOCKER_PATIENCE};
use common::cluster::{call, eventually, patient_client, three_servers, TestServer};
use common::images::busybox_image;
use orc::client::Client;
use serde_json::{json, Value};

const IMAGE: &str = "orc-test/busybox:1";

async fn instances(client: &Client) -> Vec<Value> {
    call(client, "DescribeContainerInstances", json!({})).await["containerInstances"]
        .as_array()
        .unwrap()
        .clone()
}

async fn wait_connected(client: &Client, agent: &TestAgent) -> String {
    eventually(Duration::from_secs(30), "the agent to register", || async {
        let id = agent.instance_id()?;
        let connected = instances(client).await.iter().any(|i| {
            i["ec2InstanceId"] == id.as_str()
                && i["agentConnected"] == true
                && i["status"] == "ACTIVE"
        });
        connected.then_some(id)
    })
    .await
}

async fn service_task_ids(client: &Client) -> Vec<String> {
    let answer = call(client, "ListTasks", json!({"serviceName": "web"})).await;
    let mut ids: Vec<String> = answer["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn web_definition(image: &str) -> Value {
    json!({"family": "web", "containerDefinitions": [{
        "name": "web", "image": image, "memory": 16,
        "portMappings": [{"containerPort": 80}], "stopTimeout": 2,
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_server_is_killed_moves_on_and_keeps_its_tasks() {
    let image = busybox_image(IMAGE);
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path(), &[]).await;
    let status = servers[0].client().cluster_status(true).await.unwrap();
    let leader = status.leader_address.clone();
    let follower = servers
        .iter()
        .position(|s| s.address != leader)
        .expect("a follower");
    let agent = TestAgent::start(root.path(), "agent", &[&servers[follower].address]);
    let control = patient_client(&leader);
    let instance = wait_connected(&control, &agent).await;

    call(&control, "RegisterTaskDefinition", web_definition(&image)).await;
    call(
        &control,
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    eventually(DOCKER_PATIENCE, "the service to run 2 tasks", || async {
        let answer = call(&control, "DescribeServices", json!({"services": ["web"]})).await;
        (answer["services"][0]["runningCount"] == 2).then_some(())
    })
    .await;
    let tasks = service_task_ids(&control).await;
    assert_eq!(tasks.len(), 2);
    let containers = agent.containers();
    assert_eq!(containers.len(), 2, "{containers:?}");

    // The agent's server dies. For longer than the heartbeat grace (10 s)
    // the instance must stay connected and the tasks untouched.
    servers[follower].kill();
    let killed = Instant::now();
    let mut moved_after = None;
    while killed.elapsed() < Duration::from_secs(14) {
        if moved_after.is_none()
            && agent
                .log_text()
                .contains("moving to another control-plane server")
        {
            moved_after = Some(killed.elapsed());
        }
        let all = instances(&control).await;
        let ours: Vec<&Value> = all
            .iter()
            .filter(|i| i["ec2InstanceId"] == instance.as_str())
            .collect();
        assert_eq!(all.len(), 1, "one instance: {all:?}");
        assert!(
            ours[0]["status"] == "ACTIVE" && ours[0]["agentConnected"] == true,
            "{:.1}s after the kill the instance is {} (connected: {}):\nagent log:\n{}",
            killed.elapsed().as_secs_f64(),
            ours[0]["status"],
            ours[0]["agentConnected"],
            agent.log_text()
        );
        assert_eq!(
            service_task_ids(&control).await,
            tasks,
            "the service's tasks were replaced:\nagent log:\n{}",
            agent.log_text()
        );
        let answer = call(&control, "DescribeServices", json!({"services": ["web"]})).await;
        assert_eq!(answer["services"][0]["runningCount"], 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let moved_after = moved_after.unwrap_or_else(|| {
        panic!(
            "the agent never moved to another server:\n{}",
            agent.log_text()
        )
    });
    eprintln!("the agent moved to another server {moved_after:?} after its server was killed");
    assert_eq!(
        agent.containers(),
        containers,
        "the containers were replaced"
    );
    // The agent still gets new work through its new server.
    call(
        &control,
        "UpdateService",
        json!({"service": "web", "desiredCount": 3}),
    )
    .await;
    eventually(DOCKER_PATIENCE, "a third task", || async {
        let answer = call(&control, "DescribeServices", json!({"services": ["web"]})).await;
        (answer["services"][0]["runningCount"] == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_agent_data_dir_is_refused_and_a_restart_is_not() {
    let image = busybox_image(IMAGE);
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path(), "server", &["--bootstrap"], &[]);
    server.wait_ready().await;
    let control = patient_client(&server.address);
    let mut original = TestAgent::start(root.path(), "original", &[&server.address]);
    let instance = wait_connected(&control, &original).await;

    // A copy of the data dir (an SD card image put in another Pi).
    let copy = root.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    // The whole card: the instance id and the certificate naming it.
    for file in ["agent.json", "credential.json"] {
        std::fs::copy(original.data_dir.join(file), copy.join(file)).unwrap();
    }
    let mut clone = TestAgent::start(root.path(), "copy", &[&server.address]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = clone.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent on the copied data dir was never refused:\n{}",
            clone.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = clone.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("probably copied")
            && log.contains(&copy.join("agent.json").display().to_string()),
        "the refusal names the copied data dir and what to delete:\n{log}"
    );
    let all = instances(&control).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["agentConnected"], true);

    // The original still runs tasks without conflicts.
    call(&control, "RegisterTaskDefinition", web_definition(&image)).await;
    let answer = call(&control, "RunTask", json!({"taskDefinition": "web"})).await;
    let task = answer["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    eventually(DOCKER_PATIENCE, "the task to run", || async {
        let answer = call(&control, "DescribeTasks", json!({"tasks": [task]})).await;
        (answer["tasks"][0]["lastStatus"] == "RUNNING").then_some(())
    })
    .await;

    // The same agent killed and restarted at once is a restart, not a copy:
    // it registers again as soon as its old session's lease runs out.
    original.kill();
    let restarted = Instant::now();
    original.spawn();
    let registrations = |log: &str| {
        log.lines()
            .filter(|l| l.contains("registered") && l.contains("arn"))
            .count()
    };
    while registrations(&original.log_text()) < 2 {
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the restarted agent did not register again:\n{}\nserver log:\n{}",
            original.log_text(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the restarted agent registered again after {:?}",
        restarted.elapsed()
    );
    assert!(original.exited().is_none(), "{}", original.log_text());
    assert_eq!(wait_connected(&control, &original).await, instance);
}
