//! The seeds' service labs on the real Docker Engine (seed 004 and 002):
//! a service of 2 keeps its count when a task is stopped by hand, scales to
//! 4, rolls out a new revision without dropping below minimumHealthyPercent,
//! trips the circuit breaker on a revision whose container exits at once and
//! rolls back, and leaves no container behind when deleted.

mod common;

use std::time::Duration;

use common::cluster::eventually;
use common::images::busybox_image;
use common::orc::TestOrc;
use serde_json::{json, Value};

const IMAGE: &str = "orc-test/busybox:1";

async fn service(orc: &TestOrc) -> Value {
    let answer = orc
        .call("DescribeServices", json!({"services": ["web"]}))
        .await;
    answer["services"][0].clone()
}

fn stable_on(service: &Value, definition: &str, count: u64) -> bool {
    let deployments = service["deployments"].as_array().unwrap();
    deployments.len() == 1
        && deployments[0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with(definition)
        && service["runningCount"] == count
        && service["pendingCount"] == 0
        && service["desiredCount"] == count
}

async fn wait_stable(orc: &TestOrc, definition: &str, count: u64) -> Value {
    eventually(
        Duration::from_secs(90),
        &format!("the service to run {count} × {definition}"),
        || async {
            let service = service(orc).await;
            stable_on(&service, definition, count).then_some(service)
        },
    )
    .await
}

fn events(service: &Value) -> String {
    service["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn live_task_ids(orc: &TestOrc) -> Vec<String> {
    let answer = orc.call("ListTasks", json!({"serviceName": "web"})).await;
    answer["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_heals_scales_rolls_out_and_rolls_back() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let web = |version: &str, command: Option<Vec<&str>>| {
        let mut container = json!({
            "name": "web", "image": image, "memory": 16, "portMappings": [{"containerPort": 80}],
            "environment": [{"name": "VERSION", "value": version}], "stopTimeout": 2,
        });
        if let Some(command) = command {
            container["command"] = json!(command);
        }
        json!({"family": "web", "containerDefinitions": [container]})
    };
    assert_eq!(orc.register(web("1", None)).await, "web:1");

    let (ok, _, stderr) = orc.cli(&[
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "web:1",
        "--desired-count",
        "2",
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = orc.cli(&[
        "wait",
        "services-stable",
        "--services",
        "web",
        "--timeout",
        "60",
    ]);
    assert!(ok, "{stderr}");
    wait_stable(&orc, "web:1", 2).await;
    eventually(
        Duration::from_secs(20),
        "the steady-state event",
        || async {
            events(&service(&orc).await)
                .contains("has reached a steady state.")
                .then_some(())
        },
    )
    .await;

    // Stop one task by hand: a replacement starts and the count returns to 2.
    let before = live_task_ids(&orc).await;
    assert_eq!(before.len(), 2);
    orc.call("StopTask", json!({"task": before[0]})).await;
    eventually(Duration::from_secs(30), "a replacement task", || async {
        let now = live_task_ids(&orc).await;
        let service = service(&orc).await;
        (!now.contains(&before[0]) && now.len() == 2 && service["runningCount"] == 2).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the stopped task's container to go",
        || async { (orc.running_containers().len() == 2).then_some(()) },
    )
    .await;

    // Scale to 4.
    orc.call(
        "UpdateService",
        json!({"service": "web", "desiredCount": 4}),
    )
    .await;
    wait_stable(&orc, "web:1", 4).await;
    eventually(Duration::from_secs(20), "four containers", || async {
        (orc.running_containers().len() == 4).then_some(())
    })
    .await;

    // Roll out web:2 with min 50% / max 200%: never fewer than 2 running.
    assert_eq!(orc.register(web("2", None)).await, "web:2");
    orc.call(
        "UpdateService",
        json!({"service": "web", "taskDefinition": "web:2",
               "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 50}}),
    )
    .await;
    let lowest = sample_lowest_running(&orc, "web:2", 4).await;
    assert!(lowest >= 2, "the rollout dropped to {lowest} running tasks");

    // A revision whose container exits at once trips the circuit breaker and rolls back.
    assert_eq!(
        orc.register(web("3", Some(vec!["sh", "-c", "exit 1"])))
            .await,
        "web:3"
    );
    orc.call(
        "UpdateService",
        json!({"service": "web", "taskDefinition": "web:3",
               "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 50,
                   "deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    let lowest = sample_lowest_running(&orc, "web:2", 4).await;
    assert!(
        lowest >= 2,
        "the failed rollout dropped to {lowest} running tasks"
    );
    let rolled_back = service(&orc).await;
    let text = events(&rolled_back);
    assert!(
        text.contains("deployment failed: tasks failed to start."),
        "{text}"
    );
    assert!(text.contains("rolling back to"), "{text}");

    // Delete the service: no container is left.
    let (ok, _, stderr) = orc.cli(&["delete-service", "--service", "web", "--force"]);
    assert!(ok, "{stderr}");
    eventually(
        Duration::from_secs(60),
        "the service to be INACTIVE",
        || async { (service(&orc).await["status"] == "INACTIVE").then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "every container to be stopped",
        || async { orc.running_containers().is_empty().then_some(()) },
    )
    .await;
}

/// Samples the running count every 100 ms until the service is stable on
/// `definition` with `count` tasks; returns the lowest count seen.
async fn sample_lowest_running(orc: &TestOrc, definition: &str, count: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut lowest = u64::MAX;
    loop {
        let service = service(orc).await;
        lowest = lowest.min(service["runningCount"].as_u64().unwrap());
        if stable_on(&service, definition, count) {
            return lowest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service did not settle on {definition}: {}\n{}",
            service["deployments"],
            events(&service)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 12, item 4: a crashing revision pushed the moment `wait
/// services-stable` returned, while the first rollout was still
/// IN_PROGRESS (so no deployment ever COMPLETED), fails after its failed
/// tasks and rolls back to the revision that was serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_pushed_before_the_first_rollout_completed_rolls_back() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let web = orc
        .register(json!({"family": "web", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 16, "stopTimeout": 2,
            "portMappings": [{"containerPort": 80}]}]}))
        .await;
    let crash = orc
        .register(json!({"family": "crash", "containerDefinitions": [{
            "name": "web", "image": image, "memory": 16, "command": ["sh", "-c", "exit 1"]}]}))
        .await;
    let (ok, _, stderr) = orc.cli(&[
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        &web,
        "--desired-count",
        "2",
        "--deployment-configuration",
        "maximumPercent=200,minimumHealthyPercent=50,deploymentCircuitBreaker={enable=true,rollback=true}",
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = orc.cli(&[
        "wait",
        "services-stable",
        "--services",
        "web",
        "--timeout",
        "60",
    ]);
    assert!(ok, "{stderr}");
    let answer = orc
        .call(
            "UpdateService",
            json!({"service": "web", "taskDefinition": crash}),
        )
        .await;
    let deployments = answer["service"]["deployments"].as_array().unwrap();
    assert_eq!(
        deployments[1]["rolloutState"], "IN_PROGRESS",
        "the update must land before the first rollout completes (its tasks count 3 s after they run): {deployments:?}"
    );

    let service = wait_stable(&orc, &web, 2).await;
    let text = events(&service);
    assert!(
        text.contains("deployment failed: tasks failed to start."),
        "{text}"
    );
    assert!(text.contains("rolling back to"), "{text}");
    assert_eq!(
        service["deployments"][0]["desiredCount"], 2,
        "the rollback deployment carries the desired count: {}",
        service["deployments"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_by_hand_stops_its_task_and_the_service_replaces_it() {
    let image = busybox_image(IMAGE);
    let orc = TestOrc::start().await;
    let definition = json!({"family": "web", "containerDefinitions": [{
        "name": "web", "image": image, "memory": 16, "stopTimeout": 1,
        "command": ["sleep", "600"]}]});
    assert_eq!(orc.register(definition).await, "web:1");
    orc.call(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 1}),
    )
    .await;
    wait_stable(&orc, "web:1", 1).await;
    let first = live_task_ids(&orc).await.remove(0);
    let task = orc.task(&first).await;
    let container = task["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &container])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");

    let stopped = orc.wait_task(&first, "STOPPED").await;
    assert_eq!(
        stopped["stoppedReason"],
        "Essential container in task was removed outside orc"
    );
    assert_eq!(stopped["stopCode"], "EssentialContainerExited");
    // Replaced under a new id; the removed container is not made again.
    let replacement = eventually(Duration::from_secs(60), "a replacement task", || async {
        live_task_ids(&orc)
            .await
            .into_iter()
            .find(|id| *id != first)
    })
    .await;
    orc.wait_task(&replacement, "RUNNING").await;
    let names = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&names.stdout).contains(&format!("orc-{first}-web")),
        "the removed container was recreated"
    );
    let text = eventually(Duration::from_secs(20), "the event", || async {
        let text = events(&service(&orc).await);
        text.contains("removed outside orc").then_some(text)
    })
    .await;
    assert!(
        text.contains(&format!(
            "(task {first}) stopped: Essential container in task was removed outside orc"
        )),
        "{text}"
    );
}
