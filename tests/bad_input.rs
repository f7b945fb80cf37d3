//! Bad input to the control plane gets a clear error and loses nothing:
//! a second bootstrap, foreign and corrupt data dirs, joining the wrong
//! control plane, and requests to a server without quorum.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{eventually, free_port, wait_exit, TestServer};
use serde_json::json;

/// Runs `orc server` expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orc"))
        .arg("server")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run orc server");
    // Read stderr on a thread so a chatty server never blocks on the pipe.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let Some(status) = wait_exit(&mut child, std::time::Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "orc server {args:?} should have refused to start but was still running after 60 s; its log:\n{}",
            reader.join().unwrap_or_default()
        );
    };
    let stderr = reader.join().unwrap_or_default();
    assert!(
        !status.success(),
        "orc server {args:?} should have refused to start"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_bootstrap_into_an_existing_data_dir_is_refused_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(root.path(), "s1", &["--bootstrap"], &[]);
    server.wait_ready().await;
    server
        .client()
        .call("CreateCluster", json!({"clusterName": "keep-me"}))
        .await
        .unwrap();
    server.kill();

    let error = refused(&[
        "--bootstrap",
        "--data-dir",
        server.data_dir.to_str().unwrap(),
    ]);
    assert!(
        error.contains("already holds server") && error.contains("without --bootstrap"),
        "{error}"
    );

    server.restart();
    server.wait_ready().await;
    let (answer, _) = server
        .client()
        .call("DescribeClusters", json!({"clusters": ["keep-me"]}))
        .await
        .unwrap();
    assert_eq!(answer["clusters"][0]["status"], "ACTIVE");
}

#[test]
fn foreign_and_corrupt_data_dirs_are_refused_untouched() {
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("photos.txt"), "precious").unwrap();
    let error = refused(&[
        "--bootstrap",
        "--data-dir",
        foreign.path().to_str().unwrap(),
    ]);
    assert!(
        error.contains("is not an orc data dir") && error.contains("photos.txt"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(foreign.path().join("photos.txt")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_dir(foreign.path()).unwrap().count(),
        1,
        "nothing may be written into a foreign dir"
    );

    let corrupt = tempfile::tempdir().unwrap();
    std::fs::write(
        corrupt.path().join("orc-server.json"),
        "{\"format\": 1, \"node_",
    )
    .unwrap();
    let error = refused(&["--data-dir", corrupt.path().to_str().unwrap()]);
    assert!(error.contains("is corrupt"), "{error}");

    let empty = tempfile::tempdir().unwrap();
    let error = refused(&["--data-dir", empty.path().to_str().unwrap()]);
    assert!(
        error.contains("--bootstrap") && error.contains("--join"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cannot_join_another_control_plane() {
    let root = tempfile::tempdir().unwrap();
    let mut first = TestServer::start(root.path(), "a", &["--bootstrap"], &[]);
    let other = TestServer::start(root.path(), "b", &["--bootstrap"], &[]);
    first.wait_ready().await;
    other.wait_ready().await;
    first
        .client()
        .call("CreateCluster", json!({"clusterName": "mine"}))
        .await
        .unwrap();
    first.kill();

    let error = refused(&[
        "--join",
        &other.address,
        "--data-dir",
        first.data_dir.to_str().unwrap(),
    ]);
    assert!(
        error.contains("belongs to control plane") && error.contains(&other.address),
        "{error}"
    );

    first.restart();
    first.wait_ready().await;
    let (answer, _) = first
        .client()
        .call("DescribeClusters", json!({"clusters": ["mine"]}))
        .await
        .unwrap();
    assert_eq!(answer["clusters"][0]["status"], "ACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_quorum_answers_with_a_clear_error_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let first = TestServer::start(root.path(), "s1", &["--bootstrap"], &[]);
    first.wait_ready().await;
    let join = ["--join", first.address.as_str()];
    let mut second = TestServer::start(root.path(), "s2", &join, &[]);
    let mut third = TestServer::start(root.path(), "s3", &join, &[]);
    eventually(Duration::from_secs(30), "three voters", || async {
        let status = first.client().cluster_status(true).await.ok()?;
        (status.members.iter().filter(|m| m.voter).count() == 3).then_some(())
    })
    .await;
    first
        .client()
        .call("CreateCluster", json!({"clusterName": "before"}))
        .await
        .unwrap();
    second.kill();
    third.kill();

    let error = first
        .client()
        .call("CreateCluster", json!({"clusterName": "during"}))
        .await
        .expect_err("a write without quorum must fail");
    let text = error.to_string();
    assert!(error.is_retryable(), "{text}");
    assert!(
        text.contains("quorum") || text.contains("majority"),
        "the error should say why: {text}"
    );
    let read = first
        .client()
        .call("ListClusters", json!({}))
        .await
        .expect_err("a linearizable read without quorum must fail");
    assert!(read.is_retryable(), "{read}");

    second.restart();
    third.restart();
    eventually(
        Duration::from_secs(30),
        "the write to go through after quorum returns",
        || async {
            first
                .client()
                .call("CreateCluster", json!({"clusterName": "after"}))
                .await
                .ok()
        },
    )
    .await;
    let (answer, _) = first
        .client()
        .call("ListClusters", json!({}))
        .await
        .unwrap();
    let arns = answer["clusterArns"].to_string();
    assert!(
        arns.contains("cluster/before") && arns.contains("cluster/after"),
        "{arns}"
    );
}

/// Issue 12, item 3: a desired count above the server's per-service cap is
/// refused with a sentence naming the cap, on create and on update, and
/// nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_count_above_the_cap_is_refused_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        root.path(),
        "s1",
        &["--bootstrap"],
        &["--max-service-desired-count", "50"],
    );
    server.wait_ready().await;
    let client = server.client();
    client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [
                {"name": "web", "image": "busybox", "memory": 16}]}),
        )
        .await
        .unwrap();
    let create =
        |count: u64| json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": count});
    let error = client
        .call("CreateService", create(1_000_000))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("desiredCount: 1000000 is more than the 50 tasks a service may run")
            && error.contains("--max-service-desired-count"),
        "{error}"
    );
    let listed = client.call("ListServices", json!({})).await.unwrap().0;
    assert_eq!(listed["serviceArns"], json!([]), "nothing was created");

    client.call("CreateService", create(50)).await.unwrap();
    let error = client
        .call(
            "UpdateService",
            json!({"service": "web", "desiredCount": 51}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("more than the 50 tasks"), "{error}");
    let described = client
        .call("DescribeServices", json!({"services": ["web"]}))
        .await
        .unwrap()
        .0;
    assert_eq!(described["services"][0]["desiredCount"], 50);
}
