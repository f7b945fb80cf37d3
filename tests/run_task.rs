//! The seeds' first lab on the real Docker Engine: register a task
//! definition, run a task, open it, stop it; plus multi-container tasks,
//! dependsOn and health checks, dynamic ports, agent restarts, and invalid
//! task definitions. Images are built locally; nothing is pulled.

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::cluster::eventually;
use common::images::busybox_image;
use common::orc::TestOrc;
use serde_json::{json, Value};

const IMAGE: &str = "orc-test/busybox:1";

fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

fn host_ports(task: &Value) -> Vec<u16> {
    task["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["networkBindings"].as_array().cloned().unwrap_or_default())
        .map(|b| b["hostPort"].as_u64().unwrap() as u16)
        .collect()
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_a_web_task_open_it_and_stop_it() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let definition = orc
        .register(json!({"family": "web", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 32, "portMappings": [{"containerPort": 80}]
        }]}))
        .await;
    let id = orc.run_task(&definition).await;
    let task = orc.wait_task(&id, "RUNNING").await;
    let ports = host_ports(&task);
    assert_eq!(ports.len(), 1, "one binding: {task}");
    assert!(
        (32768..=60999).contains(&ports[0]),
        "a dynamic port from the ECS range: {}",
        ports[0]
    );
    let page = eventually(Duration::from_secs(10), "the page", || async {
        http_get(ports[0])
    })
    .await;
    assert!(page.contains("hello from"), "{page}");

    let (ok, _, stderr) = orc.cli(&["stop-task", "--task", &id, "--reason", "lab is over"]);
    assert!(ok, "{stderr}");
    let task = orc.wait_task(&id, "STOPPED").await;
    assert_eq!(task["stopCode"], "UserInitiated");
    assert_eq!(task["stoppedReason"], "lab is over");
    assert!(
        container(&task, "web")["exitCode"].is_i64(),
        "the exit code is reported: {task}"
    );
    // The container is kept (exited) for the agent's task cleanup wait, so
    // its output can still be read.
    assert!(orc.running_containers().is_empty());
    assert_eq!(orc.containers().len(), 1, "the stopped container is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_essential_container_exiting_stops_the_task() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let definition = orc
        .register(json!({"family": "pair", "containerDefinitions": [
            {"name": "app", "image": image, "memory": 16, "essential": true,
             "command": ["sh", "-c", "sleep 1; exit 3"]},
            {"name": "side", "image": image, "memory": 16, "essential": false,
             "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"], "stopTimeout": 5}
        ]}))
        .await;
    let id = orc.run_task(&definition).await;
    let task = orc.wait_task(&id, "STOPPED").await;
    assert_eq!(task["stopCode"], "EssentialContainerExited", "{task}");
    assert_eq!(
        task["stoppedReason"], "Essential container in task exited",
        "{task}"
    );
    assert_eq!(container(&task, "app")["exitCode"], 3, "{task}");
    assert_eq!(container(&task, "side")["lastStatus"], "STOPPED", "{task}");
    assert!(container(&task, "side")["exitCode"].is_i64(), "{task}");
    eventually(Duration::from_secs(20), "no running container", || async {
        orc.running_containers().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_health_checks_and_dynamic_ports() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let definition = orc
        .register(json!({"family": "stack", "containerDefinitions": [
            {"name": "db", "image": image, "memory": 16,
             "command": ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 600"],
             "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ready"], "interval": 5, "timeout": 2, "retries": 3}},
            {"name": "web", "image": image, "memory": 16, "portMappings": [{"containerPort": 80, "hostPort": 0}],
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
             "links": ["db:database"],
             "command": ["sh", "-c", "wget -q -T 2 -O /dev/null http://database/ 2>/dev/null; echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www"]}
        ]}))
        .await;
    let id = orc.run_task(&definition).await;
    let task = orc.wait_task(&id, "RUNNING").await;
    let health = eventually(
        Duration::from_secs(40),
        "the task to be HEALTHY",
        || async {
            let task = orc.task(&id).await;
            (task["healthStatus"] == "HEALTHY").then_some(task)
        },
    )
    .await;
    assert_eq!(container(&health, "db")["healthStatus"], "HEALTHY");
    assert_eq!(task["lastStatus"], "RUNNING");

    // Five more web tasks at once: their dynamic host ports never collide.
    let web = orc
        .register(json!({"family": "many", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 16, "portMappings": [{"containerPort": 80}]
        }]}))
        .await;
    let answer = orc
        .call("RunTask", json!({"taskDefinition": web, "count": 5}))
        .await;
    let ids: Vec<String> = answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["taskArn"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 5);
    let mut ports = BTreeSet::new();
    for id in &ids {
        let task = orc.wait_task(id, "RUNNING").await;
        for port in host_ports(&task) {
            assert!(ports.insert(port), "host port {port} was given twice");
        }
    }
    ports.extend(host_ports(&orc.task(&id).await));
    assert_eq!(ports.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_and_restarted_adopts_its_containers() {
    let image = busybox_image(IMAGE);
    let mut orc = TestOrc::start().await;
    let definition = orc
        .register(json!({"family": "keep", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 16, "portMappings": [{"containerPort": 80}]
        }]}))
        .await;
    let kept = orc.run_task(&definition).await;
    let stopped = orc.run_task(&definition).await;
    orc.wait_task(&kept, "RUNNING").await;
    orc.wait_task(&stopped, "RUNNING").await;
    let before: BTreeSet<String> = orc.running_containers().into_iter().collect();
    assert_eq!(before.len(), 2);

    orc.kill_agent();
    // Stopped while the agent is down: it must be stopped when the agent returns.
    orc.call("StopTask", json!({"task": stopped})).await;
    assert_eq!(
        orc.running_containers().len(),
        2,
        "nothing happens without the agent"
    );
    orc.start_agent();

    let task = orc.wait_task(&stopped, "STOPPED").await;
    assert_eq!(task["stopCode"], "UserInitiated");
    let after: BTreeSet<String> = orc.running_containers().into_iter().collect();
    assert_eq!(
        after.len(),
        1,
        "one container left running: {after:?}\nkept: {}\nagent log:\n{}\nserver log:\n{}",
        orc.task(&kept).await,
        orc.agent_log(),
        orc.server.log_text()
    );
    assert!(
        before.contains(after.iter().next().unwrap()),
        "the kept task's container was adopted, not recreated"
    );
    let kept_task = orc.task(&kept).await;
    assert_eq!(kept_task["lastStatus"], "RUNNING");
    assert_eq!(
        orc.containers().len(),
        2,
        "no duplicate and no orphan (the stopped task's container is kept, exited, for the cleanup wait):\n{}",
        orc.agent_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_task_definitions_are_refused_naming_the_field() {
    let orc = TestOrc::start().await;
    let container = |extra: Value| {
        let mut base = json!({"name": "web", "image": "busybox", "memory": 64});
        for (key, value) in extra.as_object().unwrap() {
            base[key] = value.clone();
        }
        base
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"family": "bad", "containerDefinitions": [container(json!({"essential": false}))]}),
            "essential",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [container(json!({"memory": 64, "memoryReservation": 128}))]}),
            "containerDefinitions[0].memoryReservation",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [{"name": "web", "image": "busybox"}]}),
            "containerDefinitions[0]",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [container(json!({})), container(json!({}))]}),
            "containerDefinitions[1].name",
        ),
        (
            json!({"family": "bad", "containerDefinitions": (0..11).map(|i| container(json!({"name": format!("c{i}")}))).collect::<Vec<_>>()}),
            "containerDefinitions",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [container(json!({"portMappings": [{"containerPort": 70000}]}))]}),
            "containerDefinitions[0].portMappings[0].containerPort",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [container(json!({"dependsOn": [{"containerName": "ghost", "condition": "START"}]}))]}),
            "containerDefinitions[0].dependsOn[0].containerName",
        ),
    ];
    for (document, path) in cases {
        let file = orc.root.path().join("td.json");
        std::fs::write(&file, document.to_string()).unwrap();
        let (ok, _, stderr) = orc.cli(&[
            "register-task-definition",
            "--cli-input-json",
            &format!("file://{}", file.display()),
        ]);
        assert!(!ok, "{document} should be refused");
        assert!(
            stderr.contains(path),
            "the error should name {path}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let answer = orc
        .call("ListTaskDefinitions", json!({"familyPrefix": "bad"}))
        .await;
    assert_eq!(
        answer["taskDefinitionArns"],
        json!([]),
        "nothing may be registered"
    );
    let answer = orc
        .call(
            "ListTaskDefinitions",
            json!({"familyPrefix": "bad", "status": "INACTIVE"}),
        )
        .await;
    assert_eq!(answer["taskDefinitionArns"], json!([]));
}

fn remaining_memory(instances: &Value) -> i64 {
    instances["containerInstances"][0]["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "MEMORY")
        .unwrap()["integerValue"]
        .as_i64()
        .unwrap()
}

/// Issue 12, item 1: a task that fits nowhere waits in PROVISIONING and is
/// placed as soon as room appears (here: the task holding the memory stops),
/// and `orc explain-task` says what happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_task_runs_once_room_appears() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let free = remaining_memory(&orc.call("DescribeContainerInstances", json!({})).await);
    let sleeper = json!([
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 1; done"
    ]);
    // Nearly all of the instance's memory, as a reservation (not a hard limit).
    let hog = orc
        .register(json!({"family": "hog", "containerDefinitions": [{
            "name": "hog", "image": image, "memoryReservation": free - 100, "command": sleeper}]}))
        .await;
    // The `--family --container-definitions` form of register-task-definition.
    let containers = json!([{"name": "second", "image": image, "memory": 200, "command": sleeper}]);
    let (ok, _, stderr) = orc.cli(&[
        "register-task-definition",
        "--family",
        "second",
        "--container-definitions",
        &containers.to_string(),
    ]);
    assert!(ok, "{stderr}");
    let second = "second:1".to_string();
    let hog_id = orc.run_task(&hog).await;
    let (ok, _, stderr) = orc.cli(&[
        "wait",
        "tasks-running",
        "--tasks",
        &hog_id,
        "--timeout",
        "60",
    ]);
    assert!(ok, "{stderr}");

    let second_id = orc.run_task(&second).await;
    let waiting = orc.task(&second_id).await;
    assert_eq!(waiting["lastStatus"], "PROVISIONING", "{waiting}");
    assert!(
        waiting["placementReason"]
            .as_str()
            .unwrap()
            .contains("RESOURCE:MEMORY"),
        "{waiting}"
    );
    let (ok, stdout, stderr) = orc.cli(&["explain-task", &second_id]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("rejected") && !stdout.contains("chosen"),
        "no instance has room yet:\n{stdout}"
    );

    // A younger copy with its own constraint no instance meets: run-task
    // explains why, and it keeps waiting after room appears.
    let (ok, stdout, stderr) = orc.cli(&[
        "run-task",
        "--task-definition",
        &second,
        "--placement-constraints",
        "type=memberOf,expression=\"attribute:ecs.os-type == windows\"",
        "--explain",
        "--output",
        "json",
    ]);
    assert!(ok, "{stderr}");
    let picky: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(picky["tasks"][0]["lastStatus"], "PROVISIONING", "{picky}");
    assert!(
        picky["explanation"][0]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("rejected"),
        "{picky}"
    );
    let picky_id = picky["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();

    let (ok, _, stderr) = orc.cli(&["stop-task", "--task", &hog_id]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = orc.cli(&[
        "wait",
        "tasks-running",
        "--tasks",
        &second_id,
        "--timeout",
        "60",
    ]);
    assert!(ok, "{stderr}");
    let running = orc.task(&second_id).await;
    assert_eq!(
        running["containerInstanceArn"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next(),
        orc.instance_id().as_deref(),
        "{running}"
    );
    assert!(running.get("placementReason").is_none(), "{running}");
    let (ok, stdout, stderr) = orc.cli(&["explain-task", &second_id]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("chosen: the task runs here"), "{stdout}");

    let still = orc.task(&picky_id).await;
    assert_eq!(still["lastStatus"], "PROVISIONING", "{still}");
    assert_eq!(
        still["placementConstraints"][0]["expression"], "attribute:ecs.os-type == windows",
        "{still}"
    );
    let (ok, stdout, stderr) = orc.cli(&["explain-task", &picky_id]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("memberOf(attribute:ecs.os-type == windows)") && !stdout.contains("chosen"),
        "explain-task judges with the task's own constraint:\n{stdout}"
    );
    let (ok, _, stderr) = orc.cli(&["stop-task", "--task", &picky_id]);
    assert!(ok, "{stderr}");
    let stopped = orc.task(&picky_id).await;
    assert_eq!(
        stopped["lastStatus"], "STOPPED",
        "a waiting task stops at once: {stopped}"
    );
}
